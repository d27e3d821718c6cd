//! The Mistral stand-in: `POST /v1/chat/completions`, whole or streamed as SSE (PROTOCOLS.md §6),
//! answering the last user message from [`super::faq`].
//!
//! Requests are validated like the real API ([`super::llm_rules`], [`super::llm_order`]). A
//! request that offers `tools` may get tool calls back ([`super::llm_tools`]), and a tool result
//! gets words that use it. Hooks, all off by default:
//! a record of every request (when started with `record`), faults (error statuses, requests
//! never answered, slow questions), delays that can change while it runs, and how tool calls
//! are cut into chunks ([`ToolCallShape`]), and a model that keeps calling tools
//! ([`LlmStandIn::keep_calling_tools`]).

use std::collections::VecDeque;
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
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::llm_reply::{self, fault_body};
use super::llm_rules::{validate, Refusal};
pub use super::llm_tools::ToolCallShape;
use super::probe::{Probe, Seen};
use super::wire::content_text;
use super::wire::{authorization, lock, request_id};
use super::{llm_tools, serve, Delay, Journal, Setup, StandInError};

/// One request as the stand-in saw it (recorded only when started with `record`).
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
    /// The tool calls answered (Mistral's wire items), when the request offered tools.
    pub tool_calls: Vec<Value>,
    /// When the response (or SSE stream) ended or was dropped by the client.
    pub ended_at: Option<Instant>,
    /// Whether a streamed reply reached `[DONE]` (always true for whole replies sent).
    pub completed: bool,
}

/// The fault hooks' state (and how tool calls are cut): empty unless a test asked for a fault.
#[derive(Default)]
struct Faults {
    /// Statuses (429/500) to answer the next requests with, in order.
    fail: VecDeque<StatusCode>,
    /// This many upcoming requests never get an answer.
    hang: usize,
    /// Questions containing these words take this long to answer (first token and whole).
    slow: Vec<(String, Duration)>,
    /// How tool calls are sent.
    tool_calls: ToolCallShape,
    /// After a tool result, call the same tool again instead of answering.
    repeat_tools: bool,
}

/// What every request shares.
struct Shared {
    /// The `Authorization` value a client must send (`Bearer <key>`).
    expected_auth: String,
    /// Every request, when recording.
    requests: Option<Journal<LlmRequest>>,
    /// The fault hooks.
    faults: Mutex<Faults>,
    /// Time to the first streamed chunk.
    first_token: Delay,
    /// Time to the whole reply (non-streaming) or to the last chunk (streaming).
    total: Delay,
    /// The load generator's observer, when it runs one.
    probe: Option<Probe>,
}

/// The running stand-in. Cheap to clone; all clones see the same record and hooks.
#[derive(Clone)]
pub struct LlmStandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, shared with the handlers.
    shared: Arc<Shared>,
}

impl LlmStandIn {
    /// Starts it on `setup.port` (0: any free port) until `shutdown` fires; `first_token` and
    /// `total` are its initial delays.
    pub async fn start(
        setup: &Setup,
        (first_token, total): (Duration, Duration),
        shutdown: &CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), StandInError> {
        let shared = Arc::new(Shared {
            expected_auth: format!("Bearer {}", setup.key),
            requests: Journal::when(setup.record),
            faults: Mutex::default(),
            first_token: Delay::new(first_token),
            total: Delay::new(total),
            probe: setup.probe.clone(),
        });
        let app = Router::new().route("/v1/chat/completions", post(complete));
        let (addr, task) = serve("LLM", app.with_state(shared.clone()), setup, shutdown).await?;
        Ok((Self { addr, shared }, task))
    }

