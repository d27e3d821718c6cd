//! `ivr-bridge loadtest`: many simulated Twilio calls against the real server, in real time,
//! with the production stand-ins as providers, and exact timings of what the bridge itself adds.
//!
//! The stand-ins run in this process with an observer ([`ivr_sim::standin::probe`]), the callers
//! too, so every timestamp comes from one clock: a frame sent by a caller and the same frame
//! arriving at the STT stand-in (matched by the hash of its tagged audio), the STT stand-in's
//! turn-ending transcript and the LLM stand-in's request (tied to the call by a word of the
//! transcript), the reply's first phrase and its TTS request, the TTS stand-in's first audio and
//! the caller's first reply frame. The server runs as a child process so its CPU and memory are
//! its own.

pub mod analysis;
pub mod busy;
pub mod caller;
pub mod collect;
pub mod cpus;
pub mod idle;
pub mod process;
pub mod report;
pub mod script;
pub mod soak;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use analysis::TurnRule;
use caller::Plan;
use collect::Collector;
use cpus::CpuList;
pub use idle::IdleMemory;
use ivr_sim::standin::{Bank, Delays, Probe, StandIns, STAND_IN_KEY};
use process::ChildServer;
pub use report::Report;
use script::Script;

/// The recording most callers play.
pub const DEFAULT_FIXTURE: &str = "fixtures/calls/one_question.jsonl";
/// The recording the barge-in share of callers play.
pub const DEFAULT_BARGE_IN_FIXTURE: &str = "fixtures/calls/barge_in.jsonl";
/// Observations the stand-ins may queue before the collector reads them.
const PROBE_QUEUE: usize = 1 << 20;
/// Caller events queued before the collector reads them.
const EVENT_QUEUE: usize = 1 << 16;
/// Open files per call in each process (caller or server socket, and an STT socket), plus a
/// margin for pools, listeners and the runtime.
const FILES_PER_CALL: u64 = 2;
/// Open-file margin.
const FILES_MARGIN: u64 = 256;
/// How often the server's memory is sampled during the run.
const RSS_EVERY: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simultaneous calls.
    pub calls: u32,
    /// Calls start evenly over this time.
    pub ramp: Duration,
    /// Times each caller plays its recording back to back in one stream.
    pub plays: u32,
    /// The recording most callers play.
    pub fixture: PathBuf,
    /// The barge-in recording.
    pub barge_in_fixture: PathBuf,
    /// Share of calls (0–1) that play the barge-in recording.
    pub barge_in_share: f64,
    /// The stand-ins' delays.
    pub delays: Delays,
    /// The server's `SILENCE_TIMEOUT_MS`.
    pub silence_timeout: Duration,
    /// The server's `TURN_DETECTION` (`timer` or `deepgram`).
    pub turn_detection: String,
    /// A server already running (its `/media` URL) instead of a child process.
    pub url: Option<String>,
    /// That server's pid, for CPU and memory.
    pub server_pid: Option<u32>,
    /// Where the stand-ins listen (0: free ports; set it for `url`).
    pub stand_ins_port: u16,
    /// Whether to measure memory per idle call first.
    pub idle: bool,
    /// Cores the server is pinned to (the child, or `server_pid`), if any.
    pub server_cpus: Option<CpuList>,
    /// Soak: this many calls in all, `calls` at a time, one batch after another.
    pub soak: Option<u32>,
    /// Soak: pause after the warm-up call and after the last batch before reading the server.
    pub soak_settle: Duration,
    /// Forwarding is measured on one frame in about this many (1: every frame).
    pub frame_sample: u64,
    /// Keep the generator's one core polling instead of sleeping (see [`busy`]).
    pub busy_poll: bool,
}

impl Options {
    /// Calls in the whole run: the soak's total, or `calls`.
    pub fn total_calls(&self) -> u32 {
        self.soak.unwrap_or(self.calls)
    }
}

