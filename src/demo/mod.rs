//! `ivr-bridge demo`: a whole phone call on this machine, in one command.
//!
//! Starts the real server on `127.0.0.1:0` (with the local [`ivr_sim::standin`]s unless both
//! provider keys are set), plays a recorded call into `/media` over a real WebSocket in real time
//! as Twilio would, tells the call as it happens, and writes a two-channel WAV of it: the caller
//! on the left as sent, the assistant on the right as heard on the line.

pub mod relay;
pub mod story;

use ivr_bridge::audio::wav;
use ivr_sim::caller as player;
use ivr_sim::fixture;
use ivr_sim::webhooks::TwilioHttp;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ivr_bridge::audio::mulaw;
use ivr_bridge::config::Config;
use ivr_bridge::events::{CallEvents, CallObserver};
use ivr_bridge::server::{AppState, ServeError};
use ivr_sim::standin::{Delays, StandInError, StandIns};

pub use story::TurnLatency;

/// The fixture played when none is named.
pub const DEFAULT_FIXTURE: &str = "fixtures/calls/demo.jsonl";
/// Where the recording goes when no path is named.
pub const DEFAULT_OUT: &str = "demo-call.wav";
/// The demo's silence timeout unless `SILENCE_TIMEOUT_MS` is set: the recorded callers speak again
/// a few seconds after a question (`three_turns` 6 s later; `demo` is timed for this timer), and
/// with the 2 s default the end of each reply would be cut off by the next question.
pub const DEMO_SILENCE_TIMEOUT: Duration = Duration::from_millis(1000);
/// The demo's greeting: short enough to finish before the recorded caller speaks at 2 s.
pub const DEMO_GREETING: &str = "Hello, how can I help?";
/// How long the server and the stand-ins get to stop once the call is over.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(3);
/// Sample rate of the line and of the WAV.
const SAMPLE_RATE: u32 = 8000;
/// Call events buffered between the in-process server and whoever tells the call.
const EVENT_QUEUE: usize = 256;

/// Which providers the call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Providers {
    /// The local stand-ins (no keys, no network).
    StandIns,
    /// Deepgram and Mistral themselves, at the configured URLs.
    Real,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The recording (`.jsonl`, with its `.json` sidecar beside it).
    pub fixture: PathBuf,
    /// Where the WAV goes.
    pub out: PathBuf,
    /// The server's configuration; with stand-ins, its URLs and keys are replaced.
    pub config: Config,
    /// Stand-ins or the real providers.
    pub providers: Providers,
    /// Why the silence timeout is what it is, printed in the header.
    pub silence_note: String,
}

