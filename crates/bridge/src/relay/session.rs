//! The brain of one ConversationRelay session: whose turn it is, what the history keeps, when
//! the call ends.
//!
//! Twilio listens, speaks and detects interruptions itself, so this is smaller than the
//! streaming call's brain: a whole `prompt` (or a keypad `#`) is the caller's turn; the reply's
//! text goes out as it comes; an `interrupt` stops it and the history keeps what Twilio says
//! the caller heard, cut off as in every mode ([`CUT_OFF`]). An exchange is saved once nothing
//! can change it any more: when the caller's next turn starts, when an interruption says what
//! was heard, or when the session ends. After an end or a transfer, the session waits for the
//! farewell to be spoken (an estimate: Twilio does not say when it has spoken), then ends;
//! anything the caller says meanwhile keeps the call going.
//!
//! When the instance drains ([`Session::on_drain`]), the session moves to another instance at
//! its first quiet moment ([`Session::quiet`]): no reply being written or spoken (Twilio's
//! speech is estimated, as for a farewell), no farewell pending, the caller not mid-turn (an
//! interruption whose words have not come, digits without their `#`). It then says
//! [`Action::Move`]: the call goes on in a new session, with this one's history.
//!
//! Sans-IO: messages and reply progress in, with the current instant; [`Action`]s out.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::llm::ChatMessage;
use crate::store::{conversation, instructions, Exchange, CUT_OFF, DEFAULT_MAX_EXCHANGES};
use crate::tools::Step;
use crate::twilio::keypad::Keypad;
use crate::twilio::relay::Outbound;

/// Time Twilio's voice takes per character: about 15 characters a second, as the streaming
/// mode assumes for speech still arriving.
const PER_CHAR: Duration = Duration::from_millis(65);
/// Added to the farewell's estimate: Twilio's speech starts a little after the text.
const FAREWELL_MARGIN: Duration = Duration::from_millis(700);
/// Longest wait for a farewell to be spoken before the session ends anyway.
pub const FAREWELL_LIMIT: Duration = Duration::from_secs(10);

/// One reply of the session, numbered from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyId(pub u64);

/// What the session task must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the model with these messages and stream its answer back as reply `id`.
    Answer {
        /// The reply this becomes.
        id: ReplyId,
        /// System prompt, history and the caller's new turn.
        messages: Vec<ChatMessage>,
    },
    /// Stop reply `id`: nothing more of it may be sent.
    Cancel {
        /// The reply.
        id: ReplyId,
    },
    /// Send this message to Twilio.
    Send(Outbound),
    /// The first text of reply `id` went out, `latency` after the caller's turn.
    Answered {
        /// The reply.
        id: ReplyId,
        /// Caller's turn → first text.
        latency: Duration,
    },
    /// The caller interrupted reply `id`; `heard` is what the history keeps, `None` when they
    /// heard nothing of it (their words then continue their turn).
    Interrupted {
        /// The reply.
        id: ReplyId,
        /// What was heard, ending in [`CUT_OFF`].
        heard: Option<String>,
    },
    /// The exchange reply `id` answered is final: save it.
    Save {
        /// The reply.
        id: ReplyId,
        /// The caller's turn, the tool traffic and what the caller heard.
        exchange: Exchange,
    },
    /// The farewell was spoken: record `step` for the `<Connect action>`, then send `end`.
    End {
        /// Hang up or transfer.
        step: Step,
        /// The `end` message's `handoffData`.
        handoff: String,
    },
    /// The instance drains and this is a quiet moment: write what is saved, record a
    /// resumption for the `<Connect action>`, then send `end` with [`MOVE_HANDOFF`].
    Move,
}

/// A reply in progress, or done and not yet saved.
#[derive(Debug, Clone)]
struct Reply {
    /// Which reply.
    id: ReplyId,
    /// The caller's turn it answers.
    user: String,
    /// Every word sent for it so far.
    said: String,
    /// Its tool rounds, in Mistral's shape.
    tools: Vec<ChatMessage>,
    /// When the caller's turn came.
    asked: Instant,
    /// Its first text went out.
    answered: bool,
    /// Its last text (`last: true`) went out.
    done: bool,
    /// An end or a transfer the model asked for.
    step: Step,
}