/// The load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A recording is unusable.
    #[error(transparent)]
    Fixture(#[from] ivr_sim::fixture::FixtureError),
    /// The stand-ins did not start.
    #[error(transparent)]
    StandIn(#[from] ivr_sim::standin::StandInError),
    /// The server could not be started.
    #[error("server: {0}")]
    Server(String),
    /// Not enough open files allowed.
    #[error("{0}")]
    Limit(String),
    /// The server could not be pinned.
    #[error(transparent)]
    Cpus(#[from] cpus::CpuError),
}

/// Runs the load test; `note` gets progress lines.
pub async fn run(options: Options, note: &mut dyn FnMut(&str)) -> Result<Report, LoadError> {
    let files =
        process::ensure_open_files(u64::from(options.calls) * FILES_PER_CALL + FILES_MARGIN)?;
    note(&files);
    let scripts = Scripts::load(&options)?;
    let mut bank = Bank::new();
    // One more than measured: the soak's warm-up call.
    for call in 0..=options.total_calls() {
        scripts.of(call).teach(&mut bank, call);
    }
    let (probe, seen) = Probe::new(PROBE_QUEUE);
    let probe = probe.sampling_frames(options.frame_sample);
    let stand_ins = StandIns::start_probed(
        bank,
        options.delays,
        Some(probe.clone()),
        options.stand_ins_port,
    )
    .await?;
    let (child, media_url, pid) = match &options.url {
        Some(url) => {
            note(&stand_in_env(&stand_ins));
            (None, url.clone(), options.server_pid)
        }
        None => {
            let env = server_env(&stand_ins, &options);
            let child = ChildServer::start(&env).await?;
            let url = format!("ws://127.0.0.1:{}/media", child.port);
            let pid = child.pid();
            note(&format!("server: pid {pid}, {url}"));
            (Some(child), url, Some(pid))
        }
    };
    if let (Some(cpus), Some(pid)) = (&options.server_cpus, pid) {
        cpus.pin(pid)?;
        note(&format!("server pinned to CPUs {cpus}"));
    }
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let stop = CancellationToken::new();
    let collector =
        tokio::spawn(Collector::new(options.total_calls()).run(events, seen, stop.clone()));
    let polling = options.busy_poll.then(|| busy::start(stop.clone()));
    let idle = match options.soak {
        Some(_) => None,
        None => idle::measure(&options, &media_url, pid, &events_tx, note).await,
    };
    let live = Arc::new(AtomicU32::new(0));
    let run = Run {
        live: live.clone(),
        options: &options,
        url: &media_url,
        scripts: &scripts,
        events: &events_tx,
    };
    let soak_before = match options.soak {
        Some(_) => Some(soak::before(&run, pid, note).await),
        None => None,
    };
    let started = Instant::now();
    let cpu_before = pid.and_then(process::cpu_seconds);
    let own_before = process::cpu_seconds(std::process::id());
    let sched_before = (
        process::sched_seconds(std::process::id()),
        pid.and_then(process::sched_seconds),
    );
    let peak = Peak::start(pid, live);
    let mut batches = Vec::new();
    for calls in run.batches() {
        note(&format!(
            "calls {}..{} starting over {:.1} s",
            calls.start,
            calls.end,
            options.ramp.as_secs_f64()
        ));
        run.calls(calls).await;
        batches.push(soak::Sample::of(pid));
    }
    let wall = started.elapsed();
    let cpu = cpu_before
        .zip(pid.and_then(process::cpu_seconds))
        .map(|(a, b)| b - a);
    let own_cpu = own_before
        .zip(process::cpu_seconds(std::process::id()))
        .map(|(a, b)| b - a);
    let sched = |before: Option<process::SchedTimes>, pid: Option<u32>| {
        before
            .zip(pid.and_then(process::sched_seconds))
            .map(|(a, b)| a.until(b))
    };
    let own_sched = sched(sched_before.0, Some(std::process::id()));
    let server_sched = sched(sched_before.1, pid);
    let peak = peak.stop().await;
    let soak = match soak_before {
        Some(before) => Some(soak::after(&options, before, &batches, peak.sample, pid, note).await),
        None => None,
    };
    let server_cpus = pid.and_then(cpus::allowed_list);
    drop(events_tx);
    stop.cancel();
    let collected = collector
        .await
        .map_err(|e| LoadError::Server(format!("the collector failed: {e}")))?;
    if let Some(polling) = polling {
        let _ = polling.await;
    }
    drop(child);
    stand_ins.shutdown().await;
    let rule = TurnRule {
        silence: (options.turn_detection != "deepgram").then_some(options.silence_timeout),
    };
    let total = options.total_calls();
    Ok(report::build(report::Inputs {
        options: &options,
        collected: &collected,
        rule,
        idle,
        cpu,
        own_cpu,
        own_sched,
        server_sched,
        rss_peak: peak.sample.rss_kib,
        busiest: pid.map(|_| peak.busiest),
        wall,
        probe_dropped: probe.dropped(),
        expected_turns: (0..total)
            .map(|c| scripts.of(c).utterances.len() as u32 * options.plays.max(1))
            .sum(),
        barge_in_calls: (0..total).filter(|&c| scripts.barges(c)).count() as u32,
        server_cpus,
        generator_cpus: cpus::allowed_list(std::process::id()),
        soak,
    }))
}

/// The two recordings and which call plays which.
struct Scripts {
    /// What most calls play.
    normal: Arc<Script>,
    /// What the barge-in share plays.
    barge: Arc<Script>,
    /// One call in this many plays the barge-in recording (0: none).
    every: u32,
}

impl Scripts {
    fn load(options: &Options) -> Result<Self, LoadError> {
        let every = if options.barge_in_share > 0.0 {
            (1.0 / options.barge_in_share.clamp(1e-9, 1.0))
                .round()
                .max(1.0) as u32
        } else {
            0
        };
        Ok(Self {
            normal: Arc::new(Script::load(&options.fixture)?),
            barge: Arc::new(Script::load(&options.barge_in_fixture)?),
            every,
        })
    }

    /// Whether call `call` plays the barge-in recording.
    fn barges(&self, call: u32) -> bool {
        self.every > 0 && call % self.every == self.every - 1
    }

    /// What call `call` plays.
    fn of(&self, call: u32) -> Arc<Script> {
        if self.barges(call) {
            self.barge.clone()
        } else {
            self.normal.clone()
        }
    }
}

/// What starting measured calls needs.
struct Run<'a> {
    /// Calls started and not yet ended, for the memory per active call.
    live: Arc<AtomicU32>,
    options: &'a Options,
    url: &'a str,
    scripts: &'a Scripts,
    events: &'a mpsc::Sender<caller::CallEvent>,
}

impl Run<'_> {
    /// The calls of each batch: one batch of `calls`, or the soak's total `calls` at a time.
    fn batches(&self) -> Vec<Range<u32>> {
        batches(self.options.total_calls(), self.options.calls)
    }

    /// Starts `calls` evenly over the ramp and waits until every one has ended.
    async fn calls(&self, calls: Range<u32>) {
        let started = Instant::now();
        let first = calls.start;
        let mut callers = JoinSet::new();
        for call in calls {
            let plan = Plan {
                call,
                url: self.url.to_owned(),
                script: Some(self.scripts.of(call)),
                plays: self.options.plays,
                greeted: None,
                sample: self.options.frame_sample,
                epoch: started,
            };
            let at = ramp_at(started, self.options, call - first);
            tokio::time::sleep_until(at.into()).await;
            let caller = caller::run(plan, self.events.clone(), CancellationToken::new());
            let live = self.live.clone();
            live.fetch_add(1, Ordering::Relaxed);
            callers.spawn(async move {
                caller.await;
                live.fetch_sub(1, Ordering::Relaxed);
            });
        }
        while callers.join_next().await.is_some() {}
    }
}

