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
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::turns::ReplyId;
use super::writer::Speech;
use crate::audio::frames::FRAME_BYTES;
use crate::audio::mulaw::SILENCE;
use crate::llm::mistral::{LlmError, Mistral, Piece};
use crate::llm::ChatMessage;
use crate::metrics::Metrics;
use crate::tools::rounds::MAX_TOOL_ROUNDS;
use crate::tools::{Step, Toolbox, CLOSING, HOLDING_PHRASE, HOLD_AFTER};
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

/// What every reply of a call speaks with and reports to.
#[derive(Debug, Clone)]
pub struct Outlets {
    /// The model and the voice.
    pub voice: Arc<Voice>,
    /// The call's tools; `None` answers in words only.
    pub tools: Option<Arc<CallTools>>,
    /// The socket writer's speech queue.
    pub speech: mpsc::Sender<Speech>,
    /// Where the reply reports to the call.
    pub events: mpsc::Sender<ReplyEvent>,
}

/// What a call's replies may do besides talking: its tools, and the words they need.
#[derive(Debug, Clone)]
pub struct CallTools {
    /// The tools offered to the model, and how to run them.
    pub toolbox: Arc<Toolbox>,
    /// The call they act for (sent to the operator's tools).
    pub call_sid: String,
    /// Said before a transfer when the model gave no words (`TRANSFER_PHRASE`).
    pub transfer_phrase: String,
    /// Said when the rounds run out.
    pub fallback: String,
}

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
    /// A whole tool round: the assistant's calls, then one result per call (Mistral's shape).
    ToolRound {
        /// Which reply.
        id: ReplyId,
        /// The round's messages.
        messages: Vec<ChatMessage>,
    },
    /// The model ended the call or asked for a transfer: once this reply was heard, the call
    /// takes that step.
    Step {
        /// Which reply.
        id: ReplyId,
        /// The end or the transfer.
        step: Step,
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

/// What the call tells a running reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCommand {
    /// Stop sending (the caller spoke over it, or it answers a turn not yet over): the audio
    /// made so far, and what is still being made, is kept for [`ReplyCommand::Play`].
    Hold,
    /// Send from the start of phrase `from` on, as take `take` (see [`super::writer::Take`]).
    Play {
        /// The first phrase to send.
        from: usize,
        /// The take's number.
        take: u32,
    },
}

/// Commands a reply may have waiting; the call sends at most a few per reply.
const COMMANDS: usize = 8;

/// A running reply's handles.
#[derive(Debug)]
pub struct Running {
    /// Where its commands go.
    pub commands: mpsc::Sender<ReplyCommand>,
}

/// Starts reply `id` in its own task, sending its audio at once, or holding it until told to
/// play when `held`. Cancelling `cancel` stops it at once: no request result is used and no
/// further frame is queued after that. The task keeps the reply's audio until it is cancelled,
/// so the reply can be played again from any phrase.
pub fn spawn(
    id: ReplyId,
    script: Script,
    held: bool,
    outlets: Outlets,
    cancel: CancellationToken,
) -> Running {
    let (commands, commands_rx) = mpsc::channel(COMMANDS);
    let Outlets {
        voice,
        tools,
        speech,
        events,
    } = outlets;
    tokio::spawn(async move {
        let reply = Reply {
            id,
            voice,
            tools,
            speech,
            events: events.clone(),
            cancel: cancel.clone(),
            audio_started: AtomicBool::new(false),
            released: watch::Sender::new(!held),
        };
        let mut run = Run::new(held, commands_rx);
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = reply.produce(script, &mut run) => outcome,
        };
        if let Err(error) = outcome {
            let _ = events.send(ReplyEvent::Failed { id, error }).await;
            return;
        }
        // Everything is made and queued: keep the audio for a replay until cancelled.
        tokio::select! {
            () = cancel.cancelled() => {}
            () = reply.serve_replays(&mut run) => {}
        }
    });
    Running { commands }
}

type TextStream = Pin<Box<dyn Stream<Item = Result<String, ReplyError>> + Send>>;

