//! One call's recording as it builds up, sans-IO: each Twilio message becomes a fixture line,
//! audio goes to the two channels of the WAV, and the call's events become the sidecar. Times
//! are arguments (offsets from the socket opening).

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::time::Instant;

use super::format::{
    BargeIn, Dir, Key, RecordedLine, RecordedSettings, Reply, Sidecar, ToolCallRecord, Transcript,
    Turn, Utterance,
};
use crate::audio::mulaw;
use crate::audio::wav;
use crate::events::CallEvent;
use crate::twilio::playback::Line;

/// Samples per millisecond at 8 kHz.
const SAMPLES_PER_MS: u64 = 8;
/// Fixture times are on Twilio's 20 ms frame grid.
const FRAME_MS: u64 = 20;
/// An utterance's window starts this much before the recogniser's start: its audio clock
/// starts when the recogniser connects, a little after the first frame arrived.
const UTTERANCE_LEAD: Duration = Duration::from_millis(600);
/// …and ends this much after the recogniser's end.
const UTTERANCE_TAIL: Duration = Duration::from_millis(200);
/// Audio kept for the WAV: one hour a channel (about 29 MB each); later audio is not drawn.
const WAV_LIMIT_MS: u64 = 3_600_000;
/// A media `timestamp` further than this from the arrival time is not trusted for placing audio.
const TIMESTAMP_SLACK_MS: u64 = 2_000;

/// A call being recorded.
#[derive(Debug)]
pub struct CallRecording {
    /// When the socket opened: time zero of every offset.
    opened: Instant,
    /// Offset of the last line written, so lines never go back in time.
    last_ms: u64,
    /// What the caller sent, μ-law per sample from time zero.
    caller: Vec<u8>,
    /// What the caller heard, modelled as Twilio plays it.
    line: Line,
    /// The call's events with their offsets, for the sidecar.
    events: Vec<(u64, CallEvent)>,
    /// Messages that were not JSON and could not be kept.
    pub skipped: u64,
}

impl CallRecording {
    /// An empty recording of a socket opened at `opened`.
    pub fn new(opened: Instant) -> Self {
        Self {
            opened,
            last_ms: 0,
            caller: Vec::new(),
            line: Line::new(),
            events: Vec::new(),
            skipped: 0,
        }
    }

