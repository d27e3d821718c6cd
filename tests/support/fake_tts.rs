//! A fake Deepgram TTS REST endpoint (`POST /v1/speak`) on `127.0.0.1:0`.
//!
//! Audio is a deterministic function of the text ([`audio_for`]), streamed as a chunked body in
//! deliberately awkward chunk sizes, so tests can check the server re-frames it into exact
//! 160-byte frames and forwards every byte in order.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::wire::{authorization, request_id, Query};

/// μ-law bytes of audio per character of text: 150 (so most replies end mid-frame).
pub const BYTES_PER_CHAR: usize = 150;
/// Body chunk sizes, cycled: none is a multiple of 160 except by accident.
pub const CHUNK_SIZES: [usize; 9] = [1, 7, 159, 161, 333, 2, 480, 17, 1000];
/// Chunks between 1 ms pauses, so the client really sees separate network reads.
const CHUNKS_PER_PAUSE: usize = 3;
/// Deepgram's per-request text limit.
const MAX_CHARS: usize = 2000;

/// The audio the fake returns for `text`: 150 μ-law bytes per character, a tone sequence seeded
/// by a hash of the text, never containing 0xFF (μ-law silence) so padding stands out.
pub fn audio_for(text: &str) -> Vec<u8> {
    let mut seed = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let len = text.chars().count() * BYTES_PER_CHAR;
    let mut out = Vec::with_capacity(len);
    let mut freq = 0.0;
    for i in 0..len {
        if i % 400 == 0 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            freq = 200.0 + (seed >> 33) as f64 % 1800.0;
        }
        let phase = 2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0;
        let code = ivr_bridge::audio::mulaw::encode((phase.sin() * 8000.0) as i16);
        out.push(if code == 0xFF { 0xFE } else { code });
    }
    out
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct TtsRequest {
    /// When it arrived.
    pub at: Instant,
    /// Its query string.
    pub query: Query,
    /// Whether `Authorization` was exactly `Token <key>`.
    pub auth_ok: bool,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// `text` from the body, when the body was valid.
    pub text: Option<String>,
    /// Status answered.
    pub status: u16,
    /// Audio bytes handed to the connection so far.
    pub bytes_sent: usize,
    /// When the first audio byte was handed over.
    pub first_byte_at: Option<Instant>,
    /// Whether the whole audio was streamed; `false` with `ended_at` set means the client hung
    /// up early (e.g. a cancelled reply on barge-in).
    pub completed: bool,
    /// When the body stream ended or was dropped.
    pub ended_at: Option<Instant>,
}

struct Shared {
    key: String,
    requests: Mutex<Vec<TtsRequest>>,
    /// Fault hook: answer this many upcoming requests with 500.
    fail_next: Mutex<usize>,
    /// Wait before the first audio byte.
    first_byte_delay: Mutex<Duration>,
}

/// The running fake. Cheap to clone; all clones see the same record.
#[derive(Clone)]
pub struct FakeTts {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeTts {
    /// Starts the fake expecting `Authorization: Token test-deepgram-key`.
    pub async fn start() -> Self {
        Self::start_with_key(super::DEEPGRAM_KEY).await
    }

    /// Starts the fake expecting `Authorization: Token <key>`.
    pub async fn start_with_key(key: &str) -> Self {
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            requests: Mutex::default(),
            fail_next: Mutex::new(0),
            first_byte_delay: Mutex::new(Duration::from_millis(20)),
        });
        let app = Router::new()
            .route("/v1/speak", post(speak))
            .with_state(shared.clone());
        let addr = super::spawn_http(app).await;
        Self { addr, shared }
    }

    /// `http://127.0.0.1:PORT/v1/speak`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/speak", self.addr)
    }

    /// A snapshot of every request, in order of arrival.
    pub fn requests(&self) -> Vec<TtsRequest> {
        self.shared.requests.lock().unwrap().clone()
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
        *self.shared.fail_next.lock().unwrap() = n;
    }

    /// Sets the wait before the first audio byte (default 20 ms).
    pub fn set_first_byte_delay(&self, delay: Duration) {
        *self.shared.first_byte_delay.lock().unwrap() = delay;
    }
}

