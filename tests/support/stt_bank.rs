//! The STT fake's vocabulary: known utterances, indexed by the hash of each 20 ms speech frame
//! of their PCM. The server decodes the replayed μ-law with the same codec and the replayer
//! sends the same frames, so a live frame hashes equal to the bank's copy.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::fixture::{self, Fixture, FRAME_BYTES};

/// PCM bytes per analysis frame: 160 samples (20 ms at 8 kHz) of 16-bit audio.
pub const PCM_FRAME_BYTES: usize = FRAME_BYTES * 2;
/// The speech detector and frame hash are the stand-ins' own: the fake and the demo must agree
/// on what counts as speech and which frames match.
pub use ivr_sim::standin::bank::{frame_hash, is_speech};

/// Known utterances, indexed by the hash of each speech frame's PCM.
#[derive(Debug, Default)]
pub struct SttBank {
    /// Words of each utterance and its speech span in frames.
    pub(super) utterances: Vec<(Vec<String>, u32)>,
    /// Frame hash → (utterance id, frame position from the utterance's first speech frame).
    pub(super) index: HashMap<u64, Vec<(usize, u32)>>,
}

impl SttBank {
    /// Adds one utterance given its μ-law audio (any leading/trailing silence is ignored).
    pub fn add(&mut self, text: &str, mulaw: &[u8]) {
        let id = self.utterances.len();
        let pcm = fixture::pcm16le(mulaw);
        let speech: Vec<(u32, u64)> = pcm
            .chunks_exact(PCM_FRAME_BYTES)
            .enumerate()
            .filter(|(_, f)| is_speech(f))
            .map(|(i, f)| (i as u32, frame_hash(f)))
            .collect();
        let first = speech.first().map_or(0, |s| s.0);
        let span = speech.last().map_or(0, |s| s.0 + 1 - first);
        for (pos, hash) in speech {
            self.index.entry(hash).or_default().push((id, pos - first));
        }
        let words = text.split_whitespace().map(str::to_owned).collect();
        self.utterances.push((words, span));
    }

    /// A bank of every utterance of these fixtures.
    pub fn from_fixtures(fixtures: &[Fixture]) -> Self {
        let mut bank = Self::default();
        for f in fixtures {
            for (u, mulaw) in f.utterances_mulaw() {
                bank.add(&u.text, &mulaw);
            }
        }
        bank
    }

    /// The bank of all four fixtures, built once per test binary.
    pub fn shared() -> Arc<SttBank> {
        static BANK: OnceLock<Arc<SttBank>> = OnceLock::new();
        BANK.get_or_init(|| Arc::new(Self::from_fixtures(&Fixture::all())))
            .clone()
    }
}
