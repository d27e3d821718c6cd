//! A ConversationRelay socket, speaking in messages: the read half parsed into [`Inbound`]s
//! (malformed and unknown messages counted and thinly logged, never fatal: Twilio's own rule
//! for ours, error 64107), the write half owned by one writer task fed through a bounded queue.
//!
//! Every message in and out of a session passes through [`Wire::receive`] and [`Wire::send`]:
//! the one place a recorder of relay sessions hooks in.

use std::fmt;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

use crate::queue;
use crate::record::Tap;
use crate::twilio::relay::{Inbound, Outbound, Setup};
use crate::twilio::stream::Copier;
use crate::twilio::stream::StreamEnd;

/// Messages waiting for the writer; a reply's tokens come a few at a time.
const OUTBOUND_QUEUE: usize = 64;
/// Malformed messages logged one by one before the log is thinned out.
const MALFORMED_LOGGED: u64 = 5;
/// After the first few, one malformed message in this many is logged.
const MALFORMED_LOG_EVERY: u64 = 1000;

/// One session's socket.
#[derive(Debug)]
pub struct Wire {
    /// Twilio's messages.
    socket: SplitStream<WebSocket>,
    /// To the writer task, the only one that writes.
    out: queue::Sender<Message>,
    /// The writer task.
    writer: JoinHandle<()>,
    /// Messages that could not be used.
    malformed: u64,
    /// The session's recording (`RECORD_DIR`): every message both ways, as it was on the wire.
    tap: Option<Tap>,
}

impl Wire {
    /// Splits `socket` and starts its writer; every message is copied to `tap`, when given.
    pub fn new(socket: WebSocket, tap: Option<Tap>) -> Self {
        let (sink, socket) = socket.split();
        let (out, rx) = queue::bounded(OUTBOUND_QUEUE);
        let writer = tokio::spawn(write_all(sink, rx));
        Self {
            socket,
            out,
            writer,
            malformed: 0,
            tap,
        }
    }

    /// Reads until `setup` (anything before it is skipped); `None` when the socket ends first or
    /// `setup` does not come within `limit`.
    pub async fn setup(&mut self, limit: Duration) -> Option<Setup> {
        let deadline = Instant::now() + limit;
        loop {
            match timeout_at(deadline, self.receive()).await {
                Err(_) => {
                    tracing::warn!("relay session sent no setup within {limit:?}; closing");
                    return None;
                }
                Ok(Err(_)) => return None,
                Ok(Ok(Inbound::Setup(setup))) => return Some(*setup),
                Ok(Ok(other)) => {
                    tracing::warn!(kind = other.kind(), "message before setup skipped")
                }
            }
        }
    }

    /// The next usable message, or how the socket ended. Cancel-safe: a message is taken from
    /// the socket only when it is handled at once.
    pub async fn receive(&mut self) -> Result<Inbound, StreamEnd> {
        loop {
            let text = match self.socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    self.skip("binary frame");
                    continue;
                }
                Some(Ok(Message::Close(_))) | None => return Err(StreamEnd::Closed),
                Some(Ok(_)) => continue,
                Some(Err(_)) => return Err(StreamEnd::Failed),
            };
            if let Some(tap) = &self.tap {
                tap.inbound(&text);
            }
            match Inbound::parse(&text) {
                Ok(Inbound::Unknown) => self.skip("unknown type"),
                Ok(message) => return Ok(message),
                Err(err) => self.skip(err),
            }
        }
    }

    /// Sends `message` (waiting while the writer's queue is full); `false` once the writer is
    /// gone.
    pub async fn send(&self, message: &Outbound) -> bool {
        let text = message.to_json().into();
        if let Some(tap) = &self.tap {
            tap.outbound(&text);
        }
        self.out.send(Message::Text(text)).await.is_ok()
    }

    /// Messages that could not be used.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Lets the writer send what is queued and close the socket, for up to `grace`.
    pub async fn finish(self, grace: Duration) {
        let Self { out, writer, .. } = self;
        drop(out);
        if timeout(grace, writer).await.is_err() {
            tracing::debug!("relay writer did not finish in time");
        }
    }

    /// Counts a message that could not be used; logs the first few, then one in a thousand.
    fn skip(&mut self, what: impl fmt::Display) {
        self.malformed += 1;
        if self.malformed <= MALFORMED_LOGGED || self.malformed % MALFORMED_LOG_EVERY == 0 {
            tracing::warn!(
                count = self.malformed,
                "unusable message from Twilio skipped: {what}"
            );
        }
    }
}

/// The writer: sends what comes, then closes the socket once the session lets go of it.
async fn write_all(mut sink: SplitSink<WebSocket, Message>, mut rx: queue::Receiver<Message>) {
    while let Some(message) = rx.recv().await {
        if sink.send(message).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}
