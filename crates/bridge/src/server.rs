//! The HTTP surface: the TwiML webhook, the Media Stream and ConversationRelay upgrades, what
//! follows a stream or a session ([`crate::stream_ended`]), the Gather flow's webhooks
//! ([`crate::gather`]) and the health check.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::call::reply::Voice;
use crate::call::{self, CallServices};
use crate::config::{Config, Mode, TurnDetection};
use crate::events::CallObserver;
use crate::gather::{self, GatherServices};
use crate::llm::mistral::Mistral;
use crate::memory::{self, TrimPolicy};
use crate::metrics::Metrics;
use crate::record::format::RecordedSettings;
use crate::record::Recorder;
use crate::relay::resume::Resumer;
use crate::relay::{self, Chunks, RelayServices, RELAY_PATH};
use crate::socket::SOCKET_READ_BUFFER;
use crate::store::{Store, StoreError, StoreOptions};
use crate::stream_ended::{self, StreamEndServices};
use crate::stt::deepgram::DeepgramStt;
use crate::stt::flux::FluxStt;
use crate::stt::Recogniser;
use crate::tools::Toolbox;
use crate::transcribe::{self, TranscribeServices};
use crate::tts::deepgram::DeepgramTts;
use crate::twilio::signature::{require_signature, SignatureCheck, Validator};
use crate::twilio::twiml::{self, Element};
use crate::twilio::url::{public_base, websocket_url};

/// How long an idle pooled provider connection is kept open.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(90);

/// What every request handler shares: configuration and the providers' clients. Per-call state
/// is never here; it lives in the call's own task.
#[derive(Debug)]
pub struct AppState {
    /// Validated settings.
    pub config: Config,
    /// Providers and settings every call uses.
    pub calls: Arc<CallServices>,
    /// The Gather flow's store, model client and page settings.
    pub gather: Arc<GatherServices>,
    /// The assistant's tools (built-in and the operator's), for every mode that has a model.
    pub toolbox: Arc<Toolbox>,
    /// Checks Twilio's request signatures (lets everything through when no auth token is set).
    pub signatures: Arc<SignatureCheck>,
    /// Counters and latencies served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Transcription mode's services; `None` in the assistant mode.
    pub transcribe: Option<Arc<TranscribeServices>>,
    /// `/stream_ended`: the next step a call recorded before its stream closed.
    pub stream_end: Arc<StreamEndServices>,
    /// Relay mode's services; `None` in the other modes.
    pub relay: Option<Arc<RelayServices>>,
    /// Calls in progress, `MAX_CALLS` and the drain.
    admission: Arc<Admission>,
}

impl AppState {
    /// State for a server with these settings: one pooled HTTP client for all provider requests.
    pub fn new(config: Config) -> Result<Self, ServeError> {
        Self::observed(config, None)
    }

