//! Per-call conversation history, shared by every webhook that serves the call.
//!
//! The Gather flow is stateless HTTP: each turn of a call is a separate request, possibly to
//! another instance of the server. What was said so far lives here, keyed by Twilio's `CallSid`:
//! in this process's memory by default ([`memory`]), or in Redis when `REDIS_URL` is set
//! ([`redis`]) so that several instances share the calls.
//!
//! A history is a list of [`Exchange`]s — what the caller said and what the assistant answered,
//! always written together, so the model never sees a question without its answer. Every write
//! refreshes a time-to-live, so a call whose status callback never arrives is freed anyway, and
//! the history is bounded in exchanges and bytes (the oldest go first).
//!
//! Beside the history, a call has at most one *pending reply*: the webhook that asked the model
//! marks it before asking ([`Store::begin_reply`]), and the task that gets the answer stores the
//! exchange and clears the mark in one step ([`Store::finish_reply`]). `/speak_response`, on any
//! instance, reads [`Store::reply_state`] to know whether to wait, apologise or speak.
//!
//! A streaming call may also have a *next step* ([`NextStep`]: hang up, or transfer): the instance
//! serving the Media Stream records it ([`Store::set_next_step`]) before it closes the stream,
//! and `/stream_ended`, on whichever instance Twilio reaches, takes it
//! ([`Store::take_next_step`]) to answer Twilio's `<Connect action>`.

pub mod memory;
pub mod mirror;
pub mod redis;
mod url;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::llm::{ChatMessage, Role};
pub use crate::twilio::next_step::NextStep;
pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use url::RedisUrl;

/// Where conversations are kept.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreSettings {
    /// Redis holding the Gather flow's conversations, so several instances share calls
    /// (redis://[:password@]host[:port][/db]). Unset: kept in this process's memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_parser = RedisUrl::parse)]
    pub redis_url: Option<RedisUrl>,
}

/// How long a call's history outlives its last write when no status callback frees it.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a pending-reply mark lives: longer than any model request (Mistral's is 15 s).
pub const DEFAULT_PENDING_TTL: Duration = Duration::from_secs(60);
/// How long a recorded next step waits for `/stream_ended` (which comes within seconds of the
/// stream's close) and, for a transfer, for the dial's outcome (ringing lasts 30 s by default).
pub const DEFAULT_NEXT_STEP_TTL: Duration = Duration::from_secs(5 * 60);
/// Exchanges kept per call; a phone call rarely has more, and the prompt stays small.
pub const DEFAULT_MAX_EXCHANGES: usize = 20;
/// Bytes of history kept per call (as stored: JSON per exchange).
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;
/// Calls the memory store holds at once; past it the call closest to expiry is dropped.
pub const DEFAULT_MAX_CALLS: usize = 10_000;
/// Upper bound on one Redis operation, including a reconnection; a caller is waiting.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(1000);
/// Appended to a reply the caller cut off, so the model knows it was interrupted (every mode
/// keeps what was heard of a reply this way).
pub const CUT_OFF: &str = "…";
/// Longest `CallSid` accepted; Twilio's are 34 characters.
const MAX_CALL_SID_CHARS: usize = 64;

/// Bounds of a store. [`Default`] gives the production values; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Time-to-live of a call's history, refreshed by every write.
    pub history_ttl: Duration,
    /// Time-to-live of a pending-reply mark.
    pub pending_ttl: Duration,
    /// Time-to-live of a call's recorded next step.
    pub next_step_ttl: Duration,
    /// Exchanges kept per call.
    pub max_exchanges: usize,
    /// Stored bytes kept per call; the newest exchange is always kept.
    pub max_bytes: usize,
    /// Calls held at once (memory store only).
    pub max_calls: usize,
    /// Our own deadline for one operation (Redis only; memory operations do not wait).
    pub op_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            history_ttl: DEFAULT_HISTORY_TTL,
            pending_ttl: DEFAULT_PENDING_TTL,
            next_step_ttl: DEFAULT_NEXT_STEP_TTL,
            max_exchanges: DEFAULT_MAX_EXCHANGES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_calls: DEFAULT_MAX_CALLS,
            op_timeout: DEFAULT_OP_TIMEOUT,
        }
    }
}

/// Twilio's call identifier, checked at the edge: 1–64 ASCII letters and digits, so it is safe
/// inside a Redis key and a log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSid(String);

impl CallSid {
    /// `None` unless `raw` looks like a call identifier.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let ok = !raw.is_empty()
            && raw.len() <= MAX_CALL_SID_CHARS
            && raw.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Self(raw.to_owned()))
    }

    /// The identifier as Twilio sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One turn of the conversation: the caller's words, the tools the assistant called on the