    /// `http://127.0.0.1:PORT/v1/chat/completions`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.addr)
    }

    /// A snapshot of every request, in order of arrival (empty unless recording).
    pub fn requests(&self) -> Vec<LlmRequest> {
        Journal::read(&self.shared.requests)
    }

    /// Fault hook: answer the next `n` requests with `status` (429 or 500 bodies as Mistral's).
    pub fn fail_next(&self, n: usize, status: StatusCode) {
        let mut faults = lock(&self.shared.faults);
        faults.fail.extend(std::iter::repeat_n(status, n));
    }

    /// Fault hook: the next `n` requests are accepted and never answered.
    pub fn hang_next(&self, n: usize) {
        lock(&self.shared.faults).hang = n;
    }

    /// Sets the time to the first streamed chunk.
    pub fn set_first_token_delay(&self, delay: Duration) {
        self.shared.first_token.set(delay);
    }

    /// Sets the time to the complete reply.
    pub fn set_total_delay(&self, delay: Duration) {
        self.shared.total.set(delay);
    }

    /// Hook: how the next answers send their tool calls (whole, as Mistral does, by default).
    pub fn set_tool_call_shape(&self, shape: ToolCallShape) {
        lock(&self.shared.faults).tool_calls = shape;
    }

    /// Hook: after a tool result, call the same tool again instead of answering (a model
    /// stuck in a loop of tool calls), while `on`.
    pub fn keep_calling_tools(&self, on: bool) {
        lock(&self.shared.faults).repeat_tools = on;
    }

    /// Requests whose last user message contains `words` take `delay` to answer (first token
    /// and whole), the others keep the usual delays: one slow turn among many calls.
    pub fn slow_when_asked(&self, words: &str, delay: Duration) {
        lock(&self.shared.faults)
            .slow
            .push((words.to_owned(), delay));
    }
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth_ok = authorization(&headers).as_deref() == Some(shared.expected_auth.as_str());
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let index = record(&shared, auth_ok, &parsed);
    let answer = |status: StatusCode, body: Value| {
        set(&shared, index, |r| r.status = status.as_u16());
        (status, Json(body)).into_response()
    };
    if !auth_ok {
        let body = json!({"message": "Unauthorized", "request_id": request_id()});
        return answer(StatusCode::UNAUTHORIZED, body);
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
    let (shape, repeat) = {
        let faults = lock(&shared.faults);
        (faults.tool_calls, faults.repeat_tools)
    };
    let again = repeat.then(|| llm_tools::call_again(&parsed)).flatten();
    let answer = again.unwrap_or_else(|| llm_tools::answer(&parsed, &last_user));
    set(&shared, index, |r| {
        r.status = 200;
        r.reply = Some(answer.text.clone());
        r.tool_calls.clone_from(&answer.calls);
    });
    let [first, total] = delays(&shared, &last_user);
    let probe = shared.probe.as_ref().map(|probe| {
        let req = probe.next_id();
        probe.record(Seen::LlmRequest { req, last_user });
        (probe.clone(), req)
    });
    if parsed["stream"] == true {
        let on_end = index.map(|_| {
            let shared = shared.clone();
            Box::new(move |completed| {
                set(&shared, index, |r| {
                    r.completed = completed;
                    r.ended_at = Some(Instant::now());
                })
            }) as llm_reply::OnEnd
        });
        let answer = (&answer, shape);
        return llm_reply::sse(&parsed, answer, [first, total], probe, on_end);
    }
    tokio::time::sleep(total).await;
    if let Some((probe, req)) = probe {
        let text = answer.text.clone();
        probe.record(Seen::LlmText { req, text });
    }
    let body = llm_reply::whole(&parsed, &answer, shape);
    set(&shared, index, |r| {
        r.completed = true;
        r.ended_at = Some(Instant::now());
    });
    Json(body).into_response()
}

/// The request's [first token, total] delays: a slow question's, or the usual ones.
fn delays(shared: &Shared, last_user: &str) -> [Duration; 2] {
    let slow = lock(&shared.faults)
        .slow
        .iter()
        .find(|(words, _)| last_user.contains(words.as_str()))
        .map(|(_, delay)| *delay);
    [
        slow.unwrap_or_else(|| shared.first_token.get()),
        slow.unwrap_or_else(|| shared.total.get()),
    ]
}

/// Records the request when recording; returns its index in the record.
fn record(shared: &Shared, auth_ok: bool, body: &Value) -> Option<usize> {
    let journal = shared.requests.as_ref()?;
    let messages = body["messages"]
        .as_array()
        .map(|ms| {
            let text = |m: &Value| content_text(&m["content"]);
            ms.iter()
                .map(|m| (m["role"].as_str().unwrap_or_default().to_owned(), text(m)))
                .collect()
        })
        .unwrap_or_default();
    journal.push(LlmRequest {
        at: Instant::now(),
        auth_ok,
        body: body.clone(),
        model: body["model"].as_str().map(str::to_owned),
        stream: body["stream"] == true,
        messages,
        status: 0,
        reply: None,
        tool_calls: Vec::new(),
        ended_at: None,
        completed: false,
    })
}

/// Updates request `index`'s record, if it has one.
fn set(shared: &Shared, index: Option<usize>, f: impl FnOnce(&mut LlmRequest)) {
    if let (Some(journal), Some(index)) = (&shared.requests, index) {
        journal.update(index, f);
    }
}

fn take_fault(shared: &Shared) -> Option<StatusCode> {
    lock(&shared.faults).fail.pop_front()
}

fn take_hang(shared: &Shared) -> bool {
    let mut faults = lock(&shared.faults);
    let hit = faults.hang > 0;
    faults.hang = faults.hang.saturating_sub(1);
    hit
}