/// The demo could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The recording is unusable.
    #[error(transparent)]
    Fixture(#[from] fixture::FixtureError),
    /// A stand-in did not start.
    #[error(transparent)]
    StandIn(#[from] StandInError),
    /// The server could not start or failed.
    #[error("the server failed: {0}")]
    Server(String),
    /// The call could not be played.
    #[error(transparent)]
    Play(#[from] player::PlayError),
    /// The relay session could not be played.
    #[error(transparent)]
    Relay(#[from] ivr_sim::relay::RelayError),
    /// The WAV could not be written.
    #[error("cannot write {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the demo call, printing its story to `out`.
pub async fn run(mut options: DemoOptions, out: &mut (dyn Write + Send)) -> Result<(), DemoError> {
    let fixture = fixture::CallFixture::load(&options.fixture)?;
    let mut local = LocalServer::start(&fixture, options.providers, &mut options.config).await?;
    let mut story = story::Story::new(out);
    header(&mut story, &options, &fixture, local.addr);
    let url = format!("ws://{}/media", local.addr);
    // Twilio asks the voice webhook first, and follows its <Connect action> once the server
    // closes the stream (the assistant ended or transferred the call).
    let twilio = TwilioHttp::new(options.config.twilio.auth_token().map(|t| t.expose()));
    let webhook = format!("http://{}/", local.addr);
    let connect_action = match twilio
        .incoming_call(&webhook, &fixture.sidecar.call_sid)
        .await
    {
        Ok(connect) => connect.action.map(|url| player::ConnectAction {
            url,
            twilio,
            dial: ivr_sim::webhooks::DialOutcome::NoAnswer,
        }),
        Err(err) => {
            story.note(&format!(
                "(the voice webhook did not answer as Twilio needs: {err})"
            ));
            None
        }
    };
    let play = player::PlayOptions {
        connect_action,
        ..player::PlayOptions::default()
    };
    let played =
        player::play_with(&url, &fixture, &play, Some(&mut local.events), &mut story).await;
    local.stop().await?;
    let recording = played?;
    let turns = story.turns().to_vec();
    let duration = write_wav(&options.out, &recording.caller, &recording.assistant)?;
    summary(&mut story, &turns, &options.out, duration);
    Ok(())
}

/// The real server on `127.0.0.1:0` in this process, its stand-ins, and its call events: what
/// `demo` and `replay` play a recording into.
pub struct LocalServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What its calls publish.
    pub events: CallEvents,
    /// Ends the server.
    stop: oneshot::Sender<()>,
    /// The server task.
    server: JoinHandle<Result<(), ServeError>>,
    /// The stand-ins, when used.
    stand_ins: Option<StandIns>,
}

impl LocalServer {
    /// Starts the stand-ins (recognising `fixture`'s utterances) unless `providers` says the
    /// real ones, points `config` at them, and starts the server.
    pub async fn start(
        fixture: &fixture::CallFixture,
        providers: Providers,
        config: &mut Config,
    ) -> Result<Self, DemoError> {
        let stand_ins = match providers {
            Providers::StandIns => {
                let s = StandIns::start(fixture.bank(), Delays::default()).await?;
                s.configure(config);
                Some(s)
            }
            Providers::Real => None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DemoError::Server(format!("cannot listen on 127.0.0.1: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::Server(e.to_string()))?;
        let (observer, events) = CallObserver::channel(EVENT_QUEUE);
        let state = AppState::observed(config.clone(), Some(observer))
            .map_err(|e| DemoError::Server(e.to_string()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(ivr_bridge::server::serve_state(
            listener,
            Arc::new(state),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            events,
            stop,
            server,
            stand_ins,
        })
    }

    /// Stops the server and the stand-ins, each within a bounded time.
    pub async fn stop(self) -> Result<(), DemoError> {
        let _ = self.stop.send(());
        let served = tokio::time::timeout(SHUTDOWN_LIMIT, self.server).await;
        if let Some(s) = self.stand_ins {
            // Bounded: a stuck stand-in must not keep the caller from finishing.
            let _ = tokio::time::timeout(SHUTDOWN_LIMIT, s.shutdown()).await;
        }
        match served {
            Ok(Ok(Err(err))) => Err(DemoError::Server(err.to_string())),
            _ => Ok(()),
        }
    }
}

fn header(
    story: &mut story::Story<'_>,
    options: &DemoOptions,
    fixture: &fixture::CallFixture,
    addr: std::net::SocketAddr,
) {
    story.note("ivr-bridge demo: a whole phone call on this machine");
    describe_call(story, fixture);
    story.note(&format!(
        "  server     ivr-bridge on {addr}, the caller is played as Twilio would"
    ));
    let providers = match options.providers {
        Providers::StandIns => {
            "Deepgram and Mistral are local stand-ins; set DEEPGRAM_API_KEY and \
MISTRAL_API_KEY to use the real services. The stand-in recogniser knows this recording's \
utterances; the stand-in assistant answers from a small hospital FAQ; its voice is a hum whose \
length follows the text."
        }
        Providers::Real => "Deepgram and Mistral are the real services (both API keys are set).",
    };
    story.note(&format!("  providers  {providers}"));
    story.note(&format!("  turn end   {}", options.silence_note));
    story.note("");
}

/// The header's line about the recording played.
fn describe_call(story: &mut story::Story<'_>, fixture: &fixture::CallFixture) {
    let s = &fixture.sidecar;
    story.note(&format!(
        "  call       {} ({:.1} s): {}",
        fixture.path.display(),
        s.duration_ms as f64 / 1000.0,
        s.description
    ));
}

fn summary(
    story: &mut story::Story<'_>,
    turns: &[TurnLatency],
    wav: &std::path::Path,
    d: Duration,
) {
    story.note("");
    story.note(&format!("{} answered turn(s):", turns.len()));
    for (i, t) in turns.iter().enumerate() {
        let opt = |d: Option<Duration>| d.map_or("-".to_owned(), story::ms);
        story.note(&format!(
            "  turn {}: speech end → turn end {}, → reply text +{}, caller's silence before the reply {}",
            i + 1,
            story::ms(t.turn_end),
            opt(t.first_phrase),
            opt(t.first_audio),
        ));
    }
    story.note(&format!(
        "recording: {} ({:.1} s, 8 kHz stereo: left = caller as sent, right = assistant as heard)",
        wav.display(),
        d.as_secs_f64()
    ));
}

/// Writes both channels (μ-law) as 16-bit PCM; returns the recording's length.
fn write_wav(
    path: &std::path::Path,
    caller: &[u8],
    assistant: &[u8],
) -> Result<Duration, DemoError> {
    let decode = |audio: &[u8]| {
        audio
            .iter()
            .map(|&b| mulaw::decode(b))
            .collect::<Vec<i16>>()
    };
    let (left, right) = (decode(caller), decode(assistant));
    let frames = left.len().max(right.len());
    let mut bytes = Vec::with_capacity(wav::HEADER_BYTES + frames * 4);
    let io = |source| DemoError::Wav {
        path: path.to_owned(),
        source,
    };
    wav::write_stereo(&mut bytes, SAMPLE_RATE, &left, &right).map_err(io)?;
    std::fs::write(path, bytes).map_err(io)?;
    Ok(Duration::from_micros(
        frames as u64 * 1_000_000 / u64::from(SAMPLE_RATE),
    ))
}
