//! The Flux stand-in's brain, sans-IO: Twilio's μ-law in, Deepgram Flux `TurnInfo` messages
//! out (PROTOCOLS.md §10.3), time counted in audio.
//!
//! Speech is found by energy on each decoded 20 ms frame and recognised through the same
//! [`Bank`] votes as the v1 stand-in ([`super::recognizer::words_for`]), so the fixtures'
//! utterances come back as their words. A turn starts (`StartOfTurn`) after a little speech,
//! sends an `Update` every 240 ms of audio, and ends (`EndOfTurn`) after a silence that grows
//! with `eot_threshold` (0.7 → 420 ms), or at `eot_timeout_ms`; with `eager_eot_threshold` an
//! `EagerEndOfTurn` comes after a shorter silence, and `TurnResumed` if speech follows it.
//! Speech the bank does not know (noise) makes a turn with an empty transcript.

use std::collections::HashMap;
use std::sync::Arc;

use ivr_bridge::audio::mulaw;
use serde_json::{json, Value};

use super::bank::{frame_hash, is_speech, Bank, FRAME_SAMPLES};
pub use super::flux_query::Thresholds;
use super::frames::Framer;
use super::recognizer::{round3, words_for, FRAME_SECS};

/// Speech frames before a turn starts (60 ms): a click is not a turn.
pub const START_FRAMES: u32 = 3;
/// Silent frames that drop speech too short to have started a turn.
const BLIP_FRAMES: u64 = 5;
/// An `Update` every 240 ms of audio while a turn is open.
pub const UPDATE_EVERY_FRAMES: u64 = 12;
/// Silent frames per unit of threshold: `eot_threshold` 0.7 ends a turn after 21 frames.
pub(super) const FRAMES_PER_THRESHOLD: f64 = 30.0;
/// The turn being heard.
#[derive(Debug)]
struct Turn {
    /// First speech frame.
    start: u64,
    /// Latest speech frame.
    last_speech: u64,
    /// Speech frames so far.
    speech_frames: u32,
    /// `StartOfTurn` was sent.
    started: bool,
    /// `EagerEndOfTurn` was sent and no speech followed yet.
    eager: bool,
    /// Utterance id → (votes, furthest position matched), as in the v1 recogniser.
    votes: HashMap<usize, (u32, u32)>,
    /// Utterance id → earliest position matched: a turn heard from its middle (a connection
    /// opened mid-utterance) is transcribed from there, as a real recogniser would.
    earliest: HashMap<usize, u32>,
}

impl Turn {
    /// The words this turn heard: [`words_for`] without those spoken before its first frame.
    fn words(&self, bank: &Bank, words_done: &HashMap<usize, usize>, last: bool) -> Vec<String> {
        let (mut words, _) = words_for(bank, words_done, &self.votes, last);
        let best = self
            .votes
            .iter()
            .max_by_key(|(id, (votes, _))| (*votes, usize::MAX - **id));
        if let Some((&id, _)) = best {
            let (Some(utterance), Some(&earliest)) = (bank.utterance(id), self.earliest.get(&id))
            else {
                return words;
            };
            let n = utterance.words.len();
            let done = words_done.get(&id).copied().unwrap_or(0).min(n);
            let unheard = earliest as usize * n / utterance.span.max(1) as usize;
            let skip = unheard.saturating_sub(done).min(words.len());
            words.drain(..skip);
        }
        words
    }
}

/// One connection's Flux recogniser.
#[derive(Debug)]
pub struct FluxRecognizer {
    /// The utterances it can recognise.
    bank: Arc<Bank>,
    /// Turn detection settings.
    pub thresholds: Thresholds,
    /// Echoed in every message.
    request_id: String,
    /// Counts every message sent, from 0 (`Connected`).
    sequence_id: u64,
    /// The client's messages cut into the frames analysed.
    framer: Framer,
    /// Decoded PCM of the frame being analysed (reused).
    pcm: Vec<u8>,
    /// Frames analysed: the audio clock.
    frames: u64,
    /// Turns ended so far (`turn_index` of the next one).
    turn_index: u64,
    /// The turn being heard.
    turn: Option<Turn>,
    /// Silent frames since the turn's last speech.
    silence_run: u64,
    /// Utterance id → words already reported in an ended turn.
    words_done: HashMap<usize, usize>,
}

