//! The caller's turn in progress, kept so a new connection can hear it from its start.
//!
//! Flux transcribes a turn as a whole (every `Update` and the `EndOfTurn` carry the turn's
//! whole transcript), so a connection that drops mid-turn takes the turn's words with it, and
//! a new connection that hears only the rest would transcribe half a turn. So the audio sent
//! since the turn began is kept (up to [`TURN_LIMIT`]) and sent again first on the next
//! connection: the new connection hears the whole turn, and the call hears it once. Between
//! turns only a short pre-roll is kept, since a turn's `StartOfTurn` comes a little after its
//! first sound.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

/// Audio kept between turns: Flux says `StartOfTurn` after some speech, so the turn's first
/// sounds were sent before it.
pub(super) const PRE_ROLL: Duration = Duration::from_secs(1);
/// Audio kept within a turn; a longer turn interrupted by a drop loses its start.
pub(super) const TURN_LIMIT: Duration = Duration::from_secs(15);

/// Where an event of the recogniser puts the caller's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TurnEdge {
    /// The caller started a turn: keep everything from here.
    Start,
    /// The turn is over and was heard: nothing needs replaying.
    End,
}

/// Audio chunks sent since the turn began (or the last pre-roll), oldest first.
#[derive(Debug)]
pub(super) struct TurnAudio {
    /// The chunks, as sent (cheap clones of the sent `Bytes`).
    chunks: VecDeque<Bytes>,
    /// Their total length.
    bytes: usize,
    /// A turn is in progress.
    in_turn: bool,
    /// Bytes kept between turns ([`PRE_ROLL`]).
    pre_roll: usize,
    /// Bytes kept within a turn ([`TURN_LIMIT`]).
    limit: usize,
}

impl TurnAudio {
    /// Keeps audio of `bytes_per_second`.
    pub(super) fn new(bytes_per_second: f64) -> Self {
        let bytes = |d: Duration| (d.as_secs_f64() * bytes_per_second) as usize;
        Self {
            chunks: VecDeque::new(),
            bytes: 0,
            in_turn: false,
            pre_roll: bytes(PRE_ROLL),
            limit: bytes(TURN_LIMIT),
        }
    }

    /// A chunk about to be sent.
    pub(super) fn push(&mut self, chunk: &Bytes) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk.clone());
        let keep = if self.in_turn {
            self.limit
        } else {
            self.pre_roll
        };
        while self.bytes > keep && self.chunks.len() > 1 {
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The recogniser moved the turn to `edge`.
    pub(super) fn edge(&mut self, edge: TurnEdge) {
        match edge {
            TurnEdge::Start => self.in_turn = true,
            TurnEdge::End => {
                self.in_turn = false;
                self.chunks.clear();
                self.bytes = 0;
            }
        }
    }

    /// What a new connection must hear first, oldest first (kept: it may drop too).
    pub(super) fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.chunks.iter()
    }

    /// Total bytes kept.
    pub(super) fn len(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> Bytes {
        Bytes::from(vec![n; 800])
    }

    fn kept(audio: &TurnAudio) -> Vec<u8> {
        audio.chunks().map(|c| c[0]).collect()
    }

    #[test]
    fn between_turns_only_the_pre_roll_is_kept() {
        let mut audio = TurnAudio::new(8_000.0);
        for n in 0..20 {
            audio.push(&chunk(n));
        }
        assert_eq!(kept(&audio), (10..20).collect::<Vec<_>>(), "one second");
        assert_eq!(audio.len(), 8_000);
    }

    #[test]
    fn a_turn_is_kept_from_its_pre_roll_until_it_ends() {
        let mut audio = TurnAudio::new(8_000.0);
        for n in 0..12 {
            audio.push(&chunk(n));
        }
        audio.edge(TurnEdge::Start);
        for n in 12..40 {
            audio.push(&chunk(n));
        }
        assert_eq!(kept(&audio), (2..40).collect::<Vec<_>>());
        audio.edge(TurnEdge::End);
        assert_eq!(audio.len(), 0);
        audio.push(&chunk(41));
        assert_eq!(kept(&audio), [41]);
    }

    #[test]
    fn a_turn_longer_than_the_limit_keeps_its_end() {
        let mut audio = TurnAudio::new(8_000.0);
        audio.edge(TurnEdge::Start);
        for n in 0..200 {
            audio.push(&chunk(n));
        }
        assert_eq!(audio.len(), 8_000 * 15);
        assert_eq!(kept(&audio).first(), Some(&50));
    }
}
