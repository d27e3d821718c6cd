//! Local stand-ins for the providers: Deepgram live STT (and Flux beside it), Deepgram TTS and
//! Mistral chat completions, each an HTTP server on `127.0.0.1:0` speaking the provider's real wire format.
//!
//! They let the real server run a whole call with no account and no network: `ivr-bridge demo`
//! and the load generator use them as they are, the behaviour tests with their hooks on. Every
//! hook is off by default and bounded when on: a record of what each stand-in received
//! ([`Setup::record`], read through [`stt::SttStandIn::connections`] and friends), fault
//! injection (refusals, disconnects, delays, error statuses: methods on each handle, inert until
//! called) and the load generator's [`probe::Probe`], which only timestamps what they do. They
//! keep memory bounded per connection and stop cleanly with [`StandIns::shutdown`].

pub mod bank;
pub mod faq;
pub mod flux;
mod flux_conn;
mod flux_query;
mod frames;
pub mod hooks;
pub mod llm;
pub mod llm_order;
mod llm_reply;
pub mod llm_rules;
pub mod llm_tools;
pub mod probe;
pub mod recognizer;
pub mod stt;
mod stt_conn;
mod stt_record;
mod stt_shared;
pub mod tts;
mod tts_body;
mod tts_shared;
pub mod voice;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use bank::Bank;
pub use hooks::{Delay, Journal};
pub use llm::{LlmStandIn, ToolCallShape};
pub use probe::Probe;
pub use stt::SttStandIn;
pub use tts::{Chunking, TtsStandIn};
pub use voice::Voice;

use ivr_bridge::{Config, Secret};

/// The key every stand-in expects unless told otherwise: they check it like the providers do,
/// so a server that forgets its `Authorization` header fails here as it would in production.
pub const STAND_IN_KEY: &str = "local-stand-in";

/// How a stand-in runs: the key it expects, its hooks, where it listens and how it sounds.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The key it expects (`Token <key>` for Deepgram, `Bearer <key>` for Mistral).
    pub key: String,
    /// Keep a record of what it receives, for a test to read; off for the demo and the load
    /// generator, which pay nothing for it then.
    pub record: bool,
    /// The load generator's observer, when it runs one.
    pub probe: Option<Probe>,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// How the TTS stand-in sounds.
    pub voice: Voice,
    /// How the TTS stand-in cuts its audio into body chunks.
    pub chunking: Chunking,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            key: STAND_IN_KEY.to_owned(),
            record: false,
            probe: None,
            port: 0,
            voice: Voice::Hum,
            chunking: Chunking::Even,
        }
    }
}

impl Setup {
    /// What behaviour tests want: `key`, a record of everything, audio that can be compared
    /// byte for byte ([`Voice::Tones`]) and cut awkwardly ([`Chunking::Awkward`]).
    pub fn recording(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            record: true,
            voice: Voice::Tones,
            chunking: Chunking::Awkward,
            ..Self::default()
        }
    }

    /// The same setup on another port.
    fn on_port(&self, port: u16) -> Self {
        Self {
            port,
            ..self.clone()
        }
    }
}

/// How slow the stand-ins pretend to be. Defaults are in the range real providers show, so a
/// demo's latencies look like a real call's.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    /// Mistral: time to the first streamed chunk.
    pub llm_first_token: Duration,
    /// Mistral: time to the whole reply (to the last chunk when streaming).
    pub llm_total: Duration,
    /// Deepgram TTS: time to the first audio byte.
    pub tts_first_byte: Duration,
}

impl Delays {
    /// Short but real delays, so behaviour tests run fast and still see providers take time.
    pub const SHORT: Self = Self {
        llm_first_token: Duration::from_millis(50),
        llm_total: Duration::from_millis(50),
        tts_first_byte: Duration::from_millis(20),
    };
}

impl Default for Delays {
    fn default() -> Self {
        Self {
            llm_first_token: Duration::from_millis(250),
            llm_total: Duration::from_millis(600),
            tts_first_byte: Duration::from_millis(150),
        }
    }
}

