//! The load test's results: a human table and the same as JSON.

use std::time::Duration;

use serde::Serialize;

use super::analysis::{self, Stats, TurnRule};
use super::collect::Collector;
use super::cpus::CpuList;
use super::process::SchedTimes;
use super::soak::SoakReport;
use super::{IdleMemory, Options};

/// A run whose frames left the load generator later than this at p99 is marked late: its
/// latency figures include the generator's own delay and are upper bounds, not the server's.
pub const GENERATOR_LATE_P99_MS: f64 = 5.0;
/// A run where the generator or the server waited this share of their runnable time for a
/// CPU is marked as run on a busy machine: other processes took the cores.
pub const BUSY_WAIT_SHARE: f64 = 0.1;

/// Everything measured, in the units the names say.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Calls started.
    pub calls: u32,
    /// Of them, calls that played the barge-in recording.
    pub barge_in_calls: u32,
    /// Calls that ran to the end with every turn answered.
    pub completed: u32,
    /// Calls that did not.
    pub failed: u32,
    /// A few failure reasons.
    pub failures: Vec<String>,
    /// Turns the recordings hold (utterances × plays).
    pub turns_expected: u32,
    /// Turns whose reply audio reached the caller.
    pub turns_answered: u32,
    /// Twilio frame sent → that audio at the STT stand-in, ms.
    pub forwarding_ms: Stats,
    /// Measured frames that never reached the STT stand-in.
    pub frames_lost: u64,
    /// Caller's last speech frame sent → first reply frame received, ms.
    pub turn_latency_ms: Stats,
    /// The bridge's own part of a turn, ms: the sum of the three parts below.
    pub bridge_share_ms: Stats,
    /// STT stand-in's turn-ending transcript → LLM request arrived, minus the silence timer.
    pub stt_to_llm_ms: Stats,
    /// LLM stand-in sent the piece completing the first phrase → TTS request arrived.
    pub llm_to_tts_ms: Stats,
    /// TTS stand-in's first audio → first reply frame at the caller.
    pub tts_to_caller_ms: Stats,
    /// The turn's end as the server decides it → first reply frame at the caller, ms.
    pub first_reply_audio_ms: Stats,
    /// Interrupting transcript sent → `clear` at the caller, ms.
    pub barge_in_ms: Stats,
    /// Server CPU seconds (user + system) during the calls.
    pub server_cpu_s: Option<f64>,
    /// Minutes of calls (sum of every call's time connected).
    pub call_minutes: f64,
    /// Server CPU seconds per minute of call.
    pub server_cpu_s_per_call_minute: Option<f64>,
    /// Server RSS before the calls (after the idle phase), KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Largest server RSS during the calls, KiB.
    pub server_rss_peak_kib: Option<u64>,
    /// Most calls live at once (as the generator counts them: started, not yet ended).
    pub busiest_live_calls: Option<u32>,
    /// Server RSS at that moment, KiB.
    pub busiest_rss_kib: Option<u64>,
    /// (RSS with the most calls live − before) / those calls, KiB.
    pub rss_per_call_kib: Option<f64>,
    /// Idle calls measured for memory.
    pub idle_calls: Option<u32>,
    /// Idle calls that heard the whole greeting.
    pub idle_greeted: Option<u32>,
    /// Server RSS after a warm-up call, KiB.
    pub idle_rss_before_kib: Option<u64>,
    /// Server RSS with the idle calls connected, KiB.
    pub idle_rss_with_kib: Option<u64>,
    /// (RSS with − RSS before) / idle calls, KiB.
    pub rss_per_idle_call_kib: Option<f64>,
    /// How late the load generator sent frames against their schedule, ms.
    pub send_lateness_ms: Stats,
    /// Whether the load generator itself was late (send lateness p99 above
    /// [`GENERATOR_LATE_P99_MS`]): then the latencies above are not the server's alone.
    pub generator_late: bool,
    /// The lateness p99 beyond which a run is marked late, ms.
    pub generator_late_limit_ms: f64,
    /// Cores the load generator could run on (`Cpus_allowed_list`, read back).
    pub generator_cpus: Option<String>,
    /// Cores the server could run on (read back from `/proc/<pid>/status`).
    pub server_cpus: Option<String>,
    /// How many cores that is.
    pub server_cores: Option<usize>,
    /// Simultaneous calls per server core.
    pub calls_per_server_core: Option<f64>,
    /// Share of its cores the load generator kept busy (its CPU seconds / wall / cores).
    pub loadgen_cpu_share: Option<f64>,
    /// Whether the load generator busy-polled its core (`--busy-poll`): its CPU share is then
    /// all of it, whatever the load; its send lateness still tells whether it kept up.
    pub generator_busy_poll: bool,
    /// Forwarding was measured on one frame in about this many.
    pub frame_sample: u64,
    /// Seconds the load generator was runnable but waited for its cores during the calls.
    pub loadgen_wait_s: Option<f64>,
    /// That wait as a share of its runnable time.
    pub loadgen_wait_share: Option<f64>,
    /// Seconds the server was runnable but waited for its cores during the calls.
    pub server_wait_s: Option<f64>,
    /// That wait as a share of its runnable time.
    pub server_wait_share: Option<f64>,
    /// Whether either waited more than [`BUSY_WAIT_SHARE`] of its runnable time: the machine
    /// was busy with other work and every figure is a bound, not the bridge's alone.
    pub machine_busy: bool,
    /// The soak's findings, for `--soak`.
    pub soak: Option<SoakReport>,
    /// CPU seconds the load generator itself used (callers, stand-ins, collector).
    pub loadgen_cpu_s: Option<f64>,
    /// Wall time of the calls, s.
    pub wall_s: f64,
    /// Observations the stand-ins dropped because the collector fell behind.
    pub probe_dropped: u64,
    /// The scenario.
    pub scenario: Scenario,
}