impl FluxRecognizer {
    /// A recogniser for one connection.
    pub fn new(bank: Arc<Bank>, thresholds: Thresholds, request_id: String) -> Self {
        Self {
            bank,
            thresholds,
            request_id,
            sequence_id: 0,
            framer: Framer::new(FRAME_SAMPLES),
            pcm: Vec::with_capacity(FRAME_SAMPLES * 2),
            frames: 0,
            turn_index: 0,
            turn: None,
            silence_run: 0,
            words_done: HashMap::new(),
        }
    }

    /// The first message of every connection.
    pub fn connected(&mut self) -> Value {
        let msg = json!({"type": "Connected", "request_id": self.request_id});
        self.stamp(msg)
    }

    /// Feeds a binary message's μ-law bytes; appends the messages now due to `out`.
    pub fn push_audio(&mut self, bytes: &[u8], out: &mut Vec<Value>) {
        let mut framer = std::mem::replace(&mut self.framer, Framer::new(0));
        framer.push(bytes, |frame| self.on_frame(frame, out));
        self.framer = framer;
    }

    /// `ForceEndTurn`: ends the turn in progress now (`trigger: "manual"`).
    pub fn force_end_turn(&mut self, out: &mut Vec<Value>) {
        if self.turn.as_ref().is_some_and(|t| t.started) {
            self.end_turn("manual", out);
        }
    }

    /// `CloseStream`: the turn in progress gets a last `Update`, and no `EndOfTurn`.
    pub fn close_stream(&mut self, out: &mut Vec<Value>) {
        if self.turn.as_ref().is_some_and(|t| t.started) {
            let msg = self.turn_info("Update", None);
            out.push(msg);
        }
    }

    /// Answers a `Configure` message.
    pub fn configure(&mut self, message: &Value) -> Value {
        let thresholds = message.get("thresholds").cloned().unwrap_or(json!({}));
        let msg = match self.thresholds.configure(&thresholds) {
            Ok(()) => json!({"type": "ConfigureSuccess", "request_id": self.request_id,
                "thresholds": self.thresholds.to_json(), "keyterms": []}),
            Err(why) => json!({"type": "ConfigureFailure", "request_id": self.request_id,
                "description": why}),
        };
        self.stamp(msg)
    }

    /// A fatal `Error` message (the connection closes after it).
    pub fn error(&mut self, code: &str, description: &str) -> Value {
        let msg = json!({"type": "Error", "code": code, "description": description});
        self.stamp(msg)
    }

    fn on_frame(&mut self, frame: &[u8], out: &mut Vec<Value>) {
        let index = self.frames;
        self.frames += 1;
        self.pcm.clear();
        mulaw::decode_to_pcm16le(frame, &mut self.pcm);
        if is_speech(&self.pcm) {
            let hash = frame_hash(&self.pcm);
            self.on_speech(index, hash, out);
        } else if self.turn.is_some() {
            self.on_silence(out);
        }
        if let Some(turn) = &self.turn {
            let since = index - turn.start;
            if turn.started && since > 0 && since % UPDATE_EVERY_FRAMES == 0 {
                let msg = self.turn_info("Update", None);
                out.push(msg);
            }
        }
    }

    fn on_speech(&mut self, index: u64, hash: u64, out: &mut Vec<Value>) {
        self.silence_run = 0;
        let turn = self.turn.get_or_insert_with(|| Turn {
            start: index,
            last_speech: index,
            speech_frames: 0,
            started: false,
            eager: false,
            votes: HashMap::new(),
            earliest: HashMap::new(),
        });
        turn.last_speech = index;
        turn.speech_frames += 1;
        for &(id, pos) in self.bank.lookup(hash) {
            let entry = turn.votes.entry(id).or_insert((0, pos));
            entry.0 += 1;
            entry.1 = entry.1.max(pos);
            let earliest = turn.earliest.entry(id).or_insert(pos);
            *earliest = (*earliest).min(pos);
        }
        let (start, resumed) = (
            !turn.started && turn.speech_frames >= START_FRAMES,
            std::mem::take(&mut turn.eager),
        );
        if start {
            turn.started = true;
            let msg = self.turn_info("StartOfTurn", None);
            out.push(msg);
        }
        if resumed {
            let msg = self.turn_info("TurnResumed", None);
            out.push(msg);
        }
    }

