//! Plays a recorded call into the server over a real WebSocket, in real time, as Twilio would:
//! inbound messages at their recorded offsets, outbound audio played through a [`Line`] (marks
//! echoed when played, `clear` applied), and what happens told to a [`Listener`] as it happens:
//! the caller's script, the line, and the server's typed [`CallEvent`]s when it runs in this
//! process.

use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::fixture::CallFixture;
use ivr_bridge::events::{CallEvent, CallEvents};
use ivr_bridge::twilio::playback::Line;

/// How long to wait for the server to close after the recording's last message.
const LINGER: Duration = Duration::from_secs(2);
/// Samples per millisecond at 8 kHz.
const SAMPLES_PER_MS: u64 = 8;

/// The call could not be played.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    /// The media stream socket did not open.
    #[error("cannot open the media stream at {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Both sides of the call as μ-law, one byte per sample from the start of the call, and what
/// the server sent.
#[derive(Debug)]
pub struct Recording {
    /// What the caller sent.
    pub caller: Vec<u8>,
    /// What the caller heard of the assistant.
    pub assistant: Vec<u8>,
    /// Every message the server sent, with its offset in ms.
    pub outbound: Vec<(u64, Value)>,
}

/// Who hears about the call as it is played. Every method has a default that ignores it.
pub trait Listener {
    /// The recording's caller starts an utterance.
    fn caller_starts(&mut self, _at: Duration, _text: &str) {}
    /// The recording's caller stops speaking.
    fn caller_stops(&mut self, _at: Duration) {}
    /// The server published an event (only when it runs in this process).
    fn server(&mut self, _at: Duration, _event: &CallEvent) {}
    /// Assistant audio reached the line while it was quiet.
    fn audio_starts(&mut self, _at: Duration) {}
    /// The assistant's audio finished playing.
    fn audio_ends(&mut self, _at: Duration) {}
    /// Twilio applied a `clear`, dropping this much unplayed audio.
    fn cleared(&mut self, _at: Duration, _dropped: Duration) {}
    /// The recording's caller hangs up (Twilio's `stop`).
    fn hang_up(&mut self, _at: Duration) {}
    /// The server sent something that is not a Twilio message.
    fn unreadable(&mut self, _at: Duration, _text: &str) {}
}

/// A moment in the caller's script, told when it passes.
enum Cue {
    Starts(String),
    Stops,
}

/// Plays `fixture` into `url`, telling `story` what happens, with the server's `events` when it
/// runs in this process. Returns the recording.
pub async fn play(
    url: &str,
    fixture: &CallFixture,
    mut events: Option<&mut CallEvents>,
    story: &mut dyn Listener,
) -> Result<Recording, PlayError> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| PlayError::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let started = Instant::now();
    let (mut sink, mut stream) = ws.split();
    let mut call = Call::new(started, fixture);
    let end_ms = fixture.inbound.last().map_or(0, |s| s.at_ms);
    let give_up = started + Duration::from_millis(end_ms) + LINGER;
    let mut next = 0;
    loop {
        let send_at = fixture
            .inbound
            .get(next)
            .map_or(give_up, |s| started + Duration::from_millis(s.at_ms));
        let wake = call.next_wake();
        let out: Vec<Message> = tokio::select! {
            biased;
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => call.on_server(text.as_str(), story),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => Vec::new(),
            },
            Some(event) = next_event(&mut events) => {
                story.server(event.at.saturating_duration_since(started), &event.event);
                Vec::new()
            }
            () = sleep_until(wake.unwrap_or(give_up)), if wake.is_some() => call.on_wake(story),
            () = sleep_until(send_at) => match fixture.inbound.get(next) {
                Some(scheduled) => {
                    next += 1;
                    if scheduled.msg["event"] == "stop" {
                        story.hang_up(started.elapsed());
                    }
                    vec![call.outgoing(&scheduled.msg)]
                }
                None => break,
            },
        };
        for msg in out {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    if let Some(events) = events {
        // The server tells the end of the call after its socket closed.
        let until = Instant::now() + LINGER;
        while let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await {
            story.server(event.at.saturating_duration_since(started), &event.event);
            if matches!(event.event, CallEvent::Ended { .. }) {
                break;
            }
        }
    }
    Ok(call.finish(fixture))
}

/// The next server event, or never when there are none to read.
async fn next_event(
    events: &mut Option<&mut CallEvents>,
) -> Option<ivr_bridge::events::ObservedEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The state of the call between socket events.
struct Call {
    started: Instant,
    line: Line,
    stream_sid: String,
    /// Our `sequenceNumber` counter: recorded ones are renumbered so echoed marks fit in.
    seq: u64,
    /// The caller's script as (ms, cue), in order, and how many were told.
    cues: Vec<(u64, Cue)>,
    told: usize,
    /// What the server sent, with offsets.
    outbound: Vec<(u64, Value)>,
}

