//! The per-call task: one Twilio Media Stream, one owner of the call's state.
//!
//! The stream's events ([`MediaStream`]), transcripts, reply progress and time feed the brain in
//! [`turns`], which decides everything; this task carries out its actions: replies start and
//! stop through the speaker (`speaker.rs`), and the call ends (`end.rs`) when the stream does,
//! the server drains, or the brain hangs up.

mod end;
mod hearing;
pub mod reply;
pub mod settings;
mod speaker;
pub mod turns;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::stream::SplitSink;
use futures::StreamExt;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::{CallEvent, CallObserver};
use crate::metrics::{Metrics, Outcome};
use crate::record::publish::Publisher;
use crate::record::{Recorder, Tap};
pub use crate::store::mirror;
use crate::store::{CallSid, Store};
use crate::stt::{Recogniser, SttStream};
use crate::tools::stream::tool_calls_of;
use crate::tools::{Step, Toolbox, Transfer};
use crate::twilio::media::Start;
use crate::twilio::stream::{call_span, MediaStream, StreamEvent, START_TIMEOUT};
use crate::woken::Woken;
use end::EndReason;
use reply::{CallTools, PhraseProgress, ReplyError, ReplyEvent, Script, Voice};
use speaker::Speaker;
pub use turns::STT_APOLOGY;
use turns::{
    Action, Goodbye, IdlePolicy, IdleStep, InterruptionPolicy, ReplyFailure, ReplyId,
    TurnDetection, Turns,
};

/// What every call needs, shared read-only by all calls.
#[derive(Debug)]
pub struct CallServices {
    /// Speech recognition: Deepgram live v1, or Flux with `TURN_DETECTION=flux`.
    pub stt: Recogniser,
    /// The model and the voice.
    pub voice: Arc<Voice>,
    /// Spoken when the stream starts.
    pub greeting: String,
    /// Silence that ends the caller's turn.
    pub silence_timeout: Duration,
    /// Whether Deepgram's end of speech ends the turn before the silence timer.
    pub turn_detection: TurnDetection,
    /// The assistant's instructions, the greeting included ([`crate::store::instructions`]).
    pub system_prompt: Arc<str>,
    /// Said when a reply cannot be produced.
    pub fallback_phrase: String,
    /// What to do about a caller who stays silent; `None` never checks on them.
    pub idle: Option<IdlePolicy>,
    /// How interruptions are told from acknowledgements.
    pub interruptions: InterruptionPolicy,
    /// Whether answers are prepared before the turn ends (`PREEMPTIVE_GENERATION`).
    pub preemptive: bool,
    /// Cancelled when the server ends the calls still in progress (end of a drain).
    pub shutdown: CancellationToken,
    /// Counters and latency histograms shared by every call.
    pub metrics: Arc<Metrics>,
    /// Who watches calls as they happen (the demo, `replay`); `None` when nobody does.
    pub observer: Option<CallObserver>,
    /// Saves every call into `RECORD_DIR`; `None` when it is not set.
    pub recorder: Option<Arc<Recorder>>,
    /// Where each call's conversation is copied when `REDIS_URL` is set, so its record outlives
    /// this instance ([`mirror`]); `None` keeps it in the call's task only.
    pub mirror: Option<Store>,
    /// Where a call records its next step for `/stream_ended` (memory or Redis).
    pub store: Store,
    /// The tools offered to the model (`end_call` always).
    pub toolbox: Arc<Toolbox>,
    /// Where `transfer_call` dials, when `TRANSFER_TO` is set.
    pub transfer: Option<Transfer>,
}

/// Serves one Media Stream from its first message to its end.
pub async fn run(socket: WebSocket, services: Arc<CallServices>) {
    let (sink, socket) = socket.split();
    let tap = services.recorder.as_ref().map(|r| r.open(Instant::now()));
    let mut stream = MediaStream::new(socket);
    if services.stt.takes_mulaw() {
        stream = stream.undecoded();
    }
    if let Some(tap) = &tap {
        stream = stream.copying_to(tap.clone());
    }
    let Some(start) = stream.start(START_TIMEOUT).await else {
        return;
    };
    let span = call_span(&start);
    async move {
        tracing::info!("call connected: media stream started");
        // Built and run in one expression: a `Call` kept in a local beside the future that
        // owns it would make every call's task hold room for it twice.
        Call::new(start, services, sink, tap).run(stream).await;
    }
    .instrument(span)
    .await;
}