/// The settings the numbers hold for.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// LLM stand-in: first token, ms.
    pub llm_first_token_ms: u64,
    /// LLM stand-in: whole reply, ms.
    pub llm_total_ms: u64,
    /// TTS stand-in: first byte, ms.
    pub tts_first_byte_ms: u64,
    /// The server's silence timer, ms.
    pub silence_timeout_ms: u64,
    /// The server's turn detection.
    pub turn_detection: String,
    /// Ramp-up, s.
    pub ramp_s: f64,
    /// Plays of the recording per call.
    pub plays: u32,
    /// The recordings.
    pub fixture: String,
    /// The barge-in recording.
    pub barge_in_fixture: String,
}

/// The moment of a run with the most calls live, and the server's RSS then: what an active
/// call costs is measured there. (The peak RSS over all the calls of the run would count calls
/// that had not started yet or were already over when a ramp is longer than a call.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Busiest {
    /// Calls live.
    pub live: u32,
    /// Server RSS, KiB.
    pub rss_kib: u64,
}

impl Busiest {
    /// The busier of this moment and a sample with `live` calls at `rss_kib` (the larger RSS
    /// among moments with as many calls).
    pub fn with(self, live: u32, rss_kib: u64) -> Self {
        // Ordered by calls live, then RSS (the fields' order).
        self.max(Self { live, rss_kib })
    }
}

/// What [`build`] needs.
pub struct Inputs<'a> {
    /// The run's options.
    pub options: &'a Options,
    /// What the collector gathered.
    pub collected: &'a Collector,
    /// How the server ends turns.
    pub rule: TurnRule,
    /// Idle memory, when measured.
    pub idle: Option<IdleMemory>,
    /// Server CPU seconds during the calls.
    pub cpu: Option<f64>,
    /// Load generator CPU seconds.
    pub own_cpu: Option<f64>,
    /// The load generator's time on and waiting for its cores.
    pub own_sched: Option<SchedTimes>,
    /// The server's.
    pub server_sched: Option<SchedTimes>,
    /// Largest server RSS.
    pub rss_peak: Option<u64>,
    /// The moment with the most calls live, and the server's RSS then.
    pub busiest: Option<Busiest>,
    /// Wall time of the calls.
    pub wall: Duration,
    /// Probe observations dropped.
    pub probe_dropped: u64,
    /// Turns in the recordings.
    pub expected_turns: u32,
    /// Calls that played the barge-in recording.
    pub barge_in_calls: u32,
    /// The server's cores, read back.
    pub server_cpus: Option<String>,
    /// The load generator's cores, read back.
    pub generator_cpus: Option<String>,
    /// The soak's findings.
    pub soak: Option<SoakReport>,
}

