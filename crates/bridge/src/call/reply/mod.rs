//! One reply: the model's answer streamed in, cut into phrases (`words.rs`, tool rounds
//! included), each phrase synthesized as soon as it is complete (the next ones while the previous
//! plays, never more than [`LOOKAHEAD`] past the one the caller is hearing) by the shared voice
//! (`voice.rs`), kept on the reply's tape (`tape.rs`) and sent from it in 20 ms frames, a mark
//! after each phrase — held, played again from a phrase, or cancelled as a unit by the call.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod tape;
mod voice;
mod words;

use tape::{Next, Run, Taped};
pub use voice::Voice;
pub use words::CallTools;
use words::{phrases_of, rounds_of, TextStream};

use super::turns::ReplyId;
use super::writer::Speech;
use crate::audio::frames::FRAME_BYTES;
use crate::llm::mistral::LlmError;
use crate::llm::ChatMessage;
use crate::queue;
use crate::tools::Step;
use crate::tts::deepgram::TtsError;
use crate::tts::text::{speakable, split_for_tts, TTS_MAX_CHARS};

/// Phrases synthesized ahead of the one being sent, and past the one the caller is hearing:
/// enough to hide the TTS's first-byte delay behind two phrases of speech, few enough that a
/// barge-in wastes little synthesis and a long answer keeps little audio. (Twilio plays what
/// it is sent in order and the writer sends as fast as the socket takes it, so without the
/// second bound a whole answer was synthesized, and kept, while its first phrase played.)
pub const LOOKAHEAD: usize = 2;
/// Pause before the one retry of a failed synthesis request.
const TTS_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
/// The audio in one frame.
const FRAME: Duration = Duration::from_millis(20);

/// What every reply of a call speaks with and reports to.
#[derive(Debug, Clone)]
pub struct Outlets {
    /// The model and the voice.
    pub voice: Arc<Voice>,
    /// The call's tools; `None` answers in words only.
    pub tools: Option<Arc<CallTools>>,
    /// The socket writer's speech queue.
    pub speech: queue::Sender<Speech>,
    /// Where the reply reports to the call.
    pub events: queue::Sender<ReplyEvent>,
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
    /// Audio of a phrase is going out: told at its first frame (`length: None`) and when all
    /// of it is queued (its length), so the call knows what the caller has heard.
    PhraseAudio {
        /// Which reply.
        id: ReplyId,
        /// Which phrase, and its timing. Boxed, like [`ReplyEvent::Failed`]'s error: inline they
        /// made every event 56 bytes, and a call's event queue makes room for the largest kind.
        progress: Box<PhraseProgress>,
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
        error: Box<ReplyError>,
    },
}

const _: () = assert!(std::mem::size_of::<ReplyEvent>() <= 40);

/// Where a phrase's audio stands ([`ReplyEvent::PhraseAudio`]).
#[derive(Debug)]
pub struct PhraseProgress {
    /// Which phrase.
    pub index: usize,
    /// When its first frame was handed to the writer.
    pub sent: Instant,
    /// Its audio's length, once all of it is queued.
    pub length: Option<Duration>,
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
            ReplyError::Llm(err) => ("mistral", err.kind()),
            ReplyError::Tts(TtsError::Status { status, .. }) => {
                ("deepgram_tts", format!("http_{}", status.as_u16()))
            }
            ReplyError::Tts(TtsError::Http(_)) => ("deepgram_tts", "connection".into()),
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

/// How many phrases of a reply the caller has heard to the end, as the call learns it from
/// Twilio's marks; the reply lets go of their audio and makes more phrases as it grows. Shared,
/// not a command: it must always get through (a reply waiting for it makes no more audio), and
/// only its newest value matters. The reply waits on an [`AtomicWaker`], as a queue's receiver
/// does: it looks on every frame it sends, which must not take a lock.
#[derive(Debug, Default)]
pub struct Heard {
    /// Phrases heard to the end.
    phrases: AtomicUsize,
    /// Wakes the reply when they grow.
    grew: AtomicWaker,
}

impl Heard {
    /// The caller has heard the first `phrases` phrases to the end.
    pub fn reached(&self, phrases: usize) {
        if self.phrases.fetch_max(phrases, Ordering::Relaxed) < phrases {
            self.grew.wake();
        }
    }

