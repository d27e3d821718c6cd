//! When a provider fails, what the caller hears: the fallback phrase after a failed reply, or
//! an apology and the end of the call when speech recognition is gone.

use std::time::Duration;

use tokio::time::Instant;

use super::{Action, Reply, ReplyId, Turns};

/// What the caller hears when speech recognition cannot be reached; then the call ends.
pub const STT_APOLOGY: &str = "I'm sorry, I can't hear you right now because of a technical \
problem. Please call again in a few minutes. Goodbye.";
/// Longest wait for a farewell to play before the call is ended anyway.
pub const FAREWELL_LIMIT: Duration = Duration::from_secs(20);

/// What broke in a failed reply, as far as choosing what the caller hears next goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFailure {
    /// The model gave no answer: the voice still works, so the fallback phrase can be said.
    Model,
    /// The voice failed: only audio made earlier can still be played.
    Voice {
        /// Whether the fallback phrase's audio is ready in memory.
        fallback_cached: bool,
    },
}

/// Why the brain ends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// Speech recognition is gone: the caller was told ([`STT_APOLOGY`]).
    SttLost,
    /// The caller stayed silent through every idle prompt.
    Idle,
    /// The assistant ended the conversation (`end_call`).
    Ended,
    /// The assistant hands the caller to a person (`transfer_call`).
    Transferred,
}

impl Goodbye {
    /// Whether the caller speaking over the goodbye keeps the call: yes, unless speech
    /// recognition is gone (nothing they say can be heard).
    pub(super) fn revocable(self) -> bool {
        !matches!(self, Goodbye::SttLost)
    }
}

/// The call's goodbye, from the moment it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Farewell {
    /// No goodbye: the call goes on.
    #[default]
    None,
    /// Reply `id` says goodbye; the call ends once it is over, or at `by` at the latest.
    Saying {
        /// The goodbye.
        id: ReplyId,
        /// When the call ends even if the goodbye is still playing.
        by: Instant,
        /// Why the call ends.
        why: Goodbye,
    },
    /// The hang-up was asked for.
    Done,
}

impl Turns {
    /// Speech recognition is gone for good: the caller hears [`STT_APOLOGY`] (cutting off any
    /// reply), then [`Action::Hangup`] follows once it was heard, cut off or failed, or
    /// [`FAREWELL_LIMIT`] after `now` at the latest.
    pub fn on_stt_lost(&mut self, now: Instant) -> Vec<Action> {
        let actions = self.speak(STT_APOLOGY, now);
        if let Some(id) = self.current_reply() {
            self.farewell = Farewell::Saying {
                id,
                by: now + FAREWELL_LIMIT,
                why: Goodbye::SttLost,
            };
        }
        actions
    }

    /// Reply `id` ends the call once the caller has heard it (the assistant called `end_call`
    /// or `transfer_call`): it becomes the call's goodbye, heard to its last mark or cut at
    /// [`FAREWELL_LIMIT`] after `now`. Speaking over it keeps the call.
    pub fn on_goodbye(&mut self, id: ReplyId, why: Goodbye, now: Instant) -> Vec<Action> {
        if self.current_reply() == Some(id) && self.farewell == Farewell::None {
            self.farewell = Farewell::Saying {
                id,
                by: now + FAREWELL_LIMIT,
                why,
            };
        }
        self.hang_up_when_done(Vec::new(), Some(now))
    }

    /// Reply `id` could not be produced. What the caller already heard stays in the history; a
    /// turn with nothing heard leaves none (no orphaned user message). The caller then hears the
    /// fallback phrase, unless it cannot be played, it is itself what failed, or the call is
    /// saying goodbye; either way the call keeps listening.
    pub fn on_reply_failed(
        &mut self,
        id: ReplyId,
        failure: ReplyFailure,
        now: Instant,
    ) -> Vec<Action> {
        if self.is_held(id) {
            // A preemptive reply that failed leaves no trace: the turn's end asks again.
            self.preempted = None;
            self.reply = Reply::Idle;
            self.preemptives.push(super::Preemptive::Discarded);
            return self.hang_up_when_done(Vec::new(), Some(now));
        }
        if self.current_reply() == Some(id) {
            // Audio already queued still plays: the whole phrases heard are what is kept.
            let kept = match &self.reply {
                Reply::Speaking { spoken, .. } => Some((spoken.clone(), spoken.heard())),
                Reply::Paused { spoken, pause, .. } => Some((spoken.clone(), pause.heard.clone())),
                Reply::Idle | Reply::Thinking { .. } => None,
            };
            if let Some((spoken, heard)) = kept {
                self.remember(&spoken, heard);
            }
            self.reply = Reply::Idle;
        }
        let mut actions = Vec::new();
        if let Some(fallback) = self.fallback_for(id, failure) {
            actions = self.speak(&fallback, now);
            self.fallback = self.current_reply();
        } else {
            self.floor_to_caller(now);
        }
        self.hang_up_when_done(actions, Some(now))
    }

    /// The fallback phrase to say after reply `id` failed with `failure`, if it should be said.
    fn fallback_for(&self, id: ReplyId, failure: ReplyFailure) -> Option<String> {
        let playable = match failure {
            ReplyFailure::Model => true,
            ReplyFailure::Voice { fallback_cached } => fallback_cached,
        };
        let again = self.fallback == Some(id);
        if again || self.farewell != Farewell::None || !playable {
            return None;
        }
        self.fallback_phrase.clone()
    }

    /// Appends [`Action::Hangup`] once the goodbye is over: no longer the current reply (heard
    /// to the end, cut off or failed), or out of time at `now`.
    pub(super) fn hang_up_when_done(
        &mut self,
        mut actions: Vec<Action>,
        now: Option<Instant>,
    ) -> Vec<Action> {
        if let Farewell::Saying { id, by, why } = self.farewell {
            let out_of_time = now.is_some_and(|now| now >= by);
            if self.current_reply() != Some(id) || out_of_time {
                self.farewell = Farewell::Done;
                actions.push(Action::Hangup(why));
            }
        }
        actions
    }

    /// When the goodbye ends the call at the latest, while it is being said.
    pub(super) fn farewell_deadline(&self) -> Option<Instant> {
        match self.farewell {
            Farewell::Saying { by, .. } => Some(by),
            Farewell::None | Farewell::Done => None,
        }
    }
}
