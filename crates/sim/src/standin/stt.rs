//! The Deepgram live STT stand-in: `GET /v1/listen` upgraded to a WebSocket (PROTOCOLS.md §4).
//!
//! A wrong key is refused before the upgrade, like Deepgram. Each connection is one task that
//! owns the socket: binary PCM goes to the [`Recognizer`], control messages (`KeepAlive`,
//! `Finalize`, `CloseStream`) are obeyed, and a socket silent for 10 s is closed with NET-0001.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::bank::{frame_hash, Bank, PCM_FRAME_BYTES};
use super::probe::{Probe, Seen};
use super::recognizer::{Recognizer, Settings};
use super::{authorized, request_id};

/// Deepgram closes a socket that received nothing for this long (NET-0001).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Close reason of an idle socket, as Deepgram words it.
const NET_0001: &str = "NET-0001 Deepgram did not receive audio data or a text message within \
the timeout window. See https://dpgr.am/net0001";

/// What every connection shares.
struct Shared {
    /// The `Authorization` value a client must send (`Token <key>`).
    expected_auth: String,
    /// The utterances the stand-in recognises.
    bank: Arc<Bank>,
    /// Fires when the stand-ins shut down: open sockets close with 1001.
    shutdown: CancellationToken,
    /// The load generator's observer, when it runs one.
    probe: Option<Probe>,
}

/// The router serving `/v1/listen`.
pub fn router(
    key: &str,
    bank: Arc<Bank>,
    shutdown: CancellationToken,
    probe: Option<Probe>,
) -> Router {
    let shared = Arc::new(Shared {
        expected_auth: format!("Token {key}"),
        bank,
        shutdown,
        probe,
    });
    Router::new()
        .route("/v1/listen", get(handshake))
        .with_state(shared)
}

async fn handshake(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !authorized(&headers, &shared.expected_auth) {
        let id = request_id();
        let body = json!({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.",
            "request_id": id});
        return (
            StatusCode::UNAUTHORIZED,
            [("dg-request-id", id)],
            Json(body),
        )
            .into_response();
    }
    let raw = raw.unwrap_or_default();
    let pairs = form_urlencoded_pairs(&raw);
    let settings = Settings::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    upgrade
        .read_buffer_size(ivr_bridge::socket::SOCKET_READ_BUFFER)
        .on_upgrade(move |socket| serve_connection(shared, settings, socket))
}

/// `key=value&…` → decoded pairs; anything undecodable is skipped, like an unknown flag.
fn form_urlencoded_pairs(raw: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://query.invalid/?{raw}"))
        .map(|url| {
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// What to do after a client message.
enum Next {
    /// Keep reading.
    Read,
    /// Send a close frame with this code and reason, then stop.
    Close(u16, &'static str),
    /// The client went away.
    Gone,
}

/// Serves one connection until either side closes it.
async fn serve_connection(shared: Arc<Shared>, settings: Settings, mut socket: WebSocket) {
    let mut recognizer = Recognizer::new(shared.bank.clone(), settings, request_id());
    let mut out = Vec::new();
    let conn = shared.probe.as_ref().map_or(0, Probe::next_id);
    loop {
        let next = tokio::select! {
            () = shared.shutdown.cancelled() => Next::Close(1001, "stand-in shutting down"),
            read = timeout(IDLE_TIMEOUT, socket.recv()) => match read {
                Err(_) => {
                    recognizer.close_stream(&mut out);
                    Next::Close(1011, NET_0001)
                }
                Ok(Some(Ok(message))) => {
                    if let (Some(probe), Message::Binary(pcm)) = (&shared.probe, &message) {
                        observe_frames(probe, conn, pcm);
                    }
                    on_message(&mut recognizer, message, &mut out)
                }
                Ok(Some(Err(_)) | None) => Next::Gone,
            },
        };
        for message in out.drain(..) {
            if let Some(probe) = &shared.probe {
                observe_sent(probe, conn, &message);
            }
            if socket
                .send(Message::text(message.to_string()))
                .await
                .is_err()
            {
                return;
            }
        }
        match next {
            Next::Read => {}
            Next::Gone => return,
            Next::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
        }
    }
}

/// Reports each whole 20 ms frame of a binary message (the server sends one frame a message).
fn observe_frames(probe: &Probe, conn: u64, pcm: &[u8]) {
    for frame in pcm.chunks_exact(PCM_FRAME_BYTES) {
        let hash = frame_hash(frame);
        probe.record(Seen::SttFrame { conn, hash });
    }
}

/// Reports a `Results` or `UtteranceEnd` about to be sent.
fn observe_sent(probe: &Probe, conn: u64, message: &Value) {
    match message["type"].as_str() {
        Some("Results") => {
            let transcript = &message["channel"]["alternatives"][0]["transcript"];
            probe.record(Seen::SttResults {
                conn,
                words: transcript.as_str().is_some_and(|t| !t.trim().is_empty()),
                is_final: message["is_final"] == true,
                speech_final: message["speech_final"] == true,
            });
        }
        Some("UtteranceEnd") => probe.record(Seen::SttUtteranceEnd { conn }),
        _ => {}
    }
}

/// Applies one client message to the recogniser.
fn on_message(recognizer: &mut Recognizer, message: Message, out: &mut Vec<Value>) -> Next {
    match message {
        Message::Binary(bytes) => recognizer.push_audio(&bytes, out),
        Message::Text(text) => {
            let kind = serde_json::from_str::<Value>(text.as_str())
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
            match kind.as_deref() {
                Some("Finalize") => recognizer.finalize(out),
                Some("CloseStream") => {
                    recognizer.close_stream(out);
                    return Next::Close(1000, "");
                }
                Some("KeepAlive") => {}
                // Deepgram closes on text it cannot read as a control message.
                _ => return Next::Close(1008, "DATA-0000 text frame is not a control message"),
            }
        }
        Message::Close(_) => return Next::Gone,
        Message::Ping(_) | Message::Pong(_) => {}
    }
    Next::Read
}