    fn on_silence(&mut self, out: &mut Vec<Value>) {
        self.silence_run += 1;
        let Some(turn) = &mut self.turn else { return };
        if !turn.started {
            if self.silence_run >= BLIP_FRAMES {
                self.turn = None;
            }
            return;
        }
        if self.silence_run >= self.thresholds.end_frames() {
            self.end_turn("model", out);
            return;
        }
        let eager_due = self.thresholds.eager_frames() == Some(self.silence_run);
        if eager_due && !turn.eager && !turn.words(&self.bank, &self.words_done, true).is_empty() {
            turn.eager = true;
            let msg = self.turn_info("EagerEndOfTurn", None);
            out.push(msg);
        }
    }

    fn end_turn(&mut self, trigger: &str, out: &mut Vec<Value>) {
        let msg = self.turn_info("EndOfTurn", Some(trigger));
        out.push(msg);
        if let Some(turn) = self.turn.take() {
            let (_, commit) = words_for(&self.bank, &self.words_done, &turn.votes, true);
            if let Some((id, done)) = commit {
                self.words_done.insert(id, done);
            }
        }
        self.turn_index += 1;
        self.silence_run = 0;
    }

    /// A `TurnInfo` message for the turn in progress (`trigger` on `EndOfTurn` only).
    fn turn_info(&mut self, event: &str, trigger: Option<&str>) -> Value {
        let (words, start, last_speech) = match &self.turn {
            Some(turn) if event != "StartOfTurn" => {
                let last = matches!(event, "EndOfTurn" | "EagerEndOfTurn");
                let words = turn.words(&self.bank, &self.words_done, last);
                (words, turn.start, turn.last_speech)
            }
            Some(turn) => (Vec::new(), turn.start, turn.last_speech),
            None => (Vec::new(), self.frames, self.frames),
        };
        let start_s = start as f64 * FRAME_SECS;
        let speech = (last_speech + 1 - start) as f64 * FRAME_SECS;
        let per_word = speech / words.len().max(1) as f64;
        let word_objs: Vec<Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                json!({"word": w, "confidence": 0.98,
                    "start": round3(start_s + per_word * i as f64),
                    "end": round3(start_s + per_word * (i + 1) as f64)})
            })
            .collect();
        let confidence = (self.silence_run as f64 / FRAMES_PER_THRESHOLD).min(0.99);
        let mut msg = json!({
            "type": "TurnInfo", "request_id": self.request_id, "event": event,
            "turn_index": self.turn_index, "audio_window_start": round3(start_s),
            "audio_window_end": round3(self.frames as f64 * FRAME_SECS),
            "transcript": words.join(" "), "words": word_objs,
            "end_of_turn_confidence": round3(confidence),
        });
        if let Some(trigger) = trigger {
            msg["trigger"] = json!(trigger);
        }
        self.stamp(msg)
    }

    /// Gives a message the next `sequence_id`.
    fn stamp(&mut self, mut msg: Value) -> Value {
        msg["sequence_id"] = json!(self.sequence_id);
        self.sequence_id += 1;
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// μ-law of a 400 Hz tone at `amp`, `frames` frames long, pitch nudged by `seed`.
    fn tone(frames: usize, amp: f64, seed: f64) -> Vec<u8> {
        (0..frames * 160)
            .map(|i| {
                let t = i as f64 / 8000.0;
                let s = (2.0 * std::f64::consts::PI * (400.0 + seed) * t).sin() * amp;
                mulaw::encode(s as i16)
            })
            .collect()
    }

    fn events(out: &[Value]) -> Vec<&str> {
        out.iter().filter_map(|m| m["event"].as_str()).collect()
    }

    fn thresholds(eager: Option<f64>) -> Thresholds {
        Thresholds {
            eager_eot_threshold: eager,
            ..Thresholds::default()
        }
    }

    #[test]
    fn a_known_utterance_is_one_turn_with_its_words() {
        let hello = tone(40, 8000.0, 3.0);
        let mut bank = Bank::new();
        bank.add("Hello there, general.", &hello);
        let mut rec = FluxRecognizer::new(Arc::new(bank), thresholds(None), "id".into());
        assert_eq!(rec.connected()["sequence_id"], 0);
        let mut call = tone(10, 0.0, 0.0);
        call.extend(&hello);
        call.extend(tone(40, 0.0, 0.0));
        let mut out = Vec::new();
        for piece in call.chunks(333) {
            rec.push_audio(piece, &mut out);
        }
        let kinds = events(&out);
        assert_eq!(kinds.first(), Some(&"StartOfTurn"));
        assert!(kinds.contains(&"Update"));
        assert_eq!(kinds.last(), Some(&"EndOfTurn"));
        assert!(
            !kinds.contains(&"EagerEndOfTurn"),
            "not without the eager threshold"
        );
        let end = out.last().unwrap();
        assert_eq!(end["transcript"], "Hello there, general.");
        assert_eq!(end["trigger"], "model");
        assert_eq!(end["turn_index"], 0);
        assert_eq!(
            out[0]["transcript"], "",
            "StartOfTurn comes before any words"
        );
        // Ended 21 silent frames (eot_threshold 0.7) after the last speech frame.
        assert_eq!(end["audio_window_end"], 1.42);
        let ids: Vec<u64> = out
            .iter()
            .filter_map(|m| m["sequence_id"].as_u64())
            .collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn eager_end_of_turn_then_resumed_when_the_caller_goes_on() {
        let word = tone(20, 8000.0, 5.0);
        let mut bank = Bank::new();
        let mut both = word.clone();
        both.extend(tone(20, 0.0, 0.0));
        both.extend(tone(20, 8000.0, 9.0));
        bank.add("Well then.", &both);
        let mut rec = FluxRecognizer::new(Arc::new(bank), thresholds(Some(0.5)), "id".into());
        let mut out = Vec::new();
        rec.push_audio(&both, &mut out);
        rec.push_audio(&tone(40, 0.0, 0.0), &mut out);
        let kinds: Vec<&str> = events(&out)
            .into_iter()
            .filter(|k| *k != "Update")
            .collect();
        assert_eq!(
            kinds,
            [
                "StartOfTurn",
                "EagerEndOfTurn",
                "TurnResumed",
                "EagerEndOfTurn",
                "EndOfTurn"
            ]
        );
        let eager = out
            .iter()
            .rfind(|m| m["event"] == "EagerEndOfTurn")
            .unwrap();
        assert_eq!(eager["transcript"], out.last().unwrap()["transcript"]);
    }

    #[test]
    fn an_utterance_heard_from_its_middle_is_transcribed_from_there() {
        let speech = tone(40, 8000.0, 3.0);
        let mut bank = Bank::new();
        bank.add("one two three four", &speech);
        let mut rec = FluxRecognizer::new(Arc::new(bank), thresholds(None), "id".into());
        let mut out = Vec::new();
        rec.push_audio(&speech[20 * 160..], &mut out);
        rec.push_audio(&tone(30, 0.0, 0.0), &mut out);
        assert_eq!(out.last().unwrap()["transcript"], "three four");
    }

    #[test]
    fn noise_is_a_turn_without_words_and_a_click_no_turn_at_all() {
        let mut rec = FluxRecognizer::new(Arc::new(Bank::new()), thresholds(None), "id".into());
        let mut out = Vec::new();
        rec.push_audio(&tone(2, 8000.0, 1.0), &mut out);
        rec.push_audio(&tone(20, 0.0, 0.0), &mut out);
        assert!(out.is_empty(), "{out:?}");
        rec.push_audio(&tone(15, 8000.0, 1.0), &mut out);
        rec.push_audio(&tone(30, 0.0, 0.0), &mut out);
        assert_eq!(out.last().unwrap()["event"], "EndOfTurn");
        assert_eq!(out.last().unwrap()["transcript"], "");
    }

    #[test]
    fn close_stream_sends_a_last_update_and_force_end_turn_ends_it() {
        let mut rec = FluxRecognizer::new(Arc::new(Bank::new()), thresholds(None), "id".into());
        let mut out = Vec::new();
        rec.push_audio(&tone(10, 8000.0, 1.0), &mut out);
        out.clear();
        rec.close_stream(&mut out);
        assert_eq!(events(&out), ["Update"]);
        out.clear();
        rec.force_end_turn(&mut out);
        assert_eq!(events(&out), ["EndOfTurn"]);
        assert_eq!(out[0]["trigger"], "manual");
    }

    #[test]
    fn configure_changes_thresholds_or_fails_whole() {
        let mut rec = FluxRecognizer::new(Arc::new(Bank::new()), thresholds(None), "id".into());
        let ok = rec.configure(&json!({"type": "Configure", "thresholds": {"eot_threshold": 0.8}}));
        assert_eq!(ok["type"], "ConfigureSuccess");
        assert_eq!(ok["thresholds"]["eot_threshold"], 0.8);
        let bad = rec.configure(
            &json!({"type": "Configure", "thresholds": {"eot_threshold": 0.6, "eot_timeout_ms": 5}}),
        );
        assert_eq!(bad["type"], "ConfigureFailure");
        assert_eq!(rec.thresholds.eot_threshold, 0.8);
    }
}
