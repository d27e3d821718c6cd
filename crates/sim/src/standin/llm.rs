//! The Mistral stand-in: `POST /v1/chat/completions`, whole or streamed as SSE (PROTOCOLS.md §6),
//! answering the last user message from [`super::faq`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::probe::{Probe, Seen};
use super::{authorized, faq, request_id};

/// What every request shares.
struct Shared {
    /// The `Authorization` value a client must send (`Bearer <key>`).
    expected_auth: String,
    /// Time to the first streamed chunk.
    first_token_delay: Duration,
    /// Time to the whole reply (non-streaming) or to the last chunk (streaming).
    total_delay: Duration,
    /// The load generator's observer, when it runs one.
    probe: Option<Probe>,
}

/// The router serving `/v1/chat/completions`.
pub fn router(
    key: &str,
    first_token_delay: Duration,
    total_delay: Duration,
    probe: Option<Probe>,
) -> Router {
    let shared = Arc::new(Shared {
        expected_auth: format!("Bearer {key}"),
        first_token_delay,
        total_delay: total_delay.max(first_token_delay),
        probe,
    });
    Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(shared)
}

/// The part of a request the stand-in reads; other documented fields are accepted and ignored.
#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<RequestMessage>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct RequestMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &shared.expected_auth) {
        let body = json!({"message": "Unauthorized", "request_id": request_id()});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            let body = json!({"object": "error", "message": format!("invalid request: {err}"),
                "type": "invalid_request_error", "param": null, "code": null});
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
        }
    };
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| content_text(&m.content))
        .unwrap_or_default();
    let reply = faq::answer(&last_user);
    let probe = shared.probe.as_ref().map(|probe| {
        let req = probe.next_id();
        probe.record(Seen::LlmRequest { req, last_user });
        (probe.clone(), req)
    });
    if request.stream {
        let delays = (shared.first_token_delay, shared.total_delay);
        return sse(&request.model, reply, delays, probe);
    }
    tokio::time::sleep(shared.total_delay).await;
    if let Some((probe, req)) = probe {
        let text = reply.to_owned();
        probe.record(Seen::LlmText { req, text });
    }
    Json(whole(&request.model, reply)).into_response()
}

/// A message's content as text: a string, or the `text` of each chunk joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(chunks) => chunks.iter().filter_map(|c| c["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// The non-streaming completion (§6.2).
fn whole(model: &str, reply: &str) -> Value {
    json!({
        "id": format!("cmpl-{}", request_id()), "object": "chat.completion", "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply,
            "tool_calls": null, "prefix": false}, "finish_reason": "stop"}],
        "usage": usage(reply),
    })
}

/// The reply as SSE (§6.3): a role chunk after `first`, word chunks spread so the last lands at
/// `total` (with `finish_reason` and `usage`), then `[DONE]`.
fn sse(
    model: &str,
    reply: &'static str,
    (first, total): (Duration, Duration),
    probe: Option<(Probe, u64)>,
) -> Response {
    let (id, created) = (format!("cmpl-{}", request_id()), now_secs());
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let pieces: Vec<&str> = reply.split_inclusive(' ').collect();
    let gap = total.saturating_sub(first) / pieces.len().max(1) as u32;
    let role = chunk(json!({"role": "assistant", "content": ""}), None);
    let mut events = vec![(first, format!("data: {role}\n\n"), "")];
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let mut c = chunk(json!({"content": piece}), last.then_some("stop"));
        if last {
            c["usage"] = usage(reply);
        }
        events.push((
            if i == 0 { Duration::ZERO } else { gap },
            format!("data: {c}\n\n"),
            *piece,
        ));
    }
    events.push((Duration::ZERO, "data: [DONE]\n\n".to_owned(), ""));
    let stream = futures::stream::unfold(events.into_iter(), move |mut events| {
        let probe = probe.clone();
        async move {
            let (wait, event, text) = events.next()?;
            tokio::time::sleep(wait).await;
            if let Some((probe, req)) = probe.filter(|_| !text.is_empty()) {
                let text = text.to_owned();
                probe.record(Seen::LlmText { req, text });
            }
            Some((Ok::<_, Infallible>(Bytes::from(event)), events))
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, Body::from_stream(stream)).into_response()
}

/// Token counts, approximated by words: the stand-in has no tokenizer.
fn usage(reply: &str) -> Value {
    let completion = reply.split_whitespace().count();
    json!({"prompt_tokens": 0, "completion_tokens": completion, "total_tokens": completion})
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
