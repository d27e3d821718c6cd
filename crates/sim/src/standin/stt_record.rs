//! What the STT stand-in's record hook keeps: every accepted connection (query, key, audio,
//! control messages, what was sent and when, anything a real Deepgram would reject) and every
//! refused handshake.

use serde_json::Value;
use tokio::time::Instant;

use super::wire::Query;

/// Audio bytes a recorded connection keeps (about 30 minutes of PCM); later audio is counted
/// in [`SttConnection::binary_frames`] but not kept.
pub const RECORDED_AUDIO_LIMIT: usize = 64 << 20;

/// A handshake the stand-in refused (no upgrade happened).
#[derive(Clone, Debug)]
pub struct SttRefusal {
    /// When the handshake arrived.
    pub at: Instant,
    /// The status returned (401 bad key, 503 fault hook).
    pub status: u16,
    /// The `Authorization` header that came with it.
    pub authorization: Option<String>,
    /// Its query string.
    pub query: Query,
}

/// A message the stand-in sent, with the moment it went on the wire.
#[derive(Clone, Debug)]
pub struct SttSent {
    /// When it was written to the socket.
    pub at: Instant,
    /// The JSON message.
    pub msg: Value,
}

/// Everything that happened on one accepted connection.
#[derive(Clone, Debug)]
pub struct SttConnection {
    /// When the upgrade was accepted.
    pub opened_at: Instant,
    /// The handshake's query string.
    pub query: Query,
    /// The handshake's `Authorization` header.
    pub authorization: Option<String>,
    /// Every binary byte received, in order (up to [`RECORDED_AUDIO_LIMIT`]).
    pub audio: Vec<u8>,
    /// How many binary messages carried it.
    pub binary_frames: usize,
    /// `{"type":"KeepAlive"}` messages received.
    pub keepalives: usize,
    /// `{"type":"Finalize"}` messages received.
    pub finalizes: usize,
    /// `{"type":"CloseStream"}` messages received.
    pub close_streams: usize,
    /// Every text control message with its arrival time, for ordering and timing checks.
    pub controls: Vec<(Instant, String)>,
    /// Things a real Deepgram would reject or misinterpret.
    pub violations: Vec<String>,
    /// Every message sent, in order.
    pub sent: Vec<SttSent>,
    /// The close frame the stand-in sent: (when, code).
    pub close_sent: Option<(Instant, u16)>,
    /// When the connection task ended (socket gone).
    pub ended_at: Option<Instant>,
}

impl SttConnection {
    /// The first `Results` with words the stand-in sent at or after `at`.
    pub fn first_words_after(&self, at: Instant) -> Option<&SttSent> {
        self.sent
            .iter()
            .filter(|s| s.msg["type"] == "Results" && !transcript(&s.msg).is_empty())
            .find(|s| s.at >= at)
    }

    /// Transcripts of the final `Results`, in order, empty ones included.
    pub fn finals(&self) -> Vec<String> {
        self.sent
            .iter()
            .filter(|s| s.msg["type"] == "Results" && s.msg["is_final"] == true)
            .map(|s| transcript(&s.msg).to_owned())
            .collect()
    }

    /// Sent messages of one `type`.
    pub fn sent_of(&self, kind: &str) -> Vec<&SttSent> {
        self.sent.iter().filter(|s| s.msg["type"] == kind).collect()
    }
}

/// `channel.alternatives[0].transcript` of a `Results` message.
pub fn transcript(msg: &Value) -> &str {
    msg["channel"]["alternatives"][0]["transcript"]
        .as_str()
        .unwrap_or_default()
}

/// A new connection's record, noting a query a real Deepgram would misread.
pub(super) fn opened(at: Instant, query: Query, authorization: Option<String>) -> SttConnection {
    let mut violations = Vec::new();
    if query.get("encoding") != Some("linear16") || query.get("sample_rate") != Some("8000") {
        violations.push(format!(
            "the stand-in expects encoding=linear16&sample_rate=8000, got {:?}",
            query.raw
        ));
    }
    opened_flux(at, query, authorization, violations)
}

/// A new connection's record with the `violations` its handshake already showed (a Flux
/// connection's record: audio is μ-law, `sent` holds `TurnInfo`s).
pub(super) fn opened_flux(
    at: Instant,
    query: Query,
    authorization: Option<String>,
    violations: Vec<String>,
) -> SttConnection {
    SttConnection {
        opened_at: at,
        query,
        authorization,
        audio: Vec::new(),
        binary_frames: 0,
        keepalives: 0,
        finalizes: 0,
        close_streams: 0,
        controls: Vec::new(),
        violations,
        sent: Vec::new(),
        close_sent: None,
        ended_at: None,
    }
}