/// A stand-in server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// No local port could be bound.
    #[error("the {which} stand-in cannot listen on 127.0.0.1: {source}")]
    Bind {
        /// Which stand-in.
        which: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// The three running stand-ins.
pub struct StandIns {
    /// The STT stand-in.
    pub stt: SttStandIn,
    /// The TTS stand-in.
    pub tts: TtsStandIn,
    /// The LLM stand-in.
    pub llm: LlmStandIn,
    /// The key all three expect.
    key: String,
    /// Stops the servers and closes open STT sockets.
    shutdown: CancellationToken,
    /// The three server tasks, awaited on shutdown.
    tasks: Vec<JoinHandle<()>>,
}

impl StandIns {
    /// Starts all three; the STT stand-in recognises the utterances of `bank`.
    pub async fn start(bank: Bank, delays: Delays) -> Result<Self, StandInError> {
        Self::start_with(&Setup::default(), Arc::new(bank), delays).await
    }

    /// Starts all three, reporting what they see to `probe` when there is one (the load
    /// generator's timestamps). With `base_port` 0 each takes a free port; otherwise STT, TTS
    /// and LLM listen on `base_port`, `base_port + 1` and `base_port + 2`, so a server started
    /// beforehand can be pointed at them.
    pub async fn start_probed(
        bank: Bank,
        delays: Delays,
        probe: Option<Probe>,
        base_port: u16,
    ) -> Result<Self, StandInError> {
        let setup = Setup {
            probe,
            port: base_port,
            ..Setup::default()
        };
        Self::start_with(&setup, Arc::new(bank), delays).await
    }

    /// Starts all three as `setup` says (ports: see [`StandIns::start_probed`]).
    pub async fn start_with(
        setup: &Setup,
        bank: Arc<Bank>,
        delays: Delays,
    ) -> Result<Self, StandInError> {
        let port = |offset: u16| {
            if setup.port == 0 {
                0
            } else {
                setup.port.saturating_add(offset)
            }
        };
        let shutdown = CancellationToken::new();
        let (stt, stt_task) = SttStandIn::start(&setup.on_port(port(0)), bank, &shutdown).await?;
        let tts_setup = setup.on_port(port(1));
        let (tts, tts_task) =
            TtsStandIn::start(&tts_setup, delays.tts_first_byte, &shutdown).await?;
        let llm_delays = (delays.llm_first_token, delays.llm_total);
        let llm_setup = setup.on_port(port(2));
        let (llm, llm_task) = LlmStandIn::start(&llm_setup, llm_delays, &shutdown).await?;
        Ok(Self {
            stt,
            tts,
            llm,
            key: setup.key.clone(),
            shutdown,
            tasks: vec![stt_task, tts_task, llm_task],
        })
    }

    /// Points `config` at the stand-ins: their URLs and the key they expect.
    pub fn configure(&self, config: &mut Config) {
        let url = |s: String| reqwest::Url::parse(&s).ok();
        if let Some(u) = url(self.stt.url()) {
            config.stt.deepgram_stt_url = u;
        }
        if let Some(u) = url(self.stt.flux_url()) {
            config.flux.deepgram_flux_url = u;
        }
        if let Some(u) = url(self.tts.url()) {
            config.tts.deepgram_tts_url = u;
        }
        if let Some(u) = url(self.llm.url()) {
            config.llm.mistral_api_url = u;
        }
        config.keys.deepgram_api_key = Some(Secret::new(&self.key));
        config.keys.mistral_api_key = Some(Secret::new(&self.key));
    }

    /// Stops accepting, closes open sockets and waits for the servers to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds `127.0.0.1:setup.port` (0: any free port) and serves the `which` stand-in's `app` until
/// `shutdown` fires; returns the address and the server task.
async fn serve(
    which: &'static str,
    app: Router,
    setup: &Setup,
    shutdown: &CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), StandInError> {
    let bind = |source| StandInError::Bind { which, source };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", setup.port))
        .await
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!(%err, "{which} stand-in stopped with an error");
        }
    });
    Ok((addr, task))
}
