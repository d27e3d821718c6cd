//! Local stand-ins for the providers: Deepgram live STT, Deepgram TTS and Mistral chat
//! completions, each an HTTP server on `127.0.0.1:0` speaking the provider's real wire format.
//!
//! They let the real server run a whole call with no account and no network: `ivr-bridge demo`
//! uses them, and a load generator can too (the artificial [`Delays`] are plain fields for that).
//! They are not test fakes: they record nothing (unless the load generator attaches a
//! [`probe::Probe`], which only timestamps what they do), have no fault hooks, keep memory bounded
//! per connection, and stop cleanly with [`StandIns::shutdown`].

pub mod bank;
pub mod faq;
pub mod llm;
pub mod probe;
pub mod recognizer;
pub mod stt;
pub mod tts;
pub mod voice;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use bank::Bank;
pub use probe::Probe;

use ivr_bridge::{Config, Secret};

/// The key every stand-in expects: they check it like the providers do, so a server that forgets
/// its `Authorization` header fails here as it would in production.
pub const STAND_IN_KEY: &str = "local-stand-in";

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
#[derive(Debug)]
pub struct StandIns {
    /// Where the STT stand-in listens.
    pub stt: SocketAddr,
    /// Where the TTS stand-in listens.
    pub tts: SocketAddr,
    /// Where the LLM stand-in listens.
    pub llm: SocketAddr,
    /// Stops the servers and closes open STT sockets.
    shutdown: CancellationToken,
    /// The three server tasks, awaited on shutdown.
    tasks: Vec<JoinHandle<()>>,
}

impl StandIns {
    /// Starts all three; the STT stand-in recognises the utterances of `bank`.
    pub async fn start(bank: Bank, delays: Delays) -> Result<Self, StandInError> {
        Self::start_probed(bank, delays, None, 0).await
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
        let port = |offset: u16| {
            if base_port == 0 {
                0
            } else {
                base_port.saturating_add(offset)
            }
        };
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::with_capacity(3);
        let stt_app = stt::router(
            STAND_IN_KEY,
            Arc::new(bank),
            shutdown.clone(),
            probe.clone(),
        );
        let tts_app = tts::router(STAND_IN_KEY, delays.tts_first_byte, probe.clone());
        let llm_app = llm::router(
            STAND_IN_KEY,
            delays.llm_first_token,
            delays.llm_total,
            probe,
        );
        let stt = spawn("STT", stt_app, port(0), &shutdown, &mut tasks).await?;
        let tts = spawn("TTS", tts_app, port(1), &shutdown, &mut tasks).await?;
        let llm = spawn("LLM", llm_app, port(2), &shutdown, &mut tasks).await?;
        Ok(Self {
            stt,
            tts,
            llm,
            shutdown,
            tasks,
        })
    }

    /// Points `config` at the stand-ins: their URLs and the key they expect.
    pub fn configure(&self, config: &mut Config) {
        let url = |s: String| reqwest::Url::parse(&s).ok();
        if let Some(u) = url(format!("ws://{}/v1/listen", self.stt)) {
            config.stt.deepgram_stt_url = u;
        }
        if let Some(u) = url(format!("http://{}/v1/speak", self.tts)) {
            config.tts.deepgram_tts_url = u;
        }
        if let Some(u) = url(format!("http://{}/v1/chat/completions", self.llm)) {
            config.llm.mistral_api_url = u;
        }
        config.keys.deepgram_api_key = Some(Secret::new(STAND_IN_KEY));
        config.keys.mistral_api_key = Some(Secret::new(STAND_IN_KEY));
    }

    /// Stops accepting, closes open sockets and waits for the servers to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds `127.0.0.1:port` (0: any free port) and serves `app` until `shutdown` fires.
async fn spawn(
    which: &'static str,
    app: Router,
    port: u16,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<SocketAddr, StandInError> {
    let bind = |source| StandInError::Bind { which, source };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!(%err, "{which} stand-in stopped with an error");
        }
    }));
    Ok(addr)
}

/// Whether the request's `Authorization` header is exactly `expected`.
fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes())
}

/// A unique, UUID-shaped id: the providers put one in every response.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}
