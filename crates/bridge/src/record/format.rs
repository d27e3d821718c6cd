//! The recording format (`RECORD_DIR`, `fixtures/calls/`): one JSON line per Twilio message
//! with its offset and direction (`.jsonl`), and a sidecar (`.json`) saying what the call is and,
//! for calls this server recorded, what it heard and answered. Written by [`super::call`]; read
//! by the simulated world's fixture reader, the demo and `replay`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which way a recorded message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Twilio → server: what a replay sends.
    In,
    /// Server → Twilio: recorded for reference, never replayed.
    Out,
}

/// What a recording carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A Media Stream: Twilio's messages with the audio both ways, and a WAV beside them.
    #[default]
    Stream,
    /// A ConversationRelay session: text messages both ways, no audio and no WAV.
    Relay,
}

impl Transport {
    /// Whether this is a Media Stream (the default, left out of sidecars).
    pub fn is_stream(&self) -> bool {
        *self == Self::Stream
    }
}

/// One line of a `.jsonl` recording.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RecordedLine {
    /// Ms since the socket opened.
    pub at_ms: u64,
    /// Which way it travelled.
    pub dir: Dir,
    /// The Twilio message as it was on the wire.
    pub msg: Value,
}

/// One thing the caller says, from the sidecar.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Utterance {
    /// The words.
    pub text: String,
    /// Start, ms since the socket opened.
    pub start_ms: u64,
    /// End, ms since the socket opened.
    pub end_ms: u64,
}

/// A sound the caller makes without words, from a fixture's sidecar.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Noise {
    /// What it is (`cough`).
    pub noise: String,
    /// Start, ms since the socket opened.
    pub start_ms: u64,
    /// End, ms since the socket opened.
    pub end_ms: u64,
}

/// The sidecar: what the recording is and what the caller says in it. Recordings made with
/// `RECORD_DIR` also say what the server heard and answered (the `Option` fields; hand-made
/// fixtures leave them out).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Sidecar {
    /// Fixture name.
    pub name: String,
    /// What the call does, for humans.
    pub description: String,
    /// The `callSid` of the `start` message.
    #[serde(default)]
    pub call_sid: String,
    /// The `streamSid` of every message (a relay session's `sessionId`).
    pub stream_sid: String,
    /// A Media Stream (the default) or a ConversationRelay session.
    #[serde(default, skip_serializing_if = "Transport::is_stream")]
    pub transport: Transport,
    /// Offset of the last line, ms.
    pub duration_ms: u64,
    /// What the caller says, in order.
    pub utterances: Vec<Utterance>,
    /// Sounds the caller makes without words (a cough), in order: hand-made fixtures only, a
    /// recogniser hears no words in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noises: Vec<Noise>,
    /// When the call was recorded (UTC, RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
    /// Why the call ended (the calls counter's `outcome` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// The server settings that shape turn taking, so a replay can use the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<RecordedSettings>,
    /// Every final segment the recogniser heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcripts: Option<Vec<Transcript>>,
    /// The caller's turns as the model got them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<Vec<Turn>>,
    /// What the assistant said, reply by reply (the greeting is the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replies: Option<Vec<Reply>>,
    /// When the caller spoke over the assistant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barge_ins: Option<Vec<BargeIn>>,
    /// Keys the caller pressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<Vec<Key>>,
    /// Tools the model called, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallRecord>>,
    /// End of the caller's speech → first reply audio, per answered turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_latencies_ms: Option<Vec<u64>>,
}

/// Server settings a recording was made with.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct RecordedSettings {
    /// `GREETING`.
    pub greeting: String,
    /// `SILENCE_TIMEOUT_MS`.
    pub silence_timeout_ms: u64,
    /// `TURN_DETECTION`.
    pub turn_detection: String,
}

/// A final segment of the caller's speech.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Transcript {
    /// The words.
    pub text: String,
    /// When the server got it, ms since the socket opened.
    pub at_ms: u64,
    /// Where its audio starts, ms (from the recogniser's timing), when known.
    pub start_ms: Option<u64>,
    /// Where its audio ends, ms, when known.
    pub end_ms: Option<u64>,
}

/// A caller turn.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Turn {
    /// When the turn ended, ms since the socket opened.
    pub at_ms: u64,
    /// The words the model was asked to answer.
    pub text: String,
}

/// One reply of the assistant.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Reply {
    /// The server's reply number (its marks are `reply-<n>.<phrase>`).
    pub reply: u64,
    /// When its first phrase was written, ms since the socket opened.
    pub at_ms: u64,
    /// Its phrases, in order, as spoken.
    pub phrases: Vec<String>,
    /// The caller spoke over it.
    pub interrupted: bool,
}

impl Reply {
    /// The whole reply.
    pub fn text(&self) -> String {
        self.phrases.join(" ")
    }
}

/// A barge-in.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct BargeIn {
    /// When, ms since the socket opened.
    pub at_ms: u64,
    /// The interrupted reply.
    pub reply: u64,
    /// What the caller heard of it, to the word ("…" at the cut); absent when nothing of it
    /// was audible yet, or in recordings made before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard: Option<String>,
    /// It was only a backchannel or a noise: the reply resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// A tool the model called.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ToolCallRecord {
    /// When its result came back, ms since the socket opened.
    pub at_ms: u64,
    /// The reply whose words called it.
    pub reply: u64,
    /// The tool.
    pub name: String,
    /// Its arguments, as the model wrote them (JSON).
    pub arguments: String,
    /// What the model was given back.
    pub result: String,
}

/// A key press.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Key {
    /// When, ms since the socket opened.
    pub at_ms: u64,
    /// The key.
    pub digit: String,
}