/// way (if any), and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// What the caller said.
    pub user: String,
    /// What the assistant answered (as the model wrote it, before Markdown is stripped).
    pub assistant: String,
    /// The tool traffic between the two, in Mistral's shape: each assistant message with its
    /// calls, then one `tool` message per call. Absent from exchanges stored before tools
    /// existed, and from the stored form when empty, so both forms read both ways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ChatMessage>,
}

impl Exchange {
    /// An exchange of `user`'s words and the `assistant`'s answer.
    pub fn new(user: impl Into<String>, assistant: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            assistant: assistant.into(),
            tools: Vec::new(),
        }
    }

    /// The same exchange with the tool traffic that led to the answer.
    pub fn with_tools(self, tools: Vec<ChatMessage>) -> Self {
        Self { tools, ..self }
    }

    /// The stored form: one JSON object. Both stores count bytes in this form.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The exchange back from its stored form.
    pub fn decode(stored: &str) -> Result<Self, StoreError> {
        serde_json::from_str(stored).map_err(|err| StoreError::Corrupt(err.to_string()))
    }
}

/// The system prompt of a call that opened with `greeting`: the operator's prompt, then what
/// the caller has already heard. Built once per server, not per call.
pub fn instructions(system_prompt: &str, greeting: &str) -> String {
    format!(
        "{system_prompt}\n\nThe call opened with this greeting, already spoken to the caller: \"{greeting}\""
    )
}

/// The conversation for the model: the system prompt, the history (tool traffic included),
/// then the caller's new words.
pub fn conversation(system: &str, history: &[Exchange], user: &str) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(history.len() * 2 + 2);
    messages.push(ChatMessage::new(Role::System, system));
    for exchange in history {
        messages.push(ChatMessage::new(Role::User, exchange.user.as_str()));
        messages.extend(exchange.tools.iter().cloned());
        messages.push(ChatMessage::new(
            Role::Assistant,
            exchange.assistant.as_str(),
        ));
    }
    messages.push(ChatMessage::new(Role::User, user));
    messages
}

/// Names one request to the model, so that only the request a call is waiting for can fill the
/// call's pending reply. Unique across instances in practice: time, a per-process random seed
/// and a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyId(String);

impl ReplyId {
    /// A fresh identifier.
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!("{nanos:x}-{seed:x}-{count:x}"))
    }

    /// The identifier as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ReplyId {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/speak_response` finds for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyState {
    /// A reply is being written: wait for it.
    Pending,
    /// The reply being written could not be had: apologise.
    Failed,
    /// Nothing pending: the call's latest answer, if it has one.
    Latest(Option<String>),
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer within our deadline (down, unreachable or overloaded).
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("Redis failed: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// A stored value is not what this program writes.
    #[error("a stored value is corrupt: {0}")]
    Corrupt(String),
}

/// The conversation store the webhooks use: memory or Redis.
///
/// An enum rather than a trait object: there are exactly two backends, both in this crate; the
/// async methods dispatch statically without boxing futures, and a test suite can run the same
/// functions over both by building either variant. Cheap to clone (both hold an `Arc`).
#[derive(Debug, Clone)]
pub enum Store {
    /// This process's memory: one instance only.
    Memory(MemoryStore),
    /// A Redis server shared by every instance.
    Redis(RedisStore),
}