    /// Like [`AppState::new`], with every call publishing its events to `observer`.
    pub fn observed(config: Config, observer: Option<CallObserver>) -> Result<Self, ServeError> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            .user_agent(concat!("ivr-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ServeError::HttpClient)?;
        let admission = Arc::new(Admission::new(config.server.max_calls));
        let store = open_store(&config)?;
        let mistral = || Mistral::new(http.clone(), &config.llm, config.keys.mistral());
        let metrics = Arc::new(Metrics::new());
        let relay_mode = config.server.mode == Mode::Relay;
        let stream_end = Arc::new(StreamEndServices {
            store: store.clone(),
            voice: config.gather.twilio_voice.clone(),
            public_url: config.twilio.public_url.clone(),
            resumer: relay_mode.then(|| Resumer {
                settings: config.relay.clone(),
                language: config.gather.language.clone(),
            }),
            metrics: metrics.clone(),
        });
        let toolbox = Arc::new(Toolbox::new(&config.tools, http.clone(), metrics.clone()));
        let gather = GatherServices::new(
            &config.gather,
            &config.assistant,
            store.clone(),
            (mistral(), config.llm.llm_timeout),
            (toolbox.clone(), config.tools.transfer()),
            admission.clone(),
            config.twilio.public_url.clone(),
        );
        let stt = DeepgramStt::new(&config.stt, config.keys.deepgram());
        let transcribe = (config.server.mode == Mode::Transcribe).then(|| {
            Arc::new(TranscribeServices::new(
                &config.transcribe,
                stt.clone(),
                &http,
                &metrics,
            ))
        });
        let recogniser = match config.turns.turn_detection {
            TurnDetection::Flux => Recogniser::Flux(FluxStt::new(
                &config.flux,
                config.keys.deepgram(),
                config.turns.preemptive_generation,
            )),
            TurnDetection::Timer | TurnDetection::Deepgram => Recogniser::Live(stt),
        };
        let shutdown = transcribe
            .as_ref()
            .map_or_else(CancellationToken::new, |t| t.shutdown.clone());
        let recorder = config.record.record_dir.clone().map(|dir| {
            let settings = RecordedSettings {
                greeting: config.assistant.greeting.clone(),
                silence_timeout_ms: config.turns.silence_timeout.as_millis() as u64,
                turn_detection: config.turns.turn_detection.to_string(),
            };
            Arc::new(Recorder::new(dir, settings))
        });
        let relay = relay_mode.then(|| {
            Arc::new(RelayServices {
                llm: mistral(),
                toolbox: toolbox.clone(),
                transfer: config.tools.transfer(),
                store: store.clone(),
                system_prompt: config.assistant.system_prompt.clone(),
                greeting: config.assistant.greeting.clone(),
                fallback_phrase: config.assistant.fallback_phrase.clone(),
                shutdown: shutdown.clone(),
                draining: matches!(store, Store::Redis(_)).then(|| admission.draining()),
                metrics: metrics.clone(),
                observer: observer.clone(),
                recorder: recorder.clone(),
                chunks: Chunks::default(),
            })
        });
        let calls = Arc::new(CallServices {
            stt: recogniser,
            voice: Arc::new(Voice::new(
                mistral(),
                DeepgramTts::new(http.clone(), &config.tts, config.keys.deepgram()),
                metrics.clone(),
            )),
            greeting: config.assistant.greeting.clone(),
            silence_timeout: config.turns.silence_timeout,
            turn_detection: config.turns.turn_detection,
            system_prompt: crate::store::instructions(
                &config.assistant.system_prompt,
                &config.assistant.greeting,
            )
            .into(),
            fallback_phrase: config.assistant.fallback_phrase.clone(),
            idle: config.idle.policy(),
            interruptions: config.turns.interruptions(),
            preemptive: config.turns.preemptive_generation,
            shutdown,
            metrics: metrics.clone(),
            observer,
            recorder: recorder.clone(),
            mirror: matches!(store, Store::Redis(_)).then(|| store.clone()),
            store: store.clone(),
            toolbox: toolbox.clone(),
            transfer: config.tools.transfer(),
        });
        Ok(Self {
            signatures: Arc::new(SignatureCheck {
                validator: config.twilio.auth_token().cloned().map(Validator::new),
                public_url: config.twilio.public_url.clone(),
            }),
            config,
            calls,
            gather: Arc::new(gather),
            toolbox,
            admission,
            metrics,
            transcribe,
            stream_end,
            relay,
        })
    }

    /// Media Streams in progress.
    pub fn live_calls(&self) -> usize {
        self.admission.live_calls()
    }

    /// True once a drain has begun: no new calls are taken.
    pub fn is_draining(&self) -> bool {
        self.admission.is_draining()
    }

    /// Stops taking calls, lets the calls in progress finish for up to `DRAIN_TIMEOUT_S`, then
    /// ends the rest. Webhooks of calls in progress are still served meanwhile (they may belong
    /// to a call another instance started), and Gather answers still being written are waited
    /// for, since another instance may be about to speak them.
    pub async fn drain(&self) {
        self.admission.start_draining();
        let replies = &self.gather.replies;
        replies.close();
        tracing::info!(
            calls = self.live_calls(),
            gather_replies = replies.len(),
            "draining: new calls are refused, calls in progress continue"
        );
        let limit = self.config.server.drain_timeout;
        let ended = async { tokio::join!(self.admission.all_ended(), replies.wait()) };
        let all_ended = tokio::time::timeout(limit, ended).await.is_ok();
        if all_ended && self.moves_relay_sessions() {
            // Twilio requests the `<Connect action>` of a session moved away right after its
            // `end`: answered here too if the balancer still sends it here.
            tokio::time::sleep(MOVED_ACTION_GRACE).await;
        }
        if !all_ended {
            tracing::warn!(
                calls = self.live_calls(),
                gather_replies = replies.len(),
                "drain timeout of {limit:?} reached: ending the calls still in progress"
            );
            self.calls.shutdown.cancel();
            let _ = tokio::time::timeout(CALL_END_GRACE, self.admission.all_ended()).await;
        }
        tracing::info!("drained: no call in progress");
    }

    /// Relay sessions move to another instance when the drain begins (relay mode with a shared
    /// store).
    fn moves_relay_sessions(&self) -> bool {
        self.relay.as_ref().is_some_and(|r| r.draining.is_some())
    }

    /// After the last request: waits (up to `DRAIN_TIMEOUT_S`) for Gather answers started by
    /// webhooks that came in during the drain, so none is lost with the process.
    async fn finish_replies(&self) {
        let replies = &self.gather.replies;
        replies.close();
        if replies.is_empty() {
            return;
        }
        let limit = self.config.server.drain_timeout;
        if tokio::time::timeout(limit, replies.wait()).await.is_err() {
            tracing::warn!(
                gather_replies = replies.len(),
                "exiting with Gather answers still being written"
            );
        }
    }
}

/// The conversation store: Redis when `REDIS_URL` is set (shared by every instance), else this
/// process's memory.
fn open_store(config: &Config) -> Result<Store, ServeError> {
    let options = StoreOptions::default();
    match &config.store.redis_url {
        Some(url) => Store::redis(url.expose(), options).map_err(|source| ServeError::Store {
            url: url.to_string(),
            source,
        }),
        None => Ok(Store::memory(options)),
    }
}

/// Says at start-up what the mode does with transcripts, or that the webhook URL is unused.
fn announce(config: &Config) {
    match (
        config.server.mode,
        &config.transcribe.transcript_webhook_url,
    ) {
        (Mode::Transcribe, Some(_)) => tracing::info!(
            "transcription mode: no assistant; transcripts are logged and sent to TRANSCRIPT_WEBHOOK_URL"
        ),
        (Mode::Transcribe, None) => tracing::info!(
            "transcription mode: no assistant; transcripts are logged (set TRANSCRIPT_WEBHOOK_URL to receive them)"
        ),
        (Mode::Converse | Mode::Relay, Some(_)) => tracing::warn!(
            "TRANSCRIPT_WEBHOOK_URL is ignored: it is used only with MODE=transcribe"
        ),
        (Mode::Converse | Mode::Relay, None) => {}
    }
    if config.server.mode == Mode::Relay {
        let relay = &config.relay;
        tracing::info!(
            tts_provider = relay.relay_tts_provider.as_str(),
            voice = %relay.relay_voice,
            transcription_provider = relay.relay_transcription_provider.as_str(),
            speech_model = %relay.relay_speech_model,
            interruptible = relay.relay_interruptible.as_str(),
            "relay mode: Twilio ConversationRelay listens and speaks, the model answers on /relay"
        );
    }
    if config.server.mode != Mode::Transcribe {
        let tools = &config.tools;
        let file = tools.tools_file.as_ref();
        tracing::info!(
            transfer_call = tools.transfer_to.is_some(),
            operator_tools = file.map_or(0, |f| f.tools.len()),
            tools_file = %file.map_or_else(String::new, |f| f.path.display().to_string()),
            "tools offered to the model: end_call, transfer_call when TRANSFER_TO is set, and TOOLS_FILE's"
        );
    }
}

/// How long the recordings of the last calls get to be written when the server stops.
const RECORDINGS_GRACE: Duration = Duration::from_secs(10);

/// How long a drained relay instance goes on serving after its last session moved away, for
/// the `<Connect action>` requests Twilio makes right after each `end`.
const MOVED_ACTION_GRACE: Duration = Duration::from_secs(2);

/// How long calls get to end after being told to, at the end of a drain.
const CALL_END_GRACE: Duration = Duration::from_secs(3);
/// How often the live calls are checked to see whether freed memory should go back to the
/// system ([`memory`]).
const TRIM_CHECK: Duration = Duration::from_secs(10);

/// The router, for `serve`, tests and tools that want to mount it themselves. Twilio's routes
/// require a valid signature when an auth token is configured; the health check does not.
pub fn app(state: Arc<AppState>) -> Router {
    let twilio = Router::new()
        .route("/", get(incoming_call).post(incoming_call))
        .route("/media", get(media_stream))
        .route(RELAY_PATH, get(relay_session))
        // Served in both modes: a call whose TwiML came from an assistant instance still gets a
        // clean `<Hangup/>` here rather than a 404 (Twilio would say "an application error").
        .merge(stream_ended::routes().with_state(state.stream_end.clone()))
        .merge(match state.transcribe {
            None => gather::routes().with_state(state.gather.clone()),
            Some(_) => Router::new(), // transcription mode: no assistant, no Gather flow
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.signatures.clone(),
            require_signature,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(twilio)
        .with_state(state)
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting connections failed.
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The providers' HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    /// The conversation store could not be set up from `REDIS_URL`.
    #[error("cannot use REDIS_URL={url}: {source}")]
    Store {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: StoreError,
    },
}

/// Serves on `listener` until `shutdown` resolves, then drains (see [`AppState::drain`]).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_state(listener, Arc::new(AppState::new(config)?), shutdown).await
}

/// [`serve`] with state the caller keeps a handle on (tests and tools read the live calls).
pub async fn serve_state(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if state.signatures.validator.is_none() {
        tracing::warn!(
            "TWILIO_AUTH_TOKEN is not set: Twilio request signatures are NOT checked, so anyone \
             who finds this server's URL can start calls"
        );
    }
    announce(&state.config);
    match &state.config.store.redis_url {
        Some(url) => {
            tracing::info!(%url, "conversations kept in Redis, shared by every instance");
            tokio::spawn(connect_store(state.gather.store.clone()));
        }
        None => tracing::info!(
            "Gather flow conversations kept in memory (set REDIS_URL to run several instances)"
        ),
    }
    let drained = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.drain().await;
        }
    };
    let trimming = tokio::spawn(release_memory_after_calls(state.clone()));
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Without TCP_NODELAY a media frame or a `clear` written while the previous write is not
    // yet acknowledged waits for that ACK (Nagle), up to tens of milliseconds.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY on a connection");
        }
    });
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(drained)
        .await;
    trimming.abort();
    served?;
    if let Some(recorder) = &state.calls.recorder {
        recorder.finish(RECORDINGS_GRACE).await;
    }
    state.finish_replies().await;
    Ok(())
}

