//! A recorded call (`fixtures/calls/*.jsonl` with its `.json` sidecar beside it), the one reader
//! the demo, replay, the load generator and the tests use: the Twilio messages to send with
//! their offsets (media decoded once), and what the caller says when.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

pub use ivr_bridge::record::format::{
    BargeIn, Key, Noise, RecordedSettings, Reply, Sidecar, Transcript, Turn, Utterance,
};
use ivr_bridge::record::format::{Dir, RecordedLine};

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
            let line: RecordedLine = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
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

    /// Loads `<dir>/<name>.jsonl` and its sidecar.
    pub fn named(dir: &Path, name: &str) -> Result<Self, FixtureError> {
        Self::load(&dir.join(format!("{name}.jsonl")))
    }

    /// A recogniser bank of the caller's utterances: the audio sent between each one's start and
    /// end, exactly as the server will receive it.
    pub fn bank(&self) -> Bank {
        let mut bank = Bank::new();
        self.teach(&mut bank);
        bank
    }

    /// Teaches `bank` this call's utterances (see [`CallFixture::bank`]), so one bank can know
    /// several recordings.
    pub fn teach(&self, bank: &mut Bank) {
        for (u, audio) in self.utterances_mulaw() {
            bank.add(&u.text, &audio);
        }
    }

    /// The `streamSid` of this call.
    pub fn stream_sid(&self) -> &str {
        &self.sidecar.stream_sid
    }

    /// What the caller says in this call, utterance by utterance.
    pub fn said(&self) -> Vec<&str> {
        let utterances = self.sidecar.utterances.iter();
        utterances.map(|u| u.text.as_str()).collect()
    }

    /// Every inbound `media` frame as `(at_ms, μ-law bytes)`, in order.
    pub fn inbound_frames(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let media = self.inbound.iter();
        media.filter_map(|s| Some((s.at_ms, s.audio.as_deref()?)))
    }

    /// All inbound audio of the call, concatenated.
    pub fn inbound_mulaw(&self) -> Vec<u8> {
        self.inbound_frames()
            .flat_map(|(_, b)| b)
            .copied()
            .collect()
    }

    /// The μ-law bytes of utterance `index` (empty when there is none): the media frames
    /// starting in `[start_ms, end_ms)`, exactly as a simulated caller sends them.
    pub fn utterance_mulaw(&self, index: usize) -> Vec<u8> {
        let Some(u) = self.sidecar.utterances.get(index) else {
            return Vec::new();
        };
        self.inbound_frames()
            .filter(|(at, _)| (u.start_ms..u.end_ms).contains(at))
            .flat_map(|(_, b)| b)
            .copied()
            .collect()
    }

    /// Every utterance with its μ-law bytes.
    pub fn utterances_mulaw(&self) -> Vec<(Utterance, Vec<u8>)> {
        let utterances = self.sidecar.utterances.iter().enumerate();
        utterances
            .map(|(i, u)| (u.clone(), self.utterance_mulaw(i)))
            .collect()
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
