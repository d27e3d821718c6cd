//! Relay mode (`MODE=relay`): Twilio ConversationRelay listens and speaks, we think.
//!
//! The webhook answers `<Connect action="…/stream_ended"><ConversationRelay url="wss://…/relay"
//! welcomeGreeting="…" …/></Connect>` ([`connect`]). Twilio then opens `/relay` and exchanges
//! text with us (PROTOCOLS §9): one socket is one session, served by [`run`] in its own task.
//! Its brain is [`session`] (sans-IO); its replies ([`reply`]) use the streaming call's round
//! loop and tools; every message passes through [`wire`]. The conversation is kept in the store
//! by call, so a session of the same call on another instance goes on where it was. An end or a
//! transfer records the next step as the streaming call does, lets the farewell be spoken, then
//! sends `end`; Twilio requests the `<Connect action>` (`/stream_ended`), which dials or hangs up.
//!
//! A call outlives its session ([`resume`]): Twilio does not reconnect a dropped socket, so when
//! a session fails with the call up, `/stream_ended` answers a new `<ConversationRelay>` and the
//! call goes on in a new session with its history. When the instance drains (and the store is
//! shared), each session moves at its first quiet moment: the history written, a resumption
//! recorded, `end` with `{"reason":"moved"}`; the new session opens wherever the balancer sends
//! it. A session never quiet before `DRAIN_TIMEOUT_S` ends then, as before.
//!
//! Token by token or phrase by phrase? Measured with the Mistral stand-in at its default pace
//! (first piece at 250 ms, the rest spread to 600 ms, word-sized pieces; 20 replies each,
//! `cargo test --test behaviour relay::first_text -- --ignored --nocapture`), the first `text`
//! leaves 255 ms after the turn with [`Chunks::Tokens`] (p90 259 ms), against 280 ms (a short
//! first phrase) to 408 ms (a one-sentence answer) with [`Chunks::Phrases`]: a phrase waits for
//! its last word. Both send the same words. Twilio's best practices say to stream tokens as they
//! come, its voice doing its own phrasing, so tokens it is.

pub mod reply;
pub mod resume;
pub mod session;
pub mod settings;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::{CallEvent, CallObserver, CallSummary};
use crate::llm::mistral::{LlmError, Mistral};
use crate::metrics::{Metrics, Outcome};
use crate::queue;
use crate::record::publish::Publisher;
use crate::record::{Recorder, Tap};
use crate::store::mirror::Mirror;
use crate::store::{CallSid, Exchange, NextStep, Store};
use crate::tools::stream::{tool_calls_of, CallTools};
use crate::tools::{Step, Toolbox, Transfer};
use crate::twilio::relay::{Inbound, Outbound, Setup};
use crate::twilio::stream::StreamEnd;
use crate::twilio::twiml::Element;
pub use reply::Chunks;
use reply::{Replier, ReplyEvent};
use session::{Action, ReplyId, Session};
pub use settings::RelaySettings;
use wire::Wire;

/// The route Twilio's ConversationRelay connects to.
pub const RELAY_PATH: &str = "/relay";
/// How long Twilio may take to send `setup` after the socket opens.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Reply events waiting for the session task.
const REPLY_EVENTS: usize = 64;
/// How long the writer may take to send the last messages when the session ends.
const WRITER_GRACE: Duration = Duration::from_millis(500);

/// What every session needs, shared read-only by all of them.
#[derive(Debug)]
pub struct RelayServices {
    /// The model.
    pub llm: Mistral,
    /// The assistant's tools (`end_call` always).
    pub toolbox: Arc<Toolbox>,
    /// Where `transfer_call` dials, when `TRANSFER_TO` is set.
    pub transfer: Option<Transfer>,
    /// Each call's conversation and next step (memory, or Redis shared by every instance).
    pub store: Store,
    /// The assistant's instructions.
    pub system_prompt: String,
    /// Twilio's `welcomeGreeting`.
    pub greeting: String,
    /// Said when a reply cannot be produced.
    pub fallback_phrase: String,
    /// Cancelled when the server ends the sessions still in progress (end of a drain).
    pub shutdown: CancellationToken,
    /// Cancelled when the drain begins: each session moves to another instance at its next
    /// quiet moment ([`session::Session::on_drain`]). `None` when the store is this process's
    /// memory: another instance would not have the conversation, so sessions stay until they
    /// end or the drain times out.
    pub draining: Option<CancellationToken>,
    /// Counters and latencies.
    pub metrics: Arc<Metrics>,
    /// Who watches calls as they happen; `None` when nobody does.
    pub observer: Option<CallObserver>,
    /// Records every session (`RECORD_DIR`), when set.
    pub recorder: Option<Arc<Recorder>>,
    /// How the model's words are cut before they go to Twilio.
    pub chunks: Chunks,
}