    fn offset(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.opened).as_millis() as u64
    }

    /// Records one message; returns its fixture line (without the newline), or `None` when the
    /// message is not JSON.
    pub fn message(&mut self, at: Instant, dir: Dir, text: &str) -> Option<String> {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            self.skipped += 1;
            return None;
        };
        let at_ms = self.offset(at).max(self.last_ms);
        self.last_ms = at_ms;
        match dir {
            Dir::In => self.caller_audio(at_ms, &msg),
            Dir::Out => self.assistant_audio(at_ms, &msg),
        }
        serde_json::to_string(&RecordedLine { at_ms, dir, msg }).ok()
    }

    /// Records one of the call's events.
    pub fn event(&mut self, at: Instant, event: CallEvent) {
        let at_ms = self.offset(at);
        self.events.push((at_ms, event));
    }

    /// Whether Twilio's `start` arrived (otherwise there is no call to keep).
    pub fn started(&self) -> Option<(&str, &str)> {
        self.events.iter().find_map(|(_, e)| match e {
            CallEvent::Started {
                call_sid,
                stream_sid,
            } => Some((call_sid.as_str(), stream_sid.as_str())),
            _ => None,
        })
    }

    fn caller_audio(&mut self, at_ms: u64, msg: &Value) {
        let Some(audio) = media_audio(msg) else {
            return;
        };
        let stamped = msg["media"]["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| t.abs_diff(at_ms) <= TIMESTAMP_SLACK_MS);
        let start_ms = stamped.unwrap_or(at_ms);
        if start_ms > WAV_LIMIT_MS {
            return;
        }
        let start = (start_ms * SAMPLES_PER_MS) as usize;
        if self.caller.len() < start + audio.len() {
            self.caller.resize(start + audio.len(), mulaw::SILENCE);
        }
        self.caller[start..start + audio.len()].copy_from_slice(&audio);
    }

    fn assistant_audio(&mut self, at_ms: u64, msg: &Value) {
        if at_ms > WAV_LIMIT_MS {
            return;
        }
        let now = at_ms * SAMPLES_PER_MS;
        match msg["event"].as_str() {
            Some("media") => {
                if let Some(audio) = media_audio(msg) {
                    self.line.media(now, audio);
                }
            }
            Some("mark") => {
                let name = msg["mark"]["name"].as_str().unwrap_or_default();
                let _ = self.line.mark(now, name.to_owned());
            }
            Some("clear") => {
                let _ = self.line.clear(now);
            }
            _ => {}
        }
    }

    /// The two-channel WAV: caller left as sent, assistant right as heard on the line.
    pub fn wav(self) -> std::io::Result<Vec<u8>> {
        let heard = self
            .line
            .hang_up(self.last_ms.min(WAV_LIMIT_MS) * SAMPLES_PER_MS);
        let decode = |a: &[u8]| a.iter().map(|&b| mulaw::decode(b)).collect::<Vec<i16>>();
        let (left, right) = (decode(&self.caller), decode(&heard));
        let mut out = Vec::with_capacity(wav::HEADER_BYTES + left.len().max(right.len()) * 4);
        wav::write_stereo(&mut out, 8000, &left, &right)?;
        Ok(out)
    }

    /// The sidecar, named `name`; `meta` says when and with which settings.
    pub fn sidecar(&self, name: &str, recorded_at: &str, settings: &RecordedSettings) -> Sidecar {
        let (call_sid, stream_sid) = self.started().unwrap_or_default();
        let mut s = Sidecar {
            name: name.to_owned(),
            call_sid: call_sid.to_owned(),
            stream_sid: stream_sid.to_owned(),
            duration_ms: self.last_ms,
            recorded_at: Some(recorded_at.to_owned()),
            settings: Some(settings.clone()),
            ..Sidecar::default()
        };
        let (mut transcripts, mut turns, mut replies) = (Vec::new(), Vec::new(), Vec::new());
        let (mut barge_ins, mut dtmf, mut tool_calls) = (Vec::new(), Vec::new(), Vec::new());
        for (at_ms, event) in &self.events {
            let at_ms = *at_ms;
            match event {
                CallEvent::Transcript {
                    text,
                    audio_start,
                    audio_end,
                } => transcripts.push(Transcript {
                    text: text.clone(),
                    at_ms,
                    start_ms: audio_start.map(|t| self.offset(t)),
                    end_ms: audio_end.map(|t| self.offset(t)),
                }),
                CallEvent::TurnEnded { text, .. } => turns.push(Turn {
                    at_ms,
                    text: text.clone(),
                }),
                CallEvent::Phrase { reply, text } => add_phrase(&mut replies, *reply, at_ms, text),
                CallEvent::BargeIn { reply, heard } => {
                    if let Some(r) = replies.iter_mut().find(|r: &&mut Reply| r.reply == *reply) {
                        r.interrupted = true;
                    }
                    barge_ins.push(BargeIn {
                        at_ms,
                        reply: *reply,
                        heard: heard.clone(),
                        resumed: false,
                    });
                }
                CallEvent::Resumed { reply, .. } => {
                    if let Some(r) = replies.iter_mut().find(|r: &&mut Reply| r.reply == *reply) {
                        r.interrupted = false;
                    }
                    if let Some(b) = barge_ins.iter_mut().rev().find(|b| b.reply == *reply) {
                        b.resumed = true;
                    }
                }
                CallEvent::ToolCall {
                    reply,
                    name,
                    arguments,
                    result,
                } => tool_calls.push(ToolCallRecord {
                    at_ms,
                    reply: *reply,
                    name: name.clone(),
                    arguments: arguments.clone(),
                    result: result.clone(),
                }),
                CallEvent::Dtmf { digit } => dtmf.push(Key {
                    at_ms,
                    digit: digit.clone(),
                }),
                CallEvent::Ended { reason, summary } => {
                    s.end_reason = Some((*reason).to_owned());
                    let ms = summary.turn_latencies.iter().map(|d| d.as_millis() as u64);
                    s.turn_latencies_ms = Some(ms.collect());
                }
                _ => {}
            }
        }
        s.utterances = utterances(&transcripts, &turns, self.last_ms);
        s.description = format!(
            "Recorded by ivr-bridge {} at {recorded_at}: {} caller turn(s), {} repl(ies), {} \
             barge-in(s); ended: {}.",
            env!("CARGO_PKG_VERSION"),
            turns.len(),
            replies.len(),
            barge_ins.len(),
            s.end_reason.as_deref().unwrap_or("unknown"),
        );
        s.transcripts = Some(transcripts);
        s.turns = Some(turns);
        s.replies = Some(replies);
        s.barge_ins = Some(barge_ins);
        s.dtmf = Some(dtmf);
        s.tool_calls = Some(tool_calls);
        s
    }
}

fn add_phrase(replies: &mut Vec<Reply>, reply: u64, at_ms: u64, text: &str) {
    match replies.iter_mut().find(|r| r.reply == reply) {
        Some(r) => r.phrases.push(text.to_owned()),
        None => replies.push(Reply {
            reply,
            at_ms,
            phrases: vec![text.to_owned()],
            interrupted: false,
        }),
    }
}