/// Whether a run's send lateness marks the load generator as late.
pub fn generator_late(lateness: &Stats) -> bool {
    lateness.count > 0 && lateness.p99 > GENERATOR_LATE_P99_MS
}

/// How many cores a kernel CPU list (`0-1`, `0,2`) names.
fn cores(list: Option<&String>) -> Option<usize> {
    list.and_then(|l| l.parse::<CpuList>().ok())
        .map(|l| l.count())
}

/// Puts the numbers together.
pub fn build(i: Inputs<'_>) -> Report {
    let o = i.options;
    let c = i.collected;
    let samples = analysis::turns(&c.calls, i.rule);
    let failures: Vec<String> = c
        .calls
        .iter()
        .enumerate()
        .filter_map(|(n, log)| match &log.finished {
            Some((_, None)) => None,
            Some((_, Some(why))) => Some(format!("call {n}: {why}")),
            None => Some(format!("call {n}: never finished")),
        })
        .collect();
    let completed = o.total_calls() - failures.len() as u32;
    let call_minutes: f64 = c
        .calls
        .iter()
        .filter_map(|l| l.finished.as_ref().map(|(d, _)| d.as_secs_f64() / 60.0))
        .sum();
    let rss_before = i.idle.map(|m| m.rss_before_kib);
    let per = |a: u64, b: u64, n: u32| (a as f64 - b as f64) / f64::from(n.max(1));
    let ms = |d: Duration| d.as_millis() as u64;
    let lateness = Stats::of_us(&c.send_late_us);
    let server_cores = cores(i.server_cpus.as_ref());
    let generator_cores = cores(i.generator_cpus.as_ref());
    Report {
        calls: o.total_calls(),
        barge_in_calls: i.barge_in_calls,
        completed,
        failed: failures.len() as u32,
        failures: failures.into_iter().take(10).collect(),
        turns_expected: i.expected_turns,
        turns_answered: c.calls.iter().map(|l| l.reply_audio.len() as u32).sum(),
        forwarding_ms: Stats::of_us(&c.forwarding_us),
        frames_lost: c.frames_lost,
        turn_latency_ms: Stats::of(&samples.turn_latency),
        bridge_share_ms: Stats::of(&samples.bridge_share),
        stt_to_llm_ms: Stats::of(&samples.stt_to_llm),
        llm_to_tts_ms: Stats::of(&samples.llm_to_tts),
        tts_to_caller_ms: Stats::of(&samples.tts_to_caller),
        first_reply_audio_ms: Stats::of(&samples.first_audio),
        barge_in_ms: Stats::of(&samples.barge_in),
        server_cpu_s: i.cpu,
        call_minutes,
        server_cpu_s_per_call_minute: i.cpu.map(|cpu| cpu / call_minutes.max(1e-9)),
        server_rss_before_kib: rss_before,
        server_rss_peak_kib: i.rss_peak,
        busiest_live_calls: i.busiest.map(|b| b.live),
        busiest_rss_kib: i.busiest.map(|b| b.rss_kib),
        rss_per_call_kib: i
            .busiest
            .filter(|b| b.live > 0)
            .zip(rss_before)
            .map(|(b, before)| per(b.rss_kib, before, b.live)),
        idle_calls: i.idle.map(|m| m.calls),
        idle_greeted: i.idle.map(|m| m.greeted),
        idle_rss_before_kib: rss_before,
        idle_rss_with_kib: i.idle.map(|m| m.rss_with_kib),
        rss_per_idle_call_kib: i
            .idle
            .map(|m| per(m.rss_with_kib, m.rss_before_kib, m.calls)),
        send_lateness_ms: lateness,
        generator_late: generator_late(&lateness),
        generator_late_limit_ms: GENERATOR_LATE_P99_MS,
        calls_per_server_core: server_cores.map(|n| f64::from(o.calls) / n as f64),
        server_cores,
        server_cpus: i.server_cpus,
        generator_cpus: i.generator_cpus,
        loadgen_cpu_share: i
            .own_cpu
            .zip(generator_cores)
            .map(|(cpu, n)| cpu / i.wall.as_secs_f64().max(1e-9) / n as f64),
        generator_busy_poll: o.busy_poll,
        frame_sample: o.frame_sample,
        loadgen_wait_s: i.own_sched.map(|s| s.waiting),
        loadgen_wait_share: i.own_sched.map(SchedTimes::wait_share),
        server_wait_s: i.server_sched.map(|s| s.waiting),
        server_wait_share: i.server_sched.map(SchedTimes::wait_share),
        machine_busy: [i.own_sched, i.server_sched]
            .iter()
            .flatten()
            .any(|s| s.wait_share() > BUSY_WAIT_SHARE),
        soak: i.soak,
        loadgen_cpu_s: i.own_cpu,
        wall_s: i.wall.as_secs_f64(),
        probe_dropped: i.probe_dropped,
        scenario: Scenario {
            llm_first_token_ms: ms(o.delays.llm_first_token),
            llm_total_ms: ms(o.delays.llm_total),
            tts_first_byte_ms: ms(o.delays.tts_first_byte),
            silence_timeout_ms: ms(o.silence_timeout),
            turn_detection: o.turn_detection.clone(),
            ramp_s: o.ramp.as_secs_f64(),
            plays: o.plays,
            fixture: o.fixture.display().to_string(),
            barge_in_fixture: o.barge_in_fixture.display().to_string(),
        },
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        let s = &self.scenario;
        line(format!(
            "scenario: LLM first token {} ms, whole reply {} ms, TTS first byte {} ms; turn end: {} (silence {} ms); {} plays of {}, barge-in: {}",
            s.llm_first_token_ms, s.llm_total_ms, s.tts_first_byte_ms, s.turn_detection,
            s.silence_timeout_ms, s.plays, s.fixture, s.barge_in_fixture
        ));
        line(format!(
            "calls: {} ({} barge-in), completed {}, failed {}; turns answered {} of {}",
            self.calls,
            self.barge_in_calls,
            self.completed,
            self.failed,
            self.turns_answered,
            self.turns_expected
        ));
        for f in &self.failures {
            line(format!("  failed: {f}"));
        }
        let na = || "n/a".to_owned();
        let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
        let pct = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{:.0} %", v * 100.0));
        line(format!(
            "cores: server {} ({} cores: {} calls per server core), load generator {}",
            self.server_cpus.clone().unwrap_or_else(na),
            self.server_cores.map_or_else(na, |n| n.to_string()),
            self.calls_per_server_core
                .map_or_else(na, |n| format!("{n:.0}")),
            self.generator_cpus.clone().unwrap_or_else(na),
        ));
        if self.machine_busy {
            line(format!(
                "MACHINE BUSY: waiting for their cores, the load generator lost {} s ({}) and the server {} s ({}) to other processes; every figure below is a bound",
                opt(self.loadgen_wait_s),
                pct(self.loadgen_wait_share),
                opt(self.server_wait_s),
                pct(self.server_wait_share),
            ));
        }
        if self.generator_late {
            line(format!(
                "LOAD GENERATOR LATE: its frames left {:.1} ms behind schedule at p99 (limit {} ms); \
the latencies below include its own delay and are upper bounds, not the server's",
                self.send_lateness_ms.p99, self.generator_late_limit_ms
            ));
        }
        line(format!(
            "{:<44} {:>7} {:>9} {:>9} {:>9}",
            "measure (ms)", "n", "p50", "p99", "max"
        ));
        let rows = [
            (
                "forwarding: Twilio frame → STT stand-in",
                &self.forwarding_ms,
            ),
            (
                "turn latency: caller stops → reply audio",
                &self.turn_latency_ms,
            ),
            (
                "first reply audio after the turn ends",
                &self.first_reply_audio_ms,
            ),
            ("bridge's own share of the turn", &self.bridge_share_ms),
            (
                "  STT turn end → LLM request (− timer)",
                &self.stt_to_llm_ms,
            ),
            ("  LLM first phrase → TTS request", &self.llm_to_tts_ms),
            (
                "  TTS first byte → caller's first frame",
                &self.tts_to_caller_ms,
            ),
            ("barge-in: transcript → clear at caller", &self.barge_in_ms),
            (
                "load generator: frame send lateness",
                &self.send_lateness_ms,
            ),
        ];
        for (name, st) in rows {
            line(format!(
                "{name:<44} {:>7} {:>9.3} {:>9.3} {:>9.3}",
                st.count, st.p50, st.p99, st.max
            ));
        }
        line(format!(
            "server CPU: {} s over {:.2} call-minutes = {} s per call-minute",
            opt(self.server_cpu_s),
            self.call_minutes,
            opt(self.server_cpu_s_per_call_minute)
        ));
        let kib = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| v.to_string());
        line(format!(
            "server RSS: {} KiB before, {} KiB peak; {} KiB with the most calls live ({}) = {} KiB per active call",
            kib(self.server_rss_before_kib),
            kib(self.server_rss_peak_kib),
            kib(self.busiest_rss_kib),
            self.busiest_live_calls.map_or("n/a".to_owned(), |v| v.to_string()),
            opt(self.rss_per_call_kib)
        ));
        line(format!(
            "idle calls: {} connected ({} heard the greeting), RSS {} → {} KiB = {} KiB per idle call",
            self.idle_calls.map_or("n/a".to_owned(), |v| v.to_string()),
            self.idle_greeted.map_or("n/a".to_owned(), |v| v.to_string()),
            kib(self.idle_rss_before_kib), kib(self.idle_rss_with_kib), opt(self.rss_per_idle_call_kib)
        ));
        line(format!(
            "frames lost {}; probe events dropped {}; load generator CPU {} s over {:.1} s ({} of its cores{}); forwarding measured on 1 frame in {}",
            self.frames_lost,
            self.probe_dropped,
            opt(self.loadgen_cpu_s),
            self.wall_s,
            self.loadgen_cpu_share
                .map_or_else(na, |s| format!("{:.0} %", s * 100.0)),
            if self.generator_busy_poll {
                ", busy-polling: all of it whatever the load"
            } else {
                ""
            },
            self.frame_sample
        ));
        if let Some(soak) = &self.soak {
            for l in soak.lines() {
                line(l);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lateness(p99: f64, count: usize) -> Stats {
        Stats {
            count,
            p50: p99 / 4.0,
            p99,
            max: p99 * 2.0,
        }
    }

    #[test]
    fn a_run_is_late_when_the_generator_sent_late_at_p99() {
        assert!(generator_late(&lateness(5.1, 50_000)));
        assert!(generator_late(&lateness(51.5, 60_000)));
        assert!(!generator_late(&lateness(5.0, 50_000)));
        assert!(!generator_late(&lateness(0.3, 50_000)));
        // No frame sent: nothing to be late with.
        assert!(!generator_late(&lateness(0.0, 0)));
    }

    fn options() -> Options {
        Options {
            calls: 2,
            ramp: Duration::from_secs(1),
            plays: 1,
            fixture: "a.jsonl".into(),
            barge_in_fixture: "b.jsonl".into(),
            barge_in_share: 0.0,
            delays: ivr_sim::standin::Delays::default(),
            silence_timeout: Duration::from_millis(1000),
            turn_detection: "timer".into(),
            url: None,
            server_pid: None,
            stand_ins_port: 0,
            idle: false,
            server_cpus: None,
            soak: None,
            soak_settle: Duration::from_secs(2),
            frame_sample: 1,
            busy_poll: false,
        }
    }

    /// A report of two calls whose frames left `late_us` µs behind schedule.
    fn report_with_lateness(late_us: &[u64]) -> Report {
        report_of(late_us, None, None)
    }

    /// A report of two calls, with what the server's memory came to when measured.
    fn report_of(
        late_us: &[u64],
        idle: Option<IdleMemory>,
        peak: Option<(u64, Busiest)>,
    ) -> Report {
        let options = options();
        let mut collected = Collector::new(2);
        collected.send_late_us = late_us.to_vec();
        build(Inputs {
            options: &options,
            collected: &collected,
            rule: TurnRule { silence: None },
            idle,
            cpu: Some(1.0),
            own_cpu: Some(3.0),
            own_sched: None,
            server_sched: None,
            rss_peak: peak.map(|(rss, _)| rss),
            busiest: peak.map(|(_, busiest)| busiest),
            wall: Duration::from_secs(4),
            probe_dropped: 0,
            expected_turns: 2,
            barge_in_calls: 0,
            server_cpus: Some("1".into()),
            generator_cpus: Some("0".into()),
            soak: None,
        })
    }

    #[test]
    fn the_busiest_moment_is_the_one_with_the_most_calls_live() {
        let busiest = Busiest::default()
            .with(3, 500)
            .with(5, 400)
            .with(4, 900)
            .with(5, 450);
        assert_eq!(
            busiest,
            Busiest {
                live: 5,
                rss_kib: 450
            }
        );
    }

    /// Two calls in the run, one live at the busiest moment: memory per active call is the
    /// growth then over that one call, not the run's peak over both.
    #[test]
    fn memory_per_active_call_counts_the_calls_live_then() {
        let idle = IdleMemory {
            calls: 2,
            greeted: 2,
            rss_before_kib: 10_000,
            rss_with_kib: 10_064,
        };
        let busiest = Busiest {
            live: 1,
            rss_kib: 10_100,
        };
        let report = report_of(&[100], Some(idle), Some((10_300, busiest)));
        assert_eq!(report.rss_per_call_kib, Some(100.0));
        assert_eq!(report.rss_per_idle_call_kib, Some(32.0));
        let table = report.table();
        assert!(
            table.contains("10300 KiB peak; 10100 KiB with the most calls live (1) = 100.000 KiB per active call"),
            "{table}"
        );
    }

    #[test]
    fn a_late_generator_is_marked_in_the_table_and_the_json() {
        // 99 frames on time, 1 of 100 (beyond the 99th percentile's rank) 40 ms late: on time.
        let mut late = vec![300; 99];
        late.push(40_000);
        let report = report_with_lateness(&late);
        assert!(!report.generator_late);
        assert!(!report.table().contains("LATE"), "{}", report.table());
        // 10 of 100 frames 12 ms late: p99 is 12 ms.
        let mut late = vec![300; 90];
        late.extend([12_000; 10]);
        let report = report_with_lateness(&late);
        assert!(report.generator_late);
        let table = report.table();
        assert!(table.contains("LOAD GENERATOR LATE"), "{table}");
        assert!(table.contains("12.0 ms behind schedule at p99"), "{table}");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["generator_late"], true);
        assert_eq!(json["generator_late_limit_ms"], GENERATOR_LATE_P99_MS);
    }

    #[test]
    fn the_report_gives_calls_per_server_core_and_the_generator_s_share() {
        let report = report_with_lateness(&[100]);
        assert_eq!(report.server_cores, Some(1));
        assert_eq!(report.calls_per_server_core, Some(2.0));
        // 3 CPU seconds over 4 s on one core.
        assert_eq!(report.loadgen_cpu_share, Some(0.75));
        let table = report.table();
        assert!(
            table.contains("cores: server 1 (1 cores: 2 calls per server core), load generator 0"),
            "{table}"
        );
    }

    #[test]
    fn a_run_on_a_busy_machine_is_marked() {
        let options = options();
        let collected = Collector::new(2);
        let busy = |generator_wait: f64| {
            build(Inputs {
                options: &options,
                collected: &collected,
                rule: TurnRule { silence: None },
                idle: None,
                cpu: None,
                own_cpu: None,
                own_sched: Some(SchedTimes {
                    running: 9.0,
                    waiting: generator_wait,
                }),
                server_sched: Some(SchedTimes {
                    running: 9.0,
                    waiting: 0.1,
                }),
                rss_peak: None,
                busiest: None,
                wall: Duration::from_secs(10),
                probe_dropped: 0,
                expected_turns: 2,
                barge_in_calls: 0,
                server_cpus: None,
                generator_cpus: None,
                soak: None,
            })
        };
        let quiet = busy(0.5);
        assert!(!quiet.machine_busy);
        assert!(!quiet.table().contains("MACHINE BUSY"));
        // 3 s of 12 s runnable spent waiting: 25 %.
        let report = busy(3.0);
        assert!(report.machine_busy);
        assert_eq!(report.loadgen_wait_share, Some(0.25));
        assert!(report
            .table()
            .contains("the load generator lost 3.000 s (25 %)"));
    }

    #[test]
    fn cores_are_counted_from_the_kernel_list() {
        assert_eq!(cores(Some(&"0-1".to_owned())), Some(2));
        assert_eq!(cores(Some(&"1".to_owned())), Some(1));
        assert_eq!(cores(Some(&"0,2-3".to_owned())), Some(3));
        assert_eq!(cores(None), None);
    }
}