/// The `<Connect>` of relay mode: `<ConversationRelay>` to `relay_url` with the greeting and
/// Twilio's voice and ears from `settings`, and `action` (the `/stream_ended` URL) for when
/// the session ends.
pub fn connect(
    action: String,
    relay_url: String,
    greeting: &str,
    settings: &RelaySettings,
    language: &str,
) -> Element {
    let interruptible = settings.relay_interruptible.as_str();
    let relay = Element::new("ConversationRelay")
        .attr("url", relay_url)
        .attr("welcomeGreeting", greeting)
        .attr("welcomeGreetingInterruptible", interruptible)
        .attr("interruptible", interruptible)
        .attr("dtmfDetection", "true")
        .attr("language", language)
        .attr("ttsProvider", settings.relay_tts_provider.as_str())
        .attr("voice", settings.relay_voice.as_str())
        .attr(
            "transcriptionProvider",
            settings.relay_transcription_provider.as_str(),
        )
        .attr("speechModel", settings.relay_speech_model.as_str());
    Element::new("Connect").attr("action", action).child(relay)
}

/// Serves one ConversationRelay session from `setup` to its end.
pub async fn run(socket: WebSocket, services: Arc<RelayServices>) {
    let tap = services
        .recorder
        .as_ref()
        .map(|r| r.open_relay(Instant::now()));
    let mut wire = Wire::new(socket, tap.clone());
    let Some(setup) = wire.setup(SETUP_TIMEOUT).await else {
        wire.finish(WRITER_GRACE).await;
        return;
    };
    let span = tracing::info_span!(
        "call",
        call_sid = %setup.call_sid,
        session_id = %setup.session_id
    );
    async move {
        tracing::info!(from = %setup.from, status = %setup.call_status, "relay session started");
        let relay = Relay::open(&setup, services, wire, tap).await;
        relay.run().await;
    }
    .instrument(span)
    .await;
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    /// Twilio closed the socket (the caller hung up, or the session failed), or it failed.
    Socket(StreamEnd),
    /// The assistant ended the call, or transferred it.
    Step(Ended),
    /// The server ended the sessions still in progress.
    ServerShutdown,
    /// The instance drains: the session moved on at a quiet moment.
    Moved,
}

/// How the assistant ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// `end_call`.
    Ended,
    /// `transfer_call`.
    Transferred,
}

impl EndReason {
    /// The `outcome` label of the calls counter (the streaming call's labels).
    fn label(self) -> &'static str {
        match self {
            EndReason::Socket(end) => end.label(),
            EndReason::Step(Ended::Ended) => "assistant_ended",
            EndReason::Step(Ended::Transferred) => "transferred",
            EndReason::ServerShutdown => "server_shutdown",
            EndReason::Moved => "moved",
        }
    }
}

/// One session's state, owned by its task.
struct Relay {
    /// Shared providers and settings.
    services: Arc<RelayServices>,
    /// The brain.
    session: Session,
    /// The socket.
    wire: Wire,
    /// Starts replies.
    replier: Replier,
    /// What replies report.
    replies: queue::Receiver<ReplyEvent>,
    /// The reply running, and how to stop it.
    running: Option<(ReplyId, CancellationToken)>,
    /// Writes the conversation to the store as exchanges become final.
    mirror: Option<Mirror>,
    /// Where the session's events go: its recording and whoever watches calls.
    publisher: Publisher,
    /// Twilio's id of the call.
    call_sid: String,
    /// When the session started.
    started: Instant,
    /// Set once the session must end.
    ended: Option<EndReason>,
    /// The drain has begun and the brain was told.
    draining: bool,
}