/// One reply in progress.
struct Reply {
    id: ReplyId,
    voice: Arc<Voice>,
    /// The call's tools; `None` answers in words only.
    tools: Option<Arc<CallTools>>,
    speech: mpsc::Sender<Speech>,
    events: mpsc::Sender<ReplyEvent>,
    cancel: CancellationToken,
    /// Set once the first frame is queued, so [`ReplyEvent::FirstAudio`] is sent once.
    audio_started: AtomicBool,
    /// Whether the reply was ever played: a held one runs no tool before.
    released: watch::Sender<bool>,
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

/// One phrase's audio, as far as it has arrived.
#[derive(Debug, Default)]
struct Taped {
    /// μ-law bytes.
    audio: Vec<u8>,
    /// All of it arrived.
    complete: bool,
}

/// The audio of the whole reply, kept for as long as the reply may be played again, and where
/// sending has got to.
struct Run {
    /// Commands from the call.
    commands: mpsc::Receiver<ReplyCommand>,
    /// Every phrase's audio, in order.
    tape: Vec<Taped>,
    /// Whether audio is being sent (false while held).
    playing: bool,
    /// The take being sent.
    take: u32,
    /// The phrase being sent.
    phrase: usize,
    /// Bytes of it sent.
    offset: usize,
    /// When the phrase being sent had its first frame queued.
    sent: Option<Instant>,
    /// The take whose [`ReplyEvent::Queued`] was reported.
    queued: Option<u32>,
}

impl Run {
    fn new(held: bool, commands: mpsc::Receiver<ReplyCommand>) -> Self {
        Self {
            commands,
            tape: Vec::new(),
            playing: !held,
            take: 0,
            phrase: 0,
            offset: 0,
            sent: None,
            queued: None,
        }
    }

    fn obey(&mut self, command: ReplyCommand) {
        match command {
            ReplyCommand::Hold => self.playing = false,
            ReplyCommand::Play { from, take } => {
                self.playing = true;
                self.take = take;
                self.phrase = from.min(self.tape.len());
                self.offset = 0;
                self.sent = None;
                self.queued = None;
            }
        }
    }

    /// What to send next, if anything can be sent now.
    fn next(&self) -> Option<Next> {
        if !self.playing {
            return None;
        }
        let taped = self.tape.get(self.phrase)?;
        let left = taped.audio.len() - self.offset;
        if left >= FRAME_BYTES || (taped.complete && left > 0) {
            Some(Next::Frame)
        } else if taped.complete {
            Some(Next::Mark)
        } else {
            None
        }
    }

    /// The next frame at the cursor (the phrase's last one padded with silence), and moves on.
    fn frame(&mut self) -> [u8; FRAME_BYTES] {
        let mut frame = [SILENCE; FRAME_BYTES];
        let audio = &self.tape[self.phrase].audio[self.offset..];
        let n = audio.len().min(FRAME_BYTES);
        frame[..n].copy_from_slice(&audio[..n]);
        self.offset += n;
        frame
    }

    /// Every phrase made has been sent.
    fn all_sent(&self) -> bool {
        self.phrase >= self.tape.len()
    }

    /// Phrases made but not yet sent (the one being sent included).
    fn ahead(&self) -> usize {
        self.tape.len().saturating_sub(self.phrase)
    }
}

/// What the sending side does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Send a frame of the phrase at the cursor.
    Frame,
    /// The phrase at the cursor is all sent: send its mark.
    Mark,
}

impl Reply {
    /// Produces and sends the whole reply; returns the number of phrases.
    async fn produce(&self, script: Script, run: &mut Run) -> Result<usize, ReplyError> {
        match script {
            Script::Say(text) => self.say(&text, run).await,
            Script::Answer(messages) if self.tools.is_some() => {
                let text = self.answer_with_tools(messages);
                self.speak(text, None, run).await
            }
            Script::Answer(messages) => {
                let asked = Instant::now();
                let deltas = self.voice.llm.stream(&messages).await?;
                let metrics = self.voice.metrics.clone();
                metrics
                    .llm_first_token
                    .observe(asked.elapsed().as_secs_f64());
                let finished = move || metrics.llm_total.observe(asked.elapsed().as_secs_f64());
                self.speak(phrases_of(deltas, finished), None, run).await
            }
        }
    }

    /// Fixed text: from the cache, or synthesized and then cached.
    async fn say(&self, text: &str, run: &mut Run) -> Result<usize, ReplyError> {
        let spoken = speakable(text);
        let pieces: Vec<String> = split_for_tts(&spoken, TTS_MAX_CHARS)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if pieces.len() == 1 {
            if let Some(audio) = self.voice.cached(&pieces[0]) {
                self.phrase_event(&pieces[0]).await;
                run.tape.push(Taped {
                    audio: audio.to_vec(),
                    complete: true,
                });
                let none: TextStream = Box::pin(futures::stream::empty());
                return self.speak(none, None, run).await;
            }
        }
        let cache_as = (pieces.len() == 1).then(|| pieces[0].clone());
        let phrases = futures::stream::iter(pieces.into_iter().map(Ok));
        self.speak(Box::pin(phrases), cache_as, run).await
    }

