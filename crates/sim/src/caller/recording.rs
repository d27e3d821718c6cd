//! What a simulated caller saw: the server's media, marks and clears, what the caller heard,
//! every breach of Twilio's rules, and both sides of the call as audio, each with its instant
//! so tests can measure latencies and the demo can write its WAV.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::webhooks::AfterStream;

/// A media message the server sent.
#[derive(Clone, Debug)]
pub struct MediaFrame {
    /// When it arrived.
    pub at: Instant,
    /// Its `streamSid`.
    pub stream_sid: String,
    /// The decoded μ-law payload.
    pub bytes: Vec<u8>,
}

/// A mark the server sent, and what Twilio did with it.
#[derive(Clone, Debug)]
pub struct MarkRecord {
    /// `mark.name`.
    pub name: String,
    /// When the server sent it.
    pub sent_at: Instant,
    /// When the caller echoed it (`None`: never, e.g. the call ended first).
    pub echoed_at: Option<Instant>,
    /// Echoed because a `clear` discarded its audio, not because it played.
    pub discarded: bool,
}

/// A `clear` the server sent.
#[derive(Clone, Debug)]
pub struct ClearRecord {
    /// When it arrived.
    pub at: Instant,
    /// Queued audio it dropped, in bytes (8 per ms).
    pub dropped_bytes: usize,
}

/// A stretch of audio the caller heard, starting at `started`.
#[derive(Clone, Debug)]
pub struct Played {
    /// When it started playing.
    pub started: Instant,
    /// The μ-law bytes heard.
    pub bytes: Vec<u8>,
}

/// Everything the call saw.
#[derive(Clone, Debug)]
pub struct Recording {
    /// When the socket opened: offset zero of the fixture's `at_ms`.
    pub started: Instant,
    /// The `streamSid` the server had to use.
    pub stream_sid: String,
    /// Every accepted media message, in order.
    pub media: Vec<MediaFrame>,
    /// Every accepted mark, in order.
    pub marks: Vec<MarkRecord>,
    /// Every accepted clear, in order.
    pub clears: Vec<ClearRecord>,
    /// What the caller heard, with clears applied.
    pub played: Vec<Played>,
    /// Bytes still queued when the call ended.
    pub unplayed_bytes: usize,
    /// Every breach of Twilio's rules by the server (Twilio would have ignored those messages).
    pub violations: Vec<String>,
    /// When `stop` was sent.
    pub stop_sent_at: Option<Instant>,
    /// The `callSid` of the `start` message sent, once sent.
    pub call_sid: Option<String>,
    /// What Twilio did after the server closed the stream (with
    /// [`PlayOptions::connect_action`](super::PlayOptions::connect_action) set and the caller
    /// still on the line); `None` otherwise.
    pub after_stream: Option<AfterStream>,
    /// When the server closed the socket (close frame or EOF) before the caller did.
    pub server_closed_at: Option<Instant>,
    /// The close code the server sent, if it sent a close frame.
    pub server_close_code: Option<u16>,
    /// When the call ended.
    pub finished: Instant,
    /// Every JSON message the server sent, with its offset in ms (for `replay`'s comparison).
    pub outbound: Vec<(u64, Value)>,
    /// What the caller sent, as μ-law, one byte per sample from the start of the call.
    pub caller: Vec<u8>,
    /// What the caller heard of the assistant, the same way (0xFF where the line was quiet).
    pub assistant: Vec<u8>,
}

impl Recording {
    /// All outbound audio received, in order (clears not applied).
    pub fn media_bytes(&self) -> Vec<u8> {
        let media = self.media.iter();
        media.flat_map(|m| m.bytes.iter().copied()).collect()
    }

    /// Outbound audio sent after `at` (clears not applied), e.g. what followed a `clear`.
    pub fn media_after(&self, at: Instant) -> Vec<u8> {
        let media = self.media.iter().filter(|m| m.at > at);
        media.flat_map(|m| m.bytes.iter().copied()).collect()
    }

    /// What the caller heard, concatenated.
    pub fn heard(&self) -> Vec<u8> {
        let played = self.played.iter();
        played.flat_map(|p| p.bytes.iter().copied()).collect()
    }

    /// Milliseconds from the socket opening to `at`.
    pub fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// The instant `at_ms` after the socket opened.
    pub fn at(&self, at_ms: u64) -> Instant {
        self.started + Duration::from_millis(at_ms)
    }
}
