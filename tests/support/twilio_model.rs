//! Twilio's side of a media stream, sans-IO: which server messages it accepts (PROTOCOLS.md
//! §1.4) and how it plays outbound audio, echoes marks and applies `clear` (§1.6). Time is an
//! argument, so the replayer only moves bytes.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::time::Instant;

/// A server message Twilio would accept.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Audio to queue.
    Media(Vec<u8>),
    /// A mark to echo once the audio queued before it has played.
    Mark(String),
    /// Drop queued audio and echo pending marks.
    Clear,
}

/// Checks one text frame against Twilio's rules; `stream_sid` is `None` before `start` was sent.
/// Any problem means Twilio would reject the message (31951), so it is not applied.
pub fn check(text: &str, stream_sid: Option<&str>) -> Result<Outbound, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:.200}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("not a JSON object: {text:.200}"))?;
    let event = obj.get("event").and_then(Value::as_str).unwrap_or_default();
    let (keys, inner): (&[&str], Option<(&str, &[&str])>) = match event {
        "media" => (
            &["event", "streamSid", "media"],
            Some(("media", &["payload"])),
        ),
        "mark" => (&["event", "streamSid", "mark"], Some(("mark", &["name"]))),
        "clear" => (&["event", "streamSid"], None),
        other => {
            return Err(format!(
                "event {other:?} is not media/mark/clear: {text:.200}"
            ))
        }
    };
    exact_keys(&v, keys, event)?;
    if let Some((field, inner_keys)) = inner {
        exact_keys(&v[field], inner_keys, &format!("{event}.{field}"))?;
    }
    let Some(expected) = stream_sid else {
        return Err(format!("{event} sent before Twilio sent `start`"));
    };
    if v["streamSid"] != expected {
        return Err(format!(
            "{event} has streamSid {} instead of {expected:?}",
            v["streamSid"]
        ));
    }
    match event {
        "media" => {
            let payload = v["media"]["payload"]
                .as_str()
                .ok_or("media.payload is not a string")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map_err(|e| format!("media.payload is not base64: {e}"))?;
            if bytes.is_empty() {
                return Err("media.payload is empty".into());
            }
            Ok(Outbound::Media(bytes))
        }
        "mark" => match v["mark"]["name"].as_str() {
            Some(name) => Ok(Outbound::Mark(name.to_owned())),
            None => Err("mark.name is not a string".into()),
        },
        _ => Ok(Outbound::Clear),
    }
}

fn exact_keys(v: &Value, keys: &[&str], what: &str) -> Result<(), String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} is not an object"))?;
    let mut have: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want = keys.to_vec();
    have.sort_unstable();
    want.sort_unstable();
    if have == want {
        Ok(())
    } else {
        Err(format!(
            "{what} has fields {have:?}, Twilio wants exactly {want:?}"
        ))
    }
}

/// Playing time of μ-law bytes at 8 kHz: 125 µs each.
pub fn play_time(bytes: usize) -> Duration {
    Duration::from_micros(bytes as u64 * 125)
}

/// A stretch of audio the caller heard, starting at `started`.
#[derive(Clone, Debug)]
pub struct Played {
    /// When it started playing.
    pub started: Instant,
    /// The μ-law bytes heard.
    pub bytes: Vec<u8>,
}

/// Twilio's outbound buffer: audio plays in real time, in order; marks wait for it.
#[derive(Debug, Default)]
pub struct Playback {
    /// Queued audio with its scheduled start, in order.
    queue: VecDeque<Played>,
    /// Marks not yet echoed: (caller's id for the mark, when it falls due).
    marks: VecDeque<(usize, Instant)>,
    /// Everything heard, in order.
    pub heard: Vec<Played>,
}

impl Playback {
    /// When the queued audio will have finished.
    fn end(&self, now: Instant) -> Instant {
        self.queue
            .back()
            .map_or(now, |p| (p.started + play_time(p.bytes.len())).max(now))
    }

    /// Queues audio behind what is already queued.
    pub fn media(&mut self, now: Instant, bytes: Vec<u8>) {
        self.advance(now);
        let started = self.end(now);
        self.queue.push_back(Played { started, bytes });
    }

    /// Queues a mark; returns `true` when it is due right away (nothing is playing).
    pub fn mark(&mut self, now: Instant, id: usize) -> bool {
        self.advance(now);
        let due = self.end(now);
        if due <= now {
            return true;
        }
        self.marks.push_back((id, due));
        false
    }

    /// Drops queued audio; returns the bytes dropped and the marks to echo now.
    pub fn clear(&mut self, now: Instant) -> (usize, Vec<usize>) {
        self.advance(now);
        let mut dropped = 0;
        for p in self.queue.drain(..) {
            let heard = if p.started < now {
                ((now - p.started).as_micros() / 125) as usize
            } else {
                0
            };
            let heard = heard.min(p.bytes.len());
            if heard > 0 {
                self.heard.push(Played {
                    started: p.started,
                    bytes: p.bytes[..heard].to_vec(),
                });
            }
            dropped += p.bytes.len() - heard;
        }
        (dropped, self.marks.drain(..).map(|(id, _)| id).collect())
    }

    /// Marks whose audio has played by `now`.
    pub fn due_marks(&mut self, now: Instant) -> Vec<usize> {
        self.advance(now);
        let mut due = Vec::new();
        while self.marks.front().is_some_and(|(_, at)| *at <= now) {
            due.extend(self.marks.pop_front().map(|(id, _)| id));
        }
        due
    }

    /// When the next mark falls due.
    pub fn next_mark(&self) -> Option<Instant> {
        self.marks.front().map(|(_, at)| *at)
    }

    /// Moves audio that has finished playing by `now` into `heard`.
    pub fn advance(&mut self, now: Instant) {
        while self
            .queue
            .front()
            .is_some_and(|p| p.started + play_time(p.bytes.len()) <= now)
        {
            self.heard.extend(self.queue.pop_front());
        }
    }

    /// At hang-up: keeps what was heard by `now`, returns the bytes never played.
    pub fn hang_up(&mut self, now: Instant) -> usize {
        self.clear(now).0
    }
}