    /// Phrases heard to the end so far.
    fn phrases(&self) -> usize {
        self.phrases.load(Ordering::Relaxed)
    }

    /// Resolves once more than `seen` phrases have been heard.
    fn beyond(&self, seen: usize) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            // Registered before looking, so that growth in between wakes the task.
            self.grew.register(cx.waker());
            if self.phrases() > seen {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// A running reply's handles.
#[derive(Debug)]
pub struct Running {
    /// Where its commands go.
    pub commands: queue::Sender<ReplyCommand>,
    /// Where the call says what the caller has heard of it.
    pub heard: Arc<Heard>,
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
    let (commands, commands_rx) = queue::bounded(COMMANDS);
    let heard = Arc::new(Heard::default());
    let reply_heard = heard.clone();
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
            heard: reply_heard,
        };
        let mut run = Run::new(held, commands_rx);
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = reply.produce(script, &mut run) => outcome,
        };
        if let Err(error) = outcome {
            let error = Box::new(error);
            let _ = events.send(ReplyEvent::Failed { id, error }).await;
            return;
        }
        // Everything is made and queued: keep the audio for a replay until cancelled.
        tokio::select! {
            () = cancel.cancelled() => {}
            () = reply.serve_replays(&mut run) => {}
        }
    });
    Running { commands, heard }
}

/// One reply in progress.
struct Reply {
    id: ReplyId,
    voice: Arc<Voice>,
    /// The call's tools; `None` answers in words only.
    tools: Option<Arc<CallTools>>,
    speech: queue::Sender<Speech>,
    events: queue::Sender<ReplyEvent>,
    cancel: CancellationToken,
    /// Set once the first frame is queued, so [`ReplyEvent::FirstAudio`] is sent once.
    audio_started: AtomicBool,
    /// Whether the reply was ever played: a held one runs no tool before.
    released: watch::Sender<bool>,
    /// What the caller has heard of it.
    heard: Arc<Heard>,
}

