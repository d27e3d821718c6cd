//! An optional observer of the stand-ins, for the load generator: what each stand-in received
//! and sent, and when, so one process can tell exactly how long the bridge itself took between
//! two providers.
//!
//! Off by default (`None` everywhere: one branch per event, nothing recorded). When on, events go
//! through a bounded channel with `try_send`; a full channel drops the event and counts it, so
//! the stand-ins never wait for the observer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

/// Something a stand-in saw or did.
#[derive(Debug, Clone)]
pub enum Seen {
    /// The STT stand-in received a 20 ms PCM frame on connection `conn`.
    SttFrame {
        /// The STT connection (one per call).
        conn: u64,
        /// [`super::bank::frame_hash`] of the frame's PCM.
        hash: u64,
    },
    /// The STT stand-in is sending a `Results` message on `conn`.
    SttResults {
        /// The STT connection.
        conn: u64,
        /// Whether the transcript has words.
        words: bool,
        /// `is_final`.
        is_final: bool,
        /// `speech_final`.
        speech_final: bool,
    },
    /// The STT stand-in is sending `UtteranceEnd` on `conn`.
    SttUtteranceEnd {
        /// The STT connection.
        conn: u64,
    },
    /// The LLM stand-in received a chat completion request.
    LlmRequest {
        /// This request, for the [`Seen::LlmText`] that follow.
        req: u64,
        /// The last user message of the request.
        last_user: String,
    },
    /// The LLM stand-in is sending a piece of reply text.
    LlmText {
        /// The request it answers.
        req: u64,
        /// The text piece.
        text: String,
    },
    /// The TTS stand-in received a synthesis request.
    TtsRequest {
        /// This request, for its [`Seen::TtsFirstByte`].
        req: u64,
        /// The text to speak.
        text: String,
    },
    /// The TTS stand-in is sending the first audio bytes of request `req`.
    TtsFirstByte {
        /// The request.
        req: u64,
    },
}

/// One event and when it happened.
#[derive(Debug, Clone)]
pub struct Observation {
    /// When the stand-in saw or did it.
    pub at: Instant,
    /// What.
    pub seen: Seen,
}

/// The sending side, cloned into each stand-in.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Where observations go.
    tx: mpsc::Sender<Observation>,
    /// Observations dropped because the channel was full.
    dropped: Arc<AtomicU64>,
    /// Source of connection and request ids.
    next_id: Arc<AtomicU64>,
    /// Only frames whose hash is a multiple of this are reported (1: every frame), so a load
    /// generator driving thousands of calls can sample the per-frame matching.
    frame_sample: u64,
}

impl Probe {
    /// A probe whose channel holds up to `capacity` observations not yet read.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Observation>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let probe = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            next_id: Arc::new(AtomicU64::new(1)),
            frame_sample: 1,
        };
        (probe, rx)
    }

    /// Reports only the STT frames whose hash is a multiple of `every` (the caller side picks
    /// the same frames by the same hash).
    pub fn sampling_frames(mut self, every: u64) -> Self {
        self.frame_sample = every.max(1);
        self
    }

    /// Whether a frame with this hash is to be reported.
    pub fn wants_frame(&self, hash: u64) -> bool {
        hash % self.frame_sample == 0
    }

    /// Records `seen` as happening now; never waits.
    pub fn record(&self, seen: Seen) {
        let observation = Observation {
            at: Instant::now(),
            seen,
        };
        if self.tx.try_send(observation).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A fresh id for a connection or request.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How many observations were dropped because the reader fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
