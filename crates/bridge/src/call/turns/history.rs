//! What the model is reminded of: the exchanges of the call so far, bounded.

use crate::llm::{ChatMessage, Role};

/// Exchanges (caller turn + reply) kept in the history sent to the model; older ones are
/// dropped first. The system prompt is always kept.
pub const MAX_HISTORY_EXCHANGES: usize = 20;
/// Characters of history kept, for the same reason: a long call must not grow without bound.
pub const MAX_HISTORY_CHARS: usize = 16_000;

/// The conversation so far, without the system prompt.
#[derive(Debug, Default)]
pub(super) struct History {
    /// User/assistant pairs, oldest first.
    messages: Vec<ChatMessage>,
    /// Exchanges ever added (trimming does not lower it), so the call task can tell which ones
    /// are new.
    remembered: u64,
}

impl History {
    pub(super) fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    pub(super) fn remembered(&self) -> u64 {
        self.remembered
    }

    /// Adds one exchange: the caller's turn and what they heard of the answer.
    pub(super) fn add(&mut self, user_text: &str, heard: String) {
        self.messages
            .push(ChatMessage::new(Role::User, user_text.to_owned()));
        self.messages.push(ChatMessage::new(Role::Assistant, heard));
        self.remembered += 1;
        self.trim();
    }

    /// Drops the oldest exchanges until the history is within its bounds (the newest exchange
    /// is always kept).
    fn trim(&mut self) {
        let chars = |h: &[ChatMessage]| h.iter().map(|m| m.content.chars().count()).sum::<usize>();
        while self.messages.len() > 2
            && (self.messages.len() > 2 * MAX_HISTORY_EXCHANGES
                || chars(&self.messages) > MAX_HISTORY_CHARS)
        {
            self.messages.drain(..2);
        }
    }
}
