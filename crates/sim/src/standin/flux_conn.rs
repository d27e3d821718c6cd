//! The Flux stand-in's side of the STT stand-in: `GET /v2/listen` upgraded to a WebSocket
//! (PROTOCOLS.md §10), served beside `/v1/listen` with the same key, bank and hooks.
//!
//! The handshake is refused like Flux refuses it (401 for a wrong key, 400 for a query Flux
//! would not take: no Flux model, a bad encoding or rate, a threshold out of range). Each
//! connection sends `Connected`, feeds binary μ-law to a [`FluxRecognizer`] and writes its
//! `TurnInfo`s; it obeys `CloseStream` (a last `Update`, then a close without a status code),
//! `ForceEndTurn` and `Configure`, records anything else as a violation, and closes a socket
//! silent for 10 s. Fault hooks: a raw text message (malformed or not) to every open
//! connection, and a fatal `Error` followed by a close.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::time::{timeout, Instant};

use super::flux::{FluxRecognizer, Thresholds};
use super::hooks::push_bounded;
use super::stt_record::opened_flux;
use super::stt_record::{SttRefusal, SttSent, RECORDED_AUDIO_LIMIT};
use super::stt_shared::{FluxFault, Shared, IDLE_TIMEOUT};
use super::wire::{authorization, request_id, Query};

/// `GET /v2/listen`: checks the key and the query, then upgrades.
pub(super) async fn handshake(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let auth = authorization(&headers);
    let at = Instant::now();
    let checked = if shared.refuses_all() {
        Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is temporarily unavailable.".to_owned(),
        ))
    } else if !shared.authorized(auth.as_deref()) {
        Err((StatusCode::UNAUTHORIZED, "Invalid credentials.".to_owned()))
    } else {
        Thresholds::from_query(&query).map_err(|why| (StatusCode::BAD_REQUEST, why))
    };
    let (thresholds, violations) = match checked {
        Ok(ok) => ok,
        Err((status, why)) => {
            let refusal = SttRefusal {
                at,
                status: status.as_u16(),
                authorization: auth,
                query,
            };
            shared.flux_refused(refusal);
            return refuse(status, &why);
        }
    };
    let id = shared.flux_opened(opened_flux(at, query, auth, violations));
    upgrade
        .read_buffer_size(ivr_bridge::socket::SOCKET_READ_BUFFER)
        .on_upgrade(move |socket| run(shared, id, thresholds, socket))
}

fn refuse(status: StatusCode, why: &str) -> Response {
    let id = request_id();
    let code = match status {
        StatusCode::UNAUTHORIZED => "INVALID_AUTH",
        StatusCode::BAD_REQUEST => "Bad Request",
        _ => "SERVICE_UNAVAILABLE",
    };
    let body = json!({"err_code": code, "err_msg": why, "request_id": id});
    let headers = [("dg-request-id", id), ("dg-error", why.to_owned())];
    (status, headers, axum::Json(body)).into_response()
}

/// Serves one upgraded connection until it closes.
async fn run(shared: Arc<Shared>, id: Option<usize>, thresholds: Thresholds, socket: WebSocket) {
    let rec = FluxRecognizer::new(shared.bank.clone(), thresholds, request_id());
    let faults = shared.flux_faults();
    let mut conn = Conn {
        shared,
        id,
        socket,
        rec,
        out: Vec::new(),
        closed: false,
    };
    let connected = conn.rec.connected();
    conn.out.push(connected);
    conn.flush().await;
    conn.serve(faults).await;
    let Conn { shared, .. } = conn;
    shared.with_flux_conn(id, |c| c.ended_at = Some(Instant::now()));
}

/// One Flux connection.
struct Conn {
    shared: Arc<Shared>,
    id: Option<usize>,
    socket: WebSocket,
    rec: FluxRecognizer,
    /// Messages the recogniser produced, reused between client messages.
    out: Vec<Value>,
    /// A close was sent (or the socket broke): nothing more is written.
    closed: bool,
}