/// A phrase whose audio is being fetched.
struct Synthesis {
    /// Position in the reply, for its mark.
    index: usize,
    /// Audio chunks as they arrive.
    audio: BoxStream<'static, Result<Bytes, TtsError>>,
    /// Fixed text whose audio is kept once complete.
    cache_as: Option<String>,
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
                run.tape.push(Taped::whole(audio));
                let none: TextStream = Box::pin(futures::stream::empty());
                return self.speak(none, None, run).await;
            }
        }
        let cache_as = (pieces.len() == 1).then(|| pieces[0].clone());
        let phrases = futures::stream::iter(pieces.into_iter().map(Ok));
        self.speak(Box::pin(phrases), cache_as, run).await
    }

    /// Speaks phrases as they arrive, making up to [`LOOKAHEAD`] phrases ahead of the one being
    /// sent and past the one being heard, and obeying the call's commands meanwhile. Returns
    /// once every phrase is made and the current take has sent them all.
    async fn speak(
        &self,
        mut phrases: TextStream,
        cache_as: Option<String>,
        run: &mut Run,
    ) -> Result<usize, ReplyError> {
        let mut pending: Vec<Synthesis> = Vec::new();
        let mut source_done = false;
        loop {
            let heard = self.heard.phrases();
            run.hear(heard);
            let next = run.next();
            let made = source_done && pending.is_empty();
            if made && run.playing && run.all_sent() {
                self.report_queued(run).await;
                return Ok(run.tape.len());
            }
            let room = run.ahead() < LOOKAHEAD && run.unheard() <= LOOKAHEAD;
            tokio::select! {
                command = run.commands.recv() => match command {
                    Some(command) => self.obey(run, command),
                    // The call is gone; the token ends this task.
                    None => std::future::pending::<()>().await,
                },
                () = self.heard.beyond(heard) => {}
                phrase = phrases.next(), if !source_done && room => {
                    match phrase {
                        Some(Ok(text)) => {
                            let spoken = speakable(&text);
                            for piece in split_for_tts(&spoken, TTS_MAX_CHARS) {
                                self.phrase_event(piece).await;
                                let index = run.tape.len();
                                // Fixed phrases (holding, fallback) come from the cache.
                                if let Some(audio) = self.voice.cached(piece) {
                                    run.tape.push(Taped::whole(audio));
                                    continue;
                                }
                                pending.push(self.synthesize(piece, index, cache_as.clone()));
                                run.tape.push(Taped::default());
                            }
                        }
                        Some(Err(err)) => return Err(err),
                        None => source_done = true,
                    }
                }
                (at, chunk) = next_chunk(&mut pending), if !pending.is_empty() => match chunk {
                    Some(Ok(audio)) => run.tape[pending[at].index].append(&audio),
                    Some(Err(err)) => return Err(err.into()),
                    None => {
                        let done = pending.remove(at);
                        let whole = run.tape[done.index].finish();
                        if let Some(text) = done.cache_as {
                            self.voice.remember(&text, whole);
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
            let heard = self.heard.phrases();
            run.hear(heard);
            let next = run.next();
            if run.playing && run.all_sent() {
                self.report_queued(run).await;
            }
            tokio::select! {
                command = run.commands.recv() => match command {
                    Some(command) => self.obey(run, command),
                    None => return,
                },
                () = self.heard.beyond(heard) => {}
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
    async fn send_next(
        &self,
        permit: queue::Permit<'_, Speech>,
        next: Option<Next>,
        run: &mut Run,
    ) {
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
                let frames = run.tape[run.phrase].len().div_ceil(FRAME_BYTES);
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
            progress: Box::new(PhraseProgress {
                index,
                sent,
                length,
            }),
        };
        let _ = self.events.send(event).await;
    }

    /// Starts fetching a phrase's audio (retried once after a failed request); the reply polls
    /// it beside the phrases ahead of it, so it downloads while they are still being sent.
    fn synthesize(&self, text: &str, index: usize, cache_as: Option<String>) -> Synthesis {
        let voice = self.voice.clone();
        let text = text.to_owned();
        let fetch = async move {
            let asked = Instant::now();
            let stream = match voice.tts.synthesize(&text).await {
                Ok(stream) => stream,
                Err(first) => {
                    tracing::warn!(error = %first, "speech synthesis failed; retrying once");
                    tokio::time::sleep(TTS_RETRY_PAUSE).await;
                    voice.tts.synthesize(&text).await?
                }
            };
            let mut first = true;
            Ok::<_, TtsError>(stream.inspect(move |_| {
                if std::mem::take(&mut first) {
                    let waited = asked.elapsed().as_secs_f64();
                    voice.metrics.tts_first_byte.observe(waited);
                }
            }))
        };
        let audio = futures::stream::once(fetch).try_flatten().boxed();
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
        let (tx, rx) = queue::bounded::<Result<String, ReplyError>>(16);
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

/// The next audio chunk of any phrase being fetched, the earliest phrase's first: where that
/// phrase is in `pending`, and the chunk (`None` once its audio is complete).
fn next_chunk(
    pending: &mut [Synthesis],
) -> impl Future<Output = (usize, Option<Result<Bytes, TtsError>>)> + '_ {
    std::future::poll_fn(move |cx| {
        for (at, synthesis) in pending.iter_mut().enumerate() {
            if let Poll::Ready(chunk) = synthesis.audio.poll_next_unpin(cx) {
                return Poll::Ready((at, chunk));
            }
        }
        Poll::Pending
    })
}
