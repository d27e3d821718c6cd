#![allow(dead_code, unused_imports)]
//! The test environment: the real server wired to the simulated world's provider stand-ins
//! (`ivr_sim::standin`, with their record and fault hooks on) and the recorded calls, plus
//! helpers for instances, nginx, Redis and what a call must sound like. Included by several test
//! binaries with `mod support;`, hence `allow(dead_code)`.

pub mod expect;
pub mod fixture;
pub mod gather_phone;
pub mod instance;
pub mod nginx;
pub mod redis_server;
pub mod tool_endpoint;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fixture::Fixture;
pub use ivr_sim::caller::{ConnectAction, Inject, PlayOptions, Recording};
pub use ivr_sim::standin::{
    stt::transcript, Bank, Delays, LlmStandIn, Setup, SttStandIn, TtsStandIn,
};
pub use ivr_sim::twiml::{DialTarget, Instruction};
pub use ivr_sim::webhooks::{AfterStream, DialOutcome, TwilioHttp};

/// The Deepgram key the stand-ins expect and [`TestEnv`] configures.
pub const DEEPGRAM_KEY: &str = "test-deepgram-key";
/// The Mistral key the LLM stand-in expects and [`TestEnv`] configures.
pub const MISTRAL_KEY: &str = "test-mistral-key";

/// The STT stand-in's bank: every utterance of every recorded call, built once per binary.
pub fn stt_bank() -> Arc<Bank> {
    static BANK: OnceLock<Arc<Bank>> = OnceLock::new();
    let bank = BANK.get_or_init(|| {
        let mut bank = Bank::new();
        for fixture in fixture::all() {
            fixture.teach(&mut bank);
        }
        Arc::new(bank)
    });
    bank.clone()
}

/// Starts the STT stand-in for a test: recording, expecting [`DEEPGRAM_KEY`], knowing every
/// recorded utterance. It runs until the test's runtime ends.
pub async fn start_stt() -> SttStandIn {
    let setup = Setup::recording(DEEPGRAM_KEY);
    let started = SttStandIn::start(&setup, stt_bank(), &CancellationToken::new()).await;
    started.expect("the STT stand-in starts").0
}

/// Starts the TTS stand-in for a test: recording, expecting [`DEEPGRAM_KEY`], speaking tones
/// in awkward chunks after [`Delays::SHORT`].
pub async fn start_tts() -> TtsStandIn {
    let setup = Setup::recording(DEEPGRAM_KEY);
    let delay = Delays::SHORT.tts_first_byte;
    let started = TtsStandIn::start(&setup, delay, &CancellationToken::new()).await;
    started.expect("the TTS stand-in starts").0
}

/// Starts the LLM stand-in for a test: recording, expecting [`MISTRAL_KEY`], answering after
/// [`Delays::SHORT`].
pub async fn start_llm() -> LlmStandIn {
    let setup = Setup::recording(MISTRAL_KEY);
    let delays = (Delays::SHORT.llm_first_token, Delays::SHORT.llm_total);
    let started = LlmStandIn::start(&setup, delays, &CancellationToken::new()).await;
    started.expect("the LLM stand-in starts").0
}

/// Plays `fixture` into `ws_url` as Twilio would, with default options.
pub async fn replay(ws_url: &str, fixture: &Fixture) -> Recording {
    replay_with(ws_url, fixture, PlayOptions::default()).await
}

/// Plays `fixture` into `ws_url` as `options` say. Panics if the socket cannot be opened
/// (test setup).
pub async fn replay_with(ws_url: &str, fixture: &Fixture, options: PlayOptions) -> Recording {
    let quiet = &mut ivr_sim::caller::Quiet;
    let played = ivr_sim::caller::play_with(ws_url, fixture, &options, None, quiet).await;
    played.unwrap_or_else(|e| panic!("{e}"))
}

/// Serves `app` on an ephemeral local port for the rest of the test; returns the address.
pub async fn spawn_http(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a test server's port");
    let addr = listener.local_addr().expect("test server's local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Spawns a system tool (nginx, redis-server) with no terminal I/O. Panics with an install hint
/// when it is missing: the tests that need it need a real one.
pub fn spawn_tool(command: &mut std::process::Command, package: &str) -> std::process::Child {
    use std::process::Stdio;
    let tool = command.get_program().to_string_lossy().into_owned();
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "{tool} is not installed, and these tests need a real one: \
             run `apt-get install -y {package}` (CI's .ci/run does)"
        ),
        Err(err) => panic!("cannot run {tool}: {err}"),
    }
}

