//! Twilio's playback of what the server sends, reduced to a clock: audio queues behind audio at
//! 8 kHz, marks fall due when the audio before them has played, `clear` drops the rest and
//! releases every mark. (The demo's `Line` also keeps the audio for its WAV; a load test needs
//! only the times.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One call's playback.
#[derive(Debug, Default)]
pub struct Playback {
    /// When the queued audio will have played.
    pub until: Option<Instant>,
    /// Marks not yet echoed, with when they fall due.
    marks: VecDeque<(String, Instant)>,
}

impl Playback {
    pub fn end(&self, now: Instant) -> Instant {
        self.until.map_or(now, |u| u.max(now))
    }

    pub fn playing(&self, now: Instant) -> bool {
        self.end(now) > now
    }

    pub fn media(&mut self, now: Instant, bytes: usize) {
        let length = Duration::from_micros(bytes as u64 * 125);
        self.until = Some(self.end(now) + length);
    }

    pub fn mark(&mut self, now: Instant, name: String) -> Option<String> {
        let due = self.end(now);
        if due <= now && self.marks.is_empty() {
            return Some(name);
        }
        self.marks.push_back((name, due));
        None
    }

    pub fn clear(&mut self, now: Instant) -> Vec<String> {
        self.until = Some(now);
        self.marks.drain(..).map(|(name, _)| name).collect()
    }

    pub fn next_mark(&self) -> Option<Instant> {
        self.marks.front().map(|(_, at)| *at)
    }

    pub fn due_marks(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while self.marks.front().is_some_and(|(_, at)| *at <= now) {
            due.extend(self.marks.pop_front().map(|(name, _)| name));
        }
        due
    }
}