/// One call's state, owned by its task.
struct Call {
    /// Shared providers and settings.
    services: Arc<CallServices>,
    /// The brain.
    turns: Turns,
    /// Caller audio to speech recognition, and transcripts back (its socket is written and
    /// read from this task).
    stt: SttStream,
    /// Starts and stops replies, through the socket's writer.
    speaker: Speaker,
    /// When the stream started, for the summary.
    started: Instant,
    /// Where the call's events go.
    publisher: Publisher,
    /// Copies the conversation to the shared store, when there is one.
    mirror: Option<mirror::Mirror>,
    /// The brain hung up, and why: the call ends before its next event.
    hung_up: Option<Goodbye>,
    /// Twilio's id of the call.
    call_sid: String,
}

impl Call {
    fn new(
        start: Start,
        services: Arc<CallServices>,
        sink: SplitSink<WebSocket, Message>,
        tap: Option<Tap>,
    ) -> Self {
        let publisher = Publisher::new(services.observer.clone(), tap.clone(), &start.call_sid);
        let started = CallEvent::Started {
            call_sid: start.call_sid.clone(),
            stream_sid: start.stream_sid.clone(),
        };
        let stt = services.stt.start();
        let mirror = services.mirror.clone().and_then(|store| {
            let call = CallSid::parse(&start.call_sid);
            if call.is_none() {
                tracing::warn!("callSid unusable as a store key: the conversation is not copied");
            }
            call.map(|call| mirror::Mirror::start(store, call))
        });
        let tools = Arc::new(CallTools {
            toolbox: services.toolbox.clone(),
            call_sid: start.call_sid.clone(),
            transfer_phrase: services
                .transfer
                .as_ref()
                .map_or_else(String::new, |t| t.phrase.clone()),
            fallback: services.fallback_phrase.clone(),
        });
        let speaker = Speaker::new(
            services.voice.clone(),
            Some(tools),
            sink,
            start.stream_sid,
            tap,
        );
        let mut turns = Turns::new(services.silence_timeout, services.system_prompt.clone())
            .with_detection(services.turn_detection)
            .with_fallback(services.fallback_phrase.clone())
            .with_interruptions(services.interruptions.clone())
            .with_preemptive(services.preemptive);
        if let Some(idle) = services.idle.clone() {
            turns = turns.with_idle(idle);
        }
        publisher.publish(started);
        Self {
            services,
            turns,
            stt,
            speaker,
            started: Instant::now(),
            publisher,
            mirror,
            hung_up: None,
            call_sid: start.call_sid,
        }
    }