/// Runs the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Memory(store) => Ok(store.$method($($arg),*)),
            Store::Redis(store) => store.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// The in-memory store.
    pub fn memory(options: StoreOptions) -> Self {
        Self::Memory(MemoryStore::new(options))
    }

    /// A Redis store for `url` (`redis://…`). Connects lazily and reconnects by itself, so the
    /// server starts, and recovers, whether or not Redis is up.
    pub fn redis(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        RedisStore::new(url, options).map(Self::Redis)
    }

    /// Which backend this is, for the start-up log line.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// The call's history, oldest exchange first; empty for an unknown call.
    pub async fn history(&self, call: &CallSid) -> Result<Vec<Exchange>, StoreError> {
        dispatch!(self.history(call))
    }

    /// Appends one exchange atomically, drops the oldest past the bounds, refreshes the TTL.
    pub async fn append(&self, call: &CallSid, exchange: &Exchange) -> Result<(), StoreError> {
        dispatch!(self.append(call, exchange))
    }

    /// Marks reply `id` as pending for the call and returns the history to ask the model with.
    pub async fn begin_reply(
        &self,
        call: &CallSid,
        id: &ReplyId,
    ) -> Result<Vec<Exchange>, StoreError> {
        dispatch!(self.begin_reply(call, id))
    }

    /// If reply `id` is still the call's pending reply: appends `exchange` and clears the mark,
    /// in one step, and returns `true`. Otherwise (the call ended, or a newer question replaced
    /// this one) stores nothing and returns `false`: an answer the caller never heard is not
    /// history.
    pub async fn finish_reply(
        &self,
        call: &CallSid,
        id: &ReplyId,
        exchange: &Exchange,
    ) -> Result<bool, StoreError> {
        dispatch!(self.finish_reply(call, id, exchange))
    }

    /// Marks pending reply `id` as failed, if it is still the call's pending reply.
    pub async fn fail_reply(&self, call: &CallSid, id: &ReplyId) -> Result<(), StoreError> {
        dispatch!(self.fail_reply(call, id))
    }

    /// Whether a reply is pending or failed, or else the call's latest answer.
    pub async fn reply_state(&self, call: &CallSid) -> Result<ReplyState, StoreError> {
        dispatch!(self.reply_state(call))
    }

    /// Records what Twilio does with the call once its Media Stream closes, replacing any step
    /// recorded before; it lapses after [`StoreOptions::next_step_ttl`]. Await it before closing
    /// the stream: Twilio asks `/stream_ended` right after the close.
    pub async fn set_next_step(&self, call: &CallSid, step: &NextStep) -> Result<(), StoreError> {
        dispatch!(self.set_next_step(call, step))
    }

    /// [`Store::set_next_step`] for Twilio's `call_sid` as received, with the outcome logged. A
    /// store that cannot take it (or an unusable sid) leaves `/stream_ended` answering
    /// `<Hangup/>`: the caller is never left on a silent line.
    pub async fn record_next_step(&self, call_sid: &str, step: &NextStep) {
        let Some(call) = CallSid::parse(call_sid) else {
            tracing::warn!("callSid unusable as a store key: /stream_ended will hang up");
            return;
        };
        match self.set_next_step(&call, step).await {
            Ok(()) => tracing::info!(?step, "next step recorded for /stream_ended"),
            Err(err) => {
                tracing::error!(%err, ?step, "could not record the next step: /stream_ended will hang up");
            }
        }
    }

    /// The call's recorded next step, removed in the same step so that only one request acts
    /// on it; `None` when there is none (never recorded, taken, lapsed or freed).
    pub async fn take_next_step(&self, call: &CallSid) -> Result<Option<NextStep>, StoreError> {
        dispatch!(self.take_next_step(call))
    }

    /// Counts one more resumption of the call's ConversationRelay session (a new session after
    /// one failed or was moved off a draining instance) and returns the count so far. The count
    /// lapses [`StoreOptions::next_step_ttl`] after the latest resumption, so it bounds a loop
    /// of failing sessions, not the resumptions of a long call hours apart.
    pub async fn count_resumption(&self, call: &CallSid) -> Result<u32, StoreError> {
        dispatch!(self.count_resumption(call))
    }

    /// Checks that the store answers; for Redis this also opens the shared connection, so the
    /// first caller after a start does not pay for it.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(store) => store.ping().await,
        }
    }

    /// Forgets the call: its history, any pending reply, any next step and its resumptions.
    pub async fn delete(&self, call: &CallSid) -> Result<(), StoreError> {
        dispatch!(self.delete(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_sid_is_parsed_at_the_edge() {
        assert_eq!(
            CallSid::parse(" CA0123456789abcdef0123456789abcdef ")
                .unwrap()
                .as_str(),
            "CA0123456789abcdef0123456789abcdef"
        );
        for bad in ["", "  ", "CA}x", "CA 1", "ivr:call", &"C".repeat(65)] {
            assert!(CallSid::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn exchanges_round_trip_through_their_stored_form() {
        let exchange = Exchange::new("Fish & \"chips\"?", "Yes <b>\n");
        assert_eq!(Exchange::decode(&exchange.encode()).unwrap(), exchange);
        let old_form = r#"{"user":"Hours?","assistant":"Eight to six."}"#;
        assert_eq!(
            Exchange::decode(old_form).unwrap(),
            Exchange::new("Hours?", "Eight to six.")
        );
        assert_eq!(Exchange::new("Hours?", "Eight to six.").encode(), old_form);
        let call = crate::llm::ToolCall {
            id: "abcDEF123".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        };
        let with_tools = Exchange::new("When?", "At nine.").with_tools(vec![
            ChatMessage::assistant_tool_calls("", vec![call.clone()]),
            ChatMessage::tool_result(&call, "9:00"),
        ]);
        assert_eq!(Exchange::decode(&with_tools.encode()).unwrap(), with_tools);
        assert!(matches!(
            Exchange::decode("nope"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn conversation_puts_history_between_system_and_the_new_question() {
        let history = [Exchange::new("Hours?", "Eight to six.")];
        let messages = conversation("Be brief.", &history, "Address?");
        let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(messages[3].content, "Address?");
    }

    #[test]
    fn reply_ids_differ() {
        assert_ne!(ReplyId::new(), ReplyId::new());
    }
}