    /// Speaks phrases as they arrive, keeping up to [`LOOKAHEAD`] phrases made ahead of the one
    /// being sent, and obeying the call's commands meanwhile. Returns once every phrase is
    /// made and the current take has sent them all.
    async fn speak(
        &self,
        mut phrases: TextStream,
        cache_as: Option<String>,
        run: &mut Run,
    ) -> Result<usize, ReplyError> {
        let mut pending: VecDeque<Synthesis> = VecDeque::new();
        let mut source_done = false;
        loop {
            let next = run.next();
            let made = source_done && pending.is_empty();
            if made && run.playing && run.all_sent() {
                self.report_queued(run).await;
                return Ok(run.tape.len());
            }
            tokio::select! {
                command = run.commands.recv() => match command {
                    Some(command) => self.obey(run, command),
                    // The call is gone; the token ends this task.
                    None => std::future::pending::<()>().await,
                },
                phrase = phrases.next(), if !source_done && run.ahead() < LOOKAHEAD => {
                    match phrase {
                        Some(Ok(text)) => {
                            let spoken = speakable(&text);
                            for piece in split_for_tts(&spoken, TTS_MAX_CHARS) {
                                self.phrase_event(piece).await;
                                let index = run.tape.len();
                                // Fixed phrases (holding, fallback) come from the cache.
                                if let Some(audio) = self.voice.cached(piece) {
                                    run.tape.push(Taped {
                                        audio: audio.to_vec(),
                                        complete: true,
                                    });
                                    continue;
                                }
                                pending.push_back(self.synthesize(piece, index, cache_as.clone()));
                                run.tape.push(Taped::default());
                            }
                        }
                        Some(Err(err)) => return Err(err),
                        None => source_done = true,
                    }
                }
                chunk = next_chunk(&mut pending), if !pending.is_empty() => match chunk {
                    Some(Ok(audio)) => {
                        if let Some(front) = pending.front() {
                            run.tape[front.index].audio.extend_from_slice(&audio);
                        }
                    }
                    Some(Err(err)) => return Err(err.into()),
                    None => {
                        if let Some(done) = pending.pop_front() {
                            let taped = &mut run.tape[done.index];
                            taped.complete = true;
                            if let Some(text) = done.cache_as {
                                self.voice.remember(&text, Bytes::from(taped.audio.clone()));
                            }
                        }
                    }
                },
                permit = self.speech.reserve(), if next.is_some() => match permit {
                    Ok(permit) => self.send_next(permit, next, run).await,
                    // The writer is gone: the call is ending.
                    Err(_) => return Ok(run.tape.len()),
                },
            }
        }
    }

    /// Once everything is made and sent: plays the reply again whenever told to, until
    /// cancelled.
    async fn serve_replays(&self, run: &mut Run) {
        loop {
            let next = run.next();
            if run.playing && run.all_sent() {
                self.report_queued(run).await;
            }
            tokio::select! {
                command = run.commands.recv() => match command {
                    Some(command) => self.obey(run, command),
                    None => return,
                },
                permit = self.speech.reserve(), if next.is_some() => match permit {
                    Ok(permit) => self.send_next(permit, next, run).await,
                    Err(_) => return,
                },
            }
        }
    }

    /// Carries out the call's command; the first play releases a held reply's tools too.
    fn obey(&self, run: &mut Run, command: ReplyCommand) {
        if matches!(command, ReplyCommand::Play { .. }) {
            self.released.send_replace(true);
        }
        run.obey(command);
    }

    /// Sends the next frame or mark of the current take through `permit`.
    async fn send_next(&self, permit: mpsc::Permit<'_, Speech>, next: Option<Next>, run: &mut Run) {
        let take = (self.id, run.take);
        match next {
            Some(Next::Frame) => {
                let first_of_phrase = run.sent.is_none();
                let sent = *run.sent.get_or_insert_with(Instant::now);
                let audio = run.frame();
                permit.send(Speech::Frame { take, audio });
                if !self.audio_started.swap(true, Ordering::Relaxed) {
                    let _ = self
                        .events
                        .send(ReplyEvent::FirstAudio { id: self.id })
                        .await;
                }
                if first_of_phrase {
                    self.audio_event(run.phrase, sent, None).await;
                }
            }
            Some(Next::Mark) => {
                permit.send(Speech::Mark {
                    take,
                    phrase: run.phrase,
                });
                let frames = run.tape[run.phrase].audio.len().div_ceil(FRAME_BYTES);
                let length = FRAME * u32::try_from(frames).unwrap_or(u32::MAX);
                if let Some(sent) = run.sent.take() {
                    self.audio_event(run.phrase, sent, Some(length)).await;
                }
                run.phrase += 1;
                run.offset = 0;
            }
            None => drop(permit),
        }
    }

    /// Tells the call that every phrase of the current take is queued (once per take).
    async fn report_queued(&self, run: &mut Run) {
        if run.queued != Some(run.take) {
            run.queued = Some(run.take);
            let event = ReplyEvent::Queued {
                id: self.id,
                phrases: run.tape.len(),
            };
            let _ = self.events.send(event).await;
        }
    }

