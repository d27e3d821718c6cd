//! The simulated caller's state between socket events, sans-IO apart from reading the clock:
//! what to send (renumbered), what the server sent (checked against Twilio's rules, played
//! through the [`Line`]), which marks to echo, and what the script's listener hears.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::recording::{ClearRecord, MarkRecord, MediaFrame, Played, Recording};
use super::{Inject, Listener};
use crate::fixture::CallFixture;
use crate::twilio::{self, Outbound};
use crate::webhooks::AfterStream;
use ivr_bridge::twilio::playback::Line;

/// Samples per millisecond at 8 kHz.
const SAMPLES_PER_MS: u64 = 8;

/// A moment in the caller's script, told when it passes.
enum Cue {
    /// An utterance starts, with its words.
    Starts(String),
    /// The utterance stops.
    Stops,
}

/// The state of the call between socket events.
pub(super) struct Call {
    /// When the socket opened: the call's clock starts here.
    started: Instant,
    /// Twilio's playback of what the server sends.
    line: Line,
    /// What has been seen so far.
    rec: Recording,
    /// Our `sequenceNumber` counter: recorded ones are renumbered so echoed marks fit in.
    seq: u64,
    /// Set once `start` went out: the server may talk from then on.
    started_stream: bool,
    /// The caller's script as (ms, cue), in order.
    cues: Vec<(u64, Cue)>,
    /// How many cues were told.
    told: usize,
}

impl Call {
    /// A call on a socket that opened at `started`, playing `fixture`.
    pub(super) fn new(started: Instant, fixture: &CallFixture) -> Self {
        let mut cues = Vec::new();
        for u in &fixture.sidecar.utterances {
            cues.push((u.start_ms, Cue::Starts(u.text.clone())));
            cues.push((u.end_ms, Cue::Stops));
        }
        cues.sort_by_key(|(at, _)| *at);
        let rec = Recording {
            started,
            stream_sid: fixture.stream_sid().to_owned(),
            media: Vec::new(),
            marks: Vec::new(),
            clears: Vec::new(),
            played: Vec::new(),
            unplayed_bytes: 0,
            violations: Vec::new(),
            stop_sent_at: None,
            call_sid: None,
            after_stream: None,
            server_closed_at: None,
            server_close_code: None,
            finished: started,
            outbound: Vec::new(),
            caller: Vec::new(),
            assistant: Vec::new(),
        };
        Self {
            started,
            line: Line::new(),
            rec,
            seq: 0,
            started_stream: false,
            cues,
            told: 0,
        }
    }

    /// Whether the server has closed the socket.
    pub(super) fn server_closed(&self) -> bool {
        self.rec.server_closed_at.is_some()
    }

    /// Whether the server closed the socket while the caller was still on the line: Twilio
    /// then goes on with the call's TwiML (`<Connect action>`).
    pub(super) fn server_ended_stream(&self) -> bool {
        self.server_closed() && self.rec.stop_sent_at.is_none()
    }

    /// The `callSid` of the `start` sent, once sent.
    pub(super) fn call_sid(&self) -> Option<&str> {
        self.rec.call_sid.as_deref()
    }

    /// Notes what Twilio did after the stream.
    pub(super) fn followed(&mut self, after: AfterStream) {
        self.rec.after_stream = Some(after);
    }

    /// Notes that the socket broke while writing.
    pub(super) fn send_failed(&mut self) {
        self.rec.server_closed_at.get_or_insert_with(Instant::now);
    }

    /// Time since the socket opened, and the same in samples.
    fn now(&self) -> (Instant, Duration, u64) {
        let now = Instant::now();
        let since = now.saturating_duration_since(self.started);
        (now, since, since.as_micros() as u64 * SAMPLES_PER_MS / 1000)
    }

    /// The instant of sample `sample`.
    fn instant(&self, sample: u64) -> Instant {
        self.started + Duration::from_micros(sample * 1000 / SAMPLES_PER_MS)
    }

