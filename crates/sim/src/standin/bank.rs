//! What the STT stand-in can recognise: known utterances, indexed by a hash of each 20 ms speech
//! frame of their PCM. The server decodes Twilio's μ-law with the same codec the bank uses, so a
//! frame that travelled through the real server hashes equal to the bank's copy.

use std::collections::HashMap;

use ivr_bridge::audio::mulaw;

/// μ-law samples in one analysis frame: 20 ms at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// PCM16LE bytes in one analysis frame.
pub const PCM_FRAME_BYTES: usize = FRAME_SAMPLES * 2;
/// RMS above which a frame counts as speech (line noise in the fixtures stays far below).
pub const SPEECH_RMS: f64 = 500.0;

/// One utterance the bank knows.
#[derive(Debug, Clone)]
pub struct KnownUtterance {
    /// Its words, as the stand-in reports them (punctuation kept).
    pub words: Vec<String>,
    /// Frames from its first to its last speech frame.
    pub span: u32,
}

/// Known utterances, indexed for recognition.
#[derive(Debug, Default, Clone)]
pub struct Bank {
    /// Every utterance, by id (its position).
    utterances: Vec<KnownUtterance>,
    /// Frame hash → (utterance id, frame position from the utterance's first speech frame).
    index: HashMap<u64, Vec<(usize, u32)>>,
}

impl Bank {
    /// An empty bank: every segment of speech comes back with an empty transcript.
    pub fn new() -> Self {
        Self::default()
    }

    /// Teaches the bank `text`, spoken as the μ-law `audio` (leading and trailing silence is
    /// ignored). The audio must be framed as the caller will send it: 160-byte frames from the
    /// start of the call.
    pub fn add(&mut self, text: &str, audio: &[u8]) {
        let id = self.utterances.len();
        let mut pcm = Vec::with_capacity(PCM_FRAME_BYTES);
        let mut speech = Vec::new();
        for (i, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
            pcm.clear();
            mulaw::decode_to_pcm16le(frame, &mut pcm);
            if is_speech(&pcm) {
                speech.push((i as u32, frame_hash(&pcm)));
            }
        }
        let first = speech.first().map_or(0, |s| s.0);
        let span = speech.last().map_or(0, |s| s.0 + 1 - first);
        for (pos, hash) in speech {
            self.index.entry(hash).or_default().push((id, pos - first));
        }
        let words = text.split_whitespace().map(str::to_owned).collect();
        self.utterances.push(KnownUtterance { words, span });
    }

    /// How many utterances the bank knows.
    pub fn len(&self) -> usize {
        self.utterances.len()
    }

    /// Whether the bank knows nothing.
    pub fn is_empty(&self) -> bool {
        self.utterances.is_empty()
    }

    /// Utterance `id`.
    pub fn utterance(&self, id: usize) -> Option<&KnownUtterance> {
        self.utterances.get(id)
    }

    /// The (utterance, position) pairs a speech frame with this hash belongs to.
    pub fn lookup(&self, hash: u64) -> &[(usize, u32)] {
        self.index.get(&hash).map_or(&[], Vec::as_slice)
    }
}

/// Whether a 20 ms PCM16LE frame is louder than [`SPEECH_RMS`]. The squares are summed as
/// integers (exact, and a third of the cost of floats for a stand-in that hears every frame of
/// thousands of calls).
pub fn is_speech(frame: &[u8]) -> bool {
    let sum: i64 = frame
        .chunks_exact(2)
        .map(|p| i64::from(i16::from_le_bytes([p[0], p[1]])).pow(2))
        .sum();
    (sum as f64 / (frame.len() / 2).max(1) as f64).sqrt() > SPEECH_RMS
}

/// FNV-1a's step over the frame's 8-byte words (then its last bytes), finished with
/// splitmix64's mix so that every bit of the hash depends on every bit of the frame (the probe
/// samples frames by `hash % n`): stable across runs and processes, and an eighth of the
/// byte-by-byte loop's steps, for a stand-in that hashes every frame it hears.
pub fn frame_hash(frame: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut words = frame.chunks_exact(8);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_hashes_the_same_every_time_and_one_changed_byte_changes_it() {
        let frame: Vec<u8> = (0..PCM_FRAME_BYTES + 3).map(|i| (i * 7) as u8).collect();
        assert_eq!(frame_hash(&frame), frame_hash(&frame.clone()));
        for at in [0, 5, 8, PCM_FRAME_BYTES - 1, PCM_FRAME_BYTES + 2] {
            let mut changed = frame.clone();
            changed[at] ^= 1;
            assert_ne!(frame_hash(&frame), frame_hash(&changed), "byte {at}");
        }
    }

    #[test]
    fn sampling_by_hash_takes_about_one_frame_in_n() {
        // Frames that differ only in their low bits, as quiet audio does.
        let taken = (0..5_000u32)
            .filter(|n| {
                let mut frame = vec![0u8; PCM_FRAME_BYTES];
                frame[..4].copy_from_slice(&n.to_le_bytes());
                frame_hash(&frame) % 5 == 0
            })
            .count();
        assert!((850..1_150).contains(&taken), "{taken} of 5000");
    }

    #[test]
    fn speech_is_told_by_the_frame_rms() {
        let frame = |sample: i16| sample.to_le_bytes().repeat(FRAME_SAMPLES);
        assert!(
            !is_speech(&frame(500)),
            "exactly the threshold is not above it"
        );
        assert!(is_speech(&frame(501)));
        assert!(is_speech(&frame(i16::MIN)));
        assert!(!is_speech(&frame(-12)));
        assert!(!is_speech(&[]));
    }
}
