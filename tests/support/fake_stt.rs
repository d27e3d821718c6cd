//! A fake Deepgram live STT WebSocket (`/v1/listen`) on `127.0.0.1:0`.
//!
//! It speaks the real wire format (PROTOCOLS.md §4): refuses a wrong key before the upgrade,
//! takes PCM16LE binary frames and JSON control messages, and answers with `SpeechStarted`,
//! interim and final `Results`, `UtteranceEnd` and `Metadata`, timed in audio. What it heard and
//! said is recorded per connection for the tests to inspect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::stt_bank::SttBank;
use super::stt_conn;
use super::stt_engine::SttSettings;
use super::wire::{authorization, request_id, Query};

/// A handshake the fake refused (no upgrade happened).
#[derive(Clone, Debug)]
pub struct SttRefusal {
    /// When the handshake arrived.
    pub at: Instant,
    /// The status returned (401 bad key, 503 fault hook).
    pub status: u16,
    /// The `Authorization` header that came with it.
    pub authorization: Option<String>,
    /// Its query string.
    pub query: Query,
}

/// A message the fake sent, with the moment it went on the wire.
#[derive(Clone, Debug)]
pub struct SttSent {
    /// When it was written to the socket.
    pub at: Instant,
    /// The JSON message.
    pub msg: Value,
}

/// Everything that happened on one accepted connection.
#[derive(Clone, Debug)]
pub struct SttConnection {
    /// When the upgrade was accepted.
    pub opened_at: Instant,
    /// The handshake's query string.
    pub query: Query,
    /// The handshake's `Authorization` header.
    pub authorization: Option<String>,
    /// Every binary byte received, in order.
    pub audio: Vec<u8>,
    /// How many binary messages carried it.
    pub binary_frames: usize,
    /// `{"type":"KeepAlive"}` messages received.
    pub keepalives: usize,
    /// `{"type":"Finalize"}` messages received.
    pub finalizes: usize,
    /// `{"type":"CloseStream"}` messages received.
    pub close_streams: usize,
    /// Every text control message with its arrival time, for ordering and timing checks.
    pub controls: Vec<(Instant, String)>,
    /// Things a real Deepgram would reject or misinterpret.
    pub violations: Vec<String>,
    /// Every message sent, in order.
    pub sent: Vec<SttSent>,
    /// The close frame the fake sent: (when, code).
    pub close_sent: Option<(Instant, u16)>,
    /// When the connection task ended (socket gone).
    pub ended_at: Option<Instant>,
}

impl SttConnection {
    /// Transcripts of the final `Results`, in order, empty ones included.
    pub fn finals(&self) -> Vec<String> {
        self.sent
            .iter()
            .filter(|s| s.msg["type"] == "Results" && s.msg["is_final"] == true)
            .map(|s| transcript(&s.msg).to_owned())
            .collect()
    }

    /// Sent messages of one `type`.
    pub fn sent_of(&self, kind: &str) -> Vec<&SttSent> {
        self.sent.iter().filter(|s| s.msg["type"] == kind).collect()
    }
}

/// `channel.alternatives[0].transcript` of a `Results` message.
pub fn transcript(msg: &Value) -> &str {
    msg["channel"]["alternatives"][0]["transcript"]
        .as_str()
        .unwrap_or_default()
}

#[derive(Default)]
struct Record {
    connections: Vec<SttConnection>,
    refusals: Vec<SttRefusal>,
}

/// State shared by the fake's handle, its handshake handler and its connection tasks.
pub(super) struct Shared {
    key: String,
    /// The utterances the fake can recognise.
    pub(super) bank: Arc<SttBank>,
    record: Mutex<Record>,
    /// Fault hook: refuse every handshake with 503.
    refuse_all: Mutex<bool>,
    /// Fault hook: hold each `Results` this long before sending.
    pub(super) transcript_delay: Mutex<Duration>,
    /// Cancelled by [`FakeStt::disconnect_all`]; replaced afterwards.
    pub(super) kill: Mutex<CancellationToken>,
}

impl Shared {
    /// Updates connection `id`'s record.
    pub(super) fn with_conn(&self, id: usize, f: impl FnOnce(&mut SttConnection)) {
        if let Some(c) = self.record.lock().unwrap().connections.get_mut(id) {
            f(c);
        }
    }
}

