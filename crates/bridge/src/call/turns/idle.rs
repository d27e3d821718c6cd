//! The idle caller: when the assistant has finished and the caller says nothing, check on them,
//! and after a few unanswered prompts say goodbye and end the call.

use std::time::Duration;

use tokio::time::Instant;

use super::failures::{Farewell, Goodbye, FAREWELL_LIMIT};
use super::{Action, Reply, Turns};

/// What the assistant does about a caller who stays silent (`IDLE_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Silence after the assistant finished that counts as no answer.
    pub timeout: Duration,
    /// Said after each such silence, up to `prompts` times.
    pub prompt: String,
    /// Prompts said before giving up.
    pub prompts: u32,
    /// Said after one more silence; the call ends once it was heard.
    pub goodbye: String,
}

/// A step of the idle rules the call reports (metrics, events) before the brain speaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStep {
    /// The caller was asked whether they are still there, for the `n`th time in a row.
    Prompt(u32),
    /// Nobody answered the prompts: the assistant says goodbye and the call ends.
    Goodbye,
}

/// The idle rules' state in one call.
#[derive(Debug, Default)]
pub(super) struct IdleWatch {
    /// The rules; `None` never prompts.
    policy: Option<IdlePolicy>,
    /// Since when the caller has had the floor without saying anything.
    since: Option<Instant>,
    /// Prompts said since the caller's last words.
    prompted: u32,
}

impl IdleWatch {
    pub(super) fn new(policy: Option<IdlePolicy>) -> Self {
        let policy = policy.filter(|p| !p.timeout.is_zero());
        Self {
            policy,
            since: None,
            prompted: 0,
        }
    }
}

impl Turns {
    /// Checks on a silent caller with `policy`; a new brain never does (nor with a zero timeout).
    pub fn with_idle(mut self, policy: IdlePolicy) -> Self {
        self.idle = IdleWatch::new(Some(policy));
        self
    }

    /// The assistant is done at `now` and the caller has the floor: the idle count starts.
    pub(super) fn floor_to_caller(&mut self, now: Instant) {
        if self.idle.policy.is_some() {
            self.idle.since = Some(now);
        }
    }

    /// The caller said something (words or keys): they are there.
    pub(super) fn caller_answered(&mut self) {
        self.idle.since = None;
        self.idle.prompted = 0;
    }

    /// When the caller has been silent too long, if the idle timer runs: only while nobody
    /// speaks and no reply is being prepared.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        let quiet = matches!(self.reply, Reply::Idle)
            && self.heard.is_empty()
            && !self.interim_pending
            && self.deadline.is_none()
            && self.farewell == Farewell::None;
        let timeout = self.idle.policy.as_ref()?.timeout;
        quiet.then_some(self.idle.since? + timeout)
    }

    /// The idle timer's part of [`Turns::on_tick`]: a prompt, or the goodbye.
    pub(super) fn idle_tick(&mut self, now: Instant) -> Vec<Action> {
        match self.idle_deadline() {
            Some(due) if due <= now => {}
            _ => return Vec::new(),
        }
        self.idle.since = None;
        let Some(policy) = self.idle.policy.clone() else {
            return Vec::new();
        };
        if self.idle.prompted < policy.prompts {
            self.idle.prompted += 1;
            let mut actions = vec![Action::Idle(IdleStep::Prompt(self.idle.prompted))];
            actions.extend(self.speak(&policy.prompt, now));
            return actions;
        }
        let mut actions = vec![Action::Idle(IdleStep::Goodbye)];
        actions.extend(self.speak(&policy.goodbye, now));
        if let Some(id) = self.current_reply() {
            self.farewell = Farewell::Saying {
                id,
                by: now + FAREWELL_LIMIT,
                why: Goodbye::Idle,
            };
        }
        actions
    }
}
