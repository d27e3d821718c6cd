//! How far the assistant's side has got: which reply is being prepared or played, which of its
//! phrases the caller has heard (their marks came back), and what of it the history keeps.

use super::{Action, Turns};

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

impl Turns {
    /// Phrase `text` of reply `id` is on its way to the caller (the first one ends "thinking").
    pub fn on_phrase(&mut self, id: ReplyId, text: &str) {
        if let Reply::Thinking {
            id: current,
            user_text,
        } = &mut self.reply
        {
            if *current == id {
                let user_text = std::mem::take(user_text);
                self.reply = Reply::Speaking {
                    id,
                    spoken: Spoken::new(Some(user_text)),
                };
            }
        }
        if let Reply::Speaking {
            id: current,
            spoken,
        } = &mut self.reply
        {
            if *current == id {
                spoken.phrases.push(text.to_owned());
            }
        }
    }

    /// Every phrase of reply `id` and its mark are queued.
    pub fn on_reply_queued(&mut self, id: ReplyId) -> Vec<Action> {
        match &mut self.reply {
            Reply::Speaking {
                id: current,
                spoken,
            } if *current == id => {
                spoken.complete = true;
                if spoken.finished() {
                    self.finish_reply();
                }
            }
            // The model said nothing speakable: the caller's turn stays unanswered.
            Reply::Thinking { id: current, .. } if *current == id => self.reply = Reply::Idle,
            _ => {}
        }
        self.hang_up_when_done(Vec::new(), None)
    }

    /// Twilio echoed a mark: the caller heard that phrase (a clear sent before makes the reply
    /// no longer current, so echoes of discarded audio are ignored).
    pub fn on_mark(&mut self, name: &str) -> Vec<Action> {
        if let Some((id, index)) = ReplyId::parse_mark(name) {
            self.mark_played(id, index);
        }
        self.hang_up_when_done(Vec::new(), None)
    }

    /// Phrase `index` of reply `id` played, if it is the next one of the current reply.
    fn mark_played(&mut self, id: ReplyId, index: usize) {
        if let Reply::Speaking {
            id: current,
            spoken,
        } = &mut self.reply
        {
            if *current == id && index == spoken.played {
                spoken.played += 1;
                if spoken.finished() {
                    self.finish_reply();
                }
            }
        }
    }

    /// The current reply was heard to the end.
    pub(super) fn finish_reply(&mut self) {
        self.record_heard();
        self.reply = Reply::Idle;
    }

    /// Adds what the caller heard of the current reply to the history.
    pub(super) fn record_heard(&mut self) {
        if let Reply::Speaking { spoken, .. } = &self.reply {
            let spoken = spoken.clone();
            self.remember(&spoken);
        }
    }

    /// Adds a reply's exchange to the history: the caller's turn and what they heard of it.
    pub(super) fn remember(&mut self, spoken: &Spoken) {
        let (Some(user_text), heard) = (&spoken.user_text, spoken.heard()) else {
            return;
        };
        if !heard.is_empty() {
            self.history.add(user_text, heard);
        }
    }
}
