//! The model and the voice every reply of every call shares, and the audio of fixed texts
//! (greeting, fallback, idle and holding phrases), synthesized once per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use crate::llm::mistral::Mistral;
use crate::metrics::Metrics;
use crate::tts::deepgram::DeepgramTts;
use crate::tts::text::{speakable, TTS_MAX_CHARS};

/// Fixed texts (greeting, fallbacks) whose audio is kept; a bound, not an expected size.
const CACHE_ENTRIES: usize = 16;

/// The providers a reply uses, shared by every call.
#[derive(Debug)]
pub struct Voice {
    /// Writes answers.
    pub llm: Mistral,
    /// Speaks them.
    pub tts: DeepgramTts,
    /// Audio of fixed texts, synthesized once per process.
    cache: Mutex<HashMap<String, Bytes>>,
    /// Where the model's and the voice's latencies are recorded.
    pub(super) metrics: Arc<Metrics>,
}

impl Voice {
    /// A voice with an empty cache.
    pub fn new(llm: Mistral, tts: DeepgramTts, metrics: Arc<Metrics>) -> Self {
        Self {
            llm,
            tts,
            cache: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether the audio of fixed text `text` is ready in memory.
    pub fn has_cached(&self, text: &str) -> bool {
        self.cached(&speakable(text)).is_some()
    }

    /// Synthesizes fixed text `text` into the cache unless it is there already; failures are
    /// left for the next call to retry.
    pub async fn prefetch(&self, text: &str) {
        let spoken = speakable(text);
        if self.cached(&spoken).is_some() || spoken.chars().count() > TTS_MAX_CHARS {
            return;
        }
        let Ok(mut stream) = self.tts.synthesize(&spoken).await else {
            return;
        };
        let mut audio = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => audio.extend_from_slice(&chunk),
                Err(_) => return,
            }
        }
        self.remember(&spoken, Bytes::from(audio));
    }

    pub(super) fn cached(&self, text: &str) -> Option<Bytes> {
        self.cache.lock().ok()?.get(text).cloned()
    }

    pub(super) fn remember(&self, text: &str, audio: Bytes) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() < CACHE_ENTRIES {
                cache.insert(text.to_owned(), audio);
            }
        }
    }
}
