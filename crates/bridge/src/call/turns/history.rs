//! What the model is reminded of: the exchanges of the call so far, bounded.

use crate::llm::ChatMessage;
use crate::store::{conversation, Exchange};

/// Exchanges (caller turn + reply) kept in the history sent to the model; older ones are
/// dropped first. The system prompt is always kept.
pub const MAX_HISTORY_EXCHANGES: usize = 20;
/// Characters of history kept, for the same reason: a long call must not grow without bound.
pub const MAX_HISTORY_CHARS: usize = 16_000;

/// The conversation so far, without the system prompt.
#[derive(Debug, Default)]
pub(super) struct History {
    /// Exchanges, oldest first: each the caller's turn, any tool traffic, and what they heard
    /// of the answer.
    exchanges: Vec<Exchange>,
    /// Exchanges ever added (trimming does not lower it), so the call task can tell which ones
    /// are new.
    remembered: u64,
}

impl History {
    pub(super) fn exchanges(&self) -> &[Exchange] {
        &self.exchanges
    }

    /// The messages the model gets: the system prompt, the history, the caller's new turn.
    pub(super) fn request(&self, system: &str, user: &str) -> Vec<ChatMessage> {
        conversation(system, &self.exchanges, user)
    }

    pub(super) fn remembered(&self) -> u64 {
        self.remembered
    }

    /// Adds one exchange: the caller's turn, the tool rounds of its answer (whole rounds, in
    /// Mistral's shape) and what they heard of the answer.
    pub(super) fn add(&mut self, exchange: Exchange) {
        self.exchanges.push(exchange);
        self.remembered += 1;
        self.trim();
    }

    /// Drops the oldest exchanges until the history is within its bounds (the newest exchange
    /// is always kept).
    fn trim(&mut self) {
        let chars = |e: &Exchange| {
            e.user.chars().count()
                + e.assistant.chars().count()
                + e.tools
                    .iter()
                    .map(|m| m.content.chars().count())
                    .sum::<usize>()
        };
        let mut total: usize = self.exchanges.iter().map(chars).sum();
        let mut drop = 0;
        while self.exchanges.len() - drop > 1
            && (self.exchanges.len() - drop > MAX_HISTORY_EXCHANGES || total > MAX_HISTORY_CHARS)
        {
            total -= chars(&self.exchanges[drop]);
            drop += 1;
        }
        self.exchanges.drain(..drop);
    }
}
