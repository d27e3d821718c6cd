//! A reply's audio, kept phrase by phrase for as long as the reply may be played again (a
//! resumed backchannel, a released preemptive answer), and where sending has got to.

use bytes::Bytes;
use tokio::time::Instant;

use super::ReplyCommand;
use crate::audio::frames::FRAME_BYTES;
use crate::audio::mulaw::SILENCE;
use crate::queue;

/// One phrase's audio, as far as it has arrived.
#[derive(Debug, Default)]
pub(super) struct Taped {
    /// μ-law bytes while they arrive.
    arriving: Vec<u8>,
    /// All of them, once arrived: frames are sent as slices of it, and a fixed phrase's is
    /// shared with the voice's cache.
    whole: Option<Bytes>,
}

impl Taped {
    /// A phrase whose audio is all there (a fixed phrase from the cache).
    pub(super) fn whole(audio: Bytes) -> Self {
        Self {
            arriving: Vec::new(),
            whole: Some(audio),
        }
    }

    /// All of the phrase's audio has arrived.
    pub(super) fn complete(&self) -> bool {
        self.whole.is_some()
    }

    /// The audio so far.
    fn audio(&self) -> &[u8] {
        match &self.whole {
            Some(whole) => whole,
            None => &self.arriving,
        }
    }

    /// Bytes of audio so far.
    pub(super) fn len(&self) -> usize {
        self.audio().len()
    }

    /// Adds a chunk of the phrase's audio as it arrives. The buffer grows by a quarter at a
    /// time, not by doubling: a call keeps its reply's audio for as long as the reply may be
    /// played again, and doubling left up to half of it empty (the largest part of an active
    /// call's memory).
    pub(super) fn append(&mut self, chunk: &[u8]) {
        let audio = &mut self.arriving;
        let needed = audio.len() + chunk.len();
        if needed > audio.capacity() {
            let more = chunk.len().max(audio.capacity() / 4);
            audio.reserve_exact(more);
        }
        audio.extend_from_slice(chunk);
    }

    /// All of the phrase's audio has arrived: what was reserved beyond it is given back, and
    /// the whole is returned (shared, not copied).
    pub(super) fn finish(&mut self) -> Bytes {
        let mut audio = std::mem::take(&mut self.arriving);
        audio.shrink_to_fit();
        self.whole.insert(Bytes::from(audio)).clone()
    }

    /// The phrase was heard: its audio goes (it stays on the tape, empty, so phrase numbers
    /// keep their meaning).
    fn forget(&mut self) {
        self.arriving = Vec::new();
        self.whole = Some(Bytes::new());
    }

    /// The frame of audio at `offset`: a slice of the whole phrase when it is all there and
    /// the frame full, otherwise a copy (padded with silence at the phrase's end).
    fn frame_at(&self, offset: usize) -> Bytes {
        let end = offset + FRAME_BYTES;
        match &self.whole {
            Some(whole) if end <= whole.len() => whole.slice(offset..end),
            _ => {
                let audio = &self.audio()[offset..];
                let n = audio.len().min(FRAME_BYTES);
                let mut frame = vec![SILENCE; FRAME_BYTES];
                frame[..n].copy_from_slice(&audio[..n]);
                Bytes::from(frame)
            }
        }
    }
}

/// The audio of the whole reply, kept for as long as the reply may be played again, and where
/// sending has got to.
pub(super) struct Run {
    /// Commands from the call.
    pub(super) commands: queue::Receiver<ReplyCommand>,
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
    /// Phrases the caller has heard to the end.
    heard: usize,
    /// Phrases whose audio is gone.
    forgotten: usize,
}

