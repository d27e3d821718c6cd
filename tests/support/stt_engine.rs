//! The brain of the STT fake, sans-IO: PCM in, Deepgram messages out, time counted in audio.
//!
//! Segments are found by energy; each speech frame votes, through the [`SttBank`], for the
//! utterance it belongs to and its position in it, which decides the words a segment reports.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::stt_bank::SttBank;
use super::stt_bank::{frame_hash, is_speech, PCM_FRAME_BYTES};
use super::wire::Query;

/// Non-speech frames that close a segment: 400 ms.
pub const ENDPOINT_FRAMES: u64 = 20;
/// Interim results while in a segment, every 300 ms of audio.
pub const INTERIM_EVERY_FRAMES: u64 = 15;
const FRAME_SECS: f64 = 0.02;
/// Frames short of the utterance's end still counted as "reached the end" (dropped frames).
const END_SLACK_FRAMES: u32 = 5;

/// What the client asked for in the query string, as Deepgram interprets it.
#[derive(Clone, Debug)]
pub struct SttSettings {
    /// `interim_results=true`: interims and (with `utterance_end_ms`) `UtteranceEnd`.
    pub interim_results: bool,
    /// `vad_events=true`: `SpeechStarted` messages.
    pub vad_events: bool,
    /// `utterance_end_ms` (only honoured with interim results, like Deepgram).
    pub utterance_end_ms: Option<u64>,
}

impl SttSettings {
    /// Reads the settings from the handshake's query string.
    pub fn from_query(q: &Query) -> Self {
        Self {
            interim_results: q.get("interim_results") == Some("true"),
            vad_events: q.get("vad_events") == Some("true"),
            utterance_end_ms: q.get("utterance_end_ms").and_then(|v| v.parse().ok()),
        }
    }
}

/// A speech segment being heard.
#[derive(Debug)]
struct Segment {
    start: u64,
    last_speech: u64,
    /// utterance id → (votes, furthest frame position matched).
    votes: HashMap<usize, (u32, u32)>,
}

/// One connection's recogniser.
pub struct Recognizer {
    bank: Arc<SttBank>,
    settings: SttSettings,
    request_id: String,
    /// Bytes of an incomplete frame carried to the next binary message.
    pending: Vec<u8>,
    frames: u64,
    segment: Option<Segment>,
    silence_run: u64,
    /// End (frame index) of the last closed segment, while an `UtteranceEnd` is owed.
    utterance_end_due: Option<u64>,
    /// utterance id → words already sent as final (so split segments never repeat words).
    words_done: HashMap<usize, usize>,
    sha: Sha256,
}

impl Recognizer {
    /// A recogniser for one connection.
    pub fn new(bank: Arc<SttBank>, settings: SttSettings, request_id: String) -> Self {
        Self {
            bank,
            settings,
            request_id,
            pending: Vec::new(),
            frames: 0,
            segment: None,
            silence_run: 0,
            utterance_end_due: None,
            words_done: HashMap::new(),
            sha: Sha256::new(),
        }
    }

    /// Seconds of audio analysed so far.
    pub fn audio_secs(&self) -> f64 {
        self.frames as f64 * FRAME_SECS
    }

    /// Feeds a binary message's bytes; returns the messages due.
    pub fn push_audio(&mut self, bytes: &[u8]) -> Vec<Value> {
        self.sha.update(bytes);
        self.pending.extend_from_slice(bytes);
        let whole = self.pending.len() / PCM_FRAME_BYTES * PCM_FRAME_BYTES;
        let frames: Vec<u8> = self.pending.drain(..whole).collect();
        let mut out = Vec::new();
        for frame in frames.chunks_exact(PCM_FRAME_BYTES) {
            self.on_frame(frame, &mut out);
        }
        out
    }

    /// `Finalize`: flushes an open segment as finals with `from_finalize: true`.
    pub fn finalize(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        self.close_segment(true, &mut out);
        out
    }

    /// `CloseStream`: flushes an open segment, then the closing `Metadata`.
    pub fn close_stream(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        self.close_segment(false, &mut out);
        let sha = format!("{:x}", self.sha.clone().finalize());
        out.push(json!({
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
            "sha256": sha, "created": "2025-01-01T00:00:00.000Z",
            "duration": round3(self.audio_secs()), "channels": 1,
            "models": [MODEL_UUID], "model_info": {MODEL_UUID: model_info()},
        }));
        out
    }

    fn on_frame(&mut self, frame: &[u8], out: &mut Vec<Value>) {
        let index = self.frames;
        self.frames += 1;
        if is_speech(frame) {
            self.on_speech(index, frame_hash(frame), out);
            return;
        }
        if self.segment.is_some() {
            self.silence_run += 1;
            if self.silence_run >= ENDPOINT_FRAMES {
                self.close_segment(false, out);
            } else {
                self.maybe_interim(index, out);
            }
        }
        self.maybe_utterance_end(index, out);
    }

