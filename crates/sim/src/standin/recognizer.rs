//! The STT stand-in's brain, sans-IO: PCM in, Deepgram live messages out, time counted in audio.
//!
//! Speech segments are found by energy. Each speech frame votes, through the [`Bank`], for the
//! known utterance it belongs to and its position in it; that decides the words a segment
//! reports. Speech the bank does not know gets an empty transcript, as Deepgram gives for noise.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::bank::{frame_hash, is_speech, Bank, PCM_FRAME_BYTES};
use super::frames::Framer;

/// Non-speech frames that close a segment (Deepgram's endpointing): 400 ms.
pub const ENDPOINT_FRAMES: u64 = 20;
/// Interim results while in a segment, every 300 ms of audio.
pub const INTERIM_EVERY_FRAMES: u64 = 15;
/// Seconds of audio per analysis frame.
pub(super) const FRAME_SECS: f64 = 0.02;
/// Frames short of an utterance's end still counted as "reached the end" (dropped frames).
const END_SLACK_FRAMES: u32 = 5;
/// The model the stand-in claims to be, in `Results` and `Metadata`.
const MODEL_UUID: &str = "00000000-0000-4000-8000-00000000cafe";

/// What the client asked for in the handshake's query string, as Deepgram interprets it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `interim_results=true`: interim `Results` and (with `utterance_end_ms`) `UtteranceEnd`.
    pub interim_results: bool,
    /// `vad_events=true`: `SpeechStarted` messages.
    pub vad_events: bool,
    /// `utterance_end_ms`, honoured only with interim results, as Deepgram does.
    pub utterance_end_ms: Option<u64>,
}

impl Settings {
    /// Reads the flags from `key=value` pairs of the query string.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut settings = Self::default();
        for (key, value) in pairs {
            match key {
                "interim_results" => settings.interim_results = value == "true",
                "vad_events" => settings.vad_events = value == "true",
                "utterance_end_ms" => settings.utterance_end_ms = value.parse().ok(),
                _ => {}
            }
        }
        settings
    }
}

/// A speech segment being heard.
#[derive(Debug)]
struct Segment {
    /// First frame of the segment.
    start: u64,
    /// Latest speech frame.
    last_speech: u64,
    /// Utterance id → (votes, furthest frame position matched). At most one entry per
    /// utterance in the bank, so bounded.
    votes: HashMap<usize, (u32, u32)>,
}

/// One connection's recogniser.
#[derive(Debug)]
pub struct Recognizer {
    /// The utterances it can recognise.
    bank: Arc<Bank>,
    /// The client's query flags.
    settings: Settings,
    /// Echoed in every message, like Deepgram's.
    request_id: String,
    /// The client's messages cut into the frames analysed.
    framer: Framer,
    /// Frames analysed: the audio clock.
    frames: u64,
    /// The segment being heard, if any.
    segment: Option<Segment>,
    /// Non-speech frames since the last speech frame of the open segment.
    silence_run: u64,
    /// End (frame index) of the last closed segment while an `UtteranceEnd` is owed.
    utterance_end_due: Option<u64>,
    /// Utterance id → words already sent as final, so a split segment never repeats words.
    words_done: HashMap<usize, usize>,
}

impl Recognizer {
    /// A recogniser for one connection.
    pub fn new(bank: Arc<Bank>, settings: Settings, request_id: String) -> Self {
        Self {
            bank,
            settings,
            request_id,
            framer: Framer::new(PCM_FRAME_BYTES),
            frames: 0,
            segment: None,
            silence_run: 0,
            utterance_end_due: None,
            words_done: HashMap::new(),
        }
    }

    /// Seconds of audio analysed so far.
    pub fn audio_secs(&self) -> f64 {
        self.frames as f64 * FRAME_SECS
    }

    /// Feeds a binary message's PCM16LE bytes; appends the messages now due to `out`.
    pub fn push_audio(&mut self, bytes: &[u8], out: &mut Vec<Value>) {
        let mut framer = std::mem::replace(&mut self.framer, Framer::new(0));
        framer.push(bytes, |frame| self.on_frame(frame, out));
        self.framer = framer;
    }

