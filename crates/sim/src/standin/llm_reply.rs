//! Mistral's response bodies: the whole completion (PROTOCOLS.md §6.2), the SSE stream (§6.3)
//! and the error bodies of the fault hooks (§6.4).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::llm_tools::{call_deltas, Answer, ToolCallShape};
use super::probe::{Probe, Seen};
use super::wire::{content_text, request_id};

/// Called once when an SSE body ends: `true` if it reached `[DONE]`, `false` if dropped early.
pub type OnEnd = Box<dyn FnOnce(bool) + Send>;

/// The non-streaming completion for `request` answering `answer`.
pub fn whole(request: &Value, answer: &Answer, shape: ToolCallShape) -> Value {
    let (calls, finish) = match call_deltas(&answer.calls, whole_shape(shape)).first() {
        None => (Value::Null, "stop"),
        Some(delta) => (delta["tool_calls"].clone(), "tool_calls"),
    };
    json!({
        "id": format!("cmpl-{}", request_id()), "object": "chat.completion", "created": now_secs(),
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text,
            "tool_calls": calls, "prefix": false}, "finish_reason": finish}],
        "usage": usage(request, &answer.text),
    })
}

/// A whole message holds whole calls; only a malformed one stays malformed.
fn whole_shape(shape: ToolCallShape) -> ToolCallShape {
    match shape {
        ToolCallShape::Malformed => ToolCallShape::Malformed,
        ToolCallShape::Whole | ToolCallShape::Split => ToolCallShape::Whole,
    }
}

/// The body of a 429 or 500 fault.
pub fn fault_body(status: StatusCode) -> Value {
    if status == StatusCode::TOO_MANY_REQUESTS {
        json!({"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
            "param": null, "code": "1300"})
    } else {
        json!({"object": "error", "message": "Internal server error",
            "type": "internal_server_error", "param": null, "code": null})
    }
}

/// Token counts, approximated by words: the stand-in has no tokenizer.
fn usage(request: &Value, reply: &str) -> Value {
    let prompt: usize = request["messages"].as_array().map_or(0, |ms| {
        ms.iter()
            .map(|m| content_text(&m["content"]).split_whitespace().count())
            .sum()
    });
    let completion = reply.split_whitespace().count();
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion})
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One SSE event: the wait before it, its bytes, and the reply text it carries (for the probe).
type Event = (Duration, String, String);

/// The answer as SSE: a role chunk, word-sized content chunks, the tool calls in `shape` (the
/// last chunk with `finish_reason` and `usage`), then `[DONE]`. `[first, total]`: the first
/// chunk waits `first`; the others are spread so the last lands at `total`. `probe` (with the
/// request's id) sees each text piece as it goes out; `on_end` hears how the stream ended.
pub fn sse(
    request: &Value,
    (answer, shape): (&Answer, ToolCallShape),
    [first, total]: [Duration; 2],
    probe: Option<(Probe, u64)>,
    on_end: Option<OnEnd>,
) -> Response {
    let (id, created) = (format!("cmpl-{}", request_id()), now_secs());
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": request["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut deltas: Vec<(Value, String)> = answer
        .text
        .split_inclusive(' ')
        .map(|piece| (json!({"content": piece}), piece.to_owned()))
        .collect();
    let calls = call_deltas(&answer.calls, shape);
    deltas.extend(calls.into_iter().map(|delta| (delta, String::new())));
    let finish = if answer.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let gap = total.saturating_sub(first) / deltas.len().max(1) as u32;
    let role = chunk(json!({"role": "assistant", "content": ""}), None);
    let mut events: Vec<Event> = vec![(first, format!("data: {role}\n\n"), String::new())];
    let count = deltas.len();
    for (i, (delta, text)) in deltas.into_iter().enumerate() {
        let last = i + 1 == count;
        let mut c = chunk(delta, last.then_some(finish));
        if last {
            c["usage"] = usage(request, &answer.text);
        }
        let wait = if i == 0 { Duration::ZERO } else { gap };
        events.push((wait, format!("data: {c}\n\n"), text));
    }
    events.push((Duration::ZERO, "data: [DONE]\n\n".to_owned(), String::new()));
    let guard = StreamGuard {
        events: events.into_iter(),
        probe,
        on_end,
    };
    let stream = futures::stream::unfold(guard, |mut g| async move {
        let (wait, event, text) = g.events.next()?;
        tokio::time::sleep(wait).await;
        if let Some((probe, req)) = g.probe.as_ref().filter(|_| !text.is_empty()) {
            probe.record(Seen::LlmText { req: *req, text });
        }
        Some((Ok::<_, Infallible>(Bytes::from(event)), g))
    });
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, Body::from_stream(stream)).into_response()
}

/// The SSE body's state; reports how the stream ended when dropped.
struct StreamGuard {
    /// The events not sent yet.
    events: std::vec::IntoIter<Event>,
    /// The load generator's observer and the request's id, when it runs one.
    probe: Option<(Probe, u64)>,
    /// The record's hook, when recording.
    on_end: Option<OnEnd>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.events.len() == 0);
        }
    }
}
