//! A fake Mistral chat completions endpoint (`POST /v1/chat/completions`) on `127.0.0.1:0`.
//!
//! Validates requests like the real API (Bearer auth, `extra_forbidden` on unknown fields, role
//! order), answers from [`super::faq`], whole or as SSE, and records every request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::faq::answer_for;
use super::mistral_reply::{self, content_text, fault_body};
use super::mistral_rules::{validate, Refusal};
use super::wire::{authorization, request_id};

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct LlmRequest {
    /// When it arrived.
    pub at: Instant,
    /// Whether `Authorization` was exactly `Bearer <key>`.
    pub auth_ok: bool,
    /// The parsed body (`Null` when it was not JSON).
    pub body: Value,
    /// `model` from the body.
    pub model: Option<String>,
    /// `stream` from the body (`false` when absent).
    pub stream: bool,
    /// The conversation as (role, content) pairs; chunked content is joined.
    pub messages: Vec<(String, String)>,
    /// Status answered (0 while hanging).
    pub status: u16,
    /// The reply content, when answered with 200.
    pub reply: Option<String>,
    /// When the response (or SSE stream) ended or was dropped by the client.
    pub ended_at: Option<Instant>,
    /// Whether a streamed reply reached `[DONE]` (always true for whole replies sent).
    pub completed: bool,
}

struct Shared {
    key: String,
    requests: Mutex<Vec<LlmRequest>>,
    /// Fault hook: statuses (429/500) to answer the next requests with, in order.
    fail: Mutex<Vec<StatusCode>>,
    /// Fault hook: this many upcoming requests never get an answer.
    hang: Mutex<usize>,
    /// Time to the first streamed chunk.
    first_token_delay: Mutex<Duration>,
    /// Time to the whole reply (non-streaming) or to the last chunk (streaming).
    total_delay: Mutex<Duration>,
    /// Questions containing these words take this long to answer (first token and whole).
    slow_questions: Mutex<Vec<(String, Duration)>>,
}

/// The running fake. Cheap to clone; all clones see the same record.
#[derive(Clone)]
pub struct FakeMistral {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeMistral {
    /// Starts the fake expecting `Authorization: Bearer test-mistral-key`.
    pub async fn start() -> Self {
        Self::start_with_key(super::MISTRAL_KEY).await
    }

    /// Starts the fake expecting `Authorization: Bearer <key>`.
    pub async fn start_with_key(key: &str) -> Self {
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            requests: Mutex::default(),
            fail: Mutex::default(),
            hang: Mutex::new(0),
            first_token_delay: Mutex::new(Duration::from_millis(50)),
            total_delay: Mutex::new(Duration::from_millis(50)),
            slow_questions: Mutex::default(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(shared.clone());
        let addr = super::spawn_http(app).await;
        Self { addr, shared }
    }

    /// `http://127.0.0.1:PORT/v1/chat/completions`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.addr)
    }

    /// A snapshot of every request, in order of arrival.
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Fault hook: answer the next `n` requests with `status` (429 or 500 bodies as Mistral's).
    pub fn fail_next(&self, n: usize, status: StatusCode) {
        self.shared
            .fail
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(status, n));
    }

    /// Fault hook: the next `n` requests are accepted and never answered.
    pub fn hang_next(&self, n: usize) {
        *self.shared.hang.lock().unwrap() = n;
    }

    /// Sets the time to the first streamed chunk (default 50 ms).
    pub fn set_first_token_delay(&self, delay: Duration) {
        *self.shared.first_token_delay.lock().unwrap() = delay;
    }

    /// Sets the time to the complete reply (default 50 ms).
    pub fn set_total_delay(&self, delay: Duration) {
        *self.shared.total_delay.lock().unwrap() = delay;
    }

    /// Requests whose last user message contains `words` take `delay` to answer (first token
    /// and whole), the others keep the usual delays: one slow turn among many calls.
    pub fn slow_when_asked(&self, words: &str, delay: Duration) {
        self.shared
            .slow_questions
            .lock()
            .unwrap()
            .push((words.to_owned(), delay));
    }
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth_ok = authorization(&headers) == Some(format!("Bearer {}", shared.key));
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let index = record(&shared, auth_ok, &parsed);
    let answer = |status: StatusCode, body: Value| {
        set(&shared, index, |r| r.status = status.as_u16());
        (status, Json(body)).into_response()
    };
    if !auth_ok {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Unauthorized", "request_id": request_id()}),
        );
    }
    if let Some(status) = take_fault(&shared) {
        let mut resp = answer(status, fault_body(status));
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return resp;
    }
    if take_hang(&shared) {
        std::future::pending::<()>().await;
    }
    if let Err(Refusal { status, body }) = validate(&parsed) {
        return answer(status, body);
    }
    let last_user = parsed["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default();
    let reply = answer_for(&last_user);
    set(&shared, index, |r| {
        r.status = 200;
        r.reply = Some(reply.clone());
    });
    let slow = shared
        .slow_questions
        .lock()
        .unwrap()
        .iter()
        .find(|(words, _)| last_user.contains(words.as_str()))
        .map(|(_, delay)| *delay);
    let first = slow.unwrap_or(*shared.first_token_delay.lock().unwrap());
    let total = slow.unwrap_or(*shared.total_delay.lock().unwrap());
    if parsed["stream"] == true {
        let on_end = move |completed| {
            set(&shared, index, |r| {
                r.completed = completed;
                r.ended_at = Some(Instant::now());
            })
        };
        return mistral_reply::sse(&parsed, &reply, [first, total], Box::new(on_end));
    }
    tokio::time::sleep(total).await;
    let body = mistral_reply::whole(&parsed, &reply);
    set(&shared, index, |r| {
        r.completed = true;
        r.ended_at = Some(Instant::now());
    });
    Json(body).into_response()
}

fn record(shared: &Shared, auth_ok: bool, body: &Value) -> usize {
    let messages = body["messages"]
        .as_array()
        .map(|ms| {
            let text = |m: &Value| content_text(&m["content"]);
            ms.iter()
                .map(|m| (m["role"].as_str().unwrap_or_default().to_owned(), text(m)))
                .collect()
        })
        .unwrap_or_default();
    let mut requests = shared.requests.lock().unwrap();
    requests.push(LlmRequest {
        at: Instant::now(),
        auth_ok,
        body: body.clone(),
        model: body["model"].as_str().map(str::to_owned),
        stream: body["stream"] == true,
        messages,
        status: 0,
        reply: None,
        ended_at: None,
        completed: false,
    });
    requests.len() - 1
}

fn set(shared: &Shared, index: usize, f: impl FnOnce(&mut LlmRequest)) {
    if let Some(r) = shared.requests.lock().unwrap().get_mut(index) {
        f(r);
    }
}

fn take_fault(shared: &Shared) -> Option<StatusCode> {
    let mut fail = shared.fail.lock().unwrap();
    (!fail.is_empty()).then(|| fail.remove(0))
}

fn take_hang(shared: &Shared) -> bool {
    let mut hang = shared.hang.lock().unwrap();
    let hit = *hang > 0;
    *hang = hang.saturating_sub(1);
    hit
}
