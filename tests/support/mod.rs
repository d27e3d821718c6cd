#![allow(dead_code)]
//! Test support: fakes of Deepgram STT/TTS and Mistral on `127.0.0.1:0` speaking the real wire
//! formats, the recorded calls, a Twilio replayer, and [`TestEnv`] wiring them to the real
//! server. Included by several test binaries with `mod support;`, hence `allow(dead_code)`.

pub mod expect;
pub mod fake_mistral;
pub mod fake_stt;
pub mod fake_tts;
pub mod faq;
pub mod fixture;
pub mod gather_phone;
pub mod instance;
pub mod mistral_reply;
pub mod mistral_rules;
pub mod nginx;
pub mod redis_server;
pub mod replay_log;
pub mod replayer;
pub mod stt_bank;
pub mod stt_conn;
pub mod stt_engine;
pub mod twilio_model;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fake_mistral::FakeMistral;
pub use fake_stt::FakeStt;
pub use fake_tts::FakeTts;
pub use fixture::Fixture;
pub use replayer::{replay, ReplayLog};
pub use stt_bank::SttBank;

/// The Deepgram key the fakes expect and [`TestEnv`] configures.
pub const DEEPGRAM_KEY: &str = "test-deepgram-key";
/// The Mistral key the fake expects and [`TestEnv`] configures.
pub const MISTRAL_KEY: &str = "test-mistral-key";

/// Serves `app` on an ephemeral local port for the rest of the test; returns the address.
pub async fn spawn_http(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a fake's port");
    let addr = listener.local_addr().expect("fake's local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Sends the server's and fakes' `tracing` output to the test's captured output. Safe to call
/// from every test (only the first call installs); `RUST_LOG` overrides the default filter.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ivr_bridge=debug,info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `condition` every 10 ms until it holds; `false` if `limit` passed first. For waiting on
/// a fake's record without sleeping a fixed time.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The real server wired to the three fakes, all on ephemeral local ports.
pub struct TestEnv {
    /// Where the server listens.
    pub server: SocketAddr,
    /// Fake Deepgram live STT (bank: every fixture utterance).
    pub stt: FakeStt,
    /// Fake Deepgram TTS.
    pub tts: FakeTts,
    /// Fake Mistral.
    pub llm: FakeMistral,
    /// The configuration the server was started with.
    pub config: ivr_bridge::Config,
    /// The server's shared state (live calls, drain).
    pub state: Arc<ivr_bridge::AppState>,
    /// Fires the server's graceful shutdown.
    shutdown: Option<oneshot::Sender<()>>,
    /// The server task, to await its exit.
    task: Option<JoinHandle<Result<(), ivr_bridge::server::ServeError>>>,
}

impl TestEnv {
    /// Starts the fakes and the server with the default test configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestEnv::start`], letting the test adjust the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut ivr_bridge::Config)) -> Self {
        init_tracing();
        let stt = FakeStt::start(SttBank::shared()).await;
        let tts = FakeTts::start().await;
        let llm = FakeMistral::start().await;
        let mut config = test_config(&stt, &tts, &llm);
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the server's port");
        let server = listener.local_addr().expect("server's local address");
        let (tx, rx) = oneshot::channel::<()>();
        let state = Arc::new(ivr_bridge::AppState::new(config.clone()).expect("server state"));
        let task = tokio::spawn(ivr_bridge::server::serve_state(
            listener,
            state.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            server,
            stt,
            tts,
            llm,
            config,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `ws://127.0.0.1:PORT/media`, where Twilio's media stream connects.
    pub fn media_url(&self) -> String {
        format!("ws://{}/media", self.server)
    }

    /// `http://127.0.0.1:PORT`, for the webhooks.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.server)
    }

    /// Replays the named fixture into the server with default options.
    pub async fn replay(&self, fixture: &str) -> ReplayLog {
        replay(&self.media_url(), &Fixture::load(fixture)).await
    }

    /// Starts the server's graceful shutdown and waits up to `limit` for it to finish.
    /// Returns whether it finished in time.
    pub async fn shutdown(mut self, limit: Duration) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(limit, task).await.is_ok(),
            None => true,
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The server configuration pointing at the fakes: the defaults, with a shorter silence timer.
fn test_config(stt: &FakeStt, tts: &FakeTts, llm: &FakeMistral) -> ivr_bridge::Config {
    ivr_bridge::Config::builder()
        .set("PORT", "0")
        .set("DEEPGRAM_API_KEY", DEEPGRAM_KEY)
        .set("MISTRAL_API_KEY", MISTRAL_KEY)
        .set("DEEPGRAM_STT_URL", stt.url())
        .set("DEEPGRAM_TTS_URL", tts.url())
        .set("MISTRAL_API_URL", llm.url())
        .set("SILENCE_TIMEOUT_MS", "600")
        .build()
        .expect("the fakes' configuration")
}

/// What Twilio must receive for TTS audio `audio`: the same bytes, padded with μ-law silence
/// (0xFF) to whole 160-byte frames.
pub fn framed(audio: &[u8]) -> Vec<u8> {
    let mut out = audio.to_vec();
    while out.len() % fixture::FRAME_BYTES != 0 {
        out.push(0xFF);
    }
    out
}

/// The outbound audio the server must send when TTS was asked for `texts`, in order: each
/// text's fake audio, framed.
pub fn spoken(texts: &[String]) -> Vec<u8> {
    texts
        .iter()
        .flat_map(|text| framed(&fake_tts::audio_for(text)))
        .collect()
}
