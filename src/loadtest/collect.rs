//! Puts the callers' events and the stand-ins' observations together, as they arrive: frames
//! matched by hash (forwarding delay), STT connections and LLM requests tied to their call, the
//! first phrase of each reply tied to its TTS request. The per-turn arithmetic happens once the
//! run is over, in [`super::analysis`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::caller::CallEvent;
use super::script::call_of;
use ivr_bridge::tts::text::{speakable, PhraseSplitter};
use ivr_sim::standin::probe::{Observation, Seen};

/// A frame neither side has matched for this long is written off (dropped by the server, or
/// sent by a caller that is not measured).
const FRAME_FORGET: Duration = Duration::from_secs(10);
/// How often unmatched frames are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Something the STT stand-in sent on a call's connection.
#[derive(Debug, Clone, Copy)]
pub struct SttSent {
    /// When.
    pub at: Instant,
    /// A `Results` with words.
    pub words: bool,
    /// A final `Results` (or `UtteranceEnd`): what can end a turn.
    pub final_or_end: bool,
}

/// One reply the LLM stand-in wrote for a call.
#[derive(Debug, Clone, Default)]
pub struct LlmTurn {
    /// When the request arrived.
    pub asked: Option<Instant>,
    /// When the piece that completed the first phrase was sent.
    pub first_phrase: Option<Instant>,
    /// When the TTS stand-in got that phrase.
    pub tts_asked: Option<Instant>,
    /// When it sent the phrase's first audio.
    pub tts_first_byte: Option<Instant>,
}

/// Everything known about one measured call.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    /// What the STT stand-in sent on its connection.
    pub stt: Vec<SttSent>,
    /// The caller's utterance starts and ends.
    pub speech_starts: Vec<Instant>,
    /// Ends.
    pub speech_ends: Vec<Instant>,
    /// First reply audio after each utterance.
    pub reply_audio: Vec<Instant>,
    /// `clear`s received.
    pub clears: Vec<Instant>,
    /// The replies, in order.
    pub llm: Vec<LlmTurn>,
    /// How the call ended: how long it was open and why it failed, if it did.
    pub finished: Option<(Duration, Option<String>)>,
}

/// The collector's state.
#[derive(Debug)]
pub struct Collector {
    /// Calls below this index are measured; above are idle callers.
    measured: u32,
    /// Frames sent, not yet seen at the STT stand-in: hash → (call, when).
    sent: HashMap<u64, (u32, Instant)>,
    /// Frames seen at the STT stand-in before their `FrameSent` was read: hash → (conn, when).
    arrived: HashMap<u64, (u64, Instant)>,
    /// STT connection → call.
    conn_call: HashMap<u64, u32>,
    /// LLM request → (call, reply index, its splitter until the first phrase is out).
    llm_req: HashMap<u64, (u32, usize, PhraseSplitter)>,
    /// First phrases sent, waiting for their TTS request: text → (call, reply index).
    first_phrases: HashMap<String, VecDeque<(u32, usize)>>,
    /// TTS request → (call, reply index).
    tts_req: HashMap<u64, (u32, usize)>,
    /// Per measured call.
    pub calls: Vec<CallLog>,
    /// Forwarding delays of measured calls' frames, µs.
    pub forwarding_us: Vec<u64>,
    /// How late frames left the load generator against their schedule, µs.
    pub send_late_us: Vec<u64>,
    /// Measured frames that never reached the STT stand-in.
    pub frames_lost: u64,
    /// Idle callers that ended, and how many of them failed (with a sample reason).
    pub idle_finished: u32,
    /// Idle failures.
    pub idle_failures: Vec<String>,
}

impl Collector {
    /// A collector for `measured` calls (indices `0..measured`).
    pub fn new(measured: u32) -> Self {
        Self {
            measured,
            sent: HashMap::new(),
            arrived: HashMap::new(),
            conn_call: HashMap::new(),
            llm_req: HashMap::new(),
            first_phrases: HashMap::new(),
            tts_req: HashMap::new(),
            calls: vec![CallLog::default(); measured as usize],
            forwarding_us: Vec::new(),
            send_late_us: Vec::new(),
            frames_lost: 0,
            idle_finished: 0,
            idle_failures: Vec::new(),
        }
    }