impl Reply {
    /// The exchange as it stands: what the caller said, the tool traffic and `assistant`.
    fn exchange(&self, assistant: String) -> Exchange {
        let assistant = assistant.trim();
        Exchange::new(self.user.clone(), assistant).with_tools(self.tools.clone())
    }
}

/// The turn-taking state of one session.
#[derive(Debug)]
pub struct Session {
    /// The assistant's instructions, with the greeting already spoken.
    system_prompt: String,
    /// The conversation so far (loaded from the store at setup), newest last, bounded.
    history: Vec<Exchange>,
    /// Digits until `#`.
    keypad: Keypad,
    /// The current reply.
    reply: Option<Reply>,
    /// Numbers replies.
    next_id: u64,
    /// Characters of the greeting Twilio speaks as the session opens.
    greeting_chars: usize,
    /// Until when Twilio is (estimated to be) speaking what it was sent.
    speaking_until: Option<Instant>,
    /// The caller interrupted and their words have not come yet.
    mid_turn: bool,
    /// The instance drains: move at the next quiet moment.
    draining: bool,
    /// [`Action::Move`] was said; nothing more happens.
    moved: bool,
    /// The session ends at this instant: its farewell has been spoken.
    farewell: Option<Instant>,
    /// Caller turns answered.
    turns: u32,
    /// Interruptions of a reply.
    barge_ins: u32,
    /// Caller's turn → first text, per answered turn.
    latencies: Vec<Duration>,
}

impl Session {
    /// A session of a call whose conversation so far is `history` (empty for a new call),
    /// opened by Twilio speaking `greeting`.
    pub fn new(system_prompt: &str, greeting: &str, history: Vec<Exchange>) -> Self {
        Self {
            system_prompt: instructions(system_prompt, greeting),
            history,
            keypad: Keypad::default(),
            reply: None,
            next_id: 0,
            greeting_chars: greeting.chars().count(),
            speaking_until: None,
            mid_turn: false,
            draining: false,
            moved: false,
            farewell: None,
            turns: 0,
            barge_ins: 0,
            latencies: Vec::new(),
        }
    }

    /// The session opened at `now`: Twilio speaks the greeting.
    pub fn on_open(&mut self, now: Instant) {
        self.speaking_until = Some(now + speaking_time(self.greeting_chars));
    }

    /// Twilio's transcript of the caller. A whole one (`last`) is their turn: whatever the
    /// assistant was doing stops, and the model is asked.
    pub fn on_prompt(&mut self, text: &str, last: bool, now: Instant) -> Vec<Action> {
        let text = text.trim();
        if !last || text.is_empty() {
            return Vec::new();
        }
        self.take_turn(text.to_owned(), now)
    }

    /// The caller pressed a key: a run of digits ended by `#` is a turn.
    pub fn on_dtmf(&mut self, key: &str, now: Instant) -> Vec<Action> {
        match self.keypad.press(key) {
            Some(pressed) => self.take_turn(pressed, now),
            None => Vec::new(),
        }
    }

    /// Twilio stopped speaking because the caller interrupted; `heard` is its
    /// `utteranceUntilInterrupt`. The reply stops, and the history keeps what was heard.
    pub fn on_interrupt(&mut self, heard: &str, now: Instant) -> Vec<Action> {
        self.farewell = None;
        self.speaking_until = Some(now);
        self.mid_turn = true;
        let Some(reply) = self.reply.take() else {
            return Vec::new(); // the greeting, or a reply already saved
        };
        self.barge_ins += 1;
        let mut actions = Vec::new();
        if !reply.done {
            actions.push(Action::Cancel { id: reply.id });
        }
        let heard = heard.trim();
        if heard.is_empty() {
            // Nothing was heard: the caller's words continue the turn it answered.
            self.reply = Some(Reply {
                said: String::new(),
                done: true,
                step: Step::Continue,
                ..reply.clone()
            });
            actions.push(Action::Interrupted {
                id: reply.id,
                heard: None,
            });
            return actions;
        }
        // What was heard is saved (and told) before the interruption, which refers to it.
        let heard = format!("{heard}{CUT_OFF}");
        actions.push(self.save(reply.id, reply.exchange(heard.clone())));
        actions.push(Action::Interrupted {
            id: reply.id,
            heard: Some(heard),
        });
        actions
    }