/// Sends the server's and stand-ins' `tracing` output to the test's captured output. Safe to call
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
/// a stand-in's record without sleeping a fixed time.
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

/// The real server wired to the three stand-ins, all on ephemeral local ports.
pub struct TestEnv {
    /// Where the server listens.
    pub server: SocketAddr,
    /// The Deepgram live STT stand-in (bank: every fixture utterance).
    pub stt: SttStandIn,
    /// The Deepgram TTS stand-in.
    pub tts: TtsStandIn,
    /// The Mistral stand-in.
    pub llm: LlmStandIn,
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
    /// Starts the stand-ins and the server with the default test configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestEnv::start`], letting the test adjust the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut ivr_bridge::Config)) -> Self {
        init_tracing();
        let stt = start_stt().await;
        let tts = start_tts().await;
        let llm = start_llm().await;
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

    /// Twilio's HTTP side for this server: signing with its `TWILIO_AUTH_TOKEN` (if set), and
    /// reaching it through its local address when `PUBLIC_URL` names another host (a tunnel).
    pub fn twilio(&self) -> TwilioHttp {
        let token = self
            .config
            .twilio
            .auth_token()
            .map(|t| t.expose().to_owned());
        let twilio = TwilioHttp::new(token.as_deref());
        match &self.config.twilio.public_url {
            Some(_) => twilio.via(&self.http_url()),
            None => twilio,
        }
    }

    /// A whole streaming call as Twilio makes it: the voice webhook (`POST /`) for the
    /// fixture's call, the fixture played into the `<Stream>` (this server's `/media`), and, if
    /// the server closes the stream first, its `<Connect action>` followed
    /// ([`Recording::after_stream`]), the dialled party of a transfer behaving as `dial` says.
    /// `options.connect_action` is filled in from the TwiML. The stream's handshake is not
    /// signed: use a server without `TWILIO_AUTH_TOKEN`.
    pub async fn call_through_twilio(
        &self,
        fixture: &str,
        dial: DialOutcome,
        options: PlayOptions,
    ) -> Recording {
        let fixture = fixture::load(fixture);
        let twilio = self.twilio();
        let webhook = match &self.config.twilio.public_url {
            Some(public) => format!("{}/", public.as_str().trim_end_matches('/')),
            None => format!("{}/", self.http_url()),
        };
        let connect = twilio
            .incoming_call(&webhook, &fixture.sidecar.call_sid)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let connect_action = connect
            .action
            .map(|url| ConnectAction { url, twilio, dial });
        let options = PlayOptions {
            connect_action,
            ..options
        };
        replay_with(&self.media_url(), &fixture, options).await
    }

    /// Replays the named fixture into the server with default options.
    pub async fn replay(&self, fixture: &str) -> Recording {
        replay(&self.media_url(), &fixture::load(fixture)).await
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

/// The server configuration pointing at the stand-ins.
fn test_config(stt: &SttStandIn, tts: &TtsStandIn, llm: &LlmStandIn) -> ivr_bridge::Config {
    ivr_bridge::Config::builder()
        .set("PORT", "0")
        .set("DEEPGRAM_API_KEY", DEEPGRAM_KEY)
        .set("MISTRAL_API_KEY", MISTRAL_KEY)
        .set("DEEPGRAM_STT_URL", stt.url())
        .set("DEEPGRAM_FLUX_URL", stt.flux_url())
        .set("DEEPGRAM_TTS_URL", tts.url())
        .set("MISTRAL_API_URL", llm.url())
        .set("SILENCE_TIMEOUT_MS", "600")
        // Most tests count model requests and reply numbers; tests/preemptive.rs turns it on.
        .set("PREEMPTIVE_GENERATION", "false")
        .build()
        .expect("the stand-ins' configuration")
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
/// text's stand-in audio, framed.
pub fn spoken(texts: &[String]) -> Vec<u8> {
    texts.iter().flat_map(|text| framed(&tones(text))).collect()
}

/// The TTS stand-in's audio for `text` in tests ([`ivr_sim::standin::Voice::Tones`]).
pub fn tones(text: &str) -> Vec<u8> {
    ivr_sim::standin::voice::tones(text)
}
