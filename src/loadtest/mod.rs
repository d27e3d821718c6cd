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
pub mod caller;
pub mod collect;
pub mod idle;
pub mod process;
pub mod report;
pub mod script;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use analysis::TurnRule;
use caller::Plan;
use collect::Collector;
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
}

/// Runs the load test; `note` gets progress lines.
pub async fn run(options: Options, note: &mut dyn FnMut(&str)) -> Result<Report, LoadError> {
    let files =
        process::ensure_open_files(u64::from(options.calls) * FILES_PER_CALL + FILES_MARGIN)?;
    note(&files);
    let normal = Arc::new(Script::load(&options.fixture)?);
    let barge = Arc::new(Script::load(&options.barge_in_fixture)?);
    let barges = |call: u32| {
        let every = (1.0 / options.barge_in_share.clamp(1e-9, 1.0))
            .round()
            .max(1.0) as u32;
        options.barge_in_share > 0.0 && call % every == every - 1
    };
    let script_of = |call: u32| {
        if barges(call) {
            barge.clone()
        } else {
            normal.clone()
        }
    };
    let mut bank = Bank::new();
    for call in 0..options.calls {
        script_of(call).teach(&mut bank, call);
    }
    let (probe, seen) = Probe::new(PROBE_QUEUE);
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
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let stop = CancellationToken::new();
    let collector = tokio::spawn(Collector::new(options.calls).run(events, seen, stop.clone()));
    let idle = idle::measure(&options, &media_url, pid, &events_tx, note).await;
    note(&format!(
        "{} calls starting over {:.1} s",
        options.calls,
        options.ramp.as_secs_f64()
    ));
    let started = Instant::now();
    let cpu_before = pid.and_then(process::cpu_seconds);
    let own_before = process::cpu_seconds(std::process::id());
    let rss_peak = RssPeak::start(pid);
    let mut callers = JoinSet::new();
    for call in 0..options.calls {
        let plan = Plan {
            call,
            url: media_url.clone(),
            script: Some(script_of(call)),
            plays: options.plays,
            greeted: None,
        };
        tokio::time::sleep_until(ramp_at(started, &options, call).into()).await;
        callers.spawn(caller::run(
            plan,
            events_tx.clone(),
            CancellationToken::new(),
        ));
    }
    while callers.join_next().await.is_some() {}
    let wall = started.elapsed();
    let cpu = cpu_before
        .zip(pid.and_then(process::cpu_seconds))
        .map(|(a, b)| b - a);
    let own_cpu = own_before
        .zip(process::cpu_seconds(std::process::id()))
        .map(|(a, b)| b - a);
    let rss_peak = rss_peak.stop().await;
    drop(events_tx);
    stop.cancel();
    let collected = collector
        .await
        .map_err(|e| LoadError::Server(format!("the collector failed: {e}")))?;
    drop(child);
    stand_ins.shutdown().await;
    let rule = TurnRule {
        silence: (options.turn_detection != "deepgram").then_some(options.silence_timeout),
    };
    Ok(report::build(report::Inputs {
        options: &options,
        collected: &collected,
        rule,
        idle,
        cpu,
        own_cpu,
        rss_peak,
        wall,
        probe_dropped: probe.dropped(),
        expected_turns: (0..options.calls)
            .map(|c| script_of(c).utterances.len() as u32 * options.plays.max(1))
            .sum(),
        barge_in_calls: (0..options.calls).filter(|&c| barges(c)).count() as u32,
    }))
}

/// When call `call` starts.
fn ramp_at(started: Instant, options: &Options, call: u32) -> Instant {
    let step = options.ramp.as_secs_f64() / f64::from(options.calls.max(1));
    started + Duration::from_secs_f64(step * f64::from(call))
}

/// The child server's environment: the stand-ins, and room for every call.
fn server_env(stand_ins: &StandIns, options: &Options) -> Vec<(&'static str, String)> {
    vec![
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
    ]
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

/// Samples the server's memory during the run, keeping the largest value.
struct RssPeak {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Option<u64>>,
}

impl RssPeak {
    fn start(pid: Option<u32>) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let pid = pid?;
            let mut peak = process::rss_kib(pid);
            let mut every = tokio::time::interval(RSS_EVERY);
            loop {
                tokio::select! {
                    () = token.cancelled() => return peak,
                    _ = every.tick() => peak = peak.max(process::rss_kib(pid)),
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> Option<u64> {
        self.stop.cancel();
        self.task.await.ok().flatten()
    }
}
