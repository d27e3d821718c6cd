//! The call's brain: who is speaking, when the caller's turn ends, when to barge in, what to
//! say when a provider fails, when to hang up, and how long each turn waited for its answer.
//!
//! Sans-IO: it takes transcripts, marks and reply progress with the current instant, and returns
//! [`Action`]s for the call task to carry out. It never touches a socket or a clock, so every
//! timing rule is an ordinary unit test with invented instants.

mod detection;
mod failures;
mod flux;
mod history;
mod idle;
mod interruption;
mod latency;
mod playout;
mod preemptive;
mod progress;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::llm::ChatMessage;
use crate::twilio::keypad::Keypad;
pub use detection::{Heard, TurnDetection};
use failures::Farewell;
pub use failures::{Goodbye, ReplyFailure, FAREWELL_LIMIT, STT_APOLOGY};
use history::History;
pub use history::{MAX_HISTORY_CHARS, MAX_HISTORY_EXCHANGES};
use idle::IdleWatch;
pub use idle::{IdlePolicy, IdleStep};
pub use interruption::{Interruption, InterruptionPolicy, DEFAULT_BACKCHANNEL_WORDS};
use latency::TurnLatency;
pub use playout::{AUDIBLE, CUT_OFF};
pub use preemptive::Preemptive;
pub use progress::ReplyId;
use progress::{Reply, Spoken};

/// What the call task must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Speak fixed text (the greeting) through the speaking path.
    Say {
        /// The reply this becomes.
        id: ReplyId,
        /// What to say.
        text: String,
    },
    /// Ask the model with these messages, then speak its answer.
    Answer {
        /// The reply this becomes.
        id: ReplyId,
        /// System prompt, history and the caller's new turn.
        messages: Vec<ChatMessage>,
    },
    /// Ask the model with these messages now, before the caller's turn is over, and prepare
    /// its answer's audio but hold it until [`Action::Release`] (or drop it).
    Prepare {
        /// The reply this becomes.
        id: ReplyId,
        /// System prompt, history and what the caller said so far.
        messages: Vec<ChatMessage>,
    },
    /// The turn ended on the text prepared reply `id` answers: send its audio now.
    Release {
        /// The prepared reply.
        id: ReplyId,
        /// The caller's turn it answers.
        text: String,
        /// Its phrases so far (held back from the events until now).
        phrases: Vec<String>,
    },
    /// Barge-in: drop reply `id`'s queued audio and send Twilio `clear`; the reply stops for
    /// good, or, when `hold`, keeps its audio for an [`Action::Resume`] or [`Action::Discard`].
    Interrupt {
        /// The reply being cut off.
        id: ReplyId,
        /// What the caller heard of it, to the word and ending in [`CUT_OFF`]; `None` when
        /// nothing of it was audible yet.
        heard: Option<String>,
        /// The interruption may prove to be a backchannel: keep the reply for resuming.
        hold: bool,
    },
    /// The interruption was no turn: reply `id` plays again from the start of phrase `from`,
    /// as its take `take` (its marks carry it, so echoes of the cleared take are told apart).
    Resume {
        /// The held reply.
        id: ReplyId,
        /// The phrase that was cut.
        from: usize,
        /// Which playing of the reply this is: 1 for the first resume, and so on.
        take: u32,
    },
    /// Held reply `id` will not play again: drop it and its audio.
    Discard {
        /// The held reply.
        id: ReplyId,
    },
    /// The caller stayed silent: the `Say` that follows is this step of the idle rules.
    Idle(IdleStep),
    /// End the call: its goodbye is over, or ran out of time.
    Hangup(Goodbye),
}

