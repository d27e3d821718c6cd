//! Twilio's side of the phone line, sans-IO (PROTOCOLS.md §1.6): outbound audio plays in real
//! time in the order received, a mark echoes when the audio queued before it has played, and
//! `clear` drops what has not played and echoes every pending mark. What actually played is
//! written at its time into the assistant's channel of the recording.
//!
//! Time is an argument, counted in samples (8 kHz) since the call started. A line that only
//! needs times (the load generator's) queues lengths with [`Line::media_len`] and keeps no audio.

use std::collections::VecDeque;

/// Audio waiting to play or playing.
#[derive(Debug)]
struct Queued {
    /// Sample at which it starts (or started) playing.
    start: u64,
    /// Samples it lasts (`audio.len()`, or a length queued with [`Line::media_len`]).
    len: u64,
    /// μ-law bytes, one per sample; empty when only the length was queued.
    audio: Vec<u8>,
}

/// A stretch of audio the caller heard without a break in it: where it starts and how long it
/// is, in samples since the call started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretch {
    /// First sample heard.
    pub start: u64,
    /// Samples heard.
    pub len: u64,
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
    /// Each piece of queued audio as far as it was heard, in order.
    stretches: Vec<Stretch>,
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
            .map_or(now, |q| (q.start + q.len).max(now))
    }

    /// Whether audio is playing at `now`.
    pub fn playing(&self, now: u64) -> bool {
        self.end(now) > now
    }

    /// When the audio queued so far ends (`None` when nothing is queued).
    pub fn playing_until(&self) -> Option<u64> {
        self.queue.back().map(|q| q.start + q.len)
    }

    /// Queues audio behind what is already queued.
    pub fn media(&mut self, now: u64, audio: Vec<u8>) {
        self.advance(now);
        let start = self.end(now);
        let len = audio.len() as u64;
        self.queue.push_back(Queued { start, len, audio });
    }

    /// Queues `samples` of audio that is timed but not kept (nothing is recorded as heard), for
    /// a caller that only needs to know when marks fall due. Allocates nothing per call once
    /// the queue has grown: back-to-back lengths are merged.
    pub fn media_len(&mut self, now: u64, samples: u64) {
        self.advance(now);
        let start = self.end(now);
        if let Some(back) = self.queue.back_mut() {
            if back.audio.is_empty() && back.start + back.len == start {
                back.len += samples;
                return;
            }
        }
        let (len, audio) = (samples, Vec::new());
        self.queue.push_back(Queued { start, len, audio });
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
            let played = now.saturating_sub(q.start).min(q.len);
            let kept = (played as usize).min(q.audio.len());
            self.record(q.start, &q.audio[..kept]);
            dropped += q.len - played;
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

    /// What was heard so far, per sample since the call started (0xFF = silence); audio that
    /// is still playing is not in it yet.
    pub fn heard(&self) -> &[u8] {
        &self.heard
    }

    /// The stretches of [`Line::heard`] that carry audio, in order.
    pub fn stretches(&self) -> &[Stretch] {
        &self.stretches
    }

    /// The call ended at `now`: what was heard, per sample (audio still queued is never heard).
    pub fn hang_up(mut self, now: u64) -> Vec<u8> {
        let _ = self.clear(now);
        self.heard
    }

    /// Moves audio that has finished playing by `now` into the recording.
    fn advance(&mut self, now: u64) {
        while self.queue.front().is_some_and(|q| q.start + q.len <= now) {
            if let Some(q) = self.queue.pop_front() {
                self.record(q.start, &q.audio);
            }
        }
    }

    /// Writes audio heard from sample `start` into the recording.
    fn record(&mut self, start: u64, audio: &[u8]) {
        if audio.is_empty() {
            return;
        }
        let len = audio.len() as u64;
        self.stretches.push(Stretch { start, len });
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
    fn a_timing_only_line_echoes_marks_and_keeps_no_audio() {
        let mut line = Line::new();
        line.media_len(0, 160);
        line.media_len(0, 160);
        assert_eq!(line.mark(10, "a".into()), None);
        assert_eq!(line.next_mark(), Some(320));
        assert_eq!(line.playing_until(), Some(320));
        let (dropped, marks) = line.clear(100);
        assert_eq!((dropped, marks), (220, vec!["a".to_owned()]));
        assert!(line.heard().is_empty() && line.stretches().is_empty());
    }

    #[test]
    fn stretches_tell_where_audio_was_heard() {
        let mut line = Line::new();
        line.media(10, vec![1; 100]);
        line.media(500, vec![2; 50]);
        let _ = line.clear(520);
        let stretches = [
            Stretch {
                start: 10,
                len: 100,
            },
            Stretch {
                start: 500,
                len: 20,
            },
        ];
        assert_eq!(line.stretches(), stretches);
        assert_eq!(line.heard()[500..520], [2; 20]);
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
