//! `TURN_DETECTION=flux`: Deepgram Flux decides when the caller's turn starts and ends, and the
//! brain follows it. Flux's turn events arrive as calls here (the call task maps
//! `TurnInfo.event` one to one); the v1 inputs ([`Turns::on_transcript`] and friends) are not
//! used in this mode, and no silence timer runs: Flux ends every turn itself, after its own
//! `eot_timeout_ms` of silence at the latest.
//!
//! - `StartOfTurn` interrupts the assistant at once, before any words, as the caller's first
//!   words do with v1: once the reply was audible it is held, and the turn's words decide
//!   (`interruption.rs`); before that, the caller continues the turn being answered.
//! - `Update` is the turn's text so far: like v1's interim words, real words rule out resuming
//!   for lack of words, and the text stands in if `EndOfTurn` brings none. (A recogniser that
//!   drops mid-turn loses none of it: the client sends the whole turn's audio again to the new
//!   connection, which then transcribes the turn whole.)
//! - `EndOfTurn` ends the turn with its transcript, which is also what decides a held reply:
//!   only backchannels, fewer than `BARGE_IN_MIN_WORDS` words, or none, and the reply resumes
//!   with no turn; anything else takes the floor and is answered at once.
//! - `EagerEndOfTurn` starts the preemptive reply (`preemptive.rs`, with
//!   `PREEMPTIVE_GENERATION`) on its transcript, audio held; `TurnResumed`, or words beyond
//!   that transcript, drop it; an `EndOfTurn` with the same transcript releases it at once.

use tokio::time::Instant;

use super::interruption::{word_count, Interruption};
use super::{Action, Reply, Turns};

/// What the brain keeps of the Flux turn in progress.
#[derive(Debug, Default)]
pub(super) struct FluxTurn {
    /// The latest `Update`'s transcript of the turn in progress (empty between turns).
    text: String,
}

impl Turns {
    /// Flux `StartOfTurn`: the caller started speaking. The assistant is interrupted at once
    /// (Twilio `clear`; an audible reply is held until the turn's words decide); until the turn
    /// ends, the idle timer does not run.
    pub fn on_start_of_turn(&mut self, now: Instant) -> Vec<Action> {
        self.interim_pending = true;
        self.deadline = None;
        let actions = self.barge_in(now, true);
        self.hang_up_when_done(actions, Some(now))
    }

    /// Flux `Update`: the turn's transcript so far. Words show the caller is there (the idle
    /// count starts again); a reply still going (a `StartOfTurn` was missed, e.g. across a
    /// reconnection) is interrupted as `StartOfTurn` would have.
    pub fn on_turn_update(&mut self, text: &str, now: Instant) -> Vec<Action> {
        let text = text.trim();
        self.interim_pending = true;
        self.deadline = None;
        if text.is_empty() {
            return Vec::new();
        }
        self.caller_answered();
        if self.preempted.is_some() && self.flux.text == text {
            // The same words again: the answer prepared for them still holds.
            return Vec::new();
        }
        self.flux.text = text.to_owned();
        let actions = self.barge_in(now, true);
        self.paused_interim(text);
        self.hang_up_when_done(actions, Some(now))
    }

    /// Flux `EagerEndOfTurn`: the turn is probably over with `text`. The text counts like an
    /// `Update`, and the answer to it is prepared, held (with `PREEMPTIVE_GENERATION`).
    pub fn on_eager_end_of_turn(&mut self, text: &str, now: Instant) -> Vec<Action> {
        let mut actions = self.on_turn_update(text, now);
        let text = text.trim();
        if text.is_empty() || self.preempted.is_some() {
            return actions;
        }
        // Prepared as if the turn ended here: the words before it and these.
        let before = self.heard.len();
        self.heard.push(text.to_owned());
        self.interim_pending = false;
        actions.extend(self.prepare(now));
        self.heard.truncate(before);
        self.interim_pending = true;
        actions
    }

    /// Flux `TurnResumed`: the caller went on after `EagerEndOfTurn`: the answer prepared for
    /// it goes, unheard.
    pub fn on_turn_resumed(&mut self, _now: Instant) -> Vec<Action> {
        self.drop_preemptive()
    }

    /// Flux `EndOfTurn`: the turn is over, with `text` as its whole transcript (the last
    /// `Update`'s when Flux sent none). A held reply resumes when the turn was no turn
    /// (backchannels, too few words, nothing); otherwise the turn is answered at once, after
    /// any words an interrupted answer left.
    pub fn on_end_of_turn(&mut self, text: &str, now: Instant) -> Vec<Action> {
        let text = match text.trim() {
            "" => std::mem::take(&mut self.flux.text),
            text => text.to_owned(),
        };
        self.flux.text.clear();
        self.interim_pending = false;
        let actions = self.end_flux_turn(text, now);
        self.hang_up_when_done(actions, Some(now))
    }

    /// [`Turns::on_end_of_turn`] without the hang-up check.
    fn end_flux_turn(&mut self, text: String, now: Instant) -> Vec<Action> {
        let no_turn = self.interruptions.is_backchannel(&text)
            || word_count(&text) < self.interruptions.min_words;
        let mut actions = Vec::new();
        match &self.reply {
            Reply::Paused { .. } if no_turn => return self.resume(),
            Reply::Paused { .. } => actions.extend(self.take_the_floor()),
            Reply::Speaking { .. } if no_turn => {
                // Never interrupted (its StartOfTurn was missed): an acknowledgement changes
                // nothing.
                if !text.is_empty() {
                    self.counted.push(Interruption::Ignored);
                }
                return Vec::new();
            }
            Reply::Speaking { .. } | Reply::Thinking { .. } | Reply::Idle => {}
        }
        if text.is_empty() && self.heard.is_empty() {
            if matches!(self.reply, Reply::Idle) {
                self.floor_to_caller(now);
            }
            return actions;
        }
        self.caller_answered();
        if self.preempted.is_none() {
            actions.extend(self.barge_in(now, false));
        }
        if !text.is_empty() {
            self.heard.push(text);
        }
        actions.extend(self.end_turn(now));
        actions
    }

    /// The recogniser's connection dropped mid-call (it reconnects with the caller's audio
    /// kept). The Flux client sends the turn in progress again to the new connection, from its
    /// start, so that connection's `Update`s and `EndOfTurn` carry the whole turn: the words the
    /// old one heard are dropped here, not kept twice.
    pub fn on_stt_dropped(&mut self, _now: Instant) {
        self.flux.text.clear();
    }
}
