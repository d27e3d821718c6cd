//! One accepted connection of the STT fake: a read loop feeding the [`Recognizer`] and a writer
//! task that owns the socket's sink, so transcript delays never stall reading.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use super::fake_stt::{Shared, SttSent};
use super::stt_engine::{Recognizer, SttSettings};
use super::wire::request_id;

/// Deepgram closes a socket that received nothing for this long (NET-0001).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's side of a closing handshake.
const CLOSING_WAIT: Duration = Duration::from_secs(2);
const NET_0000: &str = "NET-0000 fake Deepgram disconnect";
const NET_0001: &str = "NET-0001 Deepgram did not receive audio data or a text message within \
the timeout window. See https://dpgr.am/net0001";

/// What the read loop hands the writer.
enum Out {
    /// A JSON message, not to be sent before `not_before` (transcript delay hook).
    Json { msg: Value, not_before: Instant },
    /// A close frame; the writer stops after it.
    Close(u16, &'static str),
}

/// Serves one upgraded connection until it closes.
pub(super) async fn run(shared: Arc<Shared>, id: usize, settings: SttSettings, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(256);
    let writer = tokio::spawn(write(shared.clone(), id, sink, rx));
    let rec = Recognizer::new(shared.bank.clone(), settings, request_id());
    let mut conn = Conn {
        shared,
        id,
        tx,
        rec,
        closing: false,
    };
    conn.read(stream).await;
    let Conn { shared, tx, .. } = conn;
    drop(tx);
    let _ = writer.await;
    shared.with_conn(id, |c| c.ended_at = Some(Instant::now()));
}

struct Conn {
    shared: Arc<Shared>,
    id: usize,
    tx: mpsc::Sender<Out>,
    rec: Recognizer,
    /// A close frame was queued; only the client's close reply is awaited now.
    closing: bool,
}

impl Conn {
    async fn read(&mut self, mut stream: SplitStream<WebSocket>) {
        let kill = self.shared.kill.lock().unwrap().clone();
        loop {
            let wait = if self.closing {
                CLOSING_WAIT
            } else {
                IDLE_TIMEOUT
            };
            let next = tokio::select! {
                _ = kill.cancelled(), if !self.closing => {
                    self.close(1011, NET_0000).await;
                    continue;
                }
                next = timeout(wait, stream.next()) => next,
            };
            let go_on = match next {
                Ok(Some(Ok(msg))) => self.on_message(msg).await,
                Ok(Some(Err(e))) => {
                    if !self.closing {
                        let v = format!("connection dropped without a close handshake: {e}");
                        self.shared.with_conn(self.id, |c| c.violations.push(v));
                    }
                    false
                }
                Ok(None) => false,
                Err(_) if self.closing => false,
                Err(_) => {
                    let last = self.rec.close_stream();
                    self.send(last).await;
                    self.close(1011, NET_0001).await;
                    true
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// Handles one client message; `false` when the client closed.
    async fn on_message(&mut self, msg: Message) -> bool {
        match msg {
            Message::Binary(bytes) => {
                self.record_audio(&bytes);
                if !self.closing {
                    let replies = self.rec.push_audio(&bytes);
                    self.send(replies).await;
                }
            }
            Message::Text(text) => match self.control(text.as_str()) {
                Some("Finalize") => {
                    let replies = self.rec.finalize();
                    self.send(replies).await;
                }
                Some("CloseStream") if !self.closing => {
                    let replies = self.rec.close_stream();
                    self.send(replies).await;
                    self.close(1000, "").await;
                }
                _ => {}
            },
            Message::Close(_) => return false,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        true
    }

    fn record_audio(&self, bytes: &[u8]) {
        let closing = self.closing;
        self.shared.with_conn(self.id, |c| {
            c.audio.extend_from_slice(bytes);
            c.binary_frames += 1;
            if bytes.len() % 2 == 1 {
                c.violations
                    .push(format!("binary frame of odd length {}", bytes.len()));
            }
            if bytes.is_empty() {
                c.violations.push("empty binary frame".into());
            }
            if closing {
                c.violations
                    .push("audio after the stream was closed".into());
            }
        });
    }

    /// Records a text message; returns its control `type` if it is a valid one.
    fn control(&self, text: &str) -> Option<&'static str> {
        let kind = serde_json::from_str::<Value>(text).ok().and_then(|v| {
            let kind = v.get("type")?.as_str()?.to_owned();
            ["KeepAlive", "Finalize", "CloseStream"]
                .into_iter()
                .find(|k| *k == kind)
        });
        self.shared.with_conn(self.id, |c| match kind {
            Some(k) => {
                c.controls.push((Instant::now(), k.to_owned()));
                match k {
                    "KeepAlive" => c.keepalives += 1,
                    "Finalize" => c.finalizes += 1,
                    _ => c.close_streams += 1,
                }
            }
            None => c
                .violations
                .push(format!("text frame is not a control message: {text:?}")),
        });
        kind
    }

    /// Queues messages for the writer; `Results` are held by the transcript delay.
    async fn send(&self, msgs: Vec<Value>) {
        let delay = *self.shared.transcript_delay.lock().unwrap();
        for msg in msgs {
            let hold = if msg["type"] == "Results" {
                delay
            } else {
                Duration::ZERO
            };
            let out = Out::Json {
                msg,
                not_before: Instant::now() + hold,
            };
            if self.tx.send(out).await.is_err() {
                return;
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Out::Close(code, reason)).await;
        self.closing = true;
    }
}

/// Owns the sink: writes queued messages in order and records each with its send time.
async fn write(
    shared: Arc<Shared>,
    id: usize,
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Out::Json { msg, not_before } => {
                sleep_until(not_before).await;
                if sink.send(Message::text(msg.to_string())).await.is_err() {
                    return;
                }
                shared.with_conn(id, |c| {
                    c.sent.push(SttSent {
                        at: Instant::now(),
                        msg,
                    })
                });
            }
            Out::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                shared.with_conn(id, |c| c.close_sent = Some((Instant::now(), code)));
                return;
            }
        }
    }
}
