//! The HTTP surface: the TwiML webhook, the Media Stream upgrade, the Gather flow's webhooks
//! ([`crate::gather`]) and the health check.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::call::reply::Voice;
use crate::call::{self, CallServices};
use crate::config::{Config, Mode};
use crate::events::CallObserver;
use crate::gather::{self, GatherServices};
use crate::llm::mistral::Mistral;
use crate::metrics::Metrics;
use crate::record::format::RecordedSettings;
use crate::record::Recorder;
use crate::store::{Store, StoreError};
use crate::stt::deepgram::DeepgramStt;
use crate::transcribe::{self, TranscribeServices};
use crate::tts::deepgram::DeepgramTts;
use crate::twilio::signature::{require_signature, Validator};
use crate::twilio::twiml::{self, Element};

/// How long an idle pooled provider connection is kept open.
/// Bytes a WebSocket reads at once. tungstenite's default (128 KiB, zero-filled before each
/// read) made every call hold 128 KiB per socket; a Twilio message is under 1 KiB, and a larger
/// one still grows the buffer as needed.
pub const SOCKET_READ_BUFFER: usize = 4096;
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
    /// Checks Twilio's request signatures; `None` when no auth token is configured.
    pub signatures: Option<Validator>,
    /// Counters and latencies served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Transcription mode's services; `None` in the assistant mode.
    pub transcribe: Option<Arc<TranscribeServices>>,
    /// Media Streams in progress.
    live: Arc<LiveCalls>,
    /// Cancelled on SIGTERM: health answers 503 and new calls are refused while calls in
    /// progress finish.
    draining: CancellationToken,
}

/// Counts the calls in progress, so a limit can refuse new ones and a drain can wait for the
/// last one.
#[derive(Debug, Default)]
pub struct LiveCalls {
    /// Calls holding a [`CallSlot`].
    count: AtomicUsize,
    /// Woken whenever a call ends.
    ended: Notify,
}

/// A call's place in the count; dropping it (when the call task ends) frees it.
#[derive(Debug)]
pub struct CallSlot(Arc<LiveCalls>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl LiveCalls {
    /// A slot for a new call, unless `max` calls are already in progress.
    fn enter(self: &Arc<Self>, max: usize) -> Option<CallSlot> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| CallSlot(self.clone()))
    }

    /// Calls in progress now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves when no call is in progress.
    async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
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
        let gather = GatherServices::new(&config, Mistral::new(http.clone(), &config)).map_err(
            |source| ServeError::Store {
                url: config
                    .redis_url
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                source,
            },
        )?;
        let metrics = Arc::new(Metrics::new());
        let transcribe = (config.mode == Mode::Transcribe)
            .then(|| Arc::new(TranscribeServices::new(&config, &http, &metrics)));
        let calls = Arc::new(CallServices {
            stt: DeepgramStt::new(&config),
            voice: Arc::new(Voice::new(
                Mistral::new(http.clone(), &config),
                DeepgramTts::new(http, &config),
                metrics.clone(),
            )),
            greeting: config.greeting.clone(),
            silence_timeout: config.silence_timeout,
            turn_detection: config.turn_detection,
            system_prompt: config.system_prompt.clone(),
            fallback_phrase: config.fallback_phrase.clone(),
            shutdown: transcribe
                .as_ref()
                .map_or_else(CancellationToken::new, |t| t.shutdown.clone()),
            metrics: metrics.clone(),
            observer,
            recorder: config.record_dir.clone().map(|dir| {
                let settings = RecordedSettings {
                    greeting: config.greeting.clone(),
                    silence_timeout_ms: config.silence_timeout.as_millis() as u64,
                    turn_detection: config.turn_detection.to_string(),
                };
                Recorder::new(dir, settings)
            }),
            mirror: matches!(gather.store, Store::Redis(_)).then(|| gather.store.clone()),
        });
        Ok(Self {
            signatures: config.twilio_auth_token.clone().map(Validator::new),
            config,
            calls,
            gather: Arc::new(gather),
            live: Arc::new(LiveCalls::default()),
            metrics,
            transcribe,
            draining: CancellationToken::new(),
        })
    }

    /// Media Streams in progress.
    pub fn live_calls(&self) -> usize {
        self.live.count()
    }

    /// True once a drain has begun: no new calls are taken.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Stops taking calls, lets the calls in progress finish for up to `DRAIN_TIMEOUT_S`, then
    /// ends the rest. Webhooks of calls in progress are still served meanwhile (they may belong
    /// to a call another instance started), and Gather answers still being written are waited
    /// for, since another instance may be about to speak them.
    pub async fn drain(&self) {
        self.draining.cancel();
        let replies = &self.gather.replies;
        replies.close();
        tracing::info!(
            calls = self.live_calls(),
            gather_replies = replies.len(),
            "draining: new calls are refused, calls in progress continue"
        );
        let limit = self.config.drain_timeout;
        let ended = async { tokio::join!(self.live.all_ended(), replies.wait()) };
        if tokio::time::timeout(limit, ended).await.is_err() {
            tracing::warn!(
                calls = self.live_calls(),
                gather_replies = replies.len(),
                "drain timeout of {limit:?} reached: ending the calls still in progress"
            );
            self.calls.shutdown.cancel();
            let _ = tokio::time::timeout(CALL_END_GRACE, self.live.all_ended()).await;
        }
        tracing::info!("drained: no call in progress");
    }

    /// After the last request: waits (up to `DRAIN_TIMEOUT_S`) for Gather answers started by
    /// webhooks that came in during the drain, so none is lost with the process.
    async fn finish_replies(&self) {
        let replies = &self.gather.replies;
        replies.close();
        if replies.is_empty() {
            return;
        }
        let limit = self.config.drain_timeout;
        if tokio::time::timeout(limit, replies.wait()).await.is_err() {
            tracing::warn!(
                gather_replies = replies.len(),
                "exiting with Gather answers still being written"
            );
        }
    }
}

