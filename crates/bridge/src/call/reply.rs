//! One reply: the model's answer streamed in, cut into phrases, each phrase synthesized as soon
//! as it is complete (the next one while the previous plays), cut into 20 ms frames and queued
//! for the writer in order, a mark after each phrase — cancellable as a unit by its token.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::turns::ReplyId;
use super::writer::Speech;
use crate::audio::frames::{FrameChunker, FRAME_BYTES};
use crate::llm::mistral::{LlmError, Mistral};
use crate::llm::ChatMessage;
use crate::metrics::Metrics;
use crate::tts::deepgram::{DeepgramTts, TtsError};
use crate::tts::text::{speakable, split_for_tts, PhraseSplitter, TTS_MAX_CHARS};

/// Phrases synthesized ahead of the one being sent: enough to hide the TTS's first-byte delay,
/// few enough that a barge-in wastes little.
const LOOKAHEAD: usize = 2;
/// Audio chunks one synthesis may buffer before the phrase ahead of it is sent.
const SYNTHESIS_BUFFER_CHUNKS: usize = 256;
/// Pause before the one retry of a failed synthesis request.
const TTS_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
/// The audio in one frame.
const FRAME: Duration = Duration::from_millis(20);
/// Fixed texts (greeting, fallbacks) whose audio is kept; a bound, not an expected size.
const CACHE_ENTRIES: usize = 16;

/// What to say.
#[derive(Debug)]
pub enum Script {
    /// Fixed text (the greeting): synthesized once per process, then served from memory.
    Say(String),
    /// Ask the model with this conversation and say its answer as it streams in.
    Answer(Vec<ChatMessage>),
}

/// What a reply reports back to the call task.
#[derive(Debug)]
pub enum ReplyEvent {
    /// The next phrase (as spoken: Markdown stripped) is being synthesized; its mark follows
    /// its audio.
    Phrase {
        /// Which reply.
        id: ReplyId,
        /// The phrase's text.
        text: String,
    },
    /// The reply's first audio frame was handed to the writer.
    FirstAudio {
        /// Which reply.
        id: ReplyId,
    },
    /// Audio of phrase `index` is going out: told at its first frame (`length: None`) and
    /// when all of it is queued (its length), so the call knows what the caller has heard.
    PhraseAudio {
        /// Which reply.
        id: ReplyId,
        /// Which phrase.
        index: usize,
        /// When its first frame was handed to the writer.
        sent: Instant,
        /// Its audio's length, once all of it is queued.
        length: Option<Duration>,
    },
    /// Every phrase and mark is queued for the writer.
    Queued {
        /// Which reply.
        id: ReplyId,
        /// Phrases queued.
        phrases: usize,
    },
    /// The reply could not be produced.
    Failed {
        /// Which reply.
        id: ReplyId,
        /// Why.
        error: ReplyError,
    },
}

/// Why a reply failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The model gave no answer.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The answer could not be synthesized.
    #[error(transparent)]
    Tts(#[from] TtsError),
}

impl ReplyError {
    /// The provider and the kind of failure, as metric labels.
    pub fn kind(&self) -> (&'static str, String) {
        match self {
            ReplyError::Llm(LlmError::Status { status, .. }) => {
                ("mistral", format!("http_{}", status.as_u16()))
            }
            ReplyError::Llm(LlmError::Timeout(_)) => ("mistral", "timeout".into()),
            ReplyError::Llm(LlmError::Http(_)) => ("mistral", "connection".into()),
            ReplyError::Llm(_) => ("mistral", "bad_response".into()),
            ReplyError::Tts(TtsError::Status { status, .. }) => {
                ("deepgram_tts", format!("http_{}", status.as_u16()))
            }
            ReplyError::Tts(TtsError::Http(_)) => ("deepgram_tts", "connection".into()),
        }
    }
}

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
    metrics: Arc<Metrics>,
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

    fn cached(&self, text: &str) -> Option<Bytes> {
        self.cache.lock().ok()?.get(text).cloned()
    }

    fn remember(&self, text: &str, audio: Bytes) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() < CACHE_ENTRIES {
                cache.insert(text.to_owned(), audio);
            }
        }
    }
}

/// Starts reply `id` in its own task. Cancelling `cancel` stops it at once: no request result
/// is used and no further frame is queued after that.
pub fn spawn(
    id: ReplyId,
    script: Script,
    voice: Arc<Voice>,
    speech: mpsc::Sender<Speech>,
    events: mpsc::Sender<ReplyEvent>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let reply = Reply {
            id,
            voice,
            speech,
            events: events.clone(),
            cancel: cancel.clone(),
            audio_started: AtomicBool::new(false),
        };
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = reply.produce(script) => outcome,
        };
        let event = match outcome {
            Ok(phrases) => ReplyEvent::Queued { id, phrases },
            Err(error) => ReplyEvent::Failed { id, error },
        };
        let _ = events.send(event).await;
    });
}

