//! The read half of a Twilio Media Stream, speaking in events (mini-redis's `Connection`).
//!
//! Every mode that reads a stream (the assistant, transcription) reads it through a
//! [`MediaStream`]: it waits for `start`, parses each text message, decodes media from base64
//! μ-law to PCM (or keeps the μ-law, for a recogniser that takes it as is), hands every raw text message to the call's recording, and counts (and thinly
//! logs) what it could not use. A call task only ever sees [`StreamEvent`]s, never bytes or JSON.

use std::fmt;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{Stream, StreamExt};
use tokio::time::{timeout_at, Instant};

use super::media::{Inbound, MediaRef, Start, Track};
use crate::audio::pcm::PcmFrames;
use crate::woken::Woken;

/// How long Twilio may take to send `start` after the socket opens.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Malformed messages logged one by one before the log is thinned out.
const MALFORMED_LOGGED: u64 = 5;
/// After the first few, one malformed message in this many is logged.
const MALFORMED_LOG_EVERY: u64 = 1000;
/// μ-law bytes of the largest frame Twilio sends (40 ms); the scratch buffer starts this big.
const MULAW_SCRATCH_BYTES: usize = 320;

/// What the stream said, once it has started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Audio of one track, decoded.
    Media(Frame),
    /// Twilio echoed one of our marks (its name): playback reached it, or a `clear` dropped it.
    Mark(String),
    /// The caller pressed a key (`"1"`, `"#"`…).
    Dtmf(String),
    /// The stream is over; nothing follows.
    End(StreamEnd),
}

/// One media message's audio, ready for a recogniser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Whose audio: transcription keeps the tracks apart, the assistant hears only `inbound`.
    pub track: Track,
    /// Milliseconds since the stream started, when Twilio gave a readable timestamp; places a
    /// track's first words on the call's timeline.
    pub timestamp_ms: Option<u64>,
    /// The audio, 8 kHz, cut from shared blocks (no allocation per frame): PCM16LE, or
    /// Twilio's μ-law as is from a stream read with [`MediaStream::undecoded`].
    pub audio: Bytes,
}

/// How a stream ended, from the socket's side; the same for every mode that reads one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Twilio sent `stop`: the call ended (the caller hung up, or the stream was stopped).
    Stopped,
    /// The socket closed without a `stop`.
    Closed,
    /// The socket failed.
    Failed,
}

impl StreamEnd {
    /// The `outcome` label of the calls counter (a public contract: never renamed).
    pub fn label(self) -> &'static str {
        match self {
            StreamEnd::Stopped => "caller_hung_up",
            StreamEnd::Closed => "socket_closed",
            StreamEnd::Failed => "socket_failed",
        }
    }

    /// The log's words for it.
    pub fn describe(self) -> &'static str {
        match self {
            StreamEnd::Stopped => "Twilio stopped the stream (the call ended)",
            StreamEnd::Closed => "Twilio closed the socket",
            StreamEnd::Failed => "the Twilio socket failed",
        }
    }
}

/// Where a stream's messages are copied as they arrive, before they are parsed: a call's
/// recording (`record::Tap`). A copier must never make the reader wait.
pub trait Copier: std::fmt::Debug + Send + Sync {
    /// One text message from Twilio, exactly as received.
    fn inbound(&self, text: &Utf8Bytes);
}

/// One Media Stream's read half and what it needs to turn messages into events.
#[derive(Debug)]
pub struct MediaStream<S = SplitStream<WebSocket>> {
    /// Twilio's messages, as the WebSocket delivers them; polled only when it woke the task
    /// (the call's task wakes for much else, and a poll of a quiet socket is not free).
    socket: Woken<S>,
    /// The call's recording: every text message from Twilio goes into it as received.
    tap: Option<Box<dyn Copier>>,
    /// Scratch buffer for one frame's μ-law bytes, reused frame after frame.
    mulaw: Vec<u8>,
    /// Cuts each frame's PCM from shared blocks, not one allocation a frame.
    pcm: PcmFrames,
    /// Frames keep Twilio's μ-law instead of being decoded to PCM.
    undecoded: bool,
    /// Messages after `start` that could not be used, for the call's summary.
    malformed: u64,
}

