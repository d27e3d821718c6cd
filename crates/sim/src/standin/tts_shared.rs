//! What the TTS stand-in's handle, its handler and the response bodies share: the key, the
//! voice and its cache, the record and the fault hooks.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use axum::body::Bytes;
use tokio::time::Instant;

use super::probe::Probe;
use super::voice::Voice;
use super::wire::{lock, Query};
use super::{Delay, Journal};

/// Texts whose audio is kept for the next request of the same text (up to ~1 MB each): a load
/// test asks for the same few replies thousands of times, and synthesis is the TTS stand-in's
/// main cost. When full, the cache starts over.
const VOICE_CACHE_TEXTS: usize = 32;

/// How the audio is cut into body chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunking {
    /// 100 ms pieces, as fast as the client reads: cheap, for the demo and the load generator.
    #[default]
    Even,
    /// [`super::tts_body::AWKWARD_CHUNK_SIZES`] with short pauses: for tests of the server's re-framing.
    Awkward,
}

/// One request as the stand-in saw it (recorded only when started with `record`).
#[derive(Clone, Debug)]
pub struct TtsRequest {
    /// When it arrived.
    pub at: Instant,
    /// Its query string.
    pub query: Query,
    /// Whether `Authorization` was exactly `Token <key>`.
    pub auth_ok: bool,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// `text` from the body, when the body was valid.
    pub text: Option<String>,
    /// Status answered.
    pub status: u16,
    /// Audio bytes handed to the connection so far.
    pub bytes_sent: usize,
    /// When the first audio byte was handed over.
    pub first_byte_at: Option<Instant>,
    /// Whether the whole audio was streamed; `false` with `ended_at` set means the client hung
    /// up early (e.g. a cancelled reply on barge-in).
    pub completed: bool,
    /// When the body stream ended or was dropped.
    pub ended_at: Option<Instant>,
}

/// What every request shares.
pub(super) struct Shared {
    /// The `Authorization` value a client must send (`Token <key>`).
    pub(super) expected_auth: String,
    /// How the text sounds.
    pub(super) voice: Voice,
    /// How the audio is cut.
    pub(super) chunking: Chunking,
    /// Audio already synthesised, by text (the voice is deterministic).
    pub(super) spoken: Mutex<HashMap<String, Bytes>>,
    /// Every request, when recording.
    pub(super) requests: Option<Journal<TtsRequest>>,
    /// Fault hook: answer this many upcoming requests with 500.
    pub(super) fail_next: AtomicUsize,
    /// Wait before the first audio byte, as a real synthesiser takes time to start.
    pub(super) first_byte: Delay,
    /// The load generator's observer, when it runs one.
    pub(super) probe: Option<Probe>,
}

impl Shared {
    /// The audio for `text`: synthesised once, then shared.
    pub(super) fn audio(&self, text: &str) -> Bytes {
        if let Some(audio) = lock(&self.spoken).get(text) {
            return audio.clone();
        }
        let audio = Bytes::from(self.voice.audio(text));
        let mut spoken = lock(&self.spoken);
        if spoken.len() >= VOICE_CACHE_TEXTS {
            spoken.clear();
        }
        spoken.insert(text.to_owned(), audio.clone());
        audio
    }

    /// How the audio is cut.
    pub(super) fn chunking(&self) -> Chunking {
        self.chunking
    }

    /// Updates request `index`'s record, when recording.
    pub(super) fn note(&self, index: Option<usize>, f: impl FnOnce(&mut TtsRequest)) {
        if let (Some(journal), Some(index)) = (&self.requests, index) {
            journal.update(index, f);
        }
    }
}