    async fn run(mut self, mut stream: MediaStream) {
        let greeting = self.services.greeting.clone();
        let actions = self.turns.start(&greeting);
        self.apply(actions);
        // Have the fallback phrase's audio ready before a provider fails, not after. (The idle
        // phrases are cached the first time they are said, like the greeting: a silent caller
        // can wait the voice's first byte.)
        let voice = self.services.voice.clone();
        let mut fixed = vec![self.services.fallback_phrase.clone()];
        if self.services.toolbox.has_operator_tools() {
            fixed.push(crate::tools::HOLDING_PHRASE.to_owned());
        }
        tokio::spawn(async move {
            for text in fixed {
                voice.prefetch(&text).await;
            }
        });
        // Made once, from the call's own child of the server-wide token: a new future each
        // turn of the loop joined and left that token's waiters on every frame of every call,
        // and polling the shared token itself takes its lock, which every call would share.
        // Polled only once it woke the task: each poll of a token locks it twice.
        let shutdown = self.services.shutdown.child_token().cancelled_owned();
        tokio::pin!(shutdown);
        let mut shutdown = Woken::new(shutdown);
        // One timer for the brain's deadlines, moved only when the deadline moves: a new timer
        // each turn of the loop entered and left the timer wheel on every frame. Polled only
        // when it fired or moved.
        let tick = sleep_until(Instant::now());
        tokio::pin!(tick);
        let mut tick = Woken::new(tick);
        let mut armed = None;
        let reason = loop {
            if let Some(goodbye) = self.hung_up {
                break EndReason::Goodbye(goodbye);
            }
            let deadline = self.turns.next_deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    tick.inner_mut().as_mut().reset(at);
                }
                armed = deadline;
            }
            tokio::select! {
                () = &mut shutdown => break EndReason::ServerShutdown,
                event = stream.next() => match event {
                    StreamEvent::End(end) => break EndReason::Stream(end),
                    event => self.on_twilio(event),
                },
                Some(event) = self.stt.next() => self.on_stt(event),
                Some(event) = self.speaker.events.recv() => self.on_reply(event),
                () = &mut tick, if armed.is_some() => {
                    let actions = self.turns.on_tick(Instant::now());
                    self.apply(actions);
                }
            }
            self.count_interruptions();
            self.mirror_new_exchanges();
        };
        // Boxed: the ending (summary, store, the writer's grace) is the largest future of the
        // call; inline, every call's task would hold room for it from its first frame.
        Box::pin(self.end(reason, stream.malformed())).await;
    }

    /// Handles one event of the stream (its end is handled by the loop).
    fn on_twilio(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Media(frame) => {
                if !self.stt.send_audio(frame.audio) && self.stt.dropped_frames() % 50 == 1 {
                    tracing::warn!(
                        dropped = self.stt.dropped_frames(),
                        "speech recognition is behind: caller audio dropped"
                    );
                }
            }
            StreamEvent::Mark(name) => {
                let was_speaking = self.turns.is_speaking();
                let actions = self.turns.on_mark(&name, Instant::now());
                if was_speaking && !self.turns.is_speaking() {
                    tracing::debug!(mark = %name, "the caller heard the whole reply");
                }
                self.apply(actions);
                self.retire_finished();
                if let Some((id, heard)) = self.turns.heard_phrases() {
                    self.speaker.heard(id, heard);
                }
            }
            StreamEvent::Dtmf(digit) => {
                tracing::info!(digit = %digit, "caller pressed a key");
                let actions = self.turns.on_dtmf(&digit, Instant::now());
                self.publisher.publish(CallEvent::Dtmf { digit });
                self.apply(actions);
            }
            StreamEvent::End(_) => {}
        }
    }

    fn on_reply(&mut self, event: ReplyEvent) {
        match event {
            ReplyEvent::Phrase { id, text } => {
                if self.turns.on_phrase(id, &text) {
                    tracing::info!(reply = id.0, %text, "assistant says");
                    self.publisher
                        .publish(CallEvent::Phrase { reply: id.0, text });
                }
            }
            ReplyEvent::FirstAudio { id } => {
                let turn_latency = self.turns.on_first_audio(id, Instant::now());
                if let Some(latency) = turn_latency {
                    let metrics = &self.services.metrics;
                    metrics.turn_latency.observe(latency.as_secs_f64());
                }
                let reply = id.0;
                let event = CallEvent::FirstAudio {
                    reply,
                    turn_latency,
                };
                self.publisher.publish(event);
            }
            ReplyEvent::PhraseAudio { id, progress } => {
                let PhraseProgress {
                    index,
                    sent,
                    length,
                } = *progress;
                match length {
                    None => self.turns.on_phrase_sent(id, index, sent),
                    Some(length) => self.turns.on_phrase_queued(id, index, sent, length),
                }
            }
            ReplyEvent::Queued { id, phrases } => {
                tracing::debug!(reply = id.0, phrases, "reply fully queued");
                let actions = self.turns.on_reply_queued(id, Instant::now());
                self.apply(actions);
                self.retire_finished();
            }
            ReplyEvent::ToolRound { id, messages } => {
                for (name, arguments, result) in tool_calls_of(&messages) {
                    tracing::info!(reply = id.0, tool = %name, %arguments, %result, "tool called");
                    let event = CallEvent::ToolCall {
                        reply: id.0,
                        name,
                        arguments,
                        result,
                    };
                    self.publisher.publish(event);
                }
                self.turns.on_tool_round(id, messages);
            }
            ReplyEvent::Step { id, step } => {
                let why = match step {
                    Step::Continue => return,
                    Step::End => Goodbye::Ended,
                    Step::Transfer { reason } => {
                        tracing::info!(reply = id.0, %reason, "the assistant transfers the call once its words are heard");
                        Goodbye::Transferred
                    }
                };
                let actions = self.turns.on_goodbye(id, why, Instant::now());
                self.apply(actions);
            }
            ReplyEvent::Failed { id, error } => self.on_reply_failed(id, &error),
        }
    }

    /// A reply failed: reported, and the brain decides what the caller hears.
    fn on_reply_failed(&mut self, id: ReplyId, error: &ReplyError) {
        self.speaker.failed(id);
        let (provider, kind) = error.kind();
        self.services.metrics.provider_error(provider, &kind);
        let what = format!("reply {} failed: {error}", id.0);
        self.publisher.publish(CallEvent::Problem { what });
        let failure = match error {
            ReplyError::Llm(_) => ReplyFailure::Model,
            ReplyError::Tts(_) => ReplyFailure::Voice {
                fallback_cached: self
                    .services
                    .voice
                    .has_cached(&self.services.fallback_phrase),
            },
        };
        let actions = self.turns.on_reply_failed(id, failure, Instant::now());
        if actions.iter().any(|a| matches!(a, Action::Say { .. })) {
            tracing::error!(reply = id.0, %error, "reply failed; telling the caller and listening again");
        } else {
            tracing::error!(reply = id.0, %error, "reply failed; nothing could be said, listening again");
        }
        self.apply(actions);
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Say { id, text } => self.speaker.start(id, Script::Say(text), false),
                Action::Answer { id, messages } => {
                    if let Some(turn) = messages.last() {
                        self.turn_ended(turn.content.clone());
                    }
                    self.speaker.start(id, Script::Answer(messages), false);
                }
                Action::Prepare { id, messages } => {
                    tracing::debug!(reply = id.0, "preparing the answer before the turn ends");
                    self.speaker.start(id, Script::Answer(messages), true);
                }
                Action::Release { id, text, phrases } => {
                    tracing::debug!(reply = id.0, "the prepared answer goes out");
                    self.turn_ended(text);
                    self.speaker.play(id, 0, 0);
                    for text in phrases {
                        tracing::info!(reply = id.0, %text, "assistant says");
                        self.publisher
                            .publish(CallEvent::Phrase { reply: id.0, text });
                    }
                }
                Action::Interrupt { id, heard, hold } => {
                    self.speaker.interrupt(id, hold);
                    match &heard {
                        Some(heard) => {
                            tracing::info!(reply = id.0, %heard, "the caller heard this much before interrupting")
                        }
                        None => tracing::info!(
                            reply = id.0,
                            "interrupted before anything was audible: the caller's turn goes on"
                        ),
                    }
                    self.publisher
                        .publish(CallEvent::BargeIn { reply: id.0, heard });
                }
                Action::Resume { id, from, take } => {
                    tracing::info!(reply = id.0, from, "only a backchannel: the reply resumes");
                    self.speaker.play(id, from, take);
                    let reply = id.0;
                    self.publisher.publish(CallEvent::Resumed { reply, from });
                }
                Action::Discard { id } => self.speaker.retire(id),
                Action::Idle(IdleStep::Prompt(n)) => {
                    tracing::info!(
                        prompt = n,
                        "the caller is silent: asking if they are still there"
                    );
                    self.services.metrics.idle_prompts.inc();
                    self.publisher.publish(CallEvent::IdlePrompt { n });
                }
                Action::Idle(IdleStep::Goodbye) => {
                    tracing::info!("the caller stayed silent through every prompt: saying goodbye");
                    self.publisher.publish(CallEvent::IdleGoodbye);
                }
                Action::Hangup(why) => self.hung_up = Some(why),
            }
        }
    }

    /// The caller's turn ended with `text`: logged, counted and published.
    fn turn_ended(&mut self, text: String) {
        self.services.metrics.turns.inc();
        let turn = self.turns.turns();
        tracing::info!(turn, %text, "caller's turn ended");
        self.publisher.publish(CallEvent::TurnEnded { turn, text });
    }

    /// Counts the outcomes of the brain's latest interruptions and preemptive replies.
    fn count_interruptions(&mut self) {
        for outcome in self.turns.preemptives() {
            let outcome = Outcome {
                outcome: outcome.label().to_owned(),
            };
            let metrics = &self.services.metrics;
            metrics.preemptive_replies.get_or_create(&outcome).inc();
        }
        for outcome in self.turns.counted() {
            let outcome = Outcome {
                outcome: outcome.label().to_owned(),
            };
            let metrics = &self.services.metrics;
            metrics.interruptions.get_or_create(&outcome).inc();
        }
    }

    /// A reply the brain is done with (heard to the end, or answered nothing) lets go of the
    /// audio it kept for resuming.
    fn retire_finished(&mut self) {
        self.speaker.retire_unless(self.turns.current_reply());
    }

    /// Hands exchanges the brain added to its history since last time to the mirror.
    fn mirror_new_exchanges(&mut self) {
        if let Some(mirror) = &mut self.mirror {
            mirror.copy_new(self.turns.exchanges(), self.turns.remembered());
        }
    }
}