/// The turn-taking state of one call.
#[derive(Debug)]
pub struct Turns {
    /// Silence after the caller's last words that ends their turn.
    silence_timeout: Duration,
    /// Whether the recogniser's end of speech ends the turn before the silence timer does.
    detection: TurnDetection,
    /// The assistant's instructions, first message of every request: shared by every call
    /// (the greeting included, [`crate::store::instructions`]).
    system_prompt: Arc<str>,
    /// Final transcript segments of the caller's current turn, in order. Interim results never
    /// land here: they are revised later, and keeping them would repeat words.
    heard: Vec<String>,
    /// An interim result showed speech that no final segment has covered yet.
    interim_pending: bool,
    /// When the caller's turn ends unless they speak again.
    deadline: Option<Instant>,
    /// The timer fired while only interim text existed: end the turn on the next final.
    end_on_final: bool,
    /// The assistant's side.
    reply: Reply,
    /// Id for the next reply.
    next_id: u64,
    /// Everything said so far, without the system prompt.
    history: History,
    /// Caller turns that were answered (or are being answered).
    turns: u32,
    /// Times the caller talked over the assistant.
    barge_ins: u32,
    /// Keypad digits pressed since the last `#`, and every key of the call.
    keypad: Keypad,
    /// Said when a reply fails; `None` says nothing.
    fallback_phrase: Option<String>,
    /// The fallback phrase being spoken, so its own failure does not start another.
    fallback: Option<ReplyId>,
    /// The goodbye after which the call ends.
    farewell: Farewell,
    /// End of speech → first answer audio, turn by turn.
    latency: TurnLatency,
    /// Checks on a caller who stays silent.
    idle: IdleWatch,
    /// Tells interruptions from acknowledgements.
    interruptions: InterruptionPolicy,
    /// Outcomes of interruptions not yet handed to the metrics ([`Turns::counted`]).
    counted: Vec<Interruption>,
    /// Whether replies are prepared before the turn ends (`PREEMPTIVE_GENERATION`).
    preemptive_on: bool,
    /// The current reply, while it is a preemptive one not yet released.
    preempted: Option<ReplyId>,
    /// Outcomes of preemptive replies not yet handed to the metrics ([`Turns::preemptives`]).
    preemptives: Vec<Preemptive>,
    /// Deepgram Flux's turn in progress (`TURN_DETECTION=flux` only).
    flux: flux::FluxTurn,
}

impl Turns {
    /// A call that has not started, whose requests open with `system_prompt` (which says what
    /// the greeting was: [`crate::store::instructions`]).
    pub fn new(silence_timeout: Duration, system_prompt: Arc<str>) -> Self {
        Self {
            silence_timeout,
            detection: TurnDetection::Timer,
            system_prompt,
            heard: Vec::new(),
            interim_pending: false,
            deadline: None,
            end_on_final: false,
            reply: Reply::Idle,
            next_id: 0,
            history: History::default(),
            turns: 0,
            barge_ins: 0,
            keypad: Keypad::default(),
            fallback_phrase: None,
            fallback: None,
            farewell: Farewell::None,
            latency: TurnLatency::default(),
            idle: IdleWatch::default(),
            interruptions: InterruptionPolicy::default(),
            counted: Vec::new(),
            preemptive_on: false,
            preempted: None,
            preemptives: Vec::new(),
            flux: flux::FluxTurn::default(),
        }
    }

    /// Ends turns by `detection`; a new brain uses [`TurnDetection::Timer`].
    pub fn with_detection(mut self, detection: TurnDetection) -> Self {
        self.detection = detection;
        self
    }

    /// Says `phrase` when a reply fails; a new brain says nothing.
    pub fn with_fallback(mut self, phrase: String) -> Self {
        self.fallback_phrase = Some(phrase);
        self
    }

    /// The stream started: speak the greeting.
    pub fn start(&mut self, greeting: &str) -> Vec<Action> {
        let id = self.new_id();
        self.reply = Reply::Speaking {
            id,
            spoken: Spoken::new(None),
        };
        vec![Action::Say {
            id,
            text: greeting.to_owned(),
        }]
    }