impl<S> MediaStream<S>
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    /// Reads `socket`.
    pub fn new(socket: S) -> Self {
        Self {
            socket: Woken::new(socket),
            tap: None,
            mulaw: Vec::with_capacity(MULAW_SCRATCH_BYTES),
            pcm: PcmFrames::new(),
            undecoded: false,
            malformed: 0,
        }
    }

    /// Hands frames over as Twilio's μ-law, undecoded (Deepgram Flux takes it as it is).
    pub fn undecoded(mut self) -> Self {
        self.undecoded = true;
        self
    }

    /// Reads until Twilio's `start`, skipping anything else; `None` when the socket ends first
    /// or `start` does not come within `limit`.
    pub async fn start(&mut self, limit: Duration) -> Option<Start> {
        let deadline = Instant::now() + limit;
        loop {
            let message = match timeout_at(deadline, self.socket.next()).await {
                Err(_) => {
                    tracing::warn!("media stream sent no start message within {limit:?}; closing");
                    return None;
                }
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Ok(message))) => message,
            };
            let Message::Text(text) = message else {
                continue;
            };
            self.record(&text);
            match Inbound::parse(&text) {
                Ok(Inbound::Start { start }) => return Some(start),
                Ok(Inbound::Connected) => tracing::debug!("media stream connected"),
                Ok(other) => tracing::warn!(event = ?kind(&other), "message before start skipped"),
                Err(err) => tracing::warn!(%err, "malformed message before start skipped"),
            }
        }
    }

    /// The next event after `start`. Cancel-safe: a message is only taken from the socket when
    /// it is handled at once. Once it has returned [`StreamEvent::End`], do not call it again.
    pub async fn next(&mut self) -> StreamEvent {
        loop {
            let text = match self.socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    self.skip("binary frame");
                    continue;
                }
                Some(Ok(Message::Close(_))) | None => return StreamEvent::End(StreamEnd::Closed),
                Some(Ok(_)) => continue,
                Some(Err(_)) => return StreamEvent::End(StreamEnd::Failed),
            };
            self.record(&text);
            if let Some(event) = self.event(&text) {
                return event;
            }
        }
    }

    /// Messages that could not be used since `start`.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The event one text message stands for, if any (malformed ones are counted here).
    fn event(&mut self, text: &str) -> Option<StreamEvent> {
        // Media first, read in place: the payload is not copied out of the message.
        if let Some(media) = MediaRef::parse(text) {
            let decoded = media.decode_into(&mut self.mulaw);
            return self.frame(decoded, media.track, media.timestamp_ms());
        }
        match Inbound::parse(text) {
            Ok(Inbound::Media { media }) => {
                let decoded = media.payload.decode_into(&mut self.mulaw);
                self.frame(decoded, media.track, media.timestamp_ms())
            }
            Ok(Inbound::Mark { mark }) => Some(StreamEvent::Mark(mark.name)),
            Ok(Inbound::Dtmf { dtmf }) => Some(StreamEvent::Dtmf(dtmf.digit)),
            Ok(Inbound::Stop) => Some(StreamEvent::End(StreamEnd::Stopped)),
            Ok(Inbound::Start { .. }) => {
                tracing::warn!("second start message ignored");
                None
            }
            Ok(Inbound::Connected) => None,
            Ok(Inbound::Unknown) => {
                self.skip("unknown event");
                None
            }
            Err(err) => {
                self.skip(err);
                None
            }
        }
    }

    /// The frame whose μ-law `decoded` left in the scratch buffer, or `None` (counted) when its
    /// payload was not base64.
    fn frame(
        &mut self,
        decoded: Result<(), base64::DecodeError>,
        track: Track,
        timestamp_ms: Option<u64>,
    ) -> Option<StreamEvent> {
        if decoded.is_err() {
            self.skip("media payload is not base64");
            return None;
        }
        Some(StreamEvent::Media(Frame {
            track,
            timestamp_ms,
            audio: if self.undecoded {
                self.pcm.copy(&self.mulaw)
            } else {
                self.pcm.decode(&self.mulaw)
            },
        }))
    }

    /// Counts a message that could not be used (or a part of one the caller of [`Self::next`]
    /// cannot use) and logs the first few, then one in a thousand.
    pub fn skip(&mut self, what: impl fmt::Display) {
        self.malformed += 1;
        if self.malformed <= MALFORMED_LOGGED || self.malformed % MALFORMED_LOG_EVERY == 0 {
            tracing::warn!(
                count = self.malformed,
                "unusable message from Twilio skipped: {what}"
            );
        }
    }

    /// Copies every text message to `tap` (the call's recording) as it arrives.
    pub fn copying_to(mut self, tap: impl Copier + 'static) -> Self {
        self.tap = Some(Box::new(tap));
        self
    }

    /// Hands a message to the call's recording, exactly as Twilio sent it.
    fn record(&self, text: &Utf8Bytes) {
        if let Some(tap) = &self.tap {
            tap.inbound(text);
        }
    }
}

/// The span every line of a Media Stream call carries, whatever the mode: its call and stream
/// sids.
pub fn call_span(start: &Start) -> tracing::Span {
    tracing::info_span!(
        "call",
        call_sid = %start.call_sid,
        stream_sid = %start.stream_sid
    )
}

/// The name of an inbound message's event, for the log.
fn kind(message: &Inbound) -> &'static str {
    match message {
        Inbound::Connected => "connected",
        Inbound::Start { .. } => "start",
        Inbound::Media { .. } => "media",
        Inbound::Mark { .. } => "mark",
        Inbound::Dtmf { .. } => "dtmf",
        Inbound::Stop => "stop",
        Inbound::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests;
