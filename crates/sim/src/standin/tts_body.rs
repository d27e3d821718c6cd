//! The TTS stand-in's response body: the audio of one reply, synthesised after the first-byte
//! delay and streamed in chunks ([`Chunking`]), with its progress written to the record when
//! recording and its first byte told to the probe.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::time::Instant;

use super::probe::{Probe, Seen};
pub use super::tts_shared::Chunking;
use super::tts_shared::{Shared, TtsRequest};

/// Bytes per body chunk with [`Chunking::Even`]: 100 ms of audio, so the client sees a stream.
const EVEN_CHUNK_BYTES: usize = 800;
/// Body chunk sizes with [`Chunking::Awkward`], cycled: none is a multiple of 160.
pub const AWKWARD_CHUNK_SIZES: [usize; 9] = [1, 7, 159, 161, 333, 2, 480, 17, 1000];
/// Awkward chunks between 1 ms pauses, so the client really sees separate network reads.
const CHUNKS_PER_PAUSE: usize = 3;

/// One reply's body stream: synthesis happens after the first-byte delay, off the request path
/// (at most 2000 characters, so memory is bounded). Records progress and, when dropped, how
/// the stream ended.
pub(super) struct Progress {
    /// The stand-in's state (voice, chunking, record).
    shared: Arc<Shared>,
    /// The request's entry in the record, when recording.
    index: Option<usize>,
    /// The load generator's observer and the request's id, when it runs one.
    probe: Option<(Probe, u64)>,
    /// The text, until it is synthesised.
    text: Option<String>,
    /// Wait before the first byte.
    delay: Duration,
    /// The audio not sent yet.
    audio: Bytes,
    /// Bytes sent so far.
    offset: usize,
    /// Chunks sent so far.
    chunk: usize,
}

impl Progress {
    /// The body of request `index` (in the record, when recording), speaking `text` after
    /// `delay`.
    pub(super) fn new(
        shared: Arc<Shared>,
        index: Option<usize>,
        probe: Option<(Probe, u64)>,
        text: String,
        delay: Duration,
    ) -> Self {
        Self {
            shared,
            index,
            probe,
            text: Some(text),
            delay,
            audio: Bytes::new(),
            offset: 0,
            chunk: 0,
        }
    }

    /// Updates the request's record, if there is one.
    fn note(&self, f: impl FnOnce(&mut TtsRequest)) {
        self.shared.note(self.index, f);
    }

    /// The next chunk's size.
    fn next_size(&self) -> usize {
        let size = match self.shared.chunking() {
            Chunking::Even => EVEN_CHUNK_BYTES,
            Chunking::Awkward => AWKWARD_CHUNK_SIZES[self.chunk % AWKWARD_CHUNK_SIZES.len()],
        };
        size.min(self.audio.len())
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let completed = self.text.is_none() && self.audio.is_empty();
        self.note(|r| {
            r.completed = completed;
            r.ended_at = Some(Instant::now());
        });
    }
}

/// The body: the first chunk after the delay, then the rest as fast as the client reads (with
/// short pauses when chunking awkwardly).
pub(super) fn stream(progress: Progress) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(progress, |mut p| async move {
        if let Some(text) = p.text.take() {
            tokio::time::sleep(p.delay).await;
            p.audio = p.shared.audio(&text);
            if let Some((probe, req)) = &p.probe {
                probe.record(Seen::TtsFirstByte { req: *req });
            }
        } else if p.shared.chunking() == Chunking::Awkward && p.chunk % CHUNKS_PER_PAUSE == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if p.audio.is_empty() {
            return None;
        }
        let chunk = p.audio.split_to(p.next_size());
        p.offset += chunk.len();
        p.chunk += 1;
        let sent = p.offset;
        p.note(|r| {
            r.bytes_sent = sent;
            r.first_byte_at.get_or_insert_with(Instant::now);
        });
        Some((Ok(chunk), p))
    })
}