    /// The assistant must say `text` now, whatever it was doing: the current reply is
    /// interrupted and the caller's unfinished words are dropped.
    pub fn say(&mut self, text: &str, now: Instant) -> Vec<Action> {
        let actions = self.speak(text, now);
        self.hang_up_when_done(actions, Some(now))
    }

    /// [`Turns::say`] without the hang-up check, for the brain's own phrases.
    fn speak(&mut self, text: &str, now: Instant) -> Vec<Action> {
        let mut actions = self.drop_preemptive();
        if let Some(id) = self.current_reply() {
            let heard = self.cut_off(now);
            self.keep_the_call(id);
            actions.push(Action::Interrupt {
                id,
                heard,
                hold: false,
            });
        }
        self.heard.clear();
        self.interim_pending = false;
        self.end_on_final = false;
        self.deadline = None;
        let id = self.new_id();
        self.reply = Reply::Speaking {
            id,
            spoken: Spoken::new(None),
        };
        actions.push(Action::Say {
            id,
            text: text.to_owned(),
        });
        actions
    }

    /// A transcript from speech recognition. With [`TurnDetection::Deepgram`], an end of speech
    /// ends a turn that has final text at once, even when its own text is empty (endpointing
    /// fired in silence after the last final).
    pub fn on_transcript(&mut self, text: &str, heard: Heard, now: Instant) -> Vec<Action> {
        let actions = self.take_transcript(text, heard, now);
        self.hang_up_when_done(actions, Some(now))
    }

    /// [`Turns::on_transcript`] without the hang-up check.
    fn take_transcript(&mut self, text: &str, heard: Heard, now: Instant) -> Vec<Action> {
        let text = text.trim();
        if text.is_empty() {
            let paused = matches!(self.reply, Reply::Paused { .. });
            if paused && heard != Heard::Interim && self.heard.is_empty() {
                // The recogniser found no words in what interrupted the reply.
                self.interim_pending = false;
                return self.resume();
            }
            return match heard {
                Heard::EndOfSpeech => self.on_end_of_speech(now),
                Heard::Interim | Heard::Final => Vec::new(),
            };
        }
        if self.too_few_to_interrupt(text) {
            if heard != Heard::Interim {
                self.counted.push(Interruption::Ignored);
            }
            return Vec::new();
        }
        self.caller_answered();
        // Final words that are more than a backchannel take the floor without a doubt.
        let may_resume = heard == Heard::Interim || self.interruptions.is_backchannel(text);
        let mut actions = self.barge_in(now, may_resume);
        self.deadline = Some(now + self.silence_timeout);
        if heard == Heard::Interim {
            self.interim_pending = true;
            self.paused_interim(text);
            return actions;
        }
        self.heard.push(text.to_owned());
        self.interim_pending = false;
        actions.extend(self.settle(now));
        if self.reply_is_paused_or_resumed() {
            return actions;
        }
        if self.end_on_final {
            actions.extend(self.end_turn(now));
        } else if heard == Heard::EndOfSpeech {
            actions.extend(self.on_end_of_speech(now));
        }
        if matches!(self.reply, Reply::Idle) && !self.heard.is_empty() {
            actions.extend(self.prepare(now));
        }
        actions
    }

    /// Deepgram's `UtteranceEnd`: a gap after the last word, sent even when noise kept
    /// `speech_final` from coming. With [`TurnDetection::Deepgram`] it ends the turn; words still
    /// only interim are taken as soon as their final arrives.
    pub fn on_utterance_end(&mut self, now: Instant) -> Vec<Action> {
        if self.detection != TurnDetection::Deepgram {
            return Vec::new();
        }
        if self.interim_pending {
            self.end_on_final = true;
            return Vec::new();
        }
        let actions = self.on_end_of_speech(now);
        self.hang_up_when_done(actions, Some(now))
    }