/// The caller's utterances: the final segments of each turn (and any after the last turn)
/// joined, over the window their audio spans, widened a little and kept on the 20 ms grid
/// without overlapping.
fn utterances(transcripts: &[Transcript], turns: &[Turn], duration_ms: u64) -> Vec<Utterance> {
    let mut groups: Vec<Vec<&Transcript>> = Vec::new();
    let mut turn_ends = turns.iter().map(|t| t.at_ms).peekable();
    let mut current: Vec<&Transcript> = Vec::new();
    for t in transcripts {
        while turn_ends.next_if(|&end| end < t.at_ms).is_some() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
        }
        current.push(t);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    let mut out: Vec<Utterance> = Vec::with_capacity(groups.len());
    for group in groups {
        let floor = out.last().map_or(0, |u| u.end_ms);
        let first = group[0];
        let last = group[group.len() - 1];
        let start = first.start_ms.unwrap_or(floor);
        let start = start.saturating_sub(UTTERANCE_LEAD.as_millis() as u64);
        let end = last.end_ms.unwrap_or(last.at_ms) + UTTERANCE_TAIL.as_millis() as u64;
        let start_ms = (start / FRAME_MS * FRAME_MS).max(floor);
        let end_ms = end.div_ceil(FRAME_MS) * FRAME_MS;
        let end_ms = end_ms
            .min(duration_ms.div_ceil(FRAME_MS) * FRAME_MS)
            .max(start_ms);
        let text: Vec<&str> = group.iter().map(|t| t.text.trim()).collect();
        out.push(Utterance {
            text: text.join(" "),
            start_ms,
            end_ms,
        });
    }
    out
}

fn media_audio(msg: &Value) -> Option<Vec<u8>> {
    if msg["event"] != "media" {
        return None;
    }
    let payload = msg["media"]["payload"].as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str, at_ms: u64, start: u64, end: u64) -> Transcript {
        Transcript {
            text: text.into(),
            at_ms,
            start_ms: Some(start),
            end_ms: Some(end),
        }
    }

    #[test]
    fn a_turns_segments_make_one_utterance_on_the_frame_grid() {
        let transcripts = [
            seg("What are the", 3000, 2010, 2900),
            seg("opening hours?", 4200, 2900, 4055),
            seg("Thanks.", 9000, 8000, 8500),
        ];
        let turns = [Turn {
            at_ms: 5000,
            text: "What are the opening hours?".into(),
        }];
        let u = utterances(&transcripts, &turns, 10_000);
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].text.as_str(), u[0].start_ms, u[0].end_ms),
            ("What are the opening hours?", 1400, 4260)
        );
        assert_eq!(
            (u[1].text.as_str(), u[1].start_ms, u[1].end_ms),
            ("Thanks.", 7400, 8700)
        );
    }

    #[test]
    fn the_sidecar_tells_turns_replies_and_barge_ins() {
        let t0 = Instant::now();
        let mut rec = CallRecording::new(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        let events = [
            (
                0,
                CallEvent::Started {
                    call_sid: "CA1".into(),
                    stream_sid: "MZ1".into(),
                },
            ),
            (
                10,
                CallEvent::Phrase {
                    reply: 1,
                    text: "Hello.".into(),
                },
            ),
            (
                3000,
                CallEvent::Transcript {
                    text: "Where are you?".into(),
                    audio_start: Some(at(2000)),
                    audio_end: Some(at(2900)),
                },
            ),
            (
                3600,
                CallEvent::TurnEnded {
                    turn: 1,
                    text: "Where are you?".into(),
                },
            ),
            (
                4000,
                CallEvent::Phrase {
                    reply: 2,
                    text: "At 100 Main Street,".into(),
                },
            ),
            (
                4100,
                CallEvent::Phrase {
                    reply: 2,
                    text: "next to the station.".into(),
                },
            ),
            (
                5000,
                CallEvent::BargeIn {
                    reply: 2,
                    heard: Some("We open…".into()),
                },
            ),
        ];
        for (ms, event) in events {
            rec.event(at(ms), event);
        }
        let _ = rec.message(at(6000), Dir::In, r#"{"event":"stop"}"#);
        let settings = RecordedSettings {
            greeting: "Hello.".into(),
            silence_timeout_ms: 600,
            turn_detection: "timer".into(),
        };
        let s = rec.sidecar("CA1_x", "2026-11-25T14:32:41Z", &settings);
        assert_eq!((s.call_sid.as_str(), s.stream_sid.as_str()), ("CA1", "MZ1"));
        let replies = s.replies.unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(
            replies[1].text(),
            "At 100 Main Street, next to the station."
        );
        assert!(replies[1].interrupted && !replies[0].interrupted);
        assert_eq!(s.barge_ins.map(|b| b.len()), Some(1));
        assert_eq!(s.utterances.len(), 1);
        assert_eq!(
            (s.utterances[0].start_ms, s.utterances[0].end_ms),
            (1400, 3100)
        );
    }

    #[test]
    fn lines_are_compact_fixture_lines_that_never_go_back_in_time() {
        let t0 = Instant::now();
        let mut rec = CallRecording::new(t0);
        let a = rec.message(
            t0 + Duration::from_millis(40),
            Dir::In,
            r#"{"event":"connected"}"#,
        );
        assert_eq!(
            a.as_deref(),
            Some(r#"{"at_ms":40,"dir":"in","msg":{"event":"connected"}}"#)
        );
        let b = rec.message(
            t0 + Duration::from_millis(30),
            Dir::Out,
            r#"{"event":"clear"}"#,
        );
        assert_eq!(
            b.as_deref(),
            Some(r#"{"at_ms":40,"dir":"out","msg":{"event":"clear"}}"#)
        );
        assert_eq!(rec.message(t0, Dir::In, "not json"), None);
        assert_eq!(rec.skipped, 1);
    }
}
