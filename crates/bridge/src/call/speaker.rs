//! The assistant's mouth: starts each reply in its own task, cancels it on barge-in and has
//! the writer clear Twilio's queue; the call task only says which reply to start or stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::reply::{self, ReplyEvent, Script, Voice};
use super::turns::ReplyId;
use super::writer::{self, Control, Writer};
use crate::record::Tap;

/// Reply events that may wait for the call task.
const REPLY_EVENTS: usize = 16;

/// The replies of one call and the socket's writer they speak through.
#[derive(Debug)]
pub(super) struct Speaker {
    /// The model and the voice every reply uses.
    voice: Arc<Voice>,
    /// The socket's only writer.
    writer: Writer,
    /// Replies report here; the speaker keeps a sender so the channel never closes.
    events_tx: mpsc::Sender<ReplyEvent>,
    /// What the replies report, read by the call task.
    pub(super) events: mpsc::Receiver<ReplyEvent>,
    /// The reply in progress and the token that cancels it.
    current: Option<(ReplyId, CancellationToken)>,
    /// Cancels every reply and the writer when the call ends.
    cancel: CancellationToken,
}

impl Speaker {
    /// Starts the writer of stream `stream_sid` on `sink` (recording what it sends with a `tap`).
    pub(super) fn new(
        voice: Arc<Voice>,
        sink: SplitSink<WebSocket, Message>,
        stream_sid: String,
        tap: Option<Tap>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let writer = writer::spawn(sink, stream_sid, cancel.child_token(), tap);
        let (events_tx, events) = mpsc::channel(REPLY_EVENTS);
        Self {
            voice,
            writer,
            events_tx,
            events,
            current: None,
            cancel,
        }
    }

    /// Starts reply `id`; the reply it replaces (if any) stops producing.
    pub(super) fn start(&mut self, id: ReplyId, script: Script) {
        let token = self.cancel.child_token();
        reply::spawn(
            id,
            script,
            self.voice.clone(),
            self.writer.speech.clone(),
            self.events_tx.clone(),
            token.clone(),
        );
        if let Some((_, old)) = self.current.replace((id, token)) {
            old.cancel();
        }
    }

    /// Barge-in: reply `id` stops producing, its queued audio is dropped and Twilio clears.
    pub(super) fn interrupt(&mut self, id: ReplyId) {
        if let Some((current, token)) = self.current.take() {
            if current == id {
                token.cancel();
            } else {
                self.current = Some((current, token));
            }
        }
        if self
            .writer
            .control
            .try_send(Control::Clear { reply: id })
            .is_err()
        {
            tracing::warn!("could not queue clear: writer gone or busy");
        }
        tracing::info!(
            reply = id.0,
            "caller interrupted the assistant: playback cleared"
        );
    }

    /// Reply `id` failed: there is nothing left of it to cancel.
    pub(super) fn failed(&mut self, id: ReplyId) {
        if self
            .current
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            self.current = None;
        }
    }

    /// The call ended: every reply stops at once; the returned future gives the writer up to
    /// `grace` to finish.
    pub(super) fn finish(self, grace: Duration) -> impl Future<Output = ()> {
        if let Some((_, token)) = &self.current {
            token.cancel();
        }
        self.cancel.cancel();
        async move {
            let _ = timeout(grace, self.writer.task).await;
        }
    }
}
