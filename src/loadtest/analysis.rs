//! The per-turn arithmetic over what the collector gathered: turn latency, the bridge's own
//! share of it (three gaps between stand-in timestamps), first reply audio after the turn ends,
//! and barge-in reaction.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::collect::{CallLog, LlmTurn};

/// How turns end on the server under test.
#[derive(Debug, Clone, Copy)]
pub struct TurnRule {
    /// `TURN_DETECTION=timer`: the turn ends this long after the last transcript with words.
    /// `None` for `deepgram`: it ends on the recogniser's final / `UtteranceEnd`.
    pub silence: Option<Duration>,
}

/// Durations of every answered turn and every barge-in, in ms.
#[derive(Debug, Default)]
pub struct Samples {
    /// Caller's last speech frame sent → first reply frame received.
    pub turn_latency: Vec<f64>,
    /// STT stand-in's turn-ending message → LLM stand-in got the request (minus the timer).
    pub stt_to_llm: Vec<f64>,
    /// LLM stand-in sent the first phrase's last piece → TTS stand-in got the phrase.
    pub llm_to_tts: Vec<f64>,
    /// TTS stand-in sent the first audio (or, for a reply prepared before the turn ended and
    /// held on purpose, the turn ended, if later) → the caller got the first reply frame.
    pub tts_to_caller: Vec<f64>,
    /// The sum of the three, for turns where all three are known.
    pub bridge_share: Vec<f64>,
    /// The turn's end (as the server decides it) → first reply frame at the caller.
    pub first_audio: Vec<f64>,
    /// Interrupting transcript sent by the STT stand-in → `clear` at the caller.
    pub barge_in: Vec<f64>,
}

/// Measures every call's turns.
pub fn turns(calls: &[CallLog], rule: TurnRule) -> Samples {
    let mut samples = Samples::default();
    for log in calls {
        for turn in &log.llm {
            one_turn(log, turn, rule, &mut samples);
        }
        barge_ins(log, &mut samples);
    }
    samples
}

fn ms(later: Instant, earlier: Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64() * 1000.0
}

fn one_turn(log: &CallLog, turn: &LlmTurn, rule: TurnRule, out: &mut Samples) {
    let Some(asked) = turn.asked else { return };
    let ending = log.stt.iter().rev().find(|s| {
        s.at <= asked
            && match rule.silence {
                Some(_) => s.words,
                None => s.final_or_end,
            }
    });
    let timer = rule.silence.unwrap_or(Duration::ZERO);
    let turn_end = ending.map(|s| s.at + timer);
    let audio = turn
        .tts_first_byte
        .and_then(|f| log.reply_audio.iter().copied().find(|&a| a >= f));
    let speech_end = log.speech_ends.iter().rev().find(|&&e| e <= asked);
    if let (Some(a), Some(e)) = (audio, speech_end) {
        out.turn_latency.push(ms(a, *e));
    }
    if let (Some(a), Some(end)) = (audio, turn_end) {
        out.first_audio.push(ms(a, end));
    }
    let stt_to_llm = turn_end.map(|end| ms(asked, end));
    let llm_to_tts = turn.tts_asked.zip(turn.first_phrase).map(|(t, p)| ms(t, p));
    // A reply prepared before the turn ended (PREEMPTIVE_GENERATION) holds its audio until
    // then on purpose: the bridge's part starts at whichever came later.
    let ready = turn
        .tts_first_byte
        .map(|first| turn_end.map_or(first, |end| first.max(end)));
    let tts_to_caller = audio.zip(ready).map(|(a, r)| ms(a, r));
    out.stt_to_llm.extend(stt_to_llm);
    out.llm_to_tts.extend(llm_to_tts);
    out.tts_to_caller.extend(tts_to_caller);
    if let (Some(a), Some(b), Some(c)) = (stt_to_llm, llm_to_tts, tts_to_caller) {
        out.bridge_share.push(a + b + c);
    }
}

/// Each `clear` against the first transcript with words the STT stand-in sent after the
/// caller began the utterance that interrupted.
fn barge_ins(log: &CallLog, out: &mut Samples) {
    for &clear in &log.clears {
        let Some(&began) = log.speech_starts.iter().rev().find(|&&s| s <= clear) else {
            continue;
        };
        let words = log.stt.iter().find(|s| s.words && s.at >= began);
        if let Some(w) = words.filter(|w| w.at <= clear) {
            out.barge_in.push(ms(clear, w.at));
        }
    }
}

/// p50 / p99 / max of a set of values, and how many there were.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// Of `values` (any order).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[i - 1]
        };
        Self {
            count: sorted.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        }
    }

    /// Of µs values, in ms.
    pub fn of_us(values: &[u64]) -> Self {
        let ms: Vec<f64> = values.iter().map(|&v| v as f64 / 1000.0).collect();
        Self::of(&ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_held_until_the_turn_ends_counts_from_the_turn_end() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let log = CallLog {
            stt: vec![crate::loadtest::collect::SttSent {
                at: at(0),
                words: true,
                final_or_end: true,
            }],
            speech_ends: vec![at(0)],
            reply_audio: vec![at(1003)],
            llm: vec![LlmTurn {
                asked: Some(at(2)),
                first_phrase: Some(at(300)),
                tts_asked: Some(at(301)),
                tts_first_byte: Some(at(450)),
            }],
            ..CallLog::default()
        };
        let rule = TurnRule {
            silence: Some(Duration::from_millis(1000)),
        };
        let samples = turns(&[log], rule);
        // Asked on the final, before the 1 s timer ran out; the audio, ready at 450 ms, waited
        // for the turn's end at 1000 ms, then reached the caller 3 ms later.
        assert_eq!(samples.tts_to_caller, [3.0]);
        assert_eq!(samples.stt_to_llm, [0.0]);
        assert_eq!(samples.bridge_share, [4.0]);
        assert_eq!(samples.first_audio, [3.0]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&values);
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(Stats::of(&[]).count, 0);
    }
}