/// How long the recordings of the last calls get to be written when the server stops.
const RECORDINGS_GRACE: Duration = Duration::from_secs(10);

/// How long calls get to end after being told to, at the end of a drain.
const CALL_END_GRACE: Duration = Duration::from_secs(3);

/// The router, for `serve`, tests and tools that want to mount it themselves. Twilio's routes
/// require a valid signature when an auth token is configured; the health check does not.
pub fn app(state: Arc<AppState>) -> Router {
    let twilio = Router::new()
        .route("/", get(incoming_call).post(incoming_call))
        .route("/media", get(media_stream))
        .merge(match state.transcribe {
            None => gather::routes(),
            Some(_) => Router::new(), // transcription mode: no assistant, no Gather flow
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
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
    if state.signatures.is_none() {
        tracing::warn!(
            "TWILIO_AUTH_TOKEN is not set: Twilio request signatures are NOT checked, so anyone \
             who finds this server's URL can start calls"
        );
    }
    transcribe::announce(&state.config);
    match &state.config.redis_url {
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
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Without TCP_NODELAY a media frame or a `clear` written while the previous write is not
    // yet acknowledged waits for that ACK (Nagle), up to tens of milliseconds.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, service)
        .with_graceful_shutdown(drained)
        .await?;
    if let Some(recorder) = &state.calls.recorder {
        recorder.finish(RECORDINGS_GRACE).await;
    }
    state.finish_replies().await;
    Ok(())
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
    let Some(slot) = state.live.enter(state.config.max_calls) else {
        tracing::warn!(
            max = state.config.max_calls,
            "media stream refused: at MAX_CALLS"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "at capacity").into_response();
    };
    let services = state.calls.clone();
    let transcribe = state.transcribe.clone();
    let active = state.metrics.active_calls.clone();
    upgrade
        .max_message_size(state.config.max_message_bytes)
        .max_frame_size(state.config.max_message_bytes)
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

/// Whether a new call can be taken now; `Some(response)` refuses it politely.
pub fn refuse_new_call(state: &AppState) -> Option<Response> {
    let why = if state.is_draining() {
        "draining"
    } else if state.live_calls() >= state.config.max_calls {
        "at capacity"
    } else {
        return None;
    };
    tracing::warn!("new call refused: {why}");
    let body = twiml::response([
        Element::new("Say").text(BUSY_APOLOGY),
        Element::new("Hangup"),
    ]);
    Some(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/xml")],
            body,
        )
            .into_response(),
    )
}

/// Said to a caller refused because the server is full or shutting down.
const BUSY_APOLOGY: &str =
    "Sorry, all our lines are busy right now. Please call again in a few minutes. Goodbye.";

/// `POST /`: Twilio's "a call comes in" webhook. Answers with `<Connect><Stream>` to `/media`
/// and hangs up when the stream ends.
async fn incoming_call(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_new_call(&state) {
        return refusal;
    }
    let Some(base) = public_base(&state.config, &headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "no PUBLIC_URL configured and no Host header to build the stream URL from",
        )
            .into_response();
    };
    let stream_url = websocket_url(&base, "/media");
    let body = twiml::response([
        Element::new("Connect").child(Element::new("Stream").attr("url", stream_url)),
        Element::new("Hangup"),
    ]);
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// The public base URL (`scheme://host[/prefix]`, no trailing slash) Twilio reaches us at:
/// `PUBLIC_URL` when set, else rebuilt from `X-Forwarded-Proto` / `X-Forwarded-Host` / `Host`.
pub fn public_base(config: &Config, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &config.public_url {
        return Some(url.as_str().trim_end_matches('/').to_owned());
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = first("x-forwarded-host").or_else(|| first(header::HOST.as_str()))?;
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
    {
        return None;
    }
    let scheme = match first("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{host}"))
}

/// `base` with https→wss, http→ws, and `path` appended.
pub fn websocket_url(base: &str, path: &str) -> String {
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_owned());
    format!("{rest}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_swaps_the_scheme() {
        assert_eq!(
            websocket_url("https://a.example", "/media"),
            "wss://a.example/media"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:9", "/media"),
            "ws://127.0.0.1:9/media"
        );
        assert_eq!(
            websocket_url("https://a.example/p", "/media"),
            "wss://a.example/p/media"
        );
    }
}
