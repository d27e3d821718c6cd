//! The recorded calls of `fixtures/calls/`, read with the simulated world's one reader
//! ([`ivr_sim::fixture::CallFixture`]); loading panics with the path, as a broken fixture is a
//! broken test setup.

use std::path::PathBuf;

pub use ivr_bridge::audio::frames::FRAME_BYTES;
pub use ivr_sim::fixture::{CallFixture as Fixture, Scheduled};

/// Every recorded call, so helpers can load them all (the STT bank needs every utterance).
pub const ALL: [&str; 13] = [
    "one_question",
    "three_turns",
    "barge_in",
    "visiting_hours",
    "early_interruption",
    "silent_caller",
    "transfer",
    "goodbye_then_wait",
    "appointment",
    "backchannel",
    "cough",
    "mid_sentence_pause",
    "demo",
];

/// Loads `fixtures/calls/<name>.jsonl` and its sidecar.
pub fn load(name: &str) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/calls");
    Fixture::named(&dir, name).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// All the recordings.
pub fn all() -> Vec<Fixture> {
    ALL.iter().map(|name| load(name)).collect()
}

/// μ-law → 16-bit little-endian PCM with the server's own codec, as the server feeds Deepgram.
pub fn pcm16le(mulaw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mulaw.len() * 2);
    ivr_bridge::audio::mulaw::decode_to_pcm16le(mulaw, &mut out);
    out
}
