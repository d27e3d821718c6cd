//! The Deepgram TTS stand-in: `POST /v1/speak` answering with μ-law 8 kHz audio, streamed
//! (PROTOCOLS.md §5.1). Auth, the raw-audio query (`encoding=mulaw&sample_rate=8000&
//! container=none`) and the `{"text": …}` body are checked as Deepgram would.
//!
//! Hooks, all off by default: a record of every request and how its body stream went (when
//! started with `record`), failing the next requests with 500, and a first-byte delay that can
//! change while it runs. [`Chunking::Awkward`] sends the audio in sizes no multiple of a frame,
//! so tests see the server re-frame it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::probe::Seen;
use super::tts_body::{stream, Progress};
pub use super::tts_body::{Chunking, AWKWARD_CHUNK_SIZES};
use super::tts_shared::Shared;
pub use super::tts_shared::TtsRequest;
use super::wire::{authorization, request_id, Query};
use super::{serve, Delay, Journal, Setup, StandInError};

/// Deepgram's per-request text limit, in characters.
const MAX_CHARS: usize = 2000;

/// The running stand-in. Cheap to clone; all clones see the same record and hooks.
#[derive(Clone)]
pub struct TtsStandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, shared with the handlers.
    shared: Arc<Shared>,
}

impl TtsStandIn {
    /// Starts it on `setup.port` (0: any free port) until `shutdown` fires, waiting
    /// `first_byte` before each reply's audio.
    pub async fn start(
        setup: &Setup,
        first_byte: Duration,
        shutdown: &CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), StandInError> {
        let shared = Arc::new(Shared {
            expected_auth: format!("Token {}", setup.key),
            voice: setup.voice,
            chunking: setup.chunking,
            spoken: Mutex::default(),
            requests: Journal::when(setup.record),
            fail_next: AtomicUsize::new(0),
            first_byte: Delay::new(first_byte),
            probe: setup.probe.clone(),
        });
        let app = Router::new().route("/v1/speak", post(speak));
        let (addr, task) = serve("TTS", app.with_state(shared.clone()), setup, shutdown).await?;
        Ok((Self { addr, shared }, task))
    }

    /// `http://127.0.0.1:PORT/v1/speak`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/speak", self.addr)
    }

    /// A snapshot of every request, in order of arrival (empty unless recording).
    pub fn requests(&self) -> Vec<TtsRequest> {
        Journal::read(&self.shared.requests)
    }

    /// Texts of the requests that were answered with audio, in order.
    pub fn texts(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.text)
            .collect()
    }

    /// Fault hook: answer the next `n` requests with 500.
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::Relaxed);
    }

    /// Sets the wait before the first audio byte.
    pub fn set_first_byte_delay(&self, delay: Duration) {
        self.shared.first_byte.set(delay);
    }
}

async fn speak(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let auth_ok = authorization(&headers).as_deref() == Some(shared.expected_auth.as_str());
    let verdict = check(&shared, auth_ok, &query, &body);
    let index = shared.requests.as_ref().and_then(|journal| {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        journal.push(TtsRequest {
            at: Instant::now(),
            query,
            auth_ok,
            content_type,
            text: verdict.as_ref().ok().cloned(),
            status: verdict.as_ref().err().map_or(200, |(s, _)| s.as_u16()),
            bytes_sent: 0,
            first_byte_at: None,
            completed: false,
            ended_at: None,
        })
    });
    let text = match verdict {
        Ok(text) => text,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    let probe = shared.probe.as_ref().map(|probe| {
        let req = probe.next_id();
        let text = text.clone();
        probe.record(Seen::TtsRequest { req, text });
        (probe.clone(), req)
    });
    let headers = [
        (header::CONTENT_TYPE, "audio/mulaw".to_owned()),
        (
            header::HeaderName::from_static("dg-request-id"),
            request_id(),
        ),
        (
            header::HeaderName::from_static("dg-model-name"),
            "stand-in".to_owned(),
        ),
        (
            header::HeaderName::from_static("dg-char-count"),
            text.chars().count().to_string(),
        ),
    ];
    let delay = shared.first_byte.get();
    let progress = Progress::new(shared, index, probe, text, delay);
    (headers, Body::from_stream(stream(progress))).into_response()
}

/// An error answer: status and Deepgram-shaped body.
type Refusal = (StatusCode, Value);

/// Auth, fault hook, query and body checks, in the order Deepgram would apply them.
fn check(shared: &Shared, auth_ok: bool, query: &Query, body: &[u8]) -> Result<String, Refusal> {
    let error = |status, code: &str, msg: &str| {
        let body = json!({"err_code": code, "err_msg": msg, "request_id": request_id()});
        (status, body)
    };
    if !auth_ok {
        let (status, msg) = (StatusCode::UNAUTHORIZED, "Invalid credentials.");
        return Err(error(status, "INVALID_AUTH", msg));
    }
    let failing = shared
        .fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    if failing.is_ok() {
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        return Err(error(status, "INTERNAL_SERVER_ERROR", "stand-in failure"));
    }
    for (key, want) in [
        ("encoding", "mulaw"),
        ("sample_rate", "8000"),
        ("container", "none"),
    ] {
        if query.all(key) != [want] {
            let msg = format!(
                "the stand-in expects {key}={want}, got {:?}",
                query.all(key)
            );
            let status = StatusCode::BAD_REQUEST;
            return Err(error(status, "INVALID_QUERY_PARAMETER", &msg));
        }
    }
    let bad = |msg: &str| error(StatusCode::BAD_REQUEST, "UNPROCESSABLE_ENTITY", msg);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(&format!("body is not JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(bad("body is not a JSON object"));
    };
    if let Some(extra) = obj.keys().find(|k| *k != "text") {
        let msg = format!("unknown field `{extra}`; the only body field is `text`");
        return Err(bad(&msg));
    }
    match obj.get("text").and_then(Value::as_str) {
        Some(t) if t.trim().is_empty() => Err(bad("`text` must be a non-empty string")),
        None => Err(bad("`text` must be a non-empty string")),
        Some(t) if t.chars().count() > MAX_CHARS => Err(bad("text longer than 2000 characters")),
        Some(t) => Ok(t.to_owned()),
    }
}
