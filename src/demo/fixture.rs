//! A recorded call (`fixtures/calls/*.jsonl` with its `.json` sidecar beside it), as the demo
//! plays it: the Twilio messages to send with their offsets, and what the caller says when.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::standin::Bank;

/// A fixture that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line or the sidecar is not what a recording holds.
    #[error("{path}:{line}: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 for the whole sidecar).
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Which way a recorded message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Dir {
    /// Twilio → server: what the demo sends.
    In,
    /// Server → Twilio: recorded for reference, never replayed.
    Out,
}

#[derive(Deserialize)]
struct Line {
    at_ms: u64,
    dir: Dir,
    msg: Value,
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
    /// The `streamSid` of every message.
    pub stream_sid: String,
    /// Offset of the last line, ms.
    pub duration_ms: u64,
    /// What the caller says, in order.
    pub utterances: Vec<Utterance>,
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
}

/// A key press.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Key {
    /// When, ms since the socket opened.
    pub at_ms: u64,
    /// The key.
    pub digit: String,
}

/// A message to send at an offset.
#[derive(Clone, Debug)]
pub struct Scheduled {
    /// Ms since the socket opened.
    pub at_ms: u64,
    /// The Twilio message as recorded.
    pub msg: Value,
    /// The decoded audio when it is a `media` message (what the caller's channel gets).
    pub audio: Option<Vec<u8>>,
}

/// A recorded call, loaded.
#[derive(Clone, Debug)]
pub struct CallFixture {
    /// Where it was read from.
    pub path: PathBuf,
    /// The sidecar.
    pub sidecar: Sidecar,
    /// The inbound messages, in order.
    pub inbound: Vec<Scheduled>,
    /// The server's messages, when the call was recorded by ivr-bridge: (ms, message).
    pub outbound: Vec<(u64, Value)>,
}

impl CallFixture {
    /// Loads `path` (a `.jsonl`) and the `.json` sidecar beside it.
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let sidecar_path = path.with_extension("json");
        let sidecar_text = read(&sidecar_path)?;
        let sidecar: Sidecar =
            serde_json::from_str(&sidecar_text).map_err(|e| FixtureError::Format {
                path: sidecar_path.clone(),
                line: 0,
                problem: e.to_string(),
            })?;
        let text = read(path)?;
        let mut inbound = Vec::new();
        let mut outbound = Vec::new();
        for (i, raw) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let bad = |problem: String| FixtureError::Format {
                path: path.to_owned(),
                line: i + 1,
                problem,
            };
            let line: Line = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
            if line.dir == Dir::Out {
                outbound.push((line.at_ms, line.msg));
                continue;
            }
            let audio = match line.msg["event"].as_str() {
                Some("media") => Some(media_audio(&line.msg).map_err(bad)?),
                _ => None,
            };
            inbound.push(Scheduled {
                at_ms: line.at_ms,
                msg: line.msg,
                audio,
            });
        }
        inbound.sort_by_key(|s| s.at_ms);
        Ok(Self {
            path: path.to_owned(),
            sidecar,
            inbound,
            outbound,
        })
    }

    /// A recogniser bank of the caller's utterances: the audio sent between each one's start and
    /// end, exactly as the server will receive it.
    pub fn bank(&self) -> Bank {
        let mut bank = Bank::new();
        for u in &self.sidecar.utterances {
            let audio: Vec<u8> = self
                .inbound
                .iter()
                .filter(|s| (u.start_ms..u.end_ms).contains(&s.at_ms))
                .filter_map(|s| s.audio.as_deref())
                .flatten()
                .copied()
                .collect();
            bank.add(&u.text, &audio);
        }
        bank
    }
}

fn read(path: &Path) -> Result<String, FixtureError> {
    std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        path: path.to_owned(),
        source,
    })
}

fn media_audio(msg: &Value) -> Result<Vec<u8>, String> {
    let payload = msg["media"]["payload"]
        .as_str()
        .ok_or("media message without a payload")?;
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| format!("media payload is not base64: {e}"))
}