    /// `Finalize`: flushes an open segment as finals marked `from_finalize`.
    pub fn finalize(&mut self, out: &mut Vec<Value>) {
        self.close_segment(true, out);
    }

    /// `CloseStream`: flushes an open segment, then the closing `Metadata`.
    pub fn close_stream(&mut self, out: &mut Vec<Value>) {
        self.close_segment(false, out);
        out.push(json!({
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
            "created": "2025-01-01T00:00:00.000Z", "duration": round3(self.audio_secs()),
            "channels": 1, "models": [MODEL_UUID], "model_info": {MODEL_UUID: model_info()},
        }));
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
        if self.segment.is_none() && self.settings.vad_events {
            out.push(json!({"type": "SpeechStarted", "channel": [0, 1],
                "timestamp": round3(index as f64 * FRAME_SECS)}));
        }
        let segment = self.segment.get_or_insert_with(|| Segment {
            start: index,
            last_speech: index,
            votes: HashMap::new(),
        });
        self.utterance_end_due = None;
        segment.last_speech = index;
        for &(id, pos) in self.bank.lookup(hash) {
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
        out.push(self.results(&words, start, duration, Flags::INTERIM));
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
        let last = Flags {
            is_final: true,
            speech_final: true,
            from_finalize,
        };
        if words.len() >= 4 {
            // Deepgram often finalises a long utterance in two pieces; the client must join them.
            let half = words.len() / 2;
            let cut = duration * half as f64 / words.len() as f64;
            let first = Flags {
                speech_final: false,
                ..last
            };
            out.push(self.results(&words[..half], start, cut, first));
            out.push(self.results(&words[half..], start + cut, duration - cut, last));
        } else {
            out.push(self.results(&words, start, duration, last));
        }
        self.utterance_end_due = Some(seg.last_speech + 1);
    }

    /// The words a segment stands for (see [`words_for`]).
    fn words_for(&self, seg: &Segment, last: bool) -> (Vec<String>, Option<(usize, usize)>) {
        words_for(&self.bank, &self.words_done, &seg.votes, last)
    }

    /// A `Results` message for `words` spanning `[start, start + duration)` seconds.
    fn results(&self, words: &[String], start: f64, duration: f64, flags: Flags) -> Value {
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
            "start": round3(start), "is_final": flags.is_final,
            "speech_final": flags.speech_final, "from_finalize": flags.from_finalize,
            "channel": {"alternatives": [{"transcript": words.join(" "),
                "confidence": if words.is_empty() { 0.0 } else { 0.98 }, "words": word_objs}]},
            "metadata": {"request_id": self.request_id, "model_info": model_info(),
                "model_uuid": MODEL_UUID},
        })
    }
}

/// The words a stretch of speech stands for, from its frames' `votes` (utterance id → (votes,
/// furthest frame position matched)): the best-voted utterance's words after those already
/// finalised (`words_done`), up to the furthest position heard (all remaining ones when `last`
/// and the speech reached the utterance's end). Non-last results show at least one word. For a
/// last result also returns the utterance id and its new count of finalised words. Shared by
/// the v1 and Flux recognisers.
pub(super) fn words_for(
    bank: &Bank,
    words_done: &HashMap<usize, usize>,
    votes: &HashMap<usize, (u32, u32)>,
    last: bool,
) -> (Vec<String>, Option<(usize, usize)>) {
    let best = votes
        .iter()
        .max_by_key(|(id, (votes, _))| (*votes, usize::MAX - **id));
    let Some((&id, &(_, furthest))) = best else {
        return (Vec::new(), None);
    };
    let Some(utterance) = bank.utterance(id) else {
        return (Vec::new(), None);
    };
    let n = utterance.words.len();
    let done = words_done.get(&id).copied().unwrap_or(0).min(n);
    let span = utterance.span.max(1) as usize;
    let heard = ((furthest as usize + 1) * n + span / 2) / span;
    let mut upto = heard.clamp(done, n);
    if !last {
        upto = upto.max((done + 1).min(n));
        return (utterance.words[done..upto].to_vec(), None);
    }
    if furthest as usize + 1 + END_SLACK_FRAMES as usize >= span {
        upto = n;
    }
    let commit = if upto == n { 0 } else { upto };
    (utterance.words[done..upto].to_vec(), Some((id, commit)))
}