impl Run {
    pub(super) fn new(held: bool, commands: queue::Receiver<ReplyCommand>) -> Self {
        Self {
            commands,
            tape: Vec::new(),
            playing: !held,
            take: 0,
            phrase: 0,
            offset: 0,
            sent: None,
            queued: None,
            heard: 0,
            forgotten: 0,
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

    /// The caller has heard the first `phrases` phrases to the end: the audio of those, never
    /// sent again, goes. Only of phrases already sent in full: the one being sent, and any
    /// after it, are still needed whatever the call says.
    pub(super) fn hear(&mut self, phrases: usize) {
        self.heard = self.heard.max(phrases);
        let sent = self.heard.min(self.phrase).min(self.tape.len());
        if sent > self.forgotten {
            for taped in &mut self.tape[self.forgotten..sent] {
                taped.forget();
            }
            self.forgotten = sent;
        }
    }

    /// What to send next, if anything can be sent now.
    pub(super) fn next(&self) -> Option<Next> {
        if !self.playing {
            return None;
        }
        let taped = self.tape.get(self.phrase)?;
        let left = taped.len() - self.offset;
        if left >= FRAME_BYTES || (taped.complete() && left > 0) {
            Some(Next::Frame)
        } else if taped.complete() {
            Some(Next::Mark)
        } else {
            None
        }
    }

    /// The next frame at the cursor (the phrase's last one padded with silence), and moves on.
    pub(super) fn frame(&mut self) -> Bytes {
        let taped = &self.tape[self.phrase];
        let frame = taped.frame_at(self.offset);
        self.offset = (self.offset + FRAME_BYTES).min(taped.len());
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

    /// Phrases made but not yet heard to the end (the one being heard included).
    pub(super) fn unheard(&self) -> usize {
        self.tape.len().saturating_sub(self.heard)
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
            let slack = taped.arriving.capacity() - taped.arriving.len();
            assert!(
                slack <= taped.arriving.len() / 4 + chunk.len(),
                "{slack} beyond {}",
                taped.arriving.len()
            );
        }
        assert_eq!(taped.arriving, expected);
        let whole = taped.finish();
        assert!(taped.complete());
        assert_eq!(whole, expected);
        assert_eq!(taped.audio(), expected);
        assert_eq!(taped.arriving.capacity(), 0);
    }

    /// Heard phrases lose their audio, but only those already sent: a phrase being sent keeps
    /// its audio whatever the call says.
    #[test]
    fn heard_phrases_are_forgotten_once_sent() {
        let (_commands, rx) = queue::bounded(1);
        let mut run = Run::new(false, rx);
        for _ in 0..3 {
            run.tape
                .push(Taped::whole(Bytes::from(vec![1u8; 2 * FRAME_BYTES])));
        }
        run.phrase = 1;
        run.offset = FRAME_BYTES;
        run.hear(3);
        let lengths: Vec<usize> = run.tape.iter().map(Taped::len).collect();
        assert_eq!(lengths, [0, 2 * FRAME_BYTES, 2 * FRAME_BYTES]);
        assert_eq!(run.next(), Some(Next::Frame));
        assert_eq!(run.frame()[..], [1u8; FRAME_BYTES]);
        assert_eq!(run.unheard(), 0, "all three were heard");

        // Once sent, phrases heard earlier lose their audio too, without being told again.
        run.phrase = 3;
        run.hear(2);
        let lengths: Vec<usize> = run.tape.iter().map(Taped::len).collect();
        assert_eq!(lengths, [0, 0, 0]);
    }

    /// A whole phrase is sent as slices of its audio, not copies; its last frame is padded with
    /// silence, and a phrase still arriving is sent in copied frames.
    #[test]
    fn frames_of_a_whole_phrase_share_its_audio() {
        let (_commands, rx) = queue::bounded(1);
        let mut run = Run::new(false, rx);
        let audio: Vec<u8> = (0..400u32).map(|i| i as u8).collect();
        let whole = Bytes::from(audio.clone());
        run.tape.push(Taped::whole(whole.clone()));
        let mut arriving = Taped::default();
        arriving.append(&audio[..FRAME_BYTES]);
        run.tape.push(arriving);

        let mut frames = Vec::new();
        while run.next() == Some(Next::Frame) {
            frames.push(run.frame());
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].as_ptr(), whole.as_ptr());
        assert_eq!(frames[1].as_ptr(), whole[FRAME_BYTES..].as_ptr());
        assert_eq!(frames[2][..80], audio[2 * FRAME_BYTES..]);
        assert!(frames[2][80..].iter().all(|&b| b == SILENCE));
        assert_eq!(run.next(), Some(Next::Mark));

        run.phrase += 1;
        run.offset = 0;
        assert_eq!(run.next(), Some(Next::Frame));
        let copied = run.frame();
        assert_eq!(copied[..], audio[..FRAME_BYTES]);
        assert_eq!(run.next(), None, "the rest has not arrived");
    }
}