impl Conn {
    async fn serve(&mut self, mut faults: broadcast::Receiver<FluxFault>) {
        let kill = self.shared.kill();
        while !self.closed {
            let next = tokio::select! {
                () = kill.cancelled() => {
                    let code = if self.shared.shutdown.is_cancelled() { 1001 } else { 1011 };
                    self.close(Some((code, "NET-0000 stand-in Deepgram disconnect"))).await;
                    return;
                }
                fault = faults.recv() => {
                    if let Ok(fault) = fault {
                        self.fault(fault).await;
                    }
                    continue;
                }
                next = timeout(IDLE_TIMEOUT, self.socket.recv()) => next,
            };
            match next {
                Ok(Some(Ok(msg))) => {
                    if !self.on_message(msg).await {
                        return;
                    }
                }
                Ok(Some(Err(_)) | None) => return,
                Err(_) => {
                    let error = self
                        .rec
                        .error("NET-0001", "No audio received within the timeout.");
                    self.out.push(error);
                    self.flush().await;
                    self.close(Some((1011, "NET-0001"))).await;
                }
            }
        }
    }

    async fn fault(&mut self, fault: FluxFault) {
        match fault {
            FluxFault::Raw(text) => {
                if self.socket.send(Message::text(text)).await.is_err() {
                    self.closed = true;
                }
            }
            FluxFault::Error => {
                let error = self
                    .rec
                    .error("INTERNAL_SERVER_ERROR", "stand-in Flux failure");
                self.out.push(error);
                self.flush().await;
                self.close(Some((1011, "INTERNAL_SERVER_ERROR"))).await;
            }
        }
    }

    /// Handles one client message; `false` when the client closed.
    async fn on_message(&mut self, msg: Message) -> bool {
        match msg {
            Message::Binary(bytes) => {
                self.record_audio(&bytes);
                self.rec.push_audio(&bytes, &mut self.out);
                self.flush().await;
            }
            Message::Text(text) => self.on_control(text.as_str()).await,
            Message::Close(_) => return false,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        true
    }

    async fn on_control(&mut self, text: &str) {
        let value = serde_json::from_str::<Value>(text).ok();
        let kind = value
            .as_ref()
            .and_then(|v| v.get("type")?.as_str())
            .unwrap_or_default()
            .to_owned();
        let known = matches!(kind.as_str(), "CloseStream" | "ForceEndTurn" | "Configure");
        self.shared.with_flux_conn(self.id, |c| {
            if known {
                push_bounded(&mut c.controls, (Instant::now(), kind.clone()));
                if kind == "CloseStream" {
                    c.close_streams += 1;
                }
            } else {
                let v = format!("text frame is not a Flux control message: {text:?}");
                push_bounded(&mut c.violations, v);
            }
        });
        match kind.as_str() {
            "CloseStream" => {
                self.rec.close_stream(&mut self.out);
                self.flush().await;
                self.close(None).await;
            }
            "ForceEndTurn" => {
                self.rec.force_end_turn(&mut self.out);
                self.flush().await;
            }
            "Configure" => {
                let answer = self.rec.configure(value.as_ref().unwrap_or(&Value::Null));
                self.out.push(answer);
                self.flush().await;
            }
            _ => {}
        }
    }

    /// Records a binary message (recording only).
    fn record_audio(&self, bytes: &[u8]) {
        self.shared.with_flux_conn(self.id, |c| {
            if c.audio.len() + bytes.len() <= RECORDED_AUDIO_LIMIT {
                c.audio.extend_from_slice(bytes);
            }
            c.binary_frames += 1;
            if bytes.is_empty() {
                push_bounded(&mut c.violations, "empty binary frame".into());
            }
        });
    }

    /// Writes the recogniser's messages, recording each.
    async fn flush(&mut self) {
        for msg in std::mem::take(&mut self.out) {
            if self.closed {
                break;
            }
            if self
                .socket
                .send(Message::text(msg.to_string()))
                .await
                .is_err()
            {
                self.closed = true;
                break;
            }
            self.shared.with_flux_conn(self.id, |c| {
                let at = Instant::now();
                push_bounded(&mut c.sent, SttSent { at, msg });
            });
        }
    }

    /// Closes the socket: with a status code, or (after `CloseStream`) without one, as Flux
    /// does.
    async fn close(&mut self, status: Option<(u16, &'static str)>) {
        if self.closed {
            return;
        }
        let frame = status.map(|(code, reason)| CloseFrame {
            code,
            reason: reason.into(),
        });
        let _ = self.socket.send(Message::Close(frame)).await;
        self.closed = true;
        let at = Instant::now();
        let code = status.map_or(1005, |(code, _)| code);
        self.shared
            .with_flux_conn(self.id, |c| c.close_sent = Some((at, code)));
    }
}