type TextStream = Pin<Box<dyn Stream<Item = Result<String, ReplyError>> + Send>>;

/// One reply in progress.
struct Reply {
    id: ReplyId,
    voice: Arc<Voice>,
    speech: mpsc::Sender<Speech>,
    events: mpsc::Sender<ReplyEvent>,
    cancel: CancellationToken,
    /// Set once the first frame is queued, so [`ReplyEvent::FirstAudio`] is sent once.
    audio_started: AtomicBool,
}

/// The phrase whose audio is being queued: when its first frame went out, and how many.
#[derive(Debug, Default)]
struct Outgoing {
    /// Which phrase.
    index: usize,
    /// When its first frame was queued.
    sent: Option<Instant>,
    /// Frames queued.
    frames: u32,
}

/// A phrase whose audio is being fetched by its own task.
struct Synthesis {
    /// Position in the reply, for its mark.
    index: usize,
    /// Audio chunks as they arrive.
    audio: mpsc::Receiver<Result<Bytes, TtsError>>,
    /// Fixed text whose audio is kept once complete.
    cache_as: Option<String>,
}

impl Reply {
    /// Produces the whole reply; returns the number of phrases queued.
    async fn produce(&self, script: Script) -> Result<usize, ReplyError> {
        match script {
            Script::Say(text) => self.say(&text).await,
            Script::Answer(messages) => {
                let asked = Instant::now();
                let deltas = self.voice.llm.stream(&messages).await?;
                let metrics = self.voice.metrics.clone();
                metrics
                    .llm_first_token
                    .observe(asked.elapsed().as_secs_f64());
                let finished = move || metrics.llm_total.observe(asked.elapsed().as_secs_f64());
                self.speak(phrases_of(deltas, finished), None).await
            }
        }
    }

    /// Fixed text: from the cache, or synthesized and then cached.
    async fn say(&self, text: &str) -> Result<usize, ReplyError> {
        let spoken = speakable(text);
        let pieces: Vec<String> = split_for_tts(&spoken, TTS_MAX_CHARS)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if pieces.len() == 1 {
            if let Some(audio) = self.voice.cached(&pieces[0]) {
                self.phrase_event(&pieces[0]).await;
                let mut chunker = FrameChunker::new();
                let mut outgoing = Outgoing::default();
                self.queue_audio(&mut chunker, &audio, &mut outgoing).await;
                self.end_phrase(&mut chunker, &mut outgoing).await;
                return Ok(1);
            }
        }
        let cache_as = (pieces.len() == 1).then(|| pieces[0].clone());
        let phrases = futures::stream::iter(pieces.into_iter().map(Ok));
        self.speak(Box::pin(phrases), cache_as).await
    }

    /// Speaks phrases as they arrive, keeping up to [`LOOKAHEAD`] syntheses ahead.
    async fn speak(
        &self,
        mut phrases: TextStream,
        cache_as: Option<String>,
    ) -> Result<usize, ReplyError> {
        let mut pending: VecDeque<Synthesis> = VecDeque::new();
        let mut splitter_done = false;
        let mut count = 0;
        let mut chunker = FrameChunker::new();
        let mut outgoing = Outgoing::default();
        let mut kept: Vec<u8> = Vec::new();
        loop {
            tokio::select! {
                phrase = phrases.next(), if !splitter_done && pending.len() < LOOKAHEAD => {
                    match phrase {
                        Some(Ok(text)) => {
                            let spoken = speakable(&text);
                            for piece in split_for_tts(&spoken, TTS_MAX_CHARS) {
                                self.phrase_event(piece).await;
                                pending.push_back(self.synthesize(piece, count, cache_as.clone()));
                                count += 1;
                            }
                        }
                        Some(Err(err)) => return Err(err),
                        None => splitter_done = true,
                    }
                }
                chunk = next_chunk(&mut pending), if !pending.is_empty() => match chunk {
                    Some(Ok(audio)) => {
                        if let Some(front) = pending.front() {
                            outgoing.index = front.index;
                            if front.cache_as.is_some() {
                                kept.extend_from_slice(&audio);
                            }
                        }
                        self.queue_audio(&mut chunker, &audio, &mut outgoing).await;
                    }
                    Some(Err(err)) => return Err(err.into()),
                    None => {
                        if let Some(done) = pending.pop_front() {
                            outgoing.index = done.index;
                            self.end_phrase(&mut chunker, &mut outgoing).await;
                            if let Some(text) = done.cache_as {
                                self.voice.remember(&text, Bytes::from(std::mem::take(&mut kept)));
                            }
                        }
                    }
                },
                else => break,
            }
        }
        Ok(count)
    }