impl Relay {
    /// The session of `setup`'s call, with the call's conversation so far from the store.
    async fn open(
        setup: &Setup,
        services: Arc<RelayServices>,
        wire: Wire,
        tap: Option<Tap>,
    ) -> Self {
        let call = CallSid::parse(&setup.call_sid);
        let history = match &call {
            Some(call) => load_history(&services.store, call).await,
            None => {
                tracing::warn!("callSid unusable as a store key: the conversation is not kept");
                Vec::new()
            }
        };
        let (events, replies) = queue::bounded(REPLY_EVENTS);
        let replier = Replier {
            llm: services.llm.clone(),
            tools: Arc::new(CallTools {
                toolbox: services.toolbox.clone(),
                call_sid: setup.call_sid.clone(),
                transfer_phrase: services
                    .transfer
                    .as_ref()
                    .map_or_else(String::new, |t| t.phrase.clone()),
                fallback: services.fallback_phrase.clone(),
            }),
            metrics: services.metrics.clone(),
            chunks: services.chunks,
            events,
        };
        let mut session = Session::new(&services.system_prompt, &services.greeting, history);
        session.on_open(Instant::now());
        let relay = Self {
            session,
            mirror: call.map(|call| Mirror::start(services.store.clone(), call)),
            publisher: Publisher::new(services.observer.clone(), tap, &setup.call_sid),
            services,
            wire,
            replier,
            replies,
            running: None,
            call_sid: setup.call_sid.clone(),
            started: Instant::now(),
            ended: None,
            draining: false,
        };
        relay.publish(CallEvent::Started {
            call_sid: setup.call_sid.clone(),
            stream_sid: setup.session_id.clone(),
        });
        relay
    }