    /// The next moment something is due: a mark, the end of playback or a cue.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let mark = self.line.next_mark().map(|s| self.instant(s));
        let (_, _, now) = self.now();
        let end = self.line.playing_until().filter(|&end| end > now);
        let cue = self.cues.get(self.told);
        let cue = cue.map(|(ms, _)| self.started + Duration::from_millis(*ms));
        [mark, end.map(|s| self.instant(s)), cue]
            .into_iter()
            .flatten()
            .min()
    }

    /// Tells the cues that passed, echoes the marks that fell due and notes the end of audio.
    pub(super) fn on_wake(&mut self, story: &mut dyn Listener) -> Vec<Message> {
        let (_, since, now) = self.now();
        while let Some((ms, cue)) = self.cues.get(self.told) {
            let at = Duration::from_millis(*ms);
            if at > since {
                break;
            }
            match cue {
                Cue::Starts(text) => story.caller_starts(at, text),
                Cue::Stops => story.caller_stops(at),
            }
            self.told += 1;
        }
        let echoes = self.due_marks();
        if !self.line.playing(now) {
            story.audio_ends(since);
        }
        echoes
    }

    /// The message to send for `frame`, renumbered; notes `start` and `stop`.
    pub(super) fn outgoing(&mut self, frame: &Inject, story: &mut dyn Listener) -> Message {
        let msg = match frame {
            Inject::Text(t) => return Message::text(t.clone()),
            Inject::Binary(b) => return Message::binary(b.clone()),
            Inject::Message(msg) => msg,
        };
        let mut msg = msg.clone();
        if msg.get("sequenceNumber").is_some() {
            self.seq += 1;
            msg["sequenceNumber"] = json!(self.seq.to_string());
        }
        match msg["event"].as_str() {
            Some("start") => {
                self.started_stream = true;
                let call_sid = msg["start"]["callSid"].as_str().map(str::to_owned);
                self.rec.call_sid = call_sid;
            }
            Some("stop") => {
                let (now, since, _) = self.now();
                self.rec.stop_sent_at = Some(now);
                story.hang_up(since);
            }
            _ => {}
        }
        Message::text(msg.to_string())
    }

    /// Takes what the server sent (or that it went away); returns the echoes to send.
    pub(super) fn on_server(
        &mut self,
        msg: Option<Result<Message, WsError>>,
        story: &mut dyn Listener,
    ) -> Vec<Message> {
        let (now, since, _) = self.now();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => {
                let why = format!("binary frame of {} bytes (31950)", b.len());
                story.rejected(since, &why);
                self.rec.violations.push(why);
                return Vec::new();
            }
            Some(Ok(Message::Close(frame))) => {
                self.rec.server_close_code = frame.map(|f| u16::from(f.code));
                self.rec.server_closed_at = Some(now);
                return Vec::new();
            }
            Some(Ok(_)) => return Vec::new(),
            Some(Err(_)) | None => {
                self.rec.server_closed_at.get_or_insert(now);
                return Vec::new();
            }
        };
        let parsed = serde_json::from_str::<Value>(text.as_str());
        let sid = self.started_stream.then_some(self.rec.stream_sid.as_str());
        let checked = match &parsed {
            Ok(v) => {
                twilio::check_value(v, sid).map_err(|e| format!("{e}: {:.200}", text.as_str()))
            }
            Err(e) => Err(format!("not JSON ({e}): {:.200}", text.as_str())),
        };
        if let Ok(v) = parsed {
            self.rec.outbound.push((since.as_millis() as u64, v));
        }
        match checked {
            Err(why) => {
                story.rejected(since, &why);
                self.rec.violations.push(why);
                Vec::new()
            }
            Ok(outbound) => self.apply(outbound, story),
        }
    }

    /// Applies an accepted server message to the line, as Twilio would.
    fn apply(&mut self, outbound: Outbound, story: &mut dyn Listener) -> Vec<Message> {
        let (now, since, sample) = self.now();
        // Marks already due are echoed first, so echoes keep Twilio's order.
        let mut echoes = self.due_marks();
        match outbound {
            Outbound::Media(bytes) => {
                if !self.line.playing(sample) {
                    story.audio_starts(since);
                }
                let stream_sid = self.rec.stream_sid.clone();
                let (at, copy) = (now, bytes.clone());
                self.rec.media.push(MediaFrame {
                    at,
                    stream_sid,
                    bytes: copy,
                });
                self.line.media(sample, bytes);
            }
            Outbound::Mark(name) => {
                let id = self.rec.marks.len();
                self.rec.marks.push(MarkRecord {
                    name,
                    sent_at: now,
                    echoed_at: None,
                    discarded: false,
                });
                if self.line.mark(sample, id.to_string()).is_some() {
                    echoes.extend(self.echo(id, now, false));
                }
            }
            Outbound::Clear => {
                let (dropped, marks) = self.line.clear(sample);
                let dropped_bytes = dropped as usize;
                self.rec.clears.push(ClearRecord {
                    at: now,
                    dropped_bytes,
                });
                let dropped = Duration::from_micros(dropped * 1000 / SAMPLES_PER_MS);
                story.cleared(since, dropped);
                for id in marks.iter().filter_map(|m| m.parse().ok()) {
                    echoes.extend(self.echo(id, now, true));
                }
            }
        }
        echoes
    }

    /// Echoes the marks whose audio has played by now.
    fn due_marks(&mut self) -> Vec<Message> {
        let (now, _, sample) = self.now();
        let due = self.line.due_marks(sample);
        let ids = due.iter().filter_map(|m| m.parse().ok());
        ids.filter_map(|id| self.echo(id, now, false)).collect()
    }

    /// The echo of mark `id` (its index in the recording), noting how it went.
    fn echo(&mut self, id: usize, now: Instant, discarded: bool) -> Option<Message> {
        let mark = self.rec.marks.get_mut(id)?;
        self.seq += 1;
        mark.echoed_at = Some(now);
        mark.discarded = discarded;
        let mut text = String::with_capacity(128);
        twilio::mark(&mut text, self.seq, &self.rec.stream_sid, &mark.name);
        Some(Message::text(text))
    }

    /// The call is over: what was heard, and both sides as audio.
    pub(super) fn finish(mut self, fixture: &CallFixture) -> Recording {
        let (now, _, sample) = self.now();
        let (unplayed, _) = self.line.clear(sample);
        self.rec.unplayed_bytes = unplayed as usize;
        let heard = self.line.heard();
        self.rec.played = self
            .line
            .stretches()
            .iter()
            .map(|s| Played {
                started: self.instant(s.start),
                bytes: heard[s.start as usize..(s.start + s.len) as usize].to_vec(),
            })
            .collect();
        self.rec.assistant = self.line.hang_up(sample);
        self.rec.caller = caller_track(fixture);
        self.rec.finished = now;
        self.rec
    }
}

/// What the recording's caller sent, per sample from the start of the call.
fn caller_track(fixture: &CallFixture) -> Vec<u8> {
    let mut caller = Vec::new();
    for (at_ms, audio) in fixture.inbound_frames() {
        let start = (at_ms * SAMPLES_PER_MS) as usize;
        if caller.len() < start + audio.len() {
            caller.resize(start + audio.len(), 0xFF);
        }
        caller[start..start + audio.len()].copy_from_slice(audio);
    }
    caller
}
