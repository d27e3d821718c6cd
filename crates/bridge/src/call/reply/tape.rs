//! A reply's audio, kept phrase by phrase for as long as the reply may be played again (a
//! resumed backchannel, a released preemptive answer), and where sending has got to.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ReplyCommand;
use crate::audio::frames::FRAME_BYTES;
use crate::audio::mulaw::SILENCE;

/// One phrase's audio, as far as it has arrived.
#[derive(Debug, Default)]
pub(super) struct Taped {
    /// μ-law bytes.
    pub(super) audio: Vec<u8>,
    /// All of it arrived.
    pub(super) complete: bool,
}

impl Taped {
    /// Adds a chunk of the phrase's audio as it arrives. The buffer grows by a quarter at a
    /// time, not by doubling: a call keeps its reply's audio for as long as the reply may be
    /// played again, and doubling left up to half of it empty (the largest part of an active
    /// call's memory).
    pub(super) fn append(&mut self, chunk: &[u8]) {
        let needed = self.audio.len() + chunk.len();
        if needed > self.audio.capacity() {
            let more = chunk.len().max(self.audio.capacity() / 4);
            self.audio.reserve_exact(more);
        }
        self.audio.extend_from_slice(chunk);
    }

    /// All of the phrase's audio has arrived: what was reserved beyond it is given back.
    pub(super) fn finish(&mut self) {
        self.complete = true;
        self.audio.shrink_to_fit();
    }
}

/// The audio of the whole reply, kept for as long as the reply may be played again, and where
/// sending has got to.
pub(super) struct Run {
    /// Commands from the call.
    pub(super) commands: mpsc::Receiver<ReplyCommand>,
    /// Every phrase's audio, in order.
    pub(super) tape: Vec<Taped>,
    /// Whether audio is being sent (false while held).
    pub(super) playing: bool,
    /// The take being sent.
    pub(super) take: u32,
    /// The phrase being sent.
    pub(super) phrase: usize,
    /// Bytes of it sent.
    pub(super) offset: usize,
    /// When the phrase being sent had its first frame queued.
    pub(super) sent: Option<Instant>,
    /// The take whose [`ReplyEvent::Queued`] was reported.
    pub(super) queued: Option<u32>,
}

impl Run {
    pub(super) fn new(held: bool, commands: mpsc::Receiver<ReplyCommand>) -> Self {
        Self {
            commands,
            tape: Vec::new(),
            playing: !held,
            take: 0,
            phrase: 0,
            offset: 0,
            sent: None,
            queued: None,
        }
    }

    pub(super) fn obey(&mut self, command: ReplyCommand) {
        match command {
            ReplyCommand::Hold => self.playing = false,
            ReplyCommand::Play { from, take } => {
                self.playing = true;
                self.take = take;
                self.phrase = from.min(self.tape.len());
                self.offset = 0;
                self.sent = None;
                self.queued = None;
            }
        }
    }

    /// What to send next, if anything can be sent now.
    pub(super) fn next(&self) -> Option<Next> {
        if !self.playing {
            return None;
        }
        let taped = self.tape.get(self.phrase)?;
        let left = taped.audio.len() - self.offset;
        if left >= FRAME_BYTES || (taped.complete && left > 0) {
            Some(Next::Frame)
        } else if taped.complete {
            Some(Next::Mark)
        } else {
            None
        }
    }

    /// The next frame at the cursor (the phrase's last one padded with silence), and moves on.
    pub(super) fn frame(&mut self) -> [u8; FRAME_BYTES] {
        let mut frame = [SILENCE; FRAME_BYTES];
        let audio = &self.tape[self.phrase].audio[self.offset..];
        let n = audio.len().min(FRAME_BYTES);
        frame[..n].copy_from_slice(&audio[..n]);
        self.offset += n;
        frame
    }

    /// Every phrase made has been sent.
    pub(super) fn all_sent(&self) -> bool {
        self.phrase >= self.tape.len()
    }

    /// Phrases made but not yet sent (the one being sent included).
    pub(super) fn ahead(&self) -> usize {
        self.tape.len().saturating_sub(self.phrase)
    }
}

/// What the sending side does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Send a frame of the phrase at the cursor.
    Frame,
    /// The phrase at the cursor is all sent: send its mark.
    Mark,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A phrase's audio arriving in chunks is kept whole and in order, with at most a quarter of
    /// its size (or one chunk) reserved beyond it while it arrives, and nothing once it is done.
    #[test]
    fn taped_audio_is_kept_whole_without_doubling() {
        let mut taped = Taped::default();
        let mut expected = Vec::new();
        for n in 0..500u32 {
            let chunk: Vec<u8> = (0..(n % 7) * 40 + 1).map(|i| (i + n) as u8).collect();
            taped.append(&chunk);
            expected.extend_from_slice(&chunk);
            let slack = taped.audio.capacity() - taped.audio.len();
            assert!(
                slack <= taped.audio.len() / 4 + chunk.len(),
                "{slack} beyond {}",
                taped.audio.len()
            );
        }
        assert_eq!(taped.audio, expected);
        taped.finish();
        assert!(taped.complete);
        assert_eq!(taped.audio, expected);
        assert_eq!(taped.audio.capacity(), taped.audio.len());
    }
}
