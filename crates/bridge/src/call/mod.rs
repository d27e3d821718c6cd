//! The per-call task: one Twilio Media Stream, one owner of the call's state.
//!
//! Twilio's socket is read here; caller audio goes to speech recognition; transcripts, the
//! silence timer and reply progress feed the brain in [`turns`]; its actions start replies
//! ([`reply`]) or interrupt them through the socket's only writer ([`writer`]).

pub mod mirror;
pub mod reply;
pub mod turns;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::{CallEvent, CallObserver, CallSummary, ObservedEvent};
use crate::metrics::Metrics;
use crate::record::{Recorder, Tap};
use crate::store::{CallSid, Store};
use crate::stt::deepgram::{DeepgramStt, SttStream};
use crate::stt::SttEvent;
use crate::twilio::media::Start;
use crate::twilio::stream::{call_span, MediaStream, StreamEnd, StreamEvent, START_TIMEOUT};
use reply::{ReplyError, ReplyEvent, Script, Voice};
use turns::{Action, Heard, ReplyId, TurnDetection, Turns};

/// How long the writer may take to finish when the call ends.
const WRITER_GRACE: Duration = Duration::from_millis(300);
/// What the caller hears when speech recognition cannot be reached; then the call ends.
pub const STT_APOLOGY: &str = "I'm sorry, I can't hear you right now because of a technical \
problem. Please call again in a few minutes. Goodbye.";
/// Longest wait for a farewell to play before the call is ended anyway.
const FAREWELL_LIMIT: Duration = Duration::from_secs(20);

/// What every call needs, shared read-only by all calls.
#[derive(Debug)]
pub struct CallServices {
    /// Speech recognition settings.
    pub stt: DeepgramStt,
    /// The model and the voice.
    pub voice: Arc<Voice>,
    /// Spoken when the stream starts.
    pub greeting: String,
    /// Silence that ends the caller's turn.
    pub silence_timeout: Duration,
    /// Whether Deepgram's end of speech ends the turn before the silence timer.
    pub turn_detection: TurnDetection,
    /// The assistant's instructions.
    pub system_prompt: String,
    /// Said when a reply cannot be produced.
    pub fallback_phrase: String,
    /// Cancelled when the server ends the calls still in progress (end of a drain).
    pub shutdown: CancellationToken,
    /// Counters and latency histograms shared by every call.
    pub metrics: Arc<Metrics>,
    /// Who watches calls as they happen (the demo, `replay`); `None` when nobody does.
    pub observer: Option<CallObserver>,
    /// Saves every call into `RECORD_DIR`; `None` when it is not set.
    pub recorder: Option<Recorder>,
    /// Where each call's conversation is copied when `REDIS_URL` is set, so its record outlives
    /// this instance ([`mirror`]); `None` keeps it in the call's task only.
    pub mirror: Option<Store>,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    /// Twilio stopped the stream, or its socket closed or failed.
    Stream(StreamEnd),
    /// Speech recognition could not be reached: the caller was told and the call ended.
    SttUnavailable,
    /// The server ended the calls still in progress.
    ServerShutdown,
}

impl EndReason {
    /// The `outcome` label of the calls counter.
    fn label(self) -> &'static str {
        match self {
            EndReason::Stream(end) => end.label(),
            EndReason::SttUnavailable => "stt_unavailable",
            EndReason::ServerShutdown => "server_shutdown",
        }
    }

    /// The log's words for it.
    fn describe(self) -> &'static str {
        match self {
            EndReason::Stream(end) => end.describe(),
            EndReason::SttUnavailable => {
                "speech recognition unavailable: the caller was told, the call ended"
            }
            EndReason::ServerShutdown => "the server is shutting down",
        }
    }
}

