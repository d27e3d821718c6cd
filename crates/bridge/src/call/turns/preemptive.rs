//! Preemptive generation: the reply is ready the moment the turn ends.
//!
//! When a final transcript arrives and the turn is not over yet (the silence timer runs, or
//! the recogniser has not heard the caller stop), the answer to what was said so far is
//! started at once — the model streams, the voice synthesizes — but its audio is held. More
//! words from the caller drop it (and the next final starts again with the whole text); when
//! the turn ends on the text it answers, its audio goes out at once. A dropped reply leaves no
//! trace in the history, the events or the caller's ear; its tools wait for the release.

use tokio::time::Instant;

use super::progress::Reply;
use super::{Action, ReplyId, Turns};

/// What became of a preemptive reply, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preemptive {
    /// The turn ended on the text it answered: its audio went out at once.
    Used,
    /// The caller said more first, or something else came in its way: it was dropped.
    Discarded,
}

impl Preemptive {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Used => "used",
            Self::Discarded => "discarded",
        }
    }
}

impl Turns {
    /// Prepares replies before the turn ends when `on` (`PREEMPTIVE_GENERATION`); a new brain
    /// does not.
    pub fn with_preemptive(mut self, on: bool) -> Self {
        self.preemptive_on = on;
        self
    }

    /// Whether reply `id` is a preemptive one not yet released.
    pub(super) fn is_held(&self, id: ReplyId) -> bool {
        self.preempted == Some(id)
    }

    /// A final segment arrived and the turn goes on: starts answering what was said so far,
    /// held, unless a reply is already in the way or words are still being recognised.
    pub(super) fn prepare(&mut self, now: Instant) -> Vec<Action> {
        let _ = now;
        if !self.preemptive_on
            || !matches!(self.reply, Reply::Idle)
            || self.interim_pending
            || self.heard.is_empty()
        {
            return Vec::new();
        }
        let user_text = self.heard.join(" ");
        let id = self.new_id();
        let messages = self.history.request(&self.system_prompt, &user_text);
        self.reply = Reply::Thinking {
            id,
            user_text,
            tools: Vec::new(),
        };
        self.preempted = Some(id);
        vec![Action::Prepare { id, messages }]
    }

    /// The caller said more (or the brain must speak): the preemptive reply goes, unheard.
    pub(super) fn drop_preemptive(&mut self) -> Vec<Action> {
        let Some(id) = self.preempted.take() else {
            return Vec::new();
        };
        if self.reply.id() == Some(id) {
            self.reply = Reply::Idle;
        }
        self.keep_the_call(id);
        self.preemptives.push(Preemptive::Discarded);
        vec![Action::Discard { id }]
    }

    /// The turn ends at `now` with the text the preemptive reply answered: it is released and
    /// becomes the turn's answer. `None` when there is no such reply.
    pub(super) fn release(&mut self, now: Instant) -> Option<Vec<Action>> {
        let id = self.preempted?;
        let user_text = self.heard.join(" ");
        let answers = match &self.reply {
            Reply::Thinking {
                id: r,
                user_text: u,
                ..
            } => *r == id && *u == user_text,
            Reply::Speaking { id: r, spoken } => {
                *r == id && spoken.user_text.as_deref() == Some(user_text.as_str())
            }
            Reply::Paused { .. } | Reply::Idle => false,
        };
        if !answers {
            return None;
        }
        self.preempted = None;
        self.heard.clear();
        self.end_on_final = false;
        self.deadline = None;
        self.turns += 1;
        self.latency.answering(id, now);
        self.preemptives.push(Preemptive::Used);
        let phrases = match &self.reply {
            Reply::Speaking { spoken, .. } => spoken.phrases.clone(),
            _ => Vec::new(),
        };
        Some(vec![Action::Release {
            id,
            text: user_text,
            phrases,
        }])
    }
}
