//! The HTTP surface: the TwiML webhook, the Media Stream upgrade, the Gather flow's webhooks
//! ([`crate::gather`]) and the health check.

use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::call::reply::Voice;
use crate::call::{self, CallServices};
use crate::config::Config;
use crate::gather::{self, GatherServices};
use crate::llm::mistral::Mistral;
use crate::store::StoreError;
use crate::stt::deepgram::DeepgramStt;
use crate::tts::deepgram::DeepgramTts;
use crate::twilio::twiml::{self, Element};

/// Largest WebSocket message accepted from Twilio; a media frame is about 300 bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
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
}

impl AppState {
    /// State for a server with these settings: one pooled HTTP client for all provider requests.
    pub fn new(config: Config) -> Result<Self, ServeError> {
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
        let calls = Arc::new(CallServices {
            stt: DeepgramStt::new(&config),
            voice: Arc::new(Voice::new(
                Mistral::new(http.clone(), &config),
                DeepgramTts::new(http, &config),
            )),
            greeting: config.greeting.clone(),
            silence_timeout: config.silence_timeout,
            turn_detection: config.turn_detection,
            system_prompt: config.system_prompt.clone(),
        });
        Ok(Self {
            config,
            calls,
            gather: Arc::new(gather),
        })
    }
}

/// The router, for `serve`, tests and tools that want to mount it themselves.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(incoming_call).post(incoming_call))
        .route("/media", get(media_stream))
        .route("/healthz", get(healthz))
        .merge(gather::routes())
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

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = Arc::new(AppState::new(config)?);
    match &state.config.redis_url {
        Some(url) => {
            tracing::info!(%url, "Gather flow conversations kept in Redis, shared by every instance")
        }
        None => tracing::info!(
            "Gather flow conversations kept in memory (set REDIS_URL to run several instances)"
        ),
    }
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// `GET /media`: the Twilio Media Stream. One socket is one call, served by its own task.
async fn media_stream(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    let services = state.calls.clone();
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_failed_upgrade(|err| tracing::warn!(%err, "media stream upgrade failed"))
        .on_upgrade(move |socket| call::run(socket, services))
}

async fn healthz() -> &'static str {
    "ok"
}

/// `POST /`: Twilio's "a call comes in" webhook. Answers with `<Connect><Stream>` to `/media`
/// and hangs up when the stream ends.
async fn incoming_call(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
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