/// Serves one Media Stream from its first message to its end.
pub async fn run(socket: WebSocket, services: Arc<CallServices>) {
    let (sink, socket) = socket.split();
    let tap = services.recorder.as_ref().map(|r| r.open(Instant::now()));
    let mut stream = MediaStream::new(socket, tap.clone());
    let Some(start) = stream.start(START_TIMEOUT).await else {
        return;
    };
    let span = call_span(&start);
    async move {
        tracing::info!("call connected: media stream started");
        let call = Call::new(start, services, sink, tap);
        call.run(stream).await;
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
    /// Caller audio to speech recognition.
    stt: SttStream,
    /// Transcripts coming back.
    stt_events: mpsc::Receiver<SttEvent>,
    /// The socket's writer.
    writer: writer::Writer,
    /// Replies report here; the call keeps a sender so the channel never closes under it.
    reply_tx: mpsc::Sender<ReplyEvent>,
    reply_rx: mpsc::Receiver<ReplyEvent>,
    /// The reply in progress and the token that cancels it.
    reply: Option<(ReplyId, CancellationToken)>,
    /// Cancels everything the call started.
    cancel: CancellationToken,
    /// When the stream started, for the summary.
    started: Instant,
    /// The call ends once this reply (a farewell) has been heard, or at the deadline.
    hang_up_after: Option<(ReplyId, Instant)>,
    /// The fallback phrase being spoken, so its own failure does not start another.
    fallback: Option<ReplyId>,
    /// When the caller's latest final words ended (their audio, on our clock).
    speech_end: Option<Instant>,
    /// The answer being prepared and when the speech it answers ended, for the turn latency.
    answering: Option<(ReplyId, Instant)>,
    /// Turn latencies of this call (end of speech → first reply audio), for the summary.
    turn_latencies: Vec<Duration>,
    /// The call's id, on every event it publishes.
    call_sid: Arc<str>,
    /// This call's recording, when `RECORD_DIR` is set.
    tap: Option<Tap>,
    /// Copies the conversation to the shared store, when there is one.
    mirror: Option<mirror::Mirror>,
    /// Exchanges of the history already handed to `mirror` (see [`Turns::remembered`]).
    mirrored: u64,
}

impl Call {
    fn new(
        start: Start,
        services: Arc<CallServices>,
        sink: futures::stream::SplitSink<WebSocket, Message>,
        tap: Option<Tap>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let call_sid = Arc::from(start.call_sid.as_str());
        let started = CallEvent::Started {
            call_sid: start.call_sid.clone(),
            stream_sid: start.stream_sid.clone(),
        };
        let (stt_tx, stt_events) = mpsc::channel(64);
        // Not a child of `cancel`: when the call ends, the recogniser still gets its CloseStream.
        let stt = services.stt.start(stt_tx, CancellationToken::new());
        let writer = writer::spawn(sink, start.stream_sid, cancel.child_token(), tap.clone());
        let (reply_tx, reply_rx) = mpsc::channel(16);
        let turns = Turns::new(services.silence_timeout, services.system_prompt.clone())
            .with_detection(services.turn_detection);
        let mirror = services.mirror.clone().and_then(|store| {
            let call = CallSid::parse(&start.call_sid);
            if call.is_none() {
                tracing::warn!("callSid unusable as a store key: the conversation is not copied");
            }
            call.map(|call| mirror::Mirror::start(store, call))
        });
        let call = Self {
            services,
            turns,
            stt,
            stt_events,
            writer,
            reply_tx,
            reply_rx,
            reply: None,
            cancel,
            started: Instant::now(),
            hang_up_after: None,
            fallback: None,
            speech_end: None,
            answering: None,
            turn_latencies: Vec::new(),
            call_sid,
            tap,
            mirror,
            mirrored: 0,
        };
        call.publish(started);
        call
    }

    /// Tells the observer and the recording, without ever waiting for either.
    fn publish(&self, event: CallEvent) {
        emit(&self.services, self.tap.as_ref(), &self.call_sid, event);
    }

    async fn run(mut self, mut stream: MediaStream) {
        let greeting = self.services.greeting.clone();
        let actions = self.turns.start(&greeting);
        self.apply(actions);
        // Have the fallback phrase's audio ready before a provider fails, not after.
        let (voice, fallback) = (
            self.services.voice.clone(),
            self.services.fallback_phrase.clone(),
        );
        tokio::spawn(async move { voice.prefetch(&fallback).await });
        let reason = loop {
            if let Some((farewell, by)) = self.hang_up_after {
                if self.turns.current_reply() != Some(farewell) || Instant::now() >= by {
                    break EndReason::SttUnavailable;
                }
            }
            let deadline = self
                .turns
                .next_deadline()
                .or(self.hang_up_after.map(|(_, by)| by));
            tokio::select! {
                () = self.services.shutdown.cancelled() => break EndReason::ServerShutdown,
                event = stream.next() => match event {
                    StreamEvent::End(end) => break EndReason::Stream(end),
                    event => self.on_twilio(event),
                },
                Some(event) = self.stt_events.recv() => self.on_stt(event),
                Some(event) = self.reply_rx.recv() => self.on_reply(event),
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let actions = self.turns.on_tick(Instant::now());
                    self.apply(actions);
                }
            }
            self.mirror_new_exchanges();
        };
        self.end(reason, stream.malformed()).await;
    }

    /// Handles one event of the stream.
    fn on_twilio(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Media(frame) => {
                if !self.stt.send_audio(frame.pcm) && self.stt.dropped_frames() % 50 == 1 {
                    tracing::warn!(
                        dropped = self.stt.dropped_frames(),
                        "speech recognition is behind: caller audio dropped"
                    );
                }
            }
            StreamEvent::Mark(name) => {
                let was_speaking = self.turns.is_speaking();
                self.turns.on_mark(&name);
                if was_speaking && !self.turns.is_speaking() {
                    tracing::debug!(mark = %name, "the caller heard the whole reply");
                }
            }
            StreamEvent::Dtmf(digit) => {
                tracing::info!(digit = %digit, "caller pressed a key");
                let actions = self.turns.on_dtmf(&digit);
                self.publish(CallEvent::Dtmf { digit });
                self.apply(actions);
            }
            StreamEvent::End(_) => {}
        }
    }

    fn on_stt(&mut self, event: SttEvent) {
        match event {
            SttEvent::Transcript {
                text,
                is_final,
                speech_final,
                audio_end,
                audio_start,
                ..
            } => {
                let now = Instant::now();
                if is_final && !text.trim().is_empty() {
                    tracing::debug!(%text, speech_final, "caller said");
                    self.publish(CallEvent::Transcript {
                        text: text.clone(),
                        audio_start,
                        audio_end,
                    });
                    if let Some(end) = audio_end {
                        let metrics = &self.services.metrics;
                        metrics
                            .stt_final_latency
                            .observe(now.saturating_duration_since(end).as_secs_f64());
                        self.speech_end = Some(end.min(now));
                    }
                }
                let heard = Heard::from_flags(is_final, speech_final);
                let actions = self.turns.on_transcript(&text, heard, now);
                let interruptions = actions
                    .iter()
                    .filter(|a| matches!(a, Action::Interrupt { .. }))
                    .count();
                self.services.metrics.barge_ins.inc_by(interruptions as u64);
                self.apply(actions);
            }
            SttEvent::UtteranceEnd => {
                let actions = self.turns.on_utterance_end(Instant::now());
                self.apply(actions);
            }
            SttEvent::SpeechStarted => {}
            SttEvent::Dropped => {
                self.services
                    .metrics
                    .provider_error("deepgram_stt", "dropped");
            }
            SttEvent::Lost(err) => {
                self.services
                    .metrics
                    .provider_error("deepgram_stt", "unreachable");
                tracing::error!(%err, "speech recognition unavailable: apologising and ending the call");
                self.publish(CallEvent::Problem {
                    what: format!("speech recognition unavailable: {err}"),
                });
                let actions = self.turns.say(STT_APOLOGY);
                if let Some(Action::Say { id, .. }) = actions.last() {
                    self.hang_up_after = Some((*id, Instant::now() + FAREWELL_LIMIT));
                }
                self.apply(actions);
            }
        }
    }

    fn on_reply(&mut self, event: ReplyEvent) {
        match event {
            ReplyEvent::Phrase { id, text } => {
                tracing::info!(reply = id.0, %text, "assistant says");
                self.turns.on_phrase(id, &text);
                self.publish(CallEvent::Phrase { reply: id.0, text });
            }
            ReplyEvent::FirstAudio { id } => {
                let mut turn_latency = None;
                if let Some((answering, speech_end)) = self.answering {
                    if answering == id {
                        let latency = speech_end.elapsed();
                        self.services
                            .metrics
                            .turn_latency
                            .observe(latency.as_secs_f64());
                        self.turn_latencies.push(latency);
                        self.answering = None;
                        turn_latency = Some(latency);
                    }
                }
                self.publish(CallEvent::FirstAudio {
                    reply: id.0,
                    turn_latency,
                });
            }
            ReplyEvent::Queued { id, phrases } => {
                tracing::debug!(reply = id.0, phrases, "reply fully queued");
                self.turns.on_reply_queued(id);
            }
            ReplyEvent::Failed { id, error } => {
                self.turns.on_reply_failed(id);
                if self
                    .reply
                    .as_ref()
                    .is_some_and(|(current, _)| *current == id)
                {
                    self.reply = None;
                }
                self.on_reply_failed(id, &error);
            }
        }
    }

    /// A reply failed: the caller hears the fallback phrase (when it can be spoken) and the call
    /// keeps listening.
    fn on_reply_failed(&mut self, id: ReplyId, error: &ReplyError) {
        let (provider, kind) = error.kind();
        self.services.metrics.provider_error(provider, &kind);
        self.publish(CallEvent::Problem {
            what: format!("reply {} failed: {error}", id.0),
        });
        let speakable = match error {
            ReplyError::Llm(_) => true,
            // With the voice itself failing, only audio made earlier can still be played.
            ReplyError::Tts(_) => self
                .services
                .voice
                .has_cached(&self.services.fallback_phrase),
        };
        if self.fallback == Some(id) || self.hang_up_after.is_some() || !speakable {
            tracing::error!(reply = id.0, %error, "reply failed; nothing could be said, listening again");
            return;
        }
        tracing::error!(reply = id.0, %error, "reply failed; telling the caller and listening again");
        let fallback = self.services.fallback_phrase.clone();
        let actions = self.turns.say(&fallback);
        if let Some(Action::Say { id, .. }) = actions.last() {
            self.fallback = Some(*id);
        }
        self.apply(actions);
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Say { id, text } => self.start_reply(id, Script::Say(text)),
                Action::Answer { id, messages } => {
                    self.services.metrics.turns.inc();
                    self.answering = Some((id, self.speech_end.unwrap_or_else(Instant::now)));
                    if let Some(turn) = messages.last() {
                        tracing::info!(turn = self.turns.turns(), text = %turn.content, "caller's turn ended");
                        self.publish(CallEvent::TurnEnded {
                            turn: self.turns.turns(),
                            text: turn.content.clone(),
                        });
                    }
                    self.start_reply(id, Script::Answer(messages));
                }
                Action::Interrupt { id } => self.interrupt(id),
            }
        }
    }

    fn start_reply(&mut self, id: ReplyId, script: Script) {
        let token = self.cancel.child_token();
        reply::spawn(
            id,
            script,
            self.services.voice.clone(),
            self.writer.speech.clone(),
            self.reply_tx.clone(),
            token.clone(),
        );
        if let Some((_, old)) = self.reply.replace((id, token)) {
            old.cancel();
        }
    }

    /// Barge-in: the reply stops producing, its queued audio is dropped and Twilio clears.
    fn interrupt(&mut self, id: ReplyId) {
        if let Some((current, token)) = self.reply.take() {
            if current == id {
                token.cancel();
            } else {
                self.reply = Some((current, token));
            }
        }
        if self
            .writer
            .control
            .try_send(writer::Control::Clear { reply: id })
            .is_err()
        {
            tracing::warn!("could not queue clear: writer gone or busy");
        }
        tracing::info!(
            reply = id.0,
            "caller interrupted the assistant: playback cleared"
        );
        self.publish(CallEvent::BargeIn { reply: id.0 });
    }

    /// Hands exchanges the brain added to its history since last time to the mirror. One
    /// comparison when nothing is new (every frame).
    fn mirror_new_exchanges(&mut self) {
        let total = self.turns.remembered();
        if total == self.mirrored {
            return;
        }
        let new = usize::try_from(total - self.mirrored).unwrap_or(usize::MAX);
        self.mirrored = total;
        if let Some(mirror) = &self.mirror {
            mirror.record_newest(self.turns.history(), new);
        }
    }

    async fn end(mut self, reason: EndReason, malformed: u64) {
        self.mirror_new_exchanges();
        let Self {
            services,
            turns,
            stt,
            writer,
            cancel,
            started,
            reply,
            turn_latencies,
            call_sid,
            tap,
            mirror,
            ..
        } = self;
        services.metrics.call_ended(reason.label());
        let latencies_ms: Vec<u128> = turn_latencies.iter().map(Duration::as_millis).collect();
        if let Some((_, token)) = reply {
            token.cancel();
        }
        cancel.cancel();
        let dropped_audio = stt.dropped_frames();
        let mirrored = async {
            if let Some(mirror) = mirror {
                mirror.finish().await;
            }
        };
        let (_, _, ()) = tokio::join!(stt.finish(), timeout(WRITER_GRACE, writer.task), mirrored);
        tracing::info!(
            duration_s = format!("{:.1}", started.elapsed().as_secs_f64()),
            turns = turns.turns(),
            barge_ins = turns.barge_ins(),
            turn_latencies_ms = ?latencies_ms,
            keys = turns.keyed(),
            malformed,
            dropped_audio,
            "call ended: {}",
            reason.describe()
        );
        let summary = CallSummary {
            duration: started.elapsed(),
            turns: turns.turns(),
            barge_ins: turns.barge_ins(),
            turn_latencies,
            malformed,
        };
        let reason = reason.label();
        emit(
            &services,
            tap.as_ref(),
            &call_sid,
            CallEvent::Ended { reason, summary },
        );
    }
}

/// Hands `event` to the call's recording and to the observer, never waiting for either.
fn emit(services: &CallServices, tap: Option<&Tap>, call_sid: &Arc<str>, event: CallEvent) {
    let Some(observer) = &services.observer else {
        if let Some(tap) = tap {
            tap.event(event);
        }
        return;
    };
    if let Some(tap) = tap {
        tap.event(event.clone());
    }
    observer.publish(ObservedEvent {
        at: Instant::now(),
        call_sid: call_sid.clone(),
        event,
    });
}