/// `total` calls cut into batches of `size`, in order.
fn batches(total: u32, size: u32) -> Vec<Range<u32>> {
    let size = size.max(1);
    (0..total.div_ceil(size))
        .map(|b| b * size..((b + 1) * size).min(total))
        .collect()
}

/// When call `call` starts.
fn ramp_at(started: Instant, options: &Options, call: u32) -> Instant {
    let step = options.ramp.as_secs_f64() / f64::from(options.calls.max(1));
    started + Duration::from_secs_f64(step * f64::from(call))
}

/// The child server's environment: the stand-ins, and room for every call.
fn server_env(stand_ins: &StandIns, options: &Options) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DEEPGRAM_API_KEY", STAND_IN_KEY.to_owned()),
        ("MISTRAL_API_KEY", STAND_IN_KEY.to_owned()),
        ("DEEPGRAM_STT_URL", stand_ins.stt.url()),
        ("DEEPGRAM_FLUX_URL", stand_ins.stt.flux_url()),
        ("DEEPGRAM_TTS_URL", stand_ins.tts.url()),
        ("MISTRAL_API_URL", stand_ins.llm.url()),
        ("MAX_CALLS", (options.calls * 2 + 16).to_string()),
        (
            "SILENCE_TIMEOUT_MS",
            options.silence_timeout.as_millis().to_string(),
        ),
        ("TURN_DETECTION", options.turn_detection.clone()),
        ("RUST_LOG", "warn".to_owned()),
        // The recordings' callers speak 2 s in, after the demo's short greeting.
        ("GREETING", crate::demo::DEMO_GREETING.to_owned()),
        ("TWILIO_AUTH_TOKEN", String::new()),
        ("REDIS_URL", String::new()),
    ];
    if let Some(cpus) = &options.server_cpus {
        // The child starts on the generator's cores and is pinned once it answers; tokio
        // sizes its worker pool at start, so it is told the count of its own cores.
        env.push(("TOKIO_WORKER_THREADS", cpus.count().to_string()));
    }
    env
}

