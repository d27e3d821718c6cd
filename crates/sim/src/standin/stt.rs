//! The Deepgram live STT stand-in: `GET /v1/listen` upgraded to a WebSocket (PROTOCOLS.md §4),
//! and beside it Deepgram Flux, `GET /v2/listen` (§10, [`super::flux_conn`]), with the same
//! key, bank and hooks but records of their own.
//!
//! A wrong key is refused before the upgrade, like Deepgram. Each connection ([`super::stt_conn`])
//! feeds binary PCM to a [`super::recognizer::Recognizer`] and obeys `KeepAlive`, `Finalize` and
//! `CloseStream`; a socket silent for 10 s is closed with NET-0001.
//!
//! Hooks, all off by default: a record of every connection and refused handshake (when started
//! with `record`: query, key, audio bytes, control messages, what was sent and when, anything a
//! real Deepgram would reject), and faults (refuse every handshake with 503, hold transcripts,
//! drop every open connection with 1011).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bank::Bank;
use super::recognizer::Settings;
use super::stt_record::opened;
pub use super::stt_record::{transcript, SttConnection, SttRefusal, SttSent, RECORDED_AUDIO_LIMIT};
use super::stt_shared::Shared;
pub use super::stt_shared::{FluxFault, IDLE_TIMEOUT};
use super::wire::{authorization, lock, request_id, Query};
use super::{flux_conn, serve, stt_conn, Delay, Journal, Setup, StandInError};

/// Fault messages that may wait for a slow Flux connection.
const FLUX_FAULT_QUEUE: usize = 16;

/// The running stand-in. Cheap to clone; all clones see the same record and hooks.
#[derive(Clone)]
pub struct SttStandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, shared with the handlers.
    shared: Arc<Shared>,
}

impl SttStandIn {
    /// Starts it on `setup.port` (0: any free port) until `shutdown` fires, recognising the
    /// utterances of `bank`.
    pub async fn start(
        setup: &Setup,
        bank: Arc<Bank>,
        shutdown: &CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), StandInError> {
        let shared = Arc::new(Shared {
            expected_auth: format!("Token {}", setup.key),
            bank,
            connections: Journal::when(setup.record),
            refusals: Journal::when(setup.record),
            flux_connections: Journal::when(setup.record),
            flux_refusals: Journal::when(setup.record),
            flux_faults: broadcast::channel(FLUX_FAULT_QUEUE).0,
            refuse_all: AtomicBool::new(false),
            transcript_delay: Delay::new(Duration::ZERO),
            shutdown: shutdown.clone(),
            kill: Mutex::new(shutdown.child_token()),
            probe: setup.probe.clone(),
        });
        let app = Router::new()
            .route("/v1/listen", get(handshake))
            .route("/v2/listen", get(flux_conn::handshake));
        let (addr, task) = serve("STT", app.with_state(shared.clone()), setup, shutdown).await?;
        Ok((Self { addr, shared }, task))
    }

    /// `ws://127.0.0.1:PORT/v1/listen`.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/listen", self.addr)
    }

    /// `ws://127.0.0.1:PORT/v2/listen`, the Flux endpoint.
    pub fn flux_url(&self) -> String {
        format!("ws://{}/v2/listen", self.addr)
    }

    /// A snapshot of every accepted Flux connection, in order (empty unless recording).
    pub fn flux_connections(&self) -> Vec<SttConnection> {
        Journal::read(&self.shared.flux_connections)
    }

    /// A snapshot of every refused Flux handshake (empty unless recording).
    pub fn flux_refusals(&self) -> Vec<SttRefusal> {
        Journal::read(&self.shared.flux_refusals)
    }

    /// Fault hook: every Flux connection open now does `fault` (a raw message, or a fatal
    /// `Error` and a close).
    pub fn flux_fault(&self, fault: FluxFault) {
        let _ = self.shared.flux_faults.send(fault);
    }

    /// A snapshot of every accepted connection, in order of arrival (empty unless recording).
    pub fn connections(&self) -> Vec<SttConnection> {
        Journal::read(&self.shared.connections)
    }

    /// A snapshot of every refused handshake (empty unless recording).
    pub fn refusals(&self) -> Vec<SttRefusal> {
        Journal::read(&self.shared.refusals)
    }

    /// Fault hook: refuse every handshake with 503 while set.
    pub fn set_refuse_all(&self, refuse: bool) {
        self.shared.refuse_all.store(refuse, Ordering::Relaxed);
    }

    /// Fault hook: delay every `Results` by `delay` (order is kept; reading goes on).
    pub fn set_transcript_delay(&self, delay: Duration) {
        self.shared.transcript_delay.set(delay);
    }

    /// Fault hook: close every open connection (v1 and Flux) with 1011, as a Deepgram outage
    /// would.
    pub fn disconnect_all(&self) {
        let mut kill = lock(&self.shared.kill);
        kill.cancel();
        *kill = self.shared.shutdown.child_token();
    }
}

async fn handshake(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let auth = authorization(&headers);
    let status = if shared.refuse_all.load(Ordering::Relaxed) {
        Some(StatusCode::SERVICE_UNAVAILABLE)
    } else if auth.as_deref() != Some(shared.expected_auth.as_str()) {
        Some(StatusCode::UNAUTHORIZED)
    } else {
        None
    };
    let at = Instant::now();
    if let Some(status) = status {
        if let Some(journal) = &shared.refusals {
            let authorization = auth;
            let status = status.as_u16();
            journal.push(SttRefusal {
                at,
                status,
                authorization,
                query,
            });
        }
        return refuse(status);
    }
    let settings = Settings::from_pairs(
        query
            .params
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.first()?.as_str()))),
    );
    let id = shared
        .connections
        .as_ref()
        .and_then(|journal| journal.push(opened(at, query, auth)));
    upgrade
        .read_buffer_size(ivr_bridge::socket::SOCKET_READ_BUFFER)
        .on_upgrade(move |socket| stt_conn::run(shared, id, settings, socket))
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
