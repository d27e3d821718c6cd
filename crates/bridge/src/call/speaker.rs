//! The assistant's mouth: starts each reply in its own task, cancels it on barge-in and has
//! the writer clear Twilio's queue; the call task only says which reply to start or stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::stream::SplitSink;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::reply::{self, CallTools, Heard, Outlets, ReplyCommand, ReplyEvent, Script, Voice};
use super::turns::ReplyId;
use super::writer::{self, Writer};
use crate::queue;
use crate::record::Tap;

/// Reply events that may wait for the call task.
const REPLY_EVENTS: usize = 16;

/// The replies of one call and the socket's writer they speak through.
#[derive(Debug)]
pub(super) struct Speaker {
    /// The model and the voice every reply uses.
    voice: Arc<Voice>,
    /// The call's tools; `None` answers in words only.
    tools: Option<Arc<CallTools>>,
    /// The socket's only writer.
    writer: Writer,
    /// Replies report here; the speaker keeps a sender so the channel never closes.
    events_tx: queue::Sender<ReplyEvent>,
    /// What the replies report, read by the call task.
    pub(super) events: queue::Receiver<ReplyEvent>,
    /// The reply in progress.
    current: Option<Current>,
    /// Cancels every reply and the writer when the call ends.
    cancel: CancellationToken,
}

/// The reply a speaker runs.
#[derive(Debug)]
struct Current {
    /// Which reply.
    id: ReplyId,
    /// Cancels it.
    token: CancellationToken,
    /// Where its commands go.
    commands: queue::Sender<ReplyCommand>,
    /// The take it is sending, as the brain numbers them (0, then one more each resume): a
    /// `clear` drops the queued audio of this take only.
    take: u32,
    /// Where it learns what the caller has heard of it.
    heard: Arc<Heard>,
}

impl Speaker {
    /// Starts the writer of stream `stream_sid` on `sink` (recording what it sends with a `tap`).
    pub(super) fn new(
        voice: Arc<Voice>,
        tools: Option<Arc<CallTools>>,
        sink: SplitSink<WebSocket, Message>,
        stream_sid: String,
        tap: Option<Tap>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let writer = writer::spawn(sink, stream_sid, cancel.child_token(), tap);
        let (events_tx, events) = queue::bounded(REPLY_EVENTS);
        Self {
            voice,
            tools,
            writer,
            events_tx,
            events,
            current: None,
            cancel,
        }
    }

    /// Starts reply `id`, sending at once or `held` until [`Speaker::play`]; the reply it
    /// replaces (if any) stops producing.
    pub(super) fn start(&mut self, id: ReplyId, script: Script, held: bool) {
        let token = self.cancel.child_token();
        let outlets = Outlets {
            voice: self.voice.clone(),
            tools: self.tools.clone(),
            speech: self.writer.speech.clone(),
            events: self.events_tx.clone(),
        };
        let running = reply::spawn(id, script, held, outlets, token.clone());
        let current = Current {
            id,
            token,
            commands: running.commands,
            take: 0,
            heard: running.heard,
        };
        if let Some(old) = self.current.replace(current) {
            old.token.cancel();
        }
    }

    /// Barge-in: Twilio clears reply `id`'s audio and the audio queued for it is dropped. The
    /// reply stops for good, or, when `hold`, keeps its audio for [`Speaker::play`].
    pub(super) fn interrupt(&mut self, id: ReplyId, hold: bool) {
        let mut take = (id, u32::MAX);
        if let Some(current) = self.current.take() {
            if current.id == id {
                take.1 = current.take;
                if hold {
                    let _ = current.commands.try_send(ReplyCommand::Hold);
                    self.current = Some(current);
                } else {
                    current.token.cancel();
                }
            } else {
                self.current = Some(current);
            }
        }
        self.writer.clears.request(take);
        tracing::info!(
            reply = id.0,
            "caller interrupted the assistant: playback cleared"
        );
    }

    /// Reply `id` (held) plays from the start of phrase `from`, as take `take`.
    pub(super) fn play(&mut self, id: ReplyId, from: usize, take: u32) {
        if let Some(current) = self.current.as_mut().filter(|c| c.id == id) {
            current.take = take;
            let command = ReplyCommand::Play { from, take };
            if current.commands.try_send(command).is_err() {
                tracing::warn!(reply = id.0, "could not resume the reply: it is gone");
            }
        }
    }

    /// The caller heard the first `phrases` of reply `id` to the end: the reply drops their
    /// audio and makes the phrases after them.
    pub(super) fn heard(&self, id: ReplyId, phrases: usize) {
        if let Some(current) = self.current.as_ref().filter(|c| c.id == id) {
            current.heard.reached(phrases);
        }
    }

    /// Reply `id` is over (heard to the end, or dropped while held): its task and the audio it
    /// kept go.
    pub(super) fn retire(&mut self, id: ReplyId) {
        if let Some(current) = self.current.take() {
            if current.id == id {
                current.token.cancel();
            } else {
                self.current = Some(current);
            }
        }
    }

    /// The reply running, unless it is `current`, is over: its task and the audio it kept go.
    pub(super) fn retire_unless(&mut self, current: Option<ReplyId>) {
        if let Some(running) = self.current.as_ref().map(|c| c.id) {
            if Some(running) != current {
                self.retire(running);
            }
        }
    }

    /// Reply `id` failed: there is nothing left of it to cancel.
    pub(super) fn failed(&mut self, id: ReplyId) {
        if self.current.as_ref().is_some_and(|c| c.id == id) {
            self.current = None;
        }
    }

    /// The call ended: every reply stops at once; the returned future gives the writer up to
    /// `grace` to finish.
    pub(super) fn finish(self, grace: Duration) -> impl Future<Output = ()> {
        if let Some(current) = &self.current {
            current.token.cancel();
        }
        self.cancel.cancel();
        async move {
            let _ = timeout(grace, self.writer.task).await;
        }
    }
}