/// The running fake. Cheap to clone; all clones see the same record.
#[derive(Clone)]
pub struct FakeStt {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeStt {
    /// Starts the fake expecting `Authorization: Token test-deepgram-key`.
    pub async fn start(bank: Arc<SttBank>) -> Self {
        Self::start_with_key(bank, super::DEEPGRAM_KEY).await
    }

    /// Starts the fake expecting `Authorization: Token <key>`.
    pub async fn start_with_key(bank: Arc<SttBank>, key: &str) -> Self {
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            bank,
            record: Mutex::default(),
            refuse_all: Mutex::new(false),
            transcript_delay: Mutex::new(Duration::ZERO),
            kill: Mutex::new(CancellationToken::new()),
        });
        let app = Router::new()
            .route("/v1/listen", get(handshake))
            .with_state(shared.clone());
        let addr = super::spawn_http(app).await;
        Self { addr, shared }
    }

    /// `ws://127.0.0.1:PORT/v1/listen`.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/listen", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of every accepted connection, in order of arrival.
    pub fn connections(&self) -> Vec<SttConnection> {
        self.shared.record.lock().unwrap().connections.clone()
    }

    /// A snapshot of every refused handshake.
    pub fn refusals(&self) -> Vec<SttRefusal> {
        self.shared.record.lock().unwrap().refusals.clone()
    }

    /// Fault hook: refuse every handshake with 503 while set.
    pub fn set_refuse_all(&self, refuse: bool) {
        *self.shared.refuse_all.lock().unwrap() = refuse;
    }

    /// Fault hook: delay every `Results` by `delay` (order is kept).
    pub fn set_transcript_delay(&self, delay: Duration) {
        *self.shared.transcript_delay.lock().unwrap() = delay;
    }

    /// Fault hook: close every open connection with 1011, as a Deepgram outage would.
    pub fn disconnect_all(&self) {
        let mut kill = self.shared.kill.lock().unwrap();
        kill.cancel();
        *kill = CancellationToken::new();
    }
}

async fn handshake(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let auth = authorization(&headers);
    let status = if *shared.refuse_all.lock().unwrap() {
        Some(StatusCode::SERVICE_UNAVAILABLE)
    } else if auth.as_deref() != Some(format!("Token {}", shared.key).as_str()) {
        Some(StatusCode::UNAUTHORIZED)
    } else {
        None
    };
    let at = Instant::now();
    let mut record = shared.record.lock().unwrap();
    if let Some(status) = status {
        let refusal = SttRefusal {
            at,
            status: status.as_u16(),
            authorization: auth,
            query,
        };
        record.refusals.push(refusal);
        return refuse(status);
    }
    let mut conn = SttConnection {
        opened_at: at,
        query: query.clone(),
        authorization: auth,
        audio: Vec::new(),
        binary_frames: 0,
        keepalives: 0,
        finalizes: 0,
        close_streams: 0,
        controls: Vec::new(),
        violations: Vec::new(),
        sent: Vec::new(),
        close_sent: None,
        ended_at: None,
    };
    if query.get("encoding") != Some("linear16") || query.get("sample_rate") != Some("8000") {
        conn.violations.push(format!(
            "fake expects encoding=linear16&sample_rate=8000, got {:?}",
            query.raw
        ));
    }
    let id = record.connections.len();
    record.connections.push(conn);
    drop(record);
    let settings = SttSettings::from_query(&query);
    ws.on_upgrade(move |socket| stt_conn::run(shared, id, settings, socket))
}

fn refuse(status: StatusCode) -> Response {
    let id = request_id();
    let (code, msg) = match status {
        StatusCode::UNAUTHORIZED => ("INVALID_AUTH", "Invalid credentials."),
        _ => (
            "SERVICE_UNAVAILABLE",
            "The service is temporarily unavailable.",
        ),
    };
    let body = json!({"err_code": code, "err_msg": msg, "request_id": id});
    let headers = [("dg-request-id", id), ("dg-error", msg.to_owned())];
    (status, headers, axum::Json(body)).into_response()
}
