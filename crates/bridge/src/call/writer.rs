//! The one task that writes to Twilio's socket, and where barge-in cuts the audio.
//!
//! Replies queue [`Speech`] (frames and marks) on a bounded queue; the call task asks for a
//! clear through [`Clears`], which the writer always checks first. On a clear the writer throws
//! away every queued frame of the interrupted reply (and older ones) *before* sending Twilio's
//! `clear`, so the `clear` never waits behind audio that should not play.
//!
//! Speech already queued when the writer wakes leaves in one socket write (up to
//! [`SPEECH_PER_WRITE`] messages): a reply's audio arrives from the TTS faster than it plays,
//! and a write per 20 ms frame cost a system call each. Nothing waits to fill a batch, and a
//! `clear` that comes in ends the batch so it goes out next.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::SplitSink;
use futures::SinkExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::turns::ReplyId;
use crate::queue;
use crate::record::Tap;
use crate::twilio::media::Outbound;
use crate::woken::Woken;

/// Frames a reply may queue ahead of the socket (320 ms of audio, four socket writes' worth);
/// more waits in the reply task, where cancellation is instant. The queue holds only what is
/// in it (see [`crate::queue`]), and a reply's audio keeps it full while the reply is sent.
pub const SPEECH_QUEUE_FRAMES: usize = 16;

/// Most messages written to the socket at once (≈ 1.2 KB of media messages). The socket's
/// write buffer keeps the largest size it ever held for the rest of the call, so this is also
/// memory every call keeps: 32 at a time (≈ 10 KB) made an idle call 13 KiB bigger, while 4
/// already takes three quarters of the reply's system calls away.
pub const SPEECH_PER_WRITE: usize = 4;

/// One playing of a reply: its first is take 0, and each time it resumes after an interruption
/// that turned out not to be one, the next. A `clear` drops a take and everything older.
pub type Take = (ReplyId, u32);

/// Audio and marks of one reply, in the order Twilio must play them.
#[derive(Debug)]
pub enum Speech {
    /// 20 ms of μ-law.
    Frame {
        /// The reply and take the frame belongs to.
        take: Take,
        /// The audio ([`FRAME_BYTES`](crate::audio::frames::FRAME_BYTES) of it): a slice of the reply's tape where it can be, so
        /// the queue holds handles, not copies.
        audio: Bytes,
    },
    /// Ask Twilio to tell us when playback reaches this point: the end of one phrase.
    Mark {
        /// The reply and take the mark belongs to.
        take: Take,
        /// The phrase it ends.
        phrase: usize,
    },
}

impl Speech {
    fn take(&self) -> Take {
        match self {
            Speech::Frame { take, .. } | Speech::Mark { take, .. } => *take,
        }
    }
}

/// Barge-in's way to the writer, overtaking queued speech: drop everything queued for the
/// interrupted take and older, then send Twilio `clear`. Clears asked for before the writer gets
/// to them are one `clear` for the newest take (it drops everything the older ones would, and a
/// `clear` empties Twilio's whole buffer either way), so asking never fails and never waits; a
/// channel here cost every call a kilobyte.
#[derive(Debug, Default)]
pub struct Clears {
    /// The newest take to clear, until the writer takes it.
    pending: Mutex<Option<Take>>,
    /// Wakes the writer.
    wake: Notify,
}

impl Clears {
    /// Asks the writer to clear `take` and everything older.
    pub fn request(&self, take: Take) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *pending = (*pending).max(Some(take));
        drop(pending);
        self.wake.notify_one();
    }

    /// The take to clear, if a clear was asked for since the last one.
    fn take(&self) -> Option<Take> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Whether a clear waits.
    fn is_pending(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The next clear asked for. Cancel-safe: a clear stays pending until this returns it.
    async fn next(&self) -> Take {
        loop {
            if let Some(take) = self.take() {
                return take;
            }
            self.wake.notified().await;
        }
    }
}

/// Handles to the writer task.
#[derive(Debug)]
pub struct Writer {
    /// Where replies queue their audio.
    pub speech: queue::Sender<Speech>,
    /// Where barge-in goes.
    pub clears: Arc<Clears>,
    /// The task, awaited when the call ends.
    pub task: JoinHandle<()>,
}

