//! One accepted connection of the STT stand-in: one task owns the socket, feeds binary PCM to
//! the [`Recognizer`] and writes what it says. Without hooks the per-frame path is the
//! recogniser and a few branches, and messages go out as soon as they exist; the transcript
//! delay hook holds `Results` in a queue the same task releases on time, so reading goes on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::Value;
use tokio::time::{sleep, sleep_until, Instant};

use super::bank::{frame_hash, PCM_FRAME_BYTES};
use super::hooks::push_bounded;
use super::probe::{Probe, Seen};
use super::recognizer::{Recognizer, Settings};
use super::stt_record::{SttSent, RECORDED_AUDIO_LIMIT};
use super::stt_shared::{Shared, IDLE_TIMEOUT};
use super::wire::request_id;

/// How long to wait for the client's side of a closing handshake.
const CLOSING_WAIT: Duration = Duration::from_secs(2);
/// Close reason of a connection dropped by the disconnect hook.
const NET_0000: &str = "NET-0000 stand-in Deepgram disconnect";
/// Close reason of an idle socket, as Deepgram words it.
const NET_0001: &str = "NET-0001 Deepgram did not receive audio data or a text message within \
the timeout window. See https://dpgr.am/net0001";
/// The control messages Deepgram live accepts.
const CONTROLS: [&str; 3] = ["KeepAlive", "Finalize", "CloseStream"];

/// Something to write, in order.
enum Out {
    /// A JSON message, not to be sent before `not_before` (transcript delay hook).
    Json {
        /// The message.
        msg: Value,
        /// When it may go, if it is held.
        not_before: Option<Instant>,
    },
    /// A close frame; nothing is written after it.
    Close(u16, &'static str),
}

/// Serves one upgraded connection (`id`: its record, when recording) until it closes.
pub(super) async fn run(
    shared: Arc<Shared>,
    id: Option<usize>,
    settings: Settings,
    socket: WebSocket,
) {
    let probe = shared.probe.as_ref().map(|p| (p.clone(), p.next_id()));
    let rec = Recognizer::new(shared.bank.clone(), settings, request_id());
    let mut conn = Conn {
        shared,
        id,
        socket,
        rec,
        out: Vec::new(),
        queue: VecDeque::new(),
        probe,
        closing: false,
        closed: false,
    };
    conn.serve().await;
    let Conn { shared, .. } = conn;
    shared.with_conn(id, |c| c.ended_at = Some(Instant::now()));
}

/// One connection.
struct Conn {
    /// The stand-in's state and hooks.
    shared: Arc<Shared>,
    /// This connection's record, when recording.
    id: Option<usize>,
    /// The socket, read and written by this task only.
    socket: WebSocket,
    /// The recogniser.
    rec: Recognizer,
    /// Messages the recogniser produced, reused between client messages.
    out: Vec<Value>,
    /// What is waiting to be written, in order (only ever non-empty with the delay hook on).
    queue: VecDeque<Out>,
    /// The load generator's observer and this connection's id in it.
    probe: Option<(Probe, u64)>,
    /// A close frame was queued; only the client's close reply is awaited now.
    closing: bool,
    /// The close frame was written (or the socket broke): nothing more is written.
    closed: bool,
}

impl Conn {
    async fn serve(&mut self) {
        let kill = self.shared.kill();
        // Made once and moved, not made anew for every message: a load generator's stand-in
        // hears 50 messages a second from each of thousands of calls.
        let killed = kill.cancelled();
        tokio::pin!(killed);
        let silence = sleep(IDLE_TIMEOUT);
        tokio::pin!(silence);
        loop {
            let wait = if self.closing {
                CLOSING_WAIT
            } else {
                IDLE_TIMEOUT
            };
            silence.as_mut().reset(Instant::now() + wait);
            let held = self.held_until();
            let next = tokio::select! {
                () = &mut killed, if !self.closing => {
                    if self.shared.shutdown.is_cancelled() {
                        self.close(1001, "stand-in shutting down").await;
                    } else {
                        self.close(1011, NET_0000).await;
                    }
                    continue;
                }
                () = release(held), if held.is_some() => {
                    self.write_due().await;
                    continue;
                }
                next = self.socket.recv() => Ok(next),
                () = &mut silence => Err(()),
            };
            let go_on = match next {
                Ok(Some(Ok(msg))) => self.on_message(msg).await,
                Ok(Some(Err(e))) => {
                    if !self.closing {
                        let v = format!("connection dropped without a close handshake: {e}");
                        self.shared
                            .with_conn(self.id, |c| push_bounded(&mut c.violations, v));
                    }
                    false
                }
                Ok(None) => false,
                Err(_) if self.closing => false,
                Err(_) => {
                    self.rec.close_stream(&mut self.out);
                    self.flush().await;
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
                if let Some((probe, conn)) = &self.probe {
                    for frame in bytes.chunks_exact(PCM_FRAME_BYTES) {
                        let hash = frame_hash(frame);
                        if probe.wants_frame(hash) {
                            probe.record(Seen::SttFrame { conn: *conn, hash });
                        }
                    }
                }
                self.record_audio(&bytes);
                if !self.closing {
                    self.rec.push_audio(&bytes, &mut self.out);
                    self.flush().await;
                }
            }
            Message::Text(text) => match self.control(text.as_str()) {
                Some("Finalize") => {
                    self.rec.finalize(&mut self.out);
                    self.flush().await;
                }
                Some("CloseStream") if !self.closing => {
                    self.rec.close_stream(&mut self.out);
                    self.flush().await;
                    self.close(1000, "").await;
                }
                _ => {}
            },
            Message::Close(_) => return false,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        true
    }

    /// Records a binary message and anything wrong with it (recording only).
    fn record_audio(&self, bytes: &[u8]) {
        if !self.shared.recording() {
            return;
        }
        let closing = self.closing;
        self.shared.with_conn(self.id, |c| {
            if c.audio.len() + bytes.len() <= RECORDED_AUDIO_LIMIT {
                c.audio.extend_from_slice(bytes);
            }
            c.binary_frames += 1;
            if bytes.len() % 2 == 1 {
                let v = format!("binary frame of odd length {}", bytes.len());
                push_bounded(&mut c.violations, v);
            }
            if bytes.is_empty() {
                push_bounded(&mut c.violations, "empty binary frame".into());
            }
            if closing {
                let v = "audio after the stream was closed".into();
                push_bounded(&mut c.violations, v);
            }
        });
    }

    /// Reads a text message as a control message: its `type` if it is one Deepgram knows
    /// (recorded), `None` otherwise (recorded as a violation, and ignored).
    fn control(&self, text: &str) -> Option<&'static str> {
        let kind = serde_json::from_str::<Value>(text).ok().and_then(|v| {
            let kind = v.get("type")?.as_str()?.to_owned();
            CONTROLS.into_iter().find(|k| *k == kind)
        });
        self.shared.with_conn(self.id, |c| match kind {
            Some(k) => {
                push_bounded(&mut c.controls, (Instant::now(), k.to_owned()));
                match k {
                    "KeepAlive" => c.keepalives += 1,
                    "Finalize" => c.finalizes += 1,
                    _ => c.close_streams += 1,
                }
            }
            None => {
                let v = format!("text frame is not a control message: {text:?}");
                push_bounded(&mut c.violations, v);
            }
        });
        kind
    }

    /// Writes the recogniser's messages, or queues them behind held ones; `Results` are held
    /// by the transcript delay hook when it is set.
    async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let delay = self.shared.transcript_delay();
        let mut out = std::mem::take(&mut self.out);
        for msg in out.drain(..) {
            let held = !delay.is_zero() && msg["type"] == "Results";
            let not_before = held.then(|| Instant::now() + delay);
            self.queue.push_back(Out::Json { msg, not_before });
        }
        self.out = out;
        self.write_due().await;
    }