/// What a server started by hand needs to use these stand-ins.
fn stand_in_env(s: &StandIns) -> String {
    format!(
        "stand-ins: start the server with DEEPGRAM_STT_URL={} DEEPGRAM_FLUX_URL={} \
DEEPGRAM_TTS_URL={} MISTRAL_API_URL={} DEEPGRAM_API_KEY={STAND_IN_KEY} \
MISTRAL_API_KEY={STAND_IN_KEY}",
        s.stt.url(),
        s.stt.flux_url(),
        s.tts.url(),
        s.llm.url()
    )
}

/// Samples the server's memory and open files during the run, keeping the largest values.
struct Peak {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<PeakSample>,
}

/// What the server's memory and files came to during the calls.
#[derive(Debug, Default)]
struct PeakSample {
    /// The largest of each.
    sample: soak::Sample,
    /// The moment with the most calls live.
    busiest: report::Busiest,
}

impl Peak {
    /// Samples the server every [`RSS_EVERY`], with the calls `live` at that moment.
    fn start(pid: Option<u32>, live: Arc<AtomicU32>) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = PeakSample {
                sample: soak::Sample::of(pid),
                busiest: report::Busiest::default(),
            };
            if pid.is_none() {
                return peak;
            }
            let mut every = tokio::time::interval(RSS_EVERY);
            loop {
                tokio::select! {
                    () = token.cancelled() => return peak,
                    _ = every.tick() => {
                        let now = soak::Sample::of(pid);
                        if let Some(rss_kib) = now.rss_kib {
                            let live = live.load(Ordering::Relaxed);
                            peak.busiest = peak.busiest.with(live, rss_kib);
                        }
                        peak.sample = peak.sample.max(now);
                    }
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> PeakSample {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soak_is_cut_into_batches_of_the_calls_at_a_time() {
        assert_eq!(batches(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(batches(3, 3), vec![0..3]);
        assert_eq!(batches(2, 5), vec![0..2]);
    }
}
