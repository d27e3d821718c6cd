//! The Deepgram TTS stand-in: `POST /v1/speak` answering with μ-law 8 kHz audio, streamed
//! (PROTOCOLS.md §5.1). Auth, the raw-audio query (`encoding=mulaw&sample_rate=8000&
//! container=none`) and the `{"text": …}` body are checked as Deepgram would.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::probe::{Probe, Seen};
use super::voice;
use super::{authorized, request_id};

/// Bytes per body chunk: 100 ms of audio, so the client sees a stream, not one blob.
const CHUNK_BYTES: usize = 800;
/// Deepgram's per-request text limit, in characters.
const MAX_CHARS: usize = 2000;

/// What every request shares.
struct Shared {
    /// The `Authorization` value a client must send (`Token <key>`).
    expected_auth: String,
    /// Wait before the first audio byte, as a real synthesiser takes time to start.
    first_byte_delay: Duration,
    /// The load generator's observer, when it runs one.
    probe: Option<Probe>,
}

/// The router serving `/v1/speak`.
pub fn router(key: &str, first_byte_delay: Duration, probe: Option<Probe>) -> Router {
    let shared = Arc::new(Shared {
        expected_auth: format!("Token {key}"),
        first_byte_delay,
        probe,
    });
    Router::new()
        .route("/v1/speak", post(speak))
        .with_state(shared)
}

/// The request body: Deepgram's only field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakBody {
    text: String,
}

async fn speak(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    if !authorized(&headers, &shared.expected_auth) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTH",
            "Invalid credentials.",
        );
    }
    let query = raw.unwrap_or_default();
    for wanted in ["encoding=mulaw", "sample_rate=8000", "container=none"] {
        if !query.split('&').any(|pair| pair == wanted) {
            let msg = format!("this stand-in only speaks raw telephone audio: add {wanted}");
            return refuse(StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAMETER", &msg);
        }
    }
    let text = match serde_json::from_slice::<SpeakBody>(&body) {
        Ok(SpeakBody { text }) if !text.trim().is_empty() && text.chars().count() <= MAX_CHARS => {
            text
        }
        Ok(_) => {
            let msg = "`text` must be a non-empty string of at most 2000 characters";
            return refuse(StatusCode::BAD_REQUEST, "UNPROCESSABLE_ENTITY", msg);
        }
        Err(err) => {
            let msg = format!("body must be {{\"text\": …}}: {err}");
            return refuse(StatusCode::BAD_REQUEST, "UNPROCESSABLE_ENTITY", &msg);
        }
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
    (
        headers,
        Body::from_stream(audio_stream(text, shared.first_byte_delay, probe)),
    )
        .into_response()
}

/// The audio for `text` in [`CHUNK_BYTES`] pieces, the first after `delay`. Synthesis happens
/// after the delay, off the request path; at most 2000 characters, so memory is bounded.
fn audio_stream(
    text: String,
    delay: Duration,
    probe: Option<(Probe, u64)>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let state: (Option<String>, Bytes) = (Some(text), Bytes::new());
    futures::stream::unfold(state, move |(text, mut audio)| {
        let probe = probe.clone();
        async move {
            if let Some(text) = text {
                tokio::time::sleep(delay).await;
                audio = Bytes::from(voice::speak(&text));
                if let Some((probe, req)) = probe {
                    probe.record(Seen::TtsFirstByte { req });
                }
            }
            if audio.is_empty() {
                return None;
            }
            let chunk = audio.split_to(CHUNK_BYTES.min(audio.len()));
            Some((Ok(chunk), (None, audio)))
        }
    })
}

fn refuse(status: StatusCode, code: &str, msg: &str) -> Response {
    let body = json!({"err_code": code, "err_msg": msg, "request_id": request_id()});
    (status, Json(body)).into_response()
}