    async fn audio_event(&self, index: usize, sent: Instant, length: Option<Duration>) {
        let event = ReplyEvent::PhraseAudio {
            id: self.id,
            index,
            sent,
            length,
        };
        let _ = self.events.send(event).await;
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

    /// The model's answer with its tools, as phrases: its words are cut into phrases as they
    /// stream in; when it calls tools, they run (the caller hears [`HOLDING_PHRASE`] once if
    /// they take over [`HOLD_AFTER`]) and the model is asked again with their results, for up
    /// to [`MAX_TOOL_ROUNDS`] rounds (then the fallback phrase). An end or a transfer is
    /// reported to the call, after the model's closing words or a default phrase.
    fn answer_with_tools(&self, messages: Vec<ChatMessage>) -> TextStream {
        let (tx, rx) = mpsc::channel::<Result<String, ReplyError>>(16);
        let (id, voice, events) = (self.id, self.voice.clone(), self.events.clone());
        let Some(tools) = self.tools.clone() else {
            return Box::pin(futures::stream::empty());
        };
        let cancel = self.cancel.child_token();
        let released = self.released.subscribe();
        tokio::spawn(async move {
            let work = rounds_of(id, &voice, &tools, messages, (&tx, &events), released);
            tokio::select! {
                () = cancel.cancelled() => {}
                result = work => if let Err(err) = result {
                    let _ = tx.send(Err(err)).await;
                },
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
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

/// The work behind [`Reply::answer_with_tools`]: phrases go to `tx`, rounds and steps to
/// `events`.
async fn rounds_of(
    id: ReplyId,
    voice: &Voice,
    tools: &CallTools,
    mut conversation: Vec<ChatMessage>,
    (tx, events): (
        &mpsc::Sender<Result<String, ReplyError>>,
        &mpsc::Sender<ReplyEvent>,
    ),
    mut released: watch::Receiver<bool>,
) -> Result<(), ReplyError> {
    let say = |text: String| async move {
        let _ = tx.send(Ok(text)).await;
    };
    let mut held = false;
    for round in 0..=MAX_TOOL_ROUNDS {
        let asked = Instant::now();
        let mut pieces = voice
            .llm
            .stream_with_tools(&conversation, tools.toolbox.offer())
            .await?;
        let metrics = &voice.metrics;
        metrics
            .llm_first_token
            .observe(asked.elapsed().as_secs_f64());
        let (mut splitter, mut text, mut calls) =
            (PhraseSplitter::new(), String::new(), Vec::new());
        while let Some(piece) = pieces.next().await {
            match piece? {
                Piece::Text(delta) => {
                    text.push_str(&delta);
                    for phrase in splitter.push(&delta) {
                        say(phrase).await;
                    }
                }
                Piece::ToolCalls(requests) => calls = requests,
            }
        }
        metrics.llm_total.observe(asked.elapsed().as_secs_f64());
        if let Some(rest) = splitter.finish() {
            say(rest).await;
        }
        if calls.is_empty() {
            return Ok(());
        }
        if round == MAX_TOOL_ROUNDS {
            tracing::warn!(
                rounds = MAX_TOOL_ROUNDS,
                "the model still asks for tools after the last round; the caller hears the fallback"
            );
            say(tools.fallback.clone()).await;
            return Ok(());
        }
        // A reply prepared before the turn ended calls no tool until it is released: a
        // dropped one must leave no trace, at the operator's end neither.
        if released.wait_for(|r| *r).await.is_err() {
            return Ok(());
        }
        let work = tools.toolbox.round(&tools.call_sid, &text, &calls);
        tokio::pin!(work);
        let done = if held {
            work.await
        } else {
            tokio::select! {
                done = &mut work => done,
                () = tokio::time::sleep(HOLD_AFTER) => {
                    held = true;
                    say(HOLDING_PHRASE.to_owned()).await;
                    work.await
                }
            }
        };
        let messages = done.messages;
        let _ = events
            .send(ReplyEvent::ToolRound {
                id,
                messages: messages.clone(),
            })
            .await;
        let closing = match &done.step {
            Step::Continue => {
                conversation.extend(messages);
                continue;
            }
            Step::End => CLOSING,
            Step::Transfer { .. } => tools.transfer_phrase.as_str(),
        };
        if text.trim().is_empty() {
            say(closing.to_owned()).await;
        }
        let _ = events
            .send(ReplyEvent::Step {
                id,
                step: done.step,
            })
            .await;
        return Ok(());
    }
    Ok(())
}

/// The next audio chunk of the phrase being sent; `None` when its audio is complete.
async fn next_chunk(pending: &mut VecDeque<Synthesis>) -> Option<Result<Bytes, TtsError>> {
    match pending.front_mut() {
        Some(synthesis) => synthesis.audio.recv().await,
        None => std::future::pending().await,
    }
}