/// The three booleans of a `Results` message.
#[derive(Clone, Copy, Debug)]
struct Flags {
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
}

impl Flags {
    const INTERIM: Self = Self {
        is_final: false,
        speech_final: false,
        from_finalize: false,
    };
}

fn model_info() -> Value {
    json!({"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-2"})
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivr_bridge::audio::mulaw;

    /// μ-law of a 400 Hz tone at `amp`, `frames` frames long, pitch nudged by `seed` so two
    /// utterances never share a frame.
    fn tone(frames: usize, amp: f64, seed: f64) -> Vec<u8> {
        (0..frames * 160)
            .map(|i| {
                let t = i as f64 / 8000.0;
                let s = (2.0 * std::f64::consts::PI * (400.0 + seed) * t).sin() * amp;
                mulaw::encode(s as i16)
            })
            .collect()
    }

    fn pcm(mulaw_bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        mulaw::decode_to_pcm16le(mulaw_bytes, &mut out);
        out
    }

    fn transcripts(msgs: &[Value], is_final: bool) -> Vec<String> {
        msgs.iter()
            .filter(|m| m["type"] == "Results" && m["is_final"] == is_final)
            .map(|m| {
                m["channel"]["alternatives"][0]["transcript"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    fn all_flags() -> Settings {
        Settings::from_pairs([
            ("interim_results", "true"),
            ("vad_events", "true"),
            ("utterance_end_ms", "1000"),
        ])
    }

    #[test]
    fn a_known_utterance_is_recognised_in_odd_sized_pieces() {
        let hello = tone(40, 8000.0, 3.0);
        let mut bank = Bank::new();
        bank.add("Hello there, general.", &hello);
        bank.add("Something else entirely.", &tone(40, 8000.0, 50.0));
        let mut rec = Recognizer::new(Arc::new(bank), all_flags(), "id".into());
        let mut call = tone(10, 0.0, 0.0);
        call.extend(&hello);
        call.extend(tone(80, 0.0, 0.0));
        let mut out = Vec::new();
        for piece in pcm(&call).chunks(333) {
            rec.push_audio(piece, &mut out);
        }
        assert_eq!(out[0]["type"], "SpeechStarted");
        assert_eq!(out[0]["timestamp"], 0.2);
        assert_eq!(transcripts(&out, true).join(" "), "Hello there, general.");
        assert!(!transcripts(&out, false).is_empty(), "interims expected");
        let last_final = out.iter().rfind(|m| m["is_final"] == true).unwrap();
        assert_eq!(last_final["speech_final"], true);
        assert!(out.iter().any(|m| m["type"] == "UtteranceEnd"));
    }

    #[test]
    fn unknown_speech_gets_an_empty_transcript_and_flags_are_honoured() {
        let mut rec = Recognizer::new(Arc::new(Bank::new()), Settings::default(), "id".into());
        let mut out = Vec::new();
        let mut call = tone(30, 8000.0, 7.0);
        call.extend(tone(40, 0.0, 0.0));
        rec.push_audio(&pcm(&call), &mut out);
        assert_eq!(transcripts(&out, true), vec![String::new()]);
        assert!(out.iter().all(|m| m["type"] == "Results"), "{out:?}");
        rec.close_stream(&mut out);
        let meta = out.last().unwrap();
        assert_eq!(meta["type"], "Metadata");
        assert_eq!(meta["duration"], 1.4);
    }

    #[test]
    fn finalize_flushes_an_open_segment() {
        let mut rec = Recognizer::new(Arc::new(Bank::new()), all_flags(), "id".into());
        let mut out = Vec::new();
        rec.push_audio(&pcm(&tone(10, 8000.0, 0.0)), &mut out);
        out.clear();
        rec.finalize(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["from_finalize"], true);
    }
}