    /// The session's loop: one `select!` over Twilio, the replies, time and shutdown.
    async fn run(mut self) {
        // The session's own child of the server-wide token, waited on by one pinned future (see
        // `call::run`'s loop).
        let shutdown = self.services.shutdown.child_token().cancelled_owned();
        tokio::pin!(shutdown);
        let reason = loop {
            if let Some(reason) = self.ended {
                break reason;
            }
            let deadline = self.session.next_deadline();
            tokio::select! {
                () = &mut shutdown => {
                    let handoff_data = session::SHUTDOWN_HANDOFF.to_owned();
                    self.wire.send(&Outbound::End { handoff_data }).await;
                    break EndReason::ServerShutdown;
                }
                () = drain_begins(self.services.draining.as_ref()), if !self.draining => {
                    self.draining = true;
                    tracing::info!("draining: the session moves to another instance at its next quiet moment");
                    let actions = self.session.on_drain(Instant::now());
                    self.apply(actions).await;
                }
                received = self.wire.receive() => match received {
                    Ok(message) => self.on_twilio(message).await,
                    Err(end) => break EndReason::Socket(end),
                },
                Some(event) = self.replies.recv() => self.on_reply(event).await,
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let actions = self.session.on_tick(Instant::now());
                    self.apply(actions).await;
                }
            }
        };
        self.end(reason).await;
    }

    /// One message from Twilio.
    async fn on_twilio(&mut self, message: Inbound) {
        let now = Instant::now();
        let actions = match message {
            Inbound::Prompt(prompt) => {
                tracing::debug!(last = prompt.last, text = %prompt.voice_prompt, "prompt");
                self.session
                    .on_prompt(&prompt.voice_prompt, prompt.last, now)
            }
            Inbound::Dtmf(dtmf) => {
                tracing::info!(digit = %dtmf.digit, "caller pressed a key");
                self.publish(CallEvent::Dtmf {
                    digit: dtmf.digit.clone(),
                });
                self.session.on_dtmf(&dtmf.digit, now)
            }
            Inbound::Interrupt(interrupt) => {
                tracing::debug!(
                    heard = %interrupt.utterance_until_interrupt,
                    ms = ?interrupt.duration_until_interrupt_ms,
                    "Twilio says the caller interrupted"
                );
                self.session
                    .on_interrupt(&interrupt.utterance_until_interrupt, now)
            }
            Inbound::Error(error) => {
                tracing::warn!(description = %error.description, "Twilio reports an error");
                let what = format!("Twilio reports: {}", error.description);
                self.publish(CallEvent::Problem { what });
                Vec::new()
            }
            Inbound::Setup(_) => {
                tracing::warn!("second setup message ignored");
                Vec::new()
            }
            Inbound::Unknown => Vec::new(),
        };
        self.apply(actions).await;
    }

    /// What a reply reports.
    async fn on_reply(&mut self, event: ReplyEvent) {
        let now = Instant::now();
        let actions = match event {
            ReplyEvent::Text { id, token } => self.session.on_text(id, token, now),
            ReplyEvent::Round { id, messages } => {
                for (name, arguments, result) in tool_calls_of(&messages) {
                    tracing::info!(reply = id.0, tool = %name, %arguments, %result, "tool called");
                    let reply = id.0;
                    self.publish(CallEvent::ToolCall {
                        reply,
                        name,
                        arguments,
                        result,
                    });
                }
                self.session.on_round(id, messages);
                Vec::new()
            }
            ReplyEvent::Step { id, step } => {
                tracing::info!(
                    reply = id.0,
                    ?step,
                    "the assistant ends the call once its words are spoken"
                );
                self.session.on_step(id, step);
                Vec::new()
            }
            ReplyEvent::Done { id } => self.session.on_done(id, now),
            ReplyEvent::Failed { id, error } => self.on_failed(id, &error, now),
        };
        self.apply(actions).await;
    }

    /// A reply failed: counted and reported; the caller hears the fallback phrase.
    fn on_failed(&mut self, id: ReplyId, error: &LlmError, now: Instant) -> Vec<Action> {
        self.services
            .metrics
            .provider_error("mistral", &error.kind());
        tracing::error!(reply = id.0, %error, "reply failed; the caller hears the fallback phrase");
        self.publish(CallEvent::Problem {
            what: format!("reply {} failed: {error}", id.0),
        });
        let fallback = self.services.fallback_phrase.clone();
        self.session.on_failed(id, &fallback, now)
    }

    /// Carries out the brain's actions.
    async fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Answer { id, messages } => self.answer(id, messages),
                Action::Cancel { id } => self.cancel(id),
                Action::Send(message) => {
                    if let Outbound::Text { last: true, .. } = &message {
                        self.running = None;
                    }
                    self.wire.send(&message).await;
                }
                Action::Answered { id, latency } => {
                    self.services
                        .metrics
                        .turn_latency
                        .observe(latency.as_secs_f64());
                    self.publish(CallEvent::FirstAudio {
                        reply: id.0,
                        turn_latency: Some(latency),
                    });
                }
                Action::Interrupted { id, heard } => self.interrupted(id, heard),
                Action::Save { id, exchange } => self.save(id, exchange),
                Action::End { step, handoff } => self.end_session(step, handoff).await,
                Action::Move => self.move_session().await,
            }
        }
    }

    /// Starts reply `id`, stopping any other first.
    fn answer(&mut self, id: ReplyId, messages: Vec<crate::llm::ChatMessage>) {
        if let Some((old, _)) = &self.running {
            let old = *old;
            self.cancel(old);
        }
        let text = messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        self.services.metrics.turns.inc();
        let turn = self.session.turns();
        tracing::info!(turn, %text, "caller's turn ended");
        self.publish(CallEvent::TurnEnded { turn, text });
        let cancel = CancellationToken::new();
        self.replier.spawn(id, messages, cancel.clone());
        self.running = Some((id, cancel));
    }

    /// Stops reply `id` if it is the one running.
    fn cancel(&mut self, id: ReplyId) {
        if let Some((running, cancel)) = self.running.take() {
            if running == id {
                cancel.cancel();
            } else {
                self.running = Some((running, cancel));
            }
        }
    }

    /// The caller interrupted reply `id`: counted, logged and published.
    fn interrupted(&self, id: ReplyId, heard: Option<String>) {
        let metrics = &self.services.metrics;
        metrics.barge_ins.inc();
        let outcome = Outcome {
            outcome: "barge_in".to_owned(),
        };
        metrics.interruptions.get_or_create(&outcome).inc();
        match &heard {
            Some(heard) => {
                tracing::info!(reply = id.0, %heard, "the caller heard this much before interrupting")
            }
            None => tracing::info!(
                reply = id.0,
                "interrupted before anything was heard: the caller's turn goes on"
            ),
        }
        self.publish(CallEvent::BargeIn { reply: id.0, heard });
    }

    /// A final exchange: published as what the assistant said, and written to the store.
    fn save(&mut self, id: ReplyId, exchange: Exchange) {
        tracing::info!(reply = id.0, text = %exchange.assistant, "assistant said");
        self.publish(CallEvent::Phrase {
            reply: id.0,
            text: exchange.assistant.clone(),
        });
        if let Some(mirror) = &mut self.mirror {
            mirror.copy(exchange);
        }
    }

    /// The farewell was spoken: the next step is recorded for the `<Connect action>`, then
    /// Twilio is told to end the session.
    async fn end_session(&mut self, step: Step, handoff: String) {
        let (next, ended) = match (&step, &self.services.transfer) {
            (Step::Transfer { .. }, Some(transfer)) => (transfer.next_step(), Ended::Transferred),
            (Step::Transfer { .. }, None) => (NextStep::Hangup, Ended::Transferred),
            _ => (NextStep::Hangup, Ended::Ended),
        };
        self.services
            .store
            .record_next_step(&self.call_sid, &next)
            .await;
        tracing::info!(%handoff, "ending the session");
        self.wire
            .send(&Outbound::End {
                handoff_data: handoff,
            })
            .await;
        self.ended = Some(EndReason::Step(ended));
    }

    /// A quiet moment of a drain: the conversation so far is written (a new session, perhaps on
    /// another instance, loads it as it opens), a resumption is recorded for the `<Connect
    /// action>`, and Twilio is told to end the session.
    async fn move_session(&mut self) {
        if let Some(mirror) = self.mirror.take() {
            mirror.finish().await;
        }
        self.services
            .store
            .record_next_step(&self.call_sid, &NextStep::Resume)
            .await;
        tracing::info!("moving the session off this draining instance");
        let handoff_data = session::MOVE_HANDOFF.to_owned();
        self.wire.send(&Outbound::End { handoff_data }).await;
        self.ended = Some(EndReason::Moved);
    }

    /// The session is over: the last exchange saved, the reply stopped, the store written and
    /// the socket closed (each for a bounded time); the summary logged and published.
    async fn end(mut self, reason: EndReason) {
        let actions = self.session.close();
        for action in actions {
            match action {
                Action::Cancel { id } => self.cancel(id),
                Action::Save { id, exchange } => self.save(id, exchange),
                _ => {}
            }
        }
        if let Some((_, cancel)) = self.running.take() {
            cancel.cancel();
        }
        let malformed = self.wire.malformed();
        let Self {
            services,
            session,
            wire,
            mirror,
            started,
            publisher,
            ..
        } = self;
        services.metrics.call_ended(reason.label());
        let mirrored = async {
            if let Some(mirror) = mirror {
                mirror.finish().await;
            }
        };
        tokio::join!(wire.finish(WRITER_GRACE), mirrored);
        let latencies: Vec<u128> = session
            .latencies()
            .iter()
            .map(Duration::as_millis)
            .collect();
        tracing::info!(
            duration_s = format!("{:.1}", started.elapsed().as_secs_f64()),
            turns = session.turns(),
            barge_ins = session.barge_ins(),
            turn_latencies_ms = ?latencies,
            keys = session.keyed(),
            malformed,
            "relay session ended: {}",
            reason.label()
        );
        let summary = CallSummary {
            duration: started.elapsed(),
            turns: session.turns(),
            barge_ins: session.barge_ins(),
            turn_latencies: session.latencies().to_vec(),
            malformed,
        };
        publisher.publish(CallEvent::Ended {
            reason: reason.label(),
            summary,
        });
    }

    fn publish(&self, event: CallEvent) {
        self.publisher.publish(event);
    }
}

/// Resolves when the drain begins; never without a token.
async fn drain_begins(draining: Option<&CancellationToken>) {
    match draining {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The call's conversation so far; a store that does not answer starts it afresh.
async fn load_history(store: &Store, call: &CallSid) -> Vec<Exchange> {
    match store.history(call).await {
        Ok(history) => {
            if !history.is_empty() {
                tracing::info!(
                    exchanges = history.len(),
                    "the call's conversation goes on from the store"
                );
            }
            history
        }
        Err(err) => {
            tracing::warn!(%err, "the call's conversation cannot be read: starting afresh");
            Vec::new()
        }
    }
}