/// Every [`TRIM_CHECK`], hands the memory of ended calls back to the system once the live calls
/// have fallen to half their peak since the last time ([`memory`]).
async fn release_memory_after_calls(state: Arc<AppState>) {
    let mut policy = TrimPolicy::default();
    let mut checks = tokio::time::interval(TRIM_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        let live = state.admission.live_calls();
        if policy.check(live) {
            // Off the runtime's threads: the trim walks the heap under the allocator's lock.
            let started = std::time::Instant::now();
            let released = tokio::task::spawn_blocking(memory::release_freed).await;
            tracing::debug!(
                live,
                released = released.unwrap_or(false),
                took = ?started.elapsed(),
                "freed memory handed back to the system"
            );
        }
    }
}

/// Opens the Redis connection at start, so the first call does not wait for it, and says in
/// the log whether Redis answers. Either way the client reconnects by itself later.
async fn connect_store(store: Store) {
    match store.ping().await {
        Ok(()) => tracing::info!("Redis answers"),
        Err(err) => tracing::warn!(
            %err,
            "Redis does not answer yet: Gather turns apologise until it does, streaming calls are unaffected"
        ),
    }
}

/// `GET /media`: the Twilio Media Stream. One socket is one call, served by its own task.
/// Refused with 503 while draining or at `MAX_CALLS` (Twilio then ends the stream and plays
/// the TwiML after `<Connect>`).
async fn media_stream(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let Some(slot) = state.admission.enter() else {
        tracing::warn!(
            max = state.admission.max_calls(),
            "media stream refused: at MAX_CALLS"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "at capacity").into_response();
    };
    let services = state.calls.clone();
    let transcribe = state.transcribe.clone();
    let active = state.metrics.active_calls.clone();
    upgrade
        .max_message_size(state.config.twilio.max_message_bytes)
        .max_frame_size(state.config.twilio.max_message_bytes)
        .read_buffer_size(SOCKET_READ_BUFFER)
        .on_failed_upgrade(|err| tracing::warn!(%err, "media stream upgrade failed"))
        .on_upgrade(move |socket| async move {
            active.inc();
            match transcribe {
                Some(transcribe) => transcribe::run(socket, transcribe).await,
                None => call::run(socket, services).await,
            }
            active.dec();
            drop(slot);
        })
}