    /// Text of reply `id` to send; `None` once the reply was stopped.
    pub fn on_text(&mut self, id: ReplyId, token: String, now: Instant) -> Vec<Action> {
        let Some(reply) = self.current(id) else {
            return Vec::new();
        };
        reply.said.push_str(&token);
        let mut actions = Vec::new();
        if !std::mem::replace(&mut reply.answered, true) {
            let latency = now.saturating_duration_since(reply.asked);
            self.latencies.push(latency);
            actions.push(Action::Answered { id, latency });
        }
        actions.push(Action::Send(Outbound::Text { token, last: false }));
        actions
    }

    /// A tool round of reply `id`.
    pub fn on_round(&mut self, id: ReplyId, messages: Vec<ChatMessage>) {
        if let Some(reply) = self.current(id) {
            reply.tools.extend(messages);
        }
    }

    /// Reply `id` ends or transfers the call once its words are spoken.
    pub fn on_step(&mut self, id: ReplyId, step: Step) {
        if let Some(reply) = self.current(id) {
            reply.step = step;
        }
    }

    /// Reply `id` has no more words: `last` goes out, and after an end or a transfer the
    /// farewell's time starts.
    pub fn on_done(&mut self, id: ReplyId, now: Instant) -> Vec<Action> {
        let Some(reply) = self.current(id) else {
            return Vec::new();
        };
        reply.done = true;
        let speaking = speaking_time(reply.said.chars().count());
        if reply.step != Step::Continue {
            self.farewell = Some(now + speaking);
        }
        self.speaking_until = Some(now + speaking);
        vec![Action::Send(Outbound::Text {
            token: String::new(),
            last: true,
        })]
    }

    /// Reply `id` failed: the caller hears `fallback` and may speak again.
    pub fn on_failed(&mut self, id: ReplyId, fallback: &str, now: Instant) -> Vec<Action> {
        if self.current(id).is_none() {
            return Vec::new();
        }
        let separator = match self.current(id) {
            Some(reply) if !reply.said.is_empty() && !reply.said.ends_with(' ') => " ",
            _ => "",
        };
        let mut actions = self.on_text(id, format!("{separator}{fallback}"), now);
        if let Some(reply) = self.current(id) {
            reply.step = Step::Continue;
        }
        actions.extend(self.on_done(id, now));
        actions
    }

    /// The instance begins to drain: the session moves at once if this is a quiet moment, else
    /// at the next one.
    pub fn on_drain(&mut self, now: Instant) -> Vec<Action> {
        self.draining = true;
        self.on_tick(now)
    }

    /// Nothing is being written or spoken and the caller is not mid-turn: the session could end
    /// here without cutting anyone off.
    pub fn quiet(&self, now: Instant) -> bool {
        self.idle() && self.speaking_until.is_none_or(|at| at <= now)
    }

    /// Quiet but for Twilio's speech: nothing else to wait for.
    fn idle(&self) -> bool {
        let reply_over = self
            .reply
            .as_ref()
            .is_none_or(|r| r.done && r.step == Step::Continue);
        let caller_mid_turn = self.mid_turn || self.keypad.pending();
        !self.moved && self.farewell.is_none() && !caller_mid_turn && reply_over
    }