    /// Queues a close frame behind what is queued.
    async fn close(&mut self, code: u16, reason: &'static str) {
        self.queue.push_back(Out::Close(code, reason));
        self.closing = true;
        self.write_due().await;
    }

    /// When the first queued message may go, if one is held.
    fn held_until(&self) -> Option<Instant> {
        match self.queue.front() {
            Some(Out::Json { not_before, .. }) => *not_before,
            _ => None,
        }
    }

    /// Writes queued messages in order up to the first one still held, reporting each to the
    /// probe and the record.
    async fn write_due(&mut self) {
        let now = Instant::now();
        while let Some(out) = self.queue.pop_front() {
            if self.closed {
                continue;
            }
            match out {
                Out::Json { msg, not_before } => {
                    if not_before.is_some_and(|at| at > now) {
                        self.queue.push_front(Out::Json { msg, not_before });
                        return;
                    }
                    if let Some((probe, conn)) = &self.probe {
                        observe_sent(probe, *conn, &msg);
                    }
                    if self
                        .socket
                        .send(Message::text(msg.to_string()))
                        .await
                        .is_err()
                    {
                        self.closed = true;
                        continue;
                    }
                    self.shared.with_conn(self.id, |c| {
                        let at = Instant::now();
                        push_bounded(&mut c.sent, SttSent { at, msg });
                    });
                }
                Out::Close(code, reason) => {
                    let reason = reason.into();
                    let frame = CloseFrame { code, reason };
                    let _ = self.socket.send(Message::Close(Some(frame))).await;
                    self.closed = true;
                    let at = Instant::now();
                    self.shared
                        .with_conn(self.id, |c| c.close_sent = Some((at, code)));
                }
            }
        }
    }
}

/// Sleeps until `held`, or forever: no timer exists unless a message is held.
async fn release(held: Option<Instant>) {
    match held {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
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