/// `GET /relay`: a Twilio ConversationRelay session (relay mode only; 404 otherwise). One
/// socket is one call for `MAX_CALLS` and the drain, served by its own task; refused with 503
/// while draining or at `MAX_CALLS` (Twilio then ends the session and requests the `<Connect
/// action>`, which hangs up).
async fn relay_session(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    let Some(services) = state.relay.clone() else {
        return (StatusCode::NOT_FOUND, "relay mode is off (MODE=relay)").into_response();
    };
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let Some(slot) = state.admission.enter() else {
        tracing::warn!(
            max = state.admission.max_calls(),
            "relay session refused: at MAX_CALLS"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "at capacity").into_response();
    };
    let active = state.metrics.active_calls.clone();
    upgrade
        .max_message_size(state.config.twilio.max_message_bytes)
        .max_frame_size(state.config.twilio.max_message_bytes)
        .read_buffer_size(SOCKET_READ_BUFFER)
        .on_failed_upgrade(|err| tracing::warn!(%err, "relay session upgrade failed"))
        .on_upgrade(move |socket| async move {
            active.inc();
            relay::run(socket, services).await;
            active.dec();
            drop(slot);
        })
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: 200 while taking calls, 503 once draining so balancers move on.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    "ok".into_response()
}

/// `POST /`: Twilio's "a call comes in" webhook. Answers with `<Connect><Stream>` to `/media`,
/// or in relay mode `<Connect><ConversationRelay>` to `/relay` ([`relay::connect`]).
///
/// The assistant's `<Connect>` has `action="{public base}/stream_ended"`: when the call closes
/// its stream (to hang up or transfer) Twilio asks there what to do next ([`stream_ended`]).
/// Transcription has no action and a `<Hangup/>` after `<Connect>`: nothing in that mode ever
/// records a next step, and Twilio runs the next verb when the stream ends, so the call ends at
/// once without a webhook round-trip whose only possible answer is `<Hangup/>`.
async fn incoming_call(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = state.admission.refuse_new_call() {
        return refusal;
    }
    let Some(base) = public_base(state.config.twilio.public_url.as_ref(), &headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "no PUBLIC_URL configured and no Host header to build the stream URL from",
        )
            .into_response();
    };
    let stream = Element::new("Stream").attr("url", websocket_url(&base, "/media"));
    let config = &state.config;
    let body = match (&state.transcribe, config.server.mode) {
        (None, Mode::Relay) => twiml::response([relay::connect(
            stream_ended::action_url(&base),
            websocket_url(&base, RELAY_PATH),
            &config.assistant.greeting,
            &config.relay,
            &config.gather.language,
        )]),
        (None, _) => twiml::response([Element::new("Connect")
            .attr("action", stream_ended::action_url(&base))
            .child(stream)]),
        (Some(_), _) => twiml::response([
            Element::new("Connect").child(stream),
            Element::new("Hangup"),
        ]),
    };
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}
