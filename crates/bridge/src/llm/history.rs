//! The message-order rules Mistral enforces on a conversation with tool traffic (PROTOCOLS.md
//! 6.5), as plain functions: [`check`] says which rule a history breaks (the error Mistral would
//! answer with 400), [`repair`] rewrites a history so it breaks none, for use right before a
//! request (a caller interrupting a tool call leaves calls without results, for instance).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::{ChatMessage, Role};

/// Length of a tool-call id Mistral accepts.
pub const TOOL_CALL_ID_LEN: usize = 9;

/// The result given to a call that never got one (the caller interrupted it, say).
pub const NO_RESULT: &str = "{\"error\": \"cancelled: no result\"}";

/// The assistant turn put between a tool result and the caller's next words when the model
/// never answered the result (Mistral refuses a `user` message right after a `tool` one).
pub const AFTER_TOOL: &str = "Done.";

/// Whether Mistral accepts `id` as a tool-call id: exactly 9 of `[a-zA-Z0-9]`.
pub fn is_valid_tool_call_id(id: &str) -> bool {
    id.len() == TOOL_CALL_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A fresh tool-call id Mistral accepts, for a call the bridge must name itself. Unique within
/// the process and unpredictable across processes.
pub fn new_tool_call_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut bits = KEYS.get_or_init(RandomState::new).hash_one(n);
    (0..TOOL_CALL_ID_LEN)
        .map(|_| {
            let c = ALPHABET[(bits % 62) as usize];
            bits /= 62;
            char::from(c)
        })
        .collect()
}

/// A rule of Mistral's that a history breaks, with Mistral's words for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A call id is not 9 alphanumerics.
    #[error("Tool call id was {0} but must be a-z, A-Z, 0-9, with a length of 9.")]
    BadId(String),
    /// The `tool` messages after an assistant's calls do not answer each call once.
    #[error("Not the same number of function calls and responses (message {0})")]
    Unanswered(usize),
    /// A `tool` message that answers no call just before it.
    #[error("Tool message {0} answers no call")]
    StrayResult(usize),
    /// A `user` message right after a `tool` one.
    #[error("Unexpected role 'user' after role 'tool' (message {0})")]
    UserAfterTool(usize),
    /// The conversation does not end on `user` or `tool`.
    #[error("Expected last role User or Tool for serving")]
    BadLastRole,
}

/// The first of Mistral's tool rules `messages` breaks, if any.
pub fn check(messages: &[ChatMessage]) -> Result<(), HistoryError> {
    let mut i = 0;
    while i < messages.len() {
        let m = &messages[i];
        if m.role == Role::User && i > 0 && messages[i - 1].role == Role::Tool {
            return Err(HistoryError::UserAfterTool(i));
        }
        if m.role == Role::Tool {
            return Err(HistoryError::StrayResult(i));
        }
        if let Some(bad) = m.tool_calls.iter().find(|c| !is_valid_tool_call_id(&c.id)) {
            return Err(HistoryError::BadId(bad.id.clone()));
        }
        let results = if m.tool_calls.is_empty() {
            0
        } else {
            results_after(messages, i)
        };
        if !m.tool_calls.is_empty() && !answers_each_once(m, &messages[i + 1..i + 1 + results]) {
            return Err(HistoryError::Unanswered(i));
        }
        i += 1 + results;
    }
    match messages.last().map(|m| m.role) {
        Some(Role::User | Role::Tool) => Ok(()),
        _ => Err(HistoryError::BadLastRole),
    }
}

/// How many `tool` messages directly follow message `i`.
fn results_after(messages: &[ChatMessage], i: usize) -> usize {
    messages[i + 1..]
        .iter()
        .take_while(|m| m.role == Role::Tool)
        .count()
}

/// Whether `results` answer each of `asked`'s calls exactly once, and nothing else.
fn answers_each_once(asked: &ChatMessage, results: &[ChatMessage]) -> bool {
    results.len() == asked.tool_calls.len()
        && asked.tool_calls.iter().all(|call| {
            let answers = |r: &&ChatMessage| r.tool_call_id.as_deref() == Some(call.id.as_str());
            results.iter().filter(answers).count() == 1
        })
}

/// `messages` rewritten to obey Mistral's tool rules, keeping everything that can be kept:
/// invalid call ids are replaced (in the call and its result alike); each assistant's calls are
/// followed by exactly one result each, in call order ([`NO_RESULT`] for a call that has none);
/// results that answer no call are dropped; an [`AFTER_TOOL`] assistant turn separates a result
/// from the caller's next words. A history ending on a plain assistant message is left so (it
/// needs the caller's next words, which only the caller of this function has).
pub fn repair(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let messages = renumber_bad_ids(messages);
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut rest = messages.into_iter().peekable();
    while let Some(m) = rest.next() {
        match m.role {
            Role::Tool => continue,
            Role::User if out.last().is_some_and(|last| last.role == Role::Tool) => {
                out.push(ChatMessage::new(Role::Assistant, AFTER_TOOL));
            }
            _ => {}
        }
        let calls = m.tool_calls.clone();
        out.push(m);
        let mut results = Vec::new();
        while let Some(result) = rest.next_if(|next| next.role == Role::Tool) {
            results.push(result);
        }
        for call in &calls {
            let pos = results
                .iter()
                .position(|r| r.tool_call_id.as_deref() == Some(call.id.as_str()));
            match pos {
                Some(pos) => out.push(results.swap_remove(pos)),
                None => out.push(ChatMessage::tool_result(call, NO_RESULT)),
            }
        }
    }
    out
}

/// Gives every call whose id Mistral would refuse a fresh one, and its results the same.
fn renumber_bad_ids(mut messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut renamed: HashMap<String, String> = HashMap::new();
    for m in &mut messages {
        for call in &mut m.tool_calls {
            if !is_valid_tool_call_id(&call.id) {
                let fresh = renamed
                    .entry(call.id.clone())
                    .or_insert_with(new_tool_call_id);
                call.id.clone_from(fresh);
            }
        }
        if let Some(id) = &mut m.tool_call_id {
            if let Some(fresh) = renamed.get(id.as_str()) {
                id.clone_from(fresh);
            }
        }
    }
    messages
}

#[cfg(test)]
mod tests;
