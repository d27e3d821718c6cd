//! Twilio's side of the phone line, sans-IO (PROTOCOLS.md §1.6): outbound audio plays in real
//! time in the order received, a mark echoes when the audio queued before it has played, and
//! `clear` drops what has not played and echoes every pending mark. What actually played is
//! written at its time into the assistant's channel of the recording.
//!
//! Time is an argument, counted in samples (8 kHz) since the call started.

use std::collections::VecDeque;

/// Audio waiting to play or playing.
#[derive(Debug)]
struct Queued {
    /// Sample at which it starts (or started) playing.
    start: u64,
    /// μ-law bytes, one per sample.
    audio: Vec<u8>,
}

/// The outbound side of one call.
#[derive(Debug, Default)]
pub struct Line {
    /// Audio not yet fully played, in order.
    queue: VecDeque<Queued>,
    /// Marks not yet echoed: (name, sample at which they fall due).
    marks: VecDeque<(String, u64)>,
    /// What the caller heard: μ-law per sample since the call started (0xFF = silence).
    heard: Vec<u8>,
}

impl Line {
    /// A quiet line.
    pub fn new() -> Self {
        Self::default()
    }

    /// When the queued audio will have played.
    fn end(&self, now: u64) -> u64 {
        self.queue
            .back()
            .map_or(now, |q| (q.start + q.audio.len() as u64).max(now))
    }

    /// Whether audio is playing at `now`.
    pub fn playing(&self, now: u64) -> bool {
        self.end(now) > now
    }

    /// When the audio queued so far ends (`None` when nothing is queued).
    pub fn playing_until(&self) -> Option<u64> {
        self.queue.back().map(|q| q.start + q.audio.len() as u64)
    }

    /// Queues audio behind what is already queued.
    pub fn media(&mut self, now: u64, audio: Vec<u8>) {
        self.advance(now);
        let start = self.end(now);
        self.queue.push_back(Queued { start, audio });
    }

    /// Queues a mark; returns its name when it is due at once (nothing is playing).
    pub fn mark(&mut self, now: u64, name: String) -> Option<String> {
        self.advance(now);
        let due = self.end(now);
        if due <= now {
            return Some(name);
        }
        self.marks.push_back((name, due));
        None
    }

    /// Drops unplayed audio; returns the samples dropped and the marks to echo now.
    pub fn clear(&mut self, now: u64) -> (u64, Vec<String>) {
        self.advance(now);
        let mut dropped = 0;
        while let Some(q) = self.queue.pop_front() {
            let played = now.saturating_sub(q.start).min(q.audio.len() as u64) as usize;
            self.record(q.start, &q.audio[..played]);
            dropped += (q.audio.len() - played) as u64;
        }
        (
            dropped,
            self.marks.drain(..).map(|(name, _)| name).collect(),
        )
    }

    /// Marks whose audio has played by `now`.
    pub fn due_marks(&mut self, now: u64) -> Vec<String> {
        self.advance(now);
        let mut due = Vec::new();
        while self.marks.front().is_some_and(|(_, at)| *at <= now) {
            due.extend(self.marks.pop_front().map(|(name, _)| name));
        }
        due
    }

    /// When the next mark falls due.
    pub fn next_mark(&self) -> Option<u64> {
        self.marks.front().map(|(_, at)| *at)
    }

    /// The call ended at `now`: what was heard, per sample (audio still queued is never heard).
    pub fn hang_up(mut self, now: u64) -> Vec<u8> {
        let _ = self.clear(now);
        self.heard
    }

    /// Moves audio that has finished playing by `now` into the recording.
    fn advance(&mut self, now: u64) {
        while self
            .queue
            .front()
            .is_some_and(|q| q.start + q.audio.len() as u64 <= now)
        {
            if let Some(q) = self.queue.pop_front() {
                self.record(q.start, &q.audio);
            }
        }
    }

    fn record(&mut self, start: u64, audio: &[u8]) {
        let start = start as usize;
        let end = start + audio.len();
        if self.heard.len() < end {
            self.heard.resize(end, 0xFF);
        }
        self.heard[start..end].copy_from_slice(audio);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_plays_in_order_and_marks_wait_for_it() {
        let mut line = Line::new();
        line.media(100, vec![1; 160]);
        line.media(120, vec![2; 160]);
        assert_eq!(line.mark(130, "a".into()), None);
        assert_eq!(line.next_mark(), Some(420));
        assert!(line.due_marks(419).is_empty());
        assert_eq!(line.due_marks(420), vec!["a".to_owned()]);
        assert_eq!(line.mark(500, "b".into()), Some("b".into()));
        let heard = line.hang_up(1000);
        assert_eq!(heard.len(), 420);
        assert_eq!(heard[99], 0xFF);
        assert_eq!(heard[100], 1);
        assert_eq!(heard[260], 2);
    }

    #[test]
    fn clear_keeps_what_played_and_echoes_pending_marks() {
        let mut line = Line::new();
        line.media(0, vec![7; 800]);
        assert_eq!(line.mark(0, "m".into()), None);
        let (dropped, marks) = line.clear(300);
        assert_eq!((dropped, marks), (500, vec!["m".to_owned()]));
        assert!(!line.playing(300));
        let heard = line.hang_up(2000);
        assert_eq!(heard.len(), 300);
        assert!(heard.iter().all(|&b| b == 7));
    }
}