    /// The recogniser heard the caller stop: ends a turn with final text when it decides turns.
    fn on_end_of_speech(&mut self, now: Instant) -> Vec<Action> {
        if self.detection != TurnDetection::Deepgram
            || self.heard.is_empty()
            || self.interim_pending
        {
            return Vec::new();
        }
        self.end_turn(now)
    }

    /// The caller pressed a key: the [`Keypad`] collects digits until `#`, which sends them
    /// to the model as "The caller pressed: 1 2 3" (interrupting the assistant); `*` clears
    /// them.
    pub fn on_dtmf(&mut self, key: &str, now: Instant) -> Vec<Action> {
        self.caller_answered();
        let Some(pressed) = self.keypad.press(key) else {
            return Vec::new();
        };
        let mut actions = self.barge_in(now, false);
        self.heard.push(pressed);
        self.interim_pending = false;
        actions.extend(self.end_turn(now));
        self.hang_up_when_done(actions, Some(now))
    }

    /// Every key the caller pressed, in order.
    pub fn keyed(&self) -> &str {
        self.keypad.keyed()
    }

    /// Time passed; ends the caller's turn when the silence timer has run out, checks on a
    /// silent caller, and ends the call when its goodbye has run out of time.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = self.settle(now);
        actions.extend(self.silence_tick(now));
        actions.extend(self.idle_tick(now));
        self.hang_up_when_done(actions, Some(now))
    }

    /// The silence timer's part of [`Turns::on_tick`].
    fn silence_tick(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(deadline) if deadline <= now => {}
            _ => return Vec::new(),
        }
        self.deadline = None;
        if !self.heard.is_empty() && !self.interim_pending {
            return self.end_turn(now);
        }
        if self.interim_pending {
            // Words are still being finalized: take them as soon as the final arrives.
            self.end_on_final = true;
        } else if matches!(self.reply, Reply::Idle) {
            // Speech that never became words: the caller still has the floor.
            self.floor_to_caller(now);
        }
        Vec::new()
    }

    /// When [`Turns::on_tick`] must next be called: the silence timer, the idle timer or the
    /// goodbye's limit, whichever comes first.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.deadline,
            self.idle_deadline(),
            self.farewell_deadline(),
            self.pause_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The caller's latest final words ended at `end` (their audio, on our clock, capped at
    /// `now`): the next turn's latency counts from there.
    pub fn on_speech_ended(&mut self, end: Instant, now: Instant) {
        self.latency.speech_ended(end, now);
    }

    /// Reply `id` handed its first audio to the socket at `now`. When it answers the caller's
    /// latest turn, returns that turn's latency (end of speech → this audio), once.
    pub fn on_first_audio(&mut self, id: ReplyId, now: Instant) -> Option<Duration> {
        self.latency.first_audio(id, now)
    }

    /// The latency of every answered turn so far, in order.
    pub fn turn_latencies(&self) -> &[Duration] {
        self.latency.measured()
    }

    /// The reply being prepared or played, if any.
    pub fn current_reply(&self) -> Option<ReplyId> {
        self.reply.id()
    }

    /// The reply being spoken and how many of its phrases the caller has heard to the end.
    /// Their audio is never sent again: a resume starts at the phrase being heard, or later.
    pub fn heard_phrases(&self) -> Option<(ReplyId, usize)> {
        match &self.reply {
            Reply::Speaking { id, spoken } => Some((*id, spoken.played)),
            _ => None,
        }
    }

    /// True while the assistant's audio is being sent or played.
    pub fn is_speaking(&self) -> bool {
        matches!(self.reply, Reply::Speaking { .. })
    }

    /// Outcomes of interruptions since the last call, for the metrics.
    pub fn counted(&mut self) -> std::vec::Drain<'_, Interruption> {
        self.counted.drain(..)
    }

    /// Outcomes of preemptive replies since the last call, for the metrics.
    pub fn preemptives(&mut self) -> std::vec::Drain<'_, Preemptive> {
        self.preemptives.drain(..)
    }

    /// Caller turns taken so far.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// Times the caller interrupted the assistant.
    pub fn barge_ins(&self) -> u32 {
        self.barge_ins
    }

    /// The conversation so far (without the system prompt), as the model gets it.
    pub fn history(&self) -> Vec<ChatMessage> {
        let mut messages = self.history.request("", "");
        messages.remove(0);
        messages.pop();
        messages
    }

    /// The conversation so far, exchange by exchange.
    pub fn exchanges(&self) -> &[crate::store::Exchange] {
        self.history.exchanges()
    }

    /// Exchanges added to the history since the call began, including any trimmed since.
    pub fn remembered(&self) -> u64 {
        self.history.remembered()
    }

    /// The caller spoke at `now`: stop whatever the assistant is preparing or saying. Once
    /// its audio was audible ([`AUDIBLE`]), their words are a turn of their own and the history
    /// keeps what they heard of it, unless they prove to be a backchannel (`may_resume`: the
    /// reply is held meanwhile, see `interruption.rs`); before that, they continue the turn
    /// being answered.
    fn barge_in(&mut self, now: Instant, may_resume: bool) -> Vec<Action> {
        if self.preempted.is_some() {
            // The caller says more: the reply prepared for fewer words goes.
            return self.drop_preemptive();
        }
        let Some(id) = self.reply.id() else {
            return Vec::new();
        };
        if matches!(self.reply, Reply::Paused { .. }) {
            // Already interrupted: the words decide (keys take the floor at once).
            return if may_resume {
                Vec::new()
            } else {
                self.take_the_floor()
            };
        }
        self.barge_ins += 1;
        let heard = self.heard_now(now);
        if let (Some((text, from)), true) = (&heard, may_resume) {
            let (heard, from) = (text.clone(), *from);
            self.pause(heard.clone(), from, now);
            return vec![Action::Interrupt {
                id,
                heard: Some(heard),
                hold: true,
            }];
        }
        let heard = heard.map(|(text, _)| text);
        match std::mem::replace(&mut self.reply, Reply::Idle) {
            Reply::Thinking { user_text, .. } => self.rejoin(user_text),
            Reply::Speaking { spoken, .. } => match &heard {
                None => {
                    if let Some(user_text) = spoken.user_text {
                        self.rejoin(user_text);
                    }
                }
                Some(text) => self.remember(&spoken, text.clone()),
            },
            Reply::Paused { .. } | Reply::Idle => {}
        }
        self.keep_the_call(id);
        self.counted.push(Interruption::BargeIn);
        vec![Action::Interrupt {
            id,
            heard,
            hold: false,
        }]
    }

    /// After the caller's final words: the reply is paused (waiting for more) or resumed.
    fn reply_is_paused_or_resumed(&self) -> bool {
        match &self.reply {
            Reply::Paused { .. } => true,
            Reply::Speaking { .. } => self.heard.is_empty(),
            Reply::Idle | Reply::Thinking { .. } => false,
        }
    }

    /// The caller's unanswered words open their next turn.
    fn rejoin(&mut self, user_text: String) {
        self.heard.insert(0, user_text);
        self.turns = self.turns.saturating_sub(1);
    }

    fn end_turn(&mut self, now: Instant) -> Vec<Action> {
        if let Some(released) = self.release(now) {
            return released;
        }
        let mut actions = self.drop_preemptive();
        self.end_on_final = false;
        self.deadline = None;
        let user_text = self.heard.join(" ");
        self.heard.clear();
        let id = self.new_id();
        let messages = self.history.request(&self.system_prompt, &user_text);
        self.reply = Reply::Thinking {
            id,
            user_text,
            tools: Vec::new(),
        };
        self.turns += 1;
        self.latency.answering(id, now);
        actions.push(Action::Answer { id, messages });
        actions
    }

    fn new_id(&mut self) -> ReplyId {
        self.next_id += 1;
        ReplyId(self.next_id)
    }
}

#[cfg(test)]
mod tests;