    /// Time passed: ends the session once its farewell has been spoken, or moves it at a quiet
    /// moment of a drain.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        if self.draining && self.quiet(now) {
            return self.move_away();
        }
        match self.farewell {
            Some(at) if at <= now => {}
            _ => return Vec::new(),
        }
        self.farewell = None;
        let Some(reply) = self.reply.take() else {
            return Vec::new();
        };
        let step = reply.step.clone();
        let said = reply.said.clone();
        vec![
            self.save(reply.id, reply.exchange(said)),
            Action::End {
                handoff: handoff(&step),
                step,
            },
        ]
    }

    /// When [`Session::on_tick`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.draining && self.idle() {
            return Some(self.speaking_until.unwrap_or_else(Instant::now));
        }
        self.farewell
    }

    /// Moves the session: the exchange answered is final, then [`Action::Move`].
    fn move_away(&mut self) -> Vec<Action> {
        self.moved = true;
        let mut actions = Vec::new();
        if let Some(reply) = self.reply.take() {
            if !reply.said.trim().is_empty() {
                let said = reply.said.clone();
                actions.push(self.save(reply.id, reply.exchange(said)));
            }
        }
        actions.push(Action::Move);
        actions
    }

    /// The session is over (Twilio closed it, or the server ends it): the exchange in progress
    /// is saved as far as it went.
    pub fn close(&mut self) -> Vec<Action> {
        let Some(reply) = self.reply.take() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if !reply.done {
            actions.push(Action::Cancel { id: reply.id });
        }
        if reply.said.trim().is_empty() {
            return actions;
        }
        let said = match reply.done {
            true => reply.said.clone(),
            false => format!("{}{CUT_OFF}", reply.said.trim_end()),
        };
        actions.push(self.save(reply.id, reply.exchange(said)));
        actions
    }

    /// Caller turns answered.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// Interruptions of a reply.
    pub fn barge_ins(&self) -> u32 {
        self.barge_ins
    }

    /// Caller's turn → first text, per answered turn.
    pub fn latencies(&self) -> &[Duration] {
        &self.latencies
    }

    /// Every key the caller pressed.
    pub fn keyed(&self) -> &str {
        self.keypad.keyed()
    }

    /// The conversation so far, exchange by exchange.
    pub fn history(&self) -> &[Exchange] {
        &self.history
    }

    /// The caller's turn `text` (possibly continuing one whose answer they never heard): the
    /// reply in progress stops, and the model is asked.
    fn take_turn(&mut self, mut text: String, now: Instant) -> Vec<Action> {
        self.farewell = None;
        self.mid_turn = false;
        let mut actions = Vec::new();
        if let Some(reply) = self.reply.take() {
            if !reply.done {
                actions.push(Action::Cancel { id: reply.id });
            }
            if reply.said.trim().is_empty() {
                text = format!("{} {text}", reply.user);
                self.turns = self.turns.saturating_sub(1);
            } else {
                let said = match reply.done {
                    true => reply.said.clone(),
                    false => format!("{}{CUT_OFF}", reply.said.trim_end()),
                };
                actions.push(self.save(reply.id, reply.exchange(said)));
            }
        }
        self.next_id += 1;
        let id = ReplyId(self.next_id);
        let messages = conversation(&self.system_prompt, &self.history, &text);
        self.turns += 1;
        self.reply = Some(Reply {
            id,
            user: text,
            said: String::new(),
            tools: Vec::new(),
            asked: now,
            answered: false,
            done: false,
            step: Step::Continue,
        });
        actions.push(Action::Answer { id, messages });
        actions
    }

    /// Adds `exchange` to the history (dropping the oldest past the bound) and says to save it.
    fn save(&mut self, id: ReplyId, exchange: Exchange) -> Action {
        self.history.push(exchange.clone());
        let over = self.history.len().saturating_sub(DEFAULT_MAX_EXCHANGES);
        self.history.drain(..over);
        Action::Save { id, exchange }
    }

    /// The current reply, if it is `id` and still going.
    fn current(&mut self, id: ReplyId) -> Option<&mut Reply> {
        self.reply.as_mut().filter(|r| r.id == id && !r.done)
    }
}

/// The `end` message's `handoffData` for `step`: what the `<Connect action>` will do.
pub fn handoff(step: &Step) -> String {
    match step {
        Step::Transfer { reason } => json!({"reason": "transferred", "why": reason}),
        Step::End | Step::Continue => json!({"reason": "ended"}),
    }
    .to_string()
}

/// Twilio's time to speak `chars` characters from now (bounded by [`FAREWELL_LIMIT`]).
fn speaking_time(chars: usize) -> Duration {
    let chars = u32::try_from(chars).unwrap_or(u32::MAX);
    (PER_CHAR.saturating_mul(chars) + FAREWELL_MARGIN).min(FAREWELL_LIMIT)
}

/// The `end` message's `handoffData` of a session moved off a draining instance: `/stream_ended`
/// (on any instance) then opens a new session.
pub const MOVE_HANDOFF: &str = r#"{"reason":"moved"}"#;

/// The `end` message's `handoffData` when the server ends a session at the end of a drain:
/// `/stream_ended` (on any instance) then hangs up.
pub const SHUTDOWN_HANDOFF: &str = r#"{"reason":"server_shutdown"}"#;

#[cfg(test)]
mod tests;