impl Call {
    fn new(started: Instant, fixture: &CallFixture) -> Self {
        let mut cues = Vec::new();
        for u in &fixture.sidecar.utterances {
            cues.push((u.start_ms, Cue::Starts(u.text.clone())));
            cues.push((u.end_ms, Cue::Stops));
        }
        cues.sort_by_key(|(at, _)| *at);
        Self {
            started,
            line: Line::new(),
            stream_sid: fixture.sidecar.stream_sid.clone(),
            seq: 0,
            cues,
            told: 0,
            outbound: Vec::new(),
        }
    }

    fn now(&self) -> (Duration, u64) {
        let since = self.started.elapsed();
        (since, since.as_micros() as u64 * SAMPLES_PER_MS / 1000)
    }

    fn instant(&self, sample: u64) -> Instant {
        self.started + Duration::from_micros(sample * 1000 / SAMPLES_PER_MS)
    }

    /// The next moment something is due: a mark, the end of playback or a cue.
    fn next_wake(&self) -> Option<Instant> {
        let mark = self.line.next_mark().map(|s| self.instant(s));
        let (_, now) = self.now();
        let end = self
            .line
            .playing_until()
            .filter(|&end| end > now)
            .map(|s| self.instant(s));
        let cue = self
            .cues
            .get(self.told)
            .map(|(ms, _)| self.started + Duration::from_millis(*ms));
        [mark, end, cue].into_iter().flatten().min()
    }

    fn on_wake(&mut self, story: &mut dyn Listener) -> Vec<Message> {
        let (since, now) = self.now();
        while let Some((ms, cue)) = self.cues.get(self.told) {
            if Duration::from_millis(*ms) > since {
                break;
            }
            match cue {
                Cue::Starts(text) => story.caller_starts(Duration::from_millis(*ms), text),
                Cue::Stops => story.caller_stops(Duration::from_millis(*ms)),
            }
            self.told += 1;
        }
        let echoes = self.line.due_marks(now);
        if !self.line.playing(now) {
            story.audio_ends(since);
        }
        echoes.into_iter().map(|name| self.echo(&name)).collect()
    }

    fn outgoing(&mut self, msg: &Value) -> Message {
        let mut msg = msg.clone();
        if msg.get("sequenceNumber").is_some() {
            self.seq += 1;
            msg["sequenceNumber"] = json!(self.seq.to_string());
        }
        Message::text(msg.to_string())
    }

    fn echo(&mut self, name: &str) -> Message {
        self.seq += 1;
        let msg = json!({"event": "mark", "sequenceNumber": self.seq.to_string(),
            "streamSid": self.stream_sid, "mark": {"name": name}});
        Message::text(msg.to_string())
    }

    fn on_server(&mut self, text: &str, story: &mut dyn Listener) -> Vec<Message> {
        let (since, now) = self.now();
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            story.unreadable(since, text);
            return Vec::new();
        };
        let echoes = self.apply(&msg, since, now, story);
        self.outbound.push((since.as_millis() as u64, msg));
        echoes
    }

    fn apply(
        &mut self,
        msg: &Value,
        since: Duration,
        now: u64,
        story: &mut dyn Listener,
    ) -> Vec<Message> {
        match msg["event"].as_str() {
            Some("media") => {
                let payload = msg["media"]["payload"].as_str().unwrap_or_default();
                if let Ok(audio) = base64::engine::general_purpose::STANDARD.decode(payload) {
                    if !self.line.playing(now) {
                        story.audio_starts(since);
                    }
                    self.line.media(now, audio);
                }
                Vec::new()
            }
            Some("mark") => {
                let name = msg["mark"]["name"].as_str().unwrap_or_default().to_owned();
                self.line
                    .mark(now, name)
                    .map(|n| vec![self.echo(&n)])
                    .unwrap_or_default()
            }
            Some("clear") => {
                let (dropped, marks) = self.line.clear(now);
                story.cleared(
                    since,
                    Duration::from_micros(dropped * 1000 / SAMPLES_PER_MS),
                );
                marks.iter().map(|name| self.echo(name)).collect()
            }
            _ => Vec::new(),
        }
    }

    fn finish(self, fixture: &CallFixture) -> Recording {
        let (_, now) = self.now();
        let mut caller = Vec::new();
        for s in &fixture.inbound {
            let Some(audio) = &s.audio else { continue };
            let start = (s.at_ms * SAMPLES_PER_MS) as usize;
            if caller.len() < start + audio.len() {
                caller.resize(start + audio.len(), 0xFF);
            }
            caller[start..start + audio.len()].copy_from_slice(audio);
        }
        Recording {
            caller,
            assistant: self.line.hang_up(now),
            outbound: self.outbound,
        }
    }
}
