//! What a simulated caller sends: a recorded call's audio, with every 20 ms frame made unique to
//! its call and position so the STT stand-in's observer can say which frame of which call
//! arrived, and a recogniser bank that knows each call's own (tagged) utterances.
//!
//! The tag flips the lowest bit of the first 32 μ-law samples of a frame: 16 bits of call index,
//! 16 bits of frame position. That changes the sound by at most one quantisation step, so
//! speech stays speech and line noise stays noise.

use std::path::Path;

use ivr_bridge::audio::mulaw;
use ivr_sim::fixture::{CallFixture, FixtureError};
use ivr_sim::standin::bank::{frame_hash, FRAME_SAMPLES};
use ivr_sim::standin::Bank;

/// The word that ends each recognised utterance of call `n`: the LLM stand-in's observer sees
/// it in the request, which is how a request is tied to its call.
pub fn call_word(call: u32) -> String {
    format!("caller-{call}")
}

/// Reads the call index back from a request's last user message.
pub fn call_of(text: &str) -> Option<u32> {
    let at = text.rfind("caller-")?;
    let digits: String = text[at + 7..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One utterance of the recording, in call time.
#[derive(Debug, Clone)]
pub struct Spoken {
    /// The words.
    pub text: String,
    /// When it starts, ms from the socket opening.
    pub start_ms: u64,
    /// When it ends.
    pub end_ms: u64,
}

/// A recording reduced to what the load generator sends.
#[derive(Debug, Clone)]
pub struct Script {
    /// The inbound frames: (ms from the socket opening, 160 μ-law bytes).
    pub frames: Vec<(u64, [u8; FRAME_SAMPLES])>,
    /// When the recording's `stop` is sent.
    pub stop_ms: u64,
    /// What the caller says.
    pub utterances: Vec<Spoken>,
}

impl Script {
    /// Loads the fixture at `path`.
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let fixture = CallFixture::load(path)?;
        let frames = fixture
            .inbound
            .iter()
            .filter_map(|s| {
                let audio = s.audio.as_deref()?;
                let frame: [u8; FRAME_SAMPLES] = audio.try_into().ok()?;
                Some((s.at_ms, frame))
            })
            .collect();
        let stop_ms = fixture.inbound.last().map_or(0, |s| s.at_ms);
        let utterances = fixture
            .sidecar
            .utterances
            .iter()
            .map(|u| Spoken {
                text: u.text.clone(),
                start_ms: u.start_ms,
                end_ms: u.end_ms,
            })
            .collect();
        Ok(Self {
            frames,
            stop_ms,
            utterances,
        })
    }

    /// Teaches `bank` call `call`'s utterances: its tagged audio, its words plus [`call_word`].
    pub fn teach(&self, bank: &mut Bank, call: u32) {
        for u in &self.utterances {
            let mut audio = Vec::new();
            for (pos, (at, frame)) in self.frames.iter().enumerate() {
                if (u.start_ms..u.end_ms).contains(at) {
                    audio.extend_from_slice(&tag(frame, call, pos as u32));
                }
            }
            bank.add(&format!("{} {}", u.text, call_word(call)), &audio);
        }
    }
}

/// `frame` marked as frame `pos` of call `call`.
pub fn tag(frame: &[u8; FRAME_SAMPLES], call: u32, pos: u32) -> [u8; FRAME_SAMPLES] {
    let mut out = *frame;
    for bit in 0..16 {
        out[bit] ^= ((call >> bit) & 1) as u8;
        out[16 + bit] ^= ((pos >> bit) & 1) as u8;
    }
    out
}

/// The hash the STT stand-in computes for this frame once the server has decoded it to PCM.
pub fn pcm_hash(frame: &[u8; FRAME_SAMPLES]) -> u64 {
    let mut pcm = [0u8; FRAME_SAMPLES * 2];
    mulaw::decode_into(frame, &mut pcm);
    frame_hash(&pcm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_make_frames_unique_and_survive_decoding() {
        let silence = [mulaw::SILENCE; FRAME_SAMPLES];
        let a = pcm_hash(&tag(&silence, 1, 2));
        assert_ne!(a, pcm_hash(&tag(&silence, 2, 1)));
        assert_ne!(a, pcm_hash(&tag(&silence, 1, 3)));
        assert_eq!(a, pcm_hash(&tag(&silence, 1, 2)));
    }

    #[test]
    fn the_call_is_read_back_from_the_words() {
        let words = format!("What are the hours? {}", call_word(42));
        assert_eq!(call_of(&words), Some(42));
        assert_eq!(call_of("no tag here"), None);
    }
}
