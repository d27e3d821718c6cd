//! Caller audio as PCM frames for Deepgram, cut from shared blocks instead of one allocation a
//! frame.
//!
//! Each 20 ms frame travels to the recogniser's task as its own [`Bytes`]. A fresh `Vec` per
//! frame costs an allocation and a free 50 times a second per call; here frames are split off a
//! block that holds [`FRAMES_PER_BLOCK`] of them, and a block whose frames have all been sent
//! and dropped is reused as it is: while the recogniser keeps up (it takes each frame within
//! the 20 ms before the next), a call allocates no audio at all after its first frame.

use bytes::{Bytes, BytesMut};

use super::mulaw;

/// PCM bytes of one 20 ms frame: 160 samples of 16 bits.
pub const PCM_FRAME_BYTES: usize = 320;
/// Frames cut from one allocation (80 ms of audio, 1.25 KiB). Every call holds one block for
/// its whole length, so it is kept small (32 frames, 10 KiB, was an eighth of an idle call's
/// memory); a block is reclaimed as soon as its frames are gone, which is almost always before
/// it runs out.
const FRAMES_PER_BLOCK: usize = 4;

/// Turns μ-law frames into PCM16LE [`Bytes`], one call's worth, reusing memory.
#[derive(Debug, Default)]
pub struct PcmFrames {
    /// The unused rest of the current block; frames are split off its front.
    block: BytesMut,
}

impl PcmFrames {
    /// No block yet: the first frame allocates one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one frame of μ-law to PCM16LE, ready to queue for the recogniser.
    pub fn decode(&mut self, mulaw: &[u8]) -> Bytes {
        self.make_room(mulaw.len() * 2);
        self.block.resize(mulaw.len() * 2, 0);
        mulaw::decode_into(mulaw, &mut self.block);
        self.block.split().freeze()
    }

    /// One frame of μ-law as it is, cut from the same blocks: for a recogniser that takes
    /// Twilio's audio undecoded (Deepgram Flux).
    pub fn copy(&mut self, mulaw: &[u8]) -> Bytes {
        self.make_room(mulaw.len());
        self.block.extend_from_slice(mulaw);
        self.block.split().freeze()
    }

    /// Makes sure the current block can take `len` more bytes.
    fn make_room(&mut self, len: usize) {
        if self.block.capacity() < len {
            // Reclaims the whole block when every frame cut from it is gone, else allocates.
            self.block
                .reserve(len.max(PCM_FRAME_BYTES * FRAMES_PER_BLOCK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_decoded_audio_and_survive_later_frames() {
        let mut frames = PcmFrames::new();
        let inputs: Vec<Vec<u8>> = (0..100u8)
            .map(|n| {
                (0..160)
                    .map(|i| n.wrapping_mul(31).wrapping_add(i))
                    .collect()
            })
            .collect();
        let decoded: Vec<Bytes> = inputs.iter().map(|m| frames.decode(m)).collect();
        for (mulaw, pcm) in inputs.iter().zip(&decoded) {
            let mut expected = Vec::new();
            mulaw::decode_to_pcm16le(mulaw, &mut expected);
            assert_eq!(pcm.as_ref(), expected.as_slice());
        }
        assert!(frames.decode(&[]).is_empty());
        let copied: Vec<Bytes> = inputs.iter().map(|m| frames.copy(m)).collect();
        for (mulaw, copy) in inputs.iter().zip(&copied) {
            assert_eq!(copy.as_ref(), mulaw.as_slice());
        }
        assert_eq!(frames.decode(&[0xFF, 0x00]).as_ref(), [0, 0, 0x84, 0x82]);
    }
}
