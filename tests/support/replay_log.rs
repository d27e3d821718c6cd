//! What a replay saw: the server's media, marks and clears, what the caller heard, and every
//! breach of Twilio's rules, each with its instant so tests can measure latencies.

use std::time::Duration;

use tokio::time::Instant;

use super::twilio_model::Played;

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
    /// When the replayer echoed it (`None`: never, e.g. the call ended first).
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

/// Everything the replay saw.
#[derive(Clone, Debug)]
pub struct ReplayLog {
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
    /// When the server closed the socket (close frame or EOF) before the replayer did.
    pub server_closed_at: Option<Instant>,
    /// The close code the server sent, if it sent a close frame.
    pub server_close_code: Option<u16>,
    /// When the replay ended.
    pub finished: Instant,
}

impl ReplayLog {
    /// All outbound audio received, in order (clears not applied).
    pub fn media_bytes(&self) -> Vec<u8> {
        self.media
            .iter()
            .flat_map(|m| m.bytes.iter().copied())
            .collect()
    }

    /// What the caller heard, concatenated.
    pub fn heard(&self) -> Vec<u8> {
        self.played
            .iter()
            .flat_map(|p| p.bytes.iter().copied())
            .collect()
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
