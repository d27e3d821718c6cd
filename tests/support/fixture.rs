//! Recorded Twilio calls from `fixtures/calls/`: the wire messages with their timing, and the
//! sidecar that says what the caller said when.

use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// μ-law bytes per Twilio media frame: 20 ms at 8 kHz.
pub const FRAME_BYTES: usize = 160;

/// Every recorded call, so helpers can load them all (the STT bank needs every utterance).
pub const ALL: [&str; 4] = ["one_question", "three_turns", "barge_in", "visiting_hours"];

/// Which way a recorded message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Twilio → server: what the replayer sends.
    In,
    /// Server → Twilio: recorded for reference only, never replayed.
    Out,
}

/// One line of a `.jsonl` recording.
#[derive(Clone, Debug, Deserialize)]
pub struct FixtureLine {
    /// Milliseconds since the socket opened; the replayer sends the line at this offset.
    pub at_ms: u64,
    /// Direction of travel.
    pub dir: Dir,
    /// The Twilio message exactly as it was on the wire.
    pub msg: Value,
}

/// One thing the caller said, as the fixture generator placed it.
#[derive(Clone, Debug, Deserialize)]
pub struct Utterance {
    /// The words, exactly as the STT fake will report them.
    pub text: String,
    /// Start of the utterance (ms since the socket opened).
    pub start_ms: u64,
    /// End of the utterance (ms since the socket opened).
    pub end_ms: u64,
}

/// The `.json` sidecar describing a recording.
#[derive(Clone, Debug, Deserialize)]
pub struct FixtureMeta {
    /// Fixture name (file stem).
    pub name: String,
    /// What the call exercises, for humans.
    pub description: String,
    /// `callSid` of the `start` message.
    pub call_sid: String,
    /// `streamSid` every message of the call carries.
    pub stream_sid: String,
    /// Offset of the last line.
    pub duration_ms: u64,
    /// What the caller said, in order.
    pub utterances: Vec<Utterance>,
}

/// A recorded call, loaded and parsed.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Fixture name (file stem).
    pub name: String,
    /// Every recorded message, in file order.
    pub lines: Vec<FixtureLine>,
    /// The sidecar.
    pub meta: FixtureMeta,
}

impl Fixture {
    /// Loads `fixtures/calls/<name>.jsonl` and its sidecar. Panics with the path on any
    /// problem: a broken fixture is a broken test setup.
    pub fn load(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/calls");
        let jsonl = dir.join(format!("{name}.jsonl"));
        let sidecar = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&jsonl)
            .unwrap_or_else(|e| panic!("reading {}: {e}", jsonl.display()));
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}:{}: {e}", jsonl.display(), i + 1))
            })
            .collect();
        let meta_text = std::fs::read_to_string(&sidecar)
            .unwrap_or_else(|e| panic!("reading {}: {e}", sidecar.display()));
        let meta = serde_json::from_str(&meta_text)
            .unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
        Self {
            name: name.to_owned(),
            lines,
            meta,
        }
    }

    /// All four recordings.
    pub fn all() -> Vec<Fixture> {
        ALL.iter().map(|name| Fixture::load(name)).collect()
    }

    /// What the caller says in this call, utterance by utterance.
    pub fn said(&self) -> Vec<&str> {
        self.meta
            .utterances
            .iter()
            .map(|u| u.text.as_str())
            .collect()
    }

    /// The `streamSid` of this call.
    pub fn stream_sid(&self) -> &str {
        &self.meta.stream_sid
    }

    /// Every inbound `media` frame as `(at_ms, μ-law bytes)`, in order.
    pub fn inbound_frames(&self) -> Vec<(u64, Vec<u8>)> {
        self.lines
            .iter()
            .filter(|l| l.dir == Dir::In && l.msg["event"] == "media")
            .map(|l| (l.at_ms, media_payload(&l.msg)))
            .collect()
    }

    /// All inbound audio of the call, concatenated.
    pub fn inbound_mulaw(&self) -> Vec<u8> {
        self.inbound_frames()
            .into_iter()
            .flat_map(|(_, b)| b)
            .collect()
    }

    /// The μ-law bytes of utterance `index`: the media frames starting in
    /// `[start_ms, end_ms)`, exactly as the replayer sends them.
    pub fn utterance_mulaw(&self, index: usize) -> Vec<u8> {
        let u = &self.meta.utterances[index];
        self.inbound_frames()
            .into_iter()
            .filter(|(at, _)| (u.start_ms..u.end_ms).contains(at))
            .flat_map(|(_, b)| b)
            .collect()
    }

    /// Every utterance with its μ-law bytes.
    pub fn utterances_mulaw(&self) -> Vec<(Utterance, Vec<u8>)> {
        (0..self.meta.utterances.len())
            .map(|i| (self.meta.utterances[i].clone(), self.utterance_mulaw(i)))
            .collect()
    }
}

/// The decoded payload of a recorded media message. Panics on a malformed fixture.
fn media_payload(msg: &Value) -> Vec<u8> {
    let b64 = msg["media"]["payload"]
        .as_str()
        .unwrap_or_else(|| panic!("media message without payload: {msg}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("media payload is not base64 ({e}): {msg}"))
}

/// μ-law → 16-bit little-endian PCM with the server's own codec, as the server feeds Deepgram.
pub fn pcm16le(mulaw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mulaw.len() * 2);
    for &code in mulaw {
        out.extend_from_slice(&ivr_bridge::audio::mulaw::decode(code).to_le_bytes());
    }
    out
}
