//! How far the assistant's side has got: which reply is being prepared or played, and which of
//! its phrases the caller has heard (their marks came back).

/// Identifies one reply (the greeting included); ids only grow, so "this reply and every older
/// one" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyId(pub u64);

impl ReplyId {
    /// The name of the mark sent after phrase `index` of this reply; its echo means the caller
    /// heard that phrase.
    pub fn mark_name(self, index: usize) -> String {
        format!("reply-{}.{index}", self.0)
    }

    /// The (reply, phrase) a mark name stands for, if it is one of ours.
    pub fn parse_mark(name: &str) -> Option<(ReplyId, usize)> {
        let (reply, phrase) = name.strip_prefix("reply-")?.split_once('.')?;
        Some((ReplyId(reply.parse().ok()?), phrase.parse().ok()?))
    }
}

/// Where the assistant's side of the conversation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// Nothing prepared or playing: the caller has the floor.
    Idle,
    /// The model is writing the answer to `user_text`; nothing of it is spoken yet.
    Thinking { id: ReplyId, user_text: String },
    /// Phrases of `id` are being synthesized, sent or played, until Twilio echoes the last mark.
    Speaking { id: ReplyId, spoken: Spoken },
}

impl Reply {
    /// The reply being prepared or played, if any.
    pub(super) fn id(&self) -> Option<ReplyId> {
        match self {
            Reply::Idle => None,
            Reply::Thinking { id, .. } | Reply::Speaking { id, .. } => Some(*id),
        }
    }
}

/// A reply that has begun to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spoken {
    /// The caller's turn it answers; `None` for the greeting and other fixed texts.
    pub(super) user_text: Option<String>,
    /// Its phrases so far, in order.
    pub(super) phrases: Vec<String>,
    /// Phrases whose mark came back while no clear was pending: the caller heard them.
    pub(super) played: usize,
    /// Every phrase and mark is queued: once `played` reaches the count, the reply is over.
    pub(super) complete: bool,
}

impl Spoken {
    pub(super) fn new(user_text: Option<String>) -> Self {
        Self {
            user_text,
            phrases: Vec::new(),
            played: 0,
            complete: false,
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.complete && self.played >= self.phrases.len()
    }

    /// What the caller heard: whole phrases whose marks came back.
    pub(super) fn heard(&self) -> String {
        self.phrases[..self.played.min(self.phrases.len())].join(" ")
    }
}