    /// Starts fetching a phrase's audio in its own task, so it downloads while earlier phrases
    /// are still being sent.
    fn synthesize(&self, text: &str, index: usize, cache_as: Option<String>) -> Synthesis {
        let (tx, audio) = mpsc::channel(SYNTHESIS_BUFFER_CHUNKS);
        let tts = self.voice.tts.clone();
        let metrics = self.voice.metrics.clone();
        let text = text.to_owned();
        let cancel = self.cancel.child_token();
        tokio::spawn(async move {
            let fetch = async {
                let asked = Instant::now();
                let mut stream = match tts.synthesize(&text).await {
                    Ok(stream) => stream,
                    Err(first) => {
                        tracing::warn!(error = %first, "speech synthesis failed; retrying once");
                        tokio::time::sleep(TTS_RETRY_PAUSE).await;
                        match tts.synthesize(&text).await {
                            Ok(stream) => stream,
                            Err(err) => {
                                let _ = tx.send(Err(err)).await;
                                return;
                            }
                        }
                    }
                };
                let mut first = true;
                while let Some(chunk) = stream.next().await {
                    if std::mem::take(&mut first) {
                        metrics
                            .tts_first_byte
                            .observe(asked.elapsed().as_secs_f64());
                    }
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                () = fetch => {}
            }
        });
        Synthesis {
            index,
            audio,
            cache_as,
        }
    }

    async fn phrase_event(&self, text: &str) {
        let _ = self
            .events
            .send(ReplyEvent::Phrase {
                id: self.id,
                text: text.to_owned(),
            })
            .await;
    }

    /// Cuts audio into frames and hands the complete ones to the writer.
    async fn queue_audio(&self, chunker: &mut FrameChunker, audio: &[u8], outgoing: &mut Outgoing) {
        let mut frames: Vec<[u8; FRAME_BYTES]> = Vec::new();
        chunker.push(audio, |frame| frames.push(*frame));
        for audio in frames {
            self.send_frame(audio, outgoing).await;
        }
    }

    /// Queues one frame for the writer; the reply's first one, and each phrase's, is reported
    /// to the call.
    async fn send_frame(&self, audio: [u8; FRAME_BYTES], outgoing: &mut Outgoing) {
        if !self.audio_started.swap(true, Ordering::Relaxed) {
            let _ = self
                .events
                .send(ReplyEvent::FirstAudio { id: self.id })
                .await;
        }
        outgoing.frames += 1;
        if outgoing.sent.is_none() {
            let sent = Instant::now();
            outgoing.sent = Some(sent);
            let event = ReplyEvent::PhraseAudio {
                id: self.id,
                index: outgoing.index,
                sent,
                length: None,
            };
            let _ = self.events.send(event).await;
        }
        let _ = self
            .speech
            .send(Speech::Frame {
                reply: self.id,
                audio,
            })
            .await;
    }

    /// A phrase's audio is complete: pad its last frame, mark its end and tell the call how
    /// long it plays.
    async fn end_phrase(&self, chunker: &mut FrameChunker, outgoing: &mut Outgoing) {
        if let Some(audio) = chunker.finish() {
            self.send_frame(audio, outgoing).await;
        }
        let index = outgoing.index;
        let _ = self
            .speech
            .send(Speech::Mark {
                reply: self.id,
                phrase: index,
            })
            .await;
        let done = std::mem::take(outgoing);
        if let Some(sent) = done.sent {
            let event = ReplyEvent::PhraseAudio {
                id: self.id,
                index,
                sent,
                length: Some(FRAME * done.frames),
            };
            let _ = self.events.send(event).await;
        }
        outgoing.index = index + 1;
    }
}

/// The model's streamed text cut into phrases as it arrives; the rest becomes the last phrase.
/// `finished` runs once, when the model's last words arrive.
fn phrases_of(
    deltas: impl Stream<Item = Result<String, LlmError>> + Send + Unpin + 'static,
    finished: impl FnOnce() + Send + 'static,
) -> TextStream {
    let state = (
        deltas,
        PhraseSplitter::new(),
        VecDeque::new(),
        Some(finished),
    );
    Box::pin(futures::stream::unfold(
        state,
        |(mut deltas, mut splitter, mut ready, mut finished)| async move {
            loop {
                let done = finished.is_none();
                if let Some(phrase) = ready.pop_front() {
                    return Some((Ok(phrase), (deltas, splitter, ready, finished)));
                }
                if done {
                    return None;
                }
                match deltas.next().await {
                    Some(Ok(text)) => ready.extend(splitter.push(&text)),
                    Some(Err(err)) => {
                        finished = None;
                        return Some((Err(err.into()), (deltas, splitter, ready, finished)));
                    }
                    None => {
                        if let Some(finished) = finished.take() {
                            finished();
                        }
                        ready.extend(splitter.finish());
                    }
                }
            }
        },
    ))
}

/// The next audio chunk of the phrase being sent; `None` when its audio is complete.
async fn next_chunk(pending: &mut VecDeque<Synthesis>) -> Option<Result<Bytes, TtsError>> {
    match pending.front_mut() {
        Some(synthesis) => synthesis.audio.recv().await,
        None => std::future::pending().await,
    }
}