    fn on_speech(&mut self, index: u64, hash: u64, out: &mut Vec<Value>) {
        self.silence_run = 0;
        let segment = self.segment.get_or_insert_with(|| {
            if self.settings.vad_events {
                out.push(json!({"type": "SpeechStarted", "channel": [0, 1],
                    "timestamp": round3(index as f64 * FRAME_SECS)}));
            }
            Segment {
                start: index,
                last_speech: index,
                votes: HashMap::new(),
            }
        });
        self.utterance_end_due = None;
        segment.last_speech = index;
        for &(id, pos) in self.bank.index.get(&hash).into_iter().flatten() {
            let entry = segment.votes.entry(id).or_insert((0, pos));
            entry.0 += 1;
            entry.1 = entry.1.max(pos);
        }
        self.maybe_interim(index, out);
    }

    fn maybe_interim(&mut self, index: u64, out: &mut Vec<Value>) {
        let Some(seg) = &self.segment else { return };
        let elapsed = index - seg.start;
        if !self.settings.interim_results || elapsed == 0 || elapsed % INTERIM_EVERY_FRAMES != 0 {
            return;
        }
        let (words, _) = self.words_for(seg, false);
        let (start, duration) = (seg.start as f64 * FRAME_SECS, elapsed as f64 * FRAME_SECS);
        out.push(self.results(&words, start, duration, [false, false, false]));
    }

    fn maybe_utterance_end(&mut self, index: u64, out: &mut Vec<Value>) {
        let (Some(end), Some(ms)) = (self.utterance_end_due, self.settings.utterance_end_ms) else {
            return;
        };
        if self.settings.interim_results && (index + 1 - end) * 20 >= ms {
            out.push(json!({"type": "UtteranceEnd", "channel": [0, 1],
                "last_word_end": round3(end as f64 * FRAME_SECS)}));
            self.utterance_end_due = None;
        }
    }

    fn close_segment(&mut self, from_finalize: bool, out: &mut Vec<Value>) {
        let Some(seg) = self.segment.take() else {
            return;
        };
        self.silence_run = 0;
        let (words, commit) = self.words_for(&seg, true);
        if let Some((id, done)) = commit {
            self.words_done.insert(id, done);
        }
        let start = seg.start as f64 * FRAME_SECS;
        let duration = (seg.last_speech + 1 - seg.start) as f64 * FRAME_SECS;
        if words.len() >= 4 {
            let half = words.len() / 2;
            let cut = duration * half as f64 / words.len() as f64;
            out.push(self.results(&words[..half], start, cut, [true, false, from_finalize]));
            let rest = &words[half..];
            out.push(self.results(
                rest,
                start + cut,
                duration - cut,
                [true, true, from_finalize],
            ));
        } else {
            out.push(self.results(&words, start, duration, [true, true, from_finalize]));
        }
        self.utterance_end_due = Some(seg.last_speech + 1);
    }

    /// The words a segment stands for: the best-voted utterance's words after those already
    /// finalised, up to the furthest position heard (all remaining ones when `last` and the
    /// segment reached the utterance's end). Interims always show at least one word. Also
    /// returns, for a last result, the utterance id and its new count of finalised words.
    fn words_for(&self, seg: &Segment, last: bool) -> (Vec<String>, Option<(usize, usize)>) {
        let best = seg
            .votes
            .iter()
            .max_by_key(|(id, (votes, _))| (*votes, usize::MAX - **id));
        let Some((&id, &(_, furthest))) = best else {
            return (Vec::new(), None);
        };
        let (words, span) = &self.bank.utterances[id];
        let n = words.len();
        let done = self.words_done.get(&id).copied().unwrap_or(0).min(n);
        let span = (*span).max(1);
        let heard = ((furthest as usize + 1) * n + span as usize / 2) / span as usize;
        let mut upto = heard.clamp(done, n);
        if !last {
            upto = upto.max((done + 1).min(n));
            return (words[done..upto].to_vec(), None);
        }
        if furthest + 1 + END_SLACK_FRAMES >= span {
            upto = n;
        }
        let commit = if upto == n { 0 } else { upto };
        (words[done..upto].to_vec(), Some((id, commit)))
    }

    /// A `Results` message; `flags` = [is_final, speech_final, from_finalize].
    fn results(&self, words: &[String], start: f64, duration: f64, flags: [bool; 3]) -> Value {
        let per_word = duration / words.len().max(1) as f64;
        let word_objs: Vec<Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let bare: String = w
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .collect();
                json!({"word": bare.to_lowercase(), "start": round3(start + per_word * i as f64),
                    "end": round3(start + per_word * (i + 1) as f64), "confidence": 0.98,
                    "punctuated_word": w})
            })
            .collect();
        json!({
            "type": "Results", "channel_index": [0, 1], "duration": round3(duration),
            "start": round3(start), "is_final": flags[0], "speech_final": flags[1],
            "from_finalize": flags[2],
            "channel": {"alternatives": [{"transcript": words.join(" "),
                "confidence": if words.is_empty() { 0.0 } else { 0.98 }, "words": word_objs}]},
            "metadata": {"request_id": self.request_id, "model_info": model_info(),
                "model_uuid": MODEL_UUID},
        })
    }
}

const MODEL_UUID: &str = "00000000-0000-4000-8000-00000000cafe";

fn model_info() -> Value {
    json!({"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-2"})
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
