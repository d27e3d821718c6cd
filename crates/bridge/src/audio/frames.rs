//! Any byte chunks → 160-byte (20 ms) μ-law frames for Twilio.
//!
//! TTS audio arrives in network chunks of arbitrary sizes. Twilio plays whatever it is sent, but
//! regular 20 ms frames keep its jitter buffer even and let a `clear` cut playback at a frame
//! boundary. The chunker carries partial bytes across chunks and pads only the very last frame.

use super::mulaw::SILENCE;

/// Bytes in one outbound frame: 20 ms of 8 kHz μ-law.
pub const FRAME_BYTES: usize = 160;

/// Regroups a byte stream into whole frames, holding back the remainder until more arrives.
#[derive(Debug, Default)]
pub struct FrameChunker {
    /// Bytes of the next, not yet complete frame; never reaches `FRAME_BYTES`.
    partial: Vec<u8>,
}

impl FrameChunker {
    /// A chunker with nothing held back.
    pub fn new() -> Self {
        Self {
            partial: Vec::with_capacity(FRAME_BYTES),
        }
    }

    /// Feeds one network chunk and calls `emit` for every frame it completes, in order.
    pub fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&[u8; FRAME_BYTES])) {
        if !self.partial.is_empty() {
            let take = (FRAME_BYTES - self.partial.len()).min(chunk.len());
            self.partial.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if let Ok(frame) = <&[u8; FRAME_BYTES]>::try_from(self.partial.as_slice()) {
                emit(frame);
                self.partial.clear();
            }
        }
        let mut frames = chunk.chunks_exact(FRAME_BYTES);
        for frame in &mut frames {
            if let Ok(frame) = <&[u8; FRAME_BYTES]>::try_from(frame) {
                emit(frame);
            }
        }
        self.partial.extend_from_slice(frames.remainder());
    }

    /// Ends the stream: returns the held-back bytes padded with μ-law silence to a whole frame,
    /// or `None` when the stream ended on a frame boundary.
    pub fn finish(&mut self) -> Option<[u8; FRAME_BYTES]> {
        if self.partial.is_empty() {
            return None;
        }
        let mut frame = [SILENCE; FRAME_BYTES];
        frame[..self.partial.len()].copy_from_slice(&self.partial);
        self.partial.clear();
        Some(frame)
    }

    /// Bytes held back, waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], splits: &[usize]) -> Vec<[u8; FRAME_BYTES]> {
        let mut chunker = FrameChunker::new();
        let mut frames = Vec::new();
        let mut rest = input;
        for &at in splits {
            let (head, tail) = rest.split_at(at.min(rest.len()));
            chunker.push(head, |f| frames.push(*f));
            rest = tail;
        }
        chunker.push(rest, |f| frames.push(*f));
        frames.extend(chunker.finish());
        frames
    }

    fn audio(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn padded(input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        while out.len() % FRAME_BYTES != 0 {
            out.push(SILENCE);
        }
        out
    }

    #[test]
    fn odd_split_points_give_the_same_frames_as_one_chunk() {
        let input = audio(1_000);
        let whole = run(&input, &[]);
        for splits in [
            vec![1],
            vec![159],
            vec![160],
            vec![161],
            vec![1, 1, 1, 500],
            vec![7, 333, 2, 319],
            vec![0, 0, 999],
        ] {
            assert_eq!(run(&input, &splits), whole, "splits {splits:?}");
        }
        assert_eq!(whole.concat(), padded(&input));
    }

    #[test]
    fn only_the_last_frame_is_padded() {
        let input = audio(161);
        let frames = run(&input, &[80]);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0][..], input[..160]);
        assert_eq!(frames[1][0], input[160]);
        assert!(frames[1][1..].iter().all(|&b| b == SILENCE));
    }

    #[test]
    fn a_stream_on_a_frame_boundary_gets_no_padding_frame() {
        let frames = run(&audio(320), &[100, 100]);
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn an_empty_stream_gives_no_frame() {
        assert!(run(&[], &[]).is_empty());
    }

    #[test]
    fn pending_counts_held_back_bytes() {
        let mut chunker = FrameChunker::new();
        chunker.push(&audio(170), |_| {});
        assert_eq!(chunker.pending(), 10);
    }
}