    /// Reads both channels until `stop` fires and they are drained, then returns itself.
    pub async fn run(
        mut self,
        mut calls: mpsc::Receiver<CallEvent>,
        mut seen: mpsc::Receiver<Observation>,
        stop: CancellationToken,
    ) -> Self {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                Some(event) = calls.recv() => self.on_call(event),
                Some(observation) = seen.recv() => self.on_seen(observation),
                _ = sweep.tick() => self.sweep(Instant::now()),
                () = stop.cancelled() => break,
            }
        }
        while let Ok(event) = calls.try_recv() {
            self.on_call(event);
        }
        while let Ok(observation) = seen.try_recv() {
            self.on_seen(observation);
        }
        self
    }

    fn log(&mut self, call: u32) -> Option<&mut CallLog> {
        self.calls.get_mut(call as usize)
    }

    fn on_call(&mut self, event: CallEvent) {
        match event {
            CallEvent::FrameSent { call, hash, at } => match self.arrived.remove(&hash) {
                Some((conn, arrived)) => self.frame_matched(call, conn, at, arrived),
                None => {
                    self.sent.insert(hash, (call, at));
                }
            },
            CallEvent::SpeechStart { call, at } => {
                if let Some(log) = self.log(call) {
                    log.speech_starts.push(at);
                }
            }
            CallEvent::SpeechEnd { call, at } => {
                if let Some(log) = self.log(call) {
                    log.speech_ends.push(at);
                }
            }
            CallEvent::ReplyAudio { call, at } => {
                if let Some(log) = self.log(call) {
                    log.reply_audio.push(at);
                }
            }
            CallEvent::Cleared { call, at } => {
                if let Some(log) = self.log(call) {
                    log.clears.push(at);
                }
            }
            CallEvent::Finished {
                call,
                open_for,
                failure,
                late_us,
            } => match self.log(call) {
                Some(log) => {
                    log.finished = Some((open_for, failure));
                    self.send_late_us
                        .extend(late_us.iter().map(|&l| u64::from(l)));
                }
                None => {
                    self.idle_finished += 1;
                    self.idle_failures.extend(failure);
                }
            },
        }
    }

    fn frame_matched(&mut self, call: u32, conn: u64, sent: Instant, arrived: Instant) {
        self.conn_call.insert(conn, call);
        if call < self.measured {
            let delay = arrived.saturating_duration_since(sent);
            self.forwarding_us.push(delay.as_micros() as u64);
        }
    }

    fn on_seen(&mut self, Observation { at, seen }: Observation) {
        match seen {
            Seen::SttFrame { conn, hash } => match self.sent.remove(&hash) {
                Some((call, sent)) => self.frame_matched(call, conn, sent, at),
                None => {
                    self.arrived.insert(hash, (conn, at));
                }
            },
            Seen::SttResults {
                conn,
                words,
                is_final,
                speech_final,
            } => self.stt_sent(conn, at, words, is_final || speech_final),
            Seen::SttUtteranceEnd { conn } => self.stt_sent(conn, at, false, true),
            Seen::LlmRequest { req, last_user } => {
                let Some(call) = call_of(&last_user) else {
                    return;
                };
                let Some(log) = self.log(call) else { return };
                log.llm.push(LlmTurn {
                    asked: Some(at),
                    ..LlmTurn::default()
                });
                let turn = log.llm.len() - 1;
                self.llm_req
                    .insert(req, (call, turn, PhraseSplitter::new()));
            }
            Seen::LlmText { req, text } => self.llm_text(req, &text, at),
            Seen::TtsRequest { req, text } => {
                let waiting = self.first_phrases.get_mut(&text);
                let Some((call, turn)) = waiting.and_then(VecDeque::pop_front) else {
                    return;
                };
                self.tts_req.insert(req, (call, turn));
                if let Some(t) = self.turn(call, turn) {
                    t.tts_asked = Some(at);
                }
            }
            Seen::TtsFirstByte { req } => {
                if let Some((call, turn)) = self.tts_req.remove(&req) {
                    if let Some(t) = self.turn(call, turn) {
                        t.tts_first_byte = Some(at);
                    }
                }
            }
        }
    }

    fn turn(&mut self, call: u32, turn: usize) -> Option<&mut LlmTurn> {
        self.log(call).and_then(|l| l.llm.get_mut(turn))
    }

    fn stt_sent(&mut self, conn: u64, at: Instant, words: bool, final_or_end: bool) {
        let Some(&call) = self.conn_call.get(&conn) else {
            return;
        };
        if let Some(log) = self.log(call) {
            log.stt.push(SttSent {
                at,
                words,
                final_or_end,
            });
        }
    }

    /// Feeds reply text to the request's splitter; the piece that completes the first phrase
    /// (as the server cuts it) is when the bridge can start synthesizing.
    fn llm_text(&mut self, req: u64, text: &str, at: Instant) {
        let Some((call, turn, splitter)) = self.llm_req.get_mut(&req) else {
            return;
        };
        let (call, turn) = (*call, *turn);
        let mut phrases = splitter.push(text);
        if phrases.is_empty() {
            // The whole reply may be one phrase, complete only with the last piece.
            let last = text.ends_with(['.', '!', '?']);
            if !last {
                return;
            }
            phrases.extend(splitter.finish());
        }
        self.llm_req.remove(&req);
        let Some(first) = phrases.first() else { return };
        self.first_phrases
            .entry(speakable(first))
            .or_default()
            .push_back((call, turn));
        if let Some(t) = self.turn(call, turn) {
            t.first_phrase = Some(at);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let measured = self.measured;
        let mut lost = 0;
        self.sent.retain(|_, (call, at)| {
            let keep = now.saturating_duration_since(*at) < FRAME_FORGET;
            if !keep && *call < measured {
                lost += 1;
            }
            keep
        });
        self.frames_lost += lost;
        self.arrived
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < FRAME_FORGET);
    }
}