async fn speak(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let auth_ok = authorization(&headers) == Some(format!("Token {}", shared.key));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdict = check(&shared, auth_ok, &query, &body);
    let mut requests = shared.requests.lock().unwrap();
    let index = requests.len();
    let status = verdict.as_ref().err().map_or(200, |(s, _)| s.as_u16());
    requests.push(TtsRequest {
        at: Instant::now(),
        query,
        auth_ok,
        content_type,
        text: verdict.as_ref().ok().cloned(),
        status,
        bytes_sent: 0,
        first_byte_at: None,
        completed: false,
        ended_at: None,
    });
    drop(requests);
    let text = match verdict {
        Ok(text) => text,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    let audio = audio_for(&text);
    let delay = *shared.first_byte_delay.lock().unwrap();
    let headers = [
        (header::CONTENT_TYPE, "audio/mulaw".to_owned()),
        (
            header::HeaderName::from_static("dg-request-id"),
            request_id(),
        ),
        (
            header::HeaderName::from_static("dg-model-name"),
            "aura-asteria-en".to_owned(),
        ),
        (
            header::HeaderName::from_static("dg-char-count"),
            text.chars().count().to_string(),
        ),
    ];
    (
        headers,
        Body::from_stream(stream(shared, index, audio, delay)),
    )
        .into_response()
}

type Refusal = (StatusCode, Value);

/// Auth, fault hook, query and body checks, in the order Deepgram would apply them.
fn check(shared: &Shared, auth_ok: bool, query: &Query, body: &[u8]) -> Result<String, Refusal> {
    let error = |status, code: &str, msg: &str| {
        (
            status,
            json!({"err_code": code, "err_msg": msg, "request_id": request_id()}),
        )
    };
    if !auth_ok {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTH",
            "Invalid credentials.",
        ));
    }
    let mut fail = shared.fail_next.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "fake failure",
        ));
    }
    drop(fail);
    for (key, want) in [
        ("encoding", "mulaw"),
        ("sample_rate", "8000"),
        ("container", "none"),
    ] {
        if query.all(key) != [want] {
            let msg = format!("fake expects {key}={want}, got {:?}", query.all(key));
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_PARAMETER",
                &msg,
            ));
        }
    }
    let bad = |msg: &str| error(StatusCode::BAD_REQUEST, "UNPROCESSABLE_ENTITY", msg);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(&format!("body is not JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(bad("body is not a JSON object"));
    };
    if let Some(extra) = obj.keys().find(|k| *k != "text") {
        return Err(bad(&format!(
            "unknown field `{extra}`; the only body field is `text`"
        )));
    }
    match obj.get("text").and_then(Value::as_str) {
        Some("") | None => Err(bad("`text` must be a non-empty string")),
        Some(t) if t.chars().count() > MAX_CHARS => Err(bad("text longer than 2000 characters")),
        Some(t) => Ok(t.to_owned()),
    }
}

/// Records progress and, when dropped, how the body stream ended.
struct Progress {
    shared: Arc<Shared>,
    index: usize,
    audio: Vec<u8>,
    offset: usize,
    chunk: usize,
    delay: Option<Duration>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(r) = self.shared.requests.lock().unwrap().get_mut(self.index) {
            r.completed = self.offset == self.audio.len();
            r.ended_at = Some(Instant::now());
        }
    }
}

fn stream(
    shared: Arc<Shared>,
    index: usize,
    audio: Vec<u8>,
    delay: Duration,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let progress = Progress {
        shared,
        index,
        audio,
        offset: 0,
        chunk: 0,
        delay: Some(delay),
    };
    futures::stream::unfold(progress, |mut p| async move {
        if let Some(delay) = p.delay.take() {
            tokio::time::sleep(delay).await;
        } else if p.chunk % CHUNKS_PER_PAUSE == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if p.offset >= p.audio.len() {
            return None;
        }
        let size = CHUNK_SIZES[p.chunk % CHUNK_SIZES.len()].min(p.audio.len() - p.offset);
        let bytes = Bytes::copy_from_slice(&p.audio[p.offset..p.offset + size]);
        p.offset += size;
        p.chunk += 1;
        if let Some(r) = p.shared.requests.lock().unwrap().get_mut(p.index) {
            r.bytes_sent = p.offset;
            r.first_byte_at.get_or_insert_with(Instant::now);
        }
        Some((Ok(bytes), p))
    })
}