/// Starts the writer for the stream `stream_sid`; it stops when `cancel` fires or every sender
/// of speech is gone. With a `tap`, every message sent is also handed to the call's recording.
pub fn spawn(
    sink: SplitSink<WebSocket, Message>,
    stream_sid: String,
    cancel: CancellationToken,
    tap: Option<Tap>,
) -> Writer {
    let (speech, speech_rx) = queue::bounded(SPEECH_QUEUE_FRAMES);
    let clears = Arc::new(Clears::default());
    let task = tokio::spawn(
        TwilioWriter {
            sink,
            stream_sid,
            speech: speech_rx,
            clears: clears.clone(),
            held: VecDeque::new(),
            dropped_through: None,
            tap,
        }
        .run(cancel),
    );
    Writer {
        speech,
        clears,
        task,
    }
}

struct TwilioWriter {
    sink: SplitSink<WebSocket, Message>,
    stream_sid: String,
    speech: queue::Receiver<Speech>,
    clears: Arc<Clears>,
    /// Speech of newer replies found while draining for a clear; sent before anything else.
    held: VecDeque<Speech>,
    /// Takes up to and including this one were interrupted: their speech is dropped.
    dropped_through: Option<Take>,
    /// The call's recording, when `RECORD_DIR` is set.
    tap: Option<Tap>,
}

impl TwilioWriter {
    async fn run(mut self, cancel: CancellationToken) {
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        // Polled only once it woke the task: each poll of a token locks it twice.
        let mut cancelled = Woken::new(cancelled);
        loop {
            let sent = tokio::select! {
                biased;
                () = &mut cancelled => break,
                take = self.clears.next() => self.clear(take).await,
                speech = next_speech(&mut self.held, &mut self.speech) => match speech {
                    Some(speech) => self.play_queued(speech).await,
                    None => break,
                },
            };
            if sent.is_err() {
                tracing::debug!("Twilio socket closed; writer stops");
                break;
            }
            // A reply's audio is queued far faster than it plays and Twilio buffers it, while
            // every call's incoming audio is on its way to the recogniser: after each write,
            // the other tasks go first rather than waiting for a whole phrase to be written.
            tokio::task::yield_now().await;
        }
        let _ = self.sink.close().await;
    }

    async fn clear(&mut self, take: Take) -> Result<(), axum::Error> {
        self.dropped_through = self.dropped_through.max(Some(take));
        let mut dropped = 0usize;
        self.held.retain(|s| {
            let keep = s.take() > take;
            dropped += usize::from(!keep);
            keep
        });
        while let Ok(speech) = self.speech.try_recv() {
            if speech.take() > take {
                self.held.push_back(speech);
            } else {
                dropped += 1;
            }
        }
        tracing::debug!(dropped, "barge-in: queued audio dropped, sending clear");
        self.send(Outbound::Clear).await
    }

    /// Writes `first` and whatever speech is already queued behind it, then flushes once.
    async fn play_queued(&mut self, first: Speech) -> Result<(), axum::Error> {
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(speech) = next {
            if self.play(speech).await? {
                batched += 1;
            }
            // A clear goes out before anything more of the reply.
            next = if batched < SPEECH_PER_WRITE && !self.clears.is_pending() {
                self.held
                    .pop_front()
                    .or_else(|| self.speech.try_recv().ok())
            } else {
                None
            };
        }
        if batched == 0 {
            return Ok(());
        }
        self.sink.flush().await
    }

    /// Queues `speech` for the socket; false when it belongs to an interrupted take.
    async fn play(&mut self, speech: Speech) -> Result<bool, axum::Error> {
        if Some(speech.take()) <= self.dropped_through {
            return Ok(false);
        }
        match speech {
            Speech::Frame { audio, .. } => self.feed(Outbound::Media(&audio)).await?,
            Speech::Mark {
                take: (reply, take),
                phrase,
            } => {
                let name = reply.take_mark_name(take, phrase);
                self.feed(Outbound::Mark(&name)).await?;
            }
        }
        Ok(true)
    }

    /// Sends `message` now.
    async fn send(&mut self, message: Outbound<'_>) -> Result<(), axum::Error> {
        self.feed(message).await?;
        self.sink.flush().await
    }

    /// Queues `message` in the socket's write buffer; a flush sends it.
    async fn feed(&mut self, message: Outbound<'_>) -> Result<(), axum::Error> {
        let json = Utf8Bytes::from(message.to_json(&self.stream_sid));
        if let Some(tap) = &self.tap {
            tap.outbound(&json);
        }
        self.sink.feed(Message::Text(json)).await
    }
}

/// Held speech first, then the channel.
async fn next_speech(
    held: &mut VecDeque<Speech>,
    speech: &mut queue::Receiver<Speech>,
) -> Option<Speech> {
    match held.pop_front() {
        Some(s) => Some(s),
        None => speech.recv().await,
    }
}
