//! How far the assistant's side has got: which reply is being prepared or played, which of its
//! phrases the caller has heard (their marks came back), and what of it the history keeps.

use std::time::Duration;

use tokio::time::Instant;

use super::playout::{words_heard, Playout, AUDIBLE, CUT_OFF};
use super::{Action, Turns};
use crate::llm::ChatMessage;
use crate::store::Exchange;

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

    /// The mark after phrase `index` in take `take` of this reply: [`ReplyId::mark_name`] for
    /// the first, `reply-<n>.<index>.<take>` once it resumed, so that Twilio's echoes of a
    /// cleared take's marks are never taken for the resumed take's.
    pub fn take_mark_name(self, take: u32, index: usize) -> String {
        match take {
            0 => self.mark_name(index),
            take => format!("reply-{}.{index}.{take}", self.0),
        }
    }

    /// The (reply, phrase) a mark name stands for, if it is one of ours, whatever its take.
    pub fn parse_mark(name: &str) -> Option<(ReplyId, usize)> {
        Self::parse_take_mark(name).map(|(id, index, _)| (id, index))
    }

    /// The (reply, phrase, take) a mark name stands for, if it is one of ours.
    pub fn parse_take_mark(name: &str) -> Option<(ReplyId, usize, u32)> {
        let (reply, rest) = name.strip_prefix("reply-")?.split_once('.')?;
        let (phrase, take) = match rest.split_once('.') {
            Some((phrase, take)) => (phrase, take.parse().ok()?),
            None => (rest, 0),
        };
        Some((ReplyId(reply.parse().ok()?), phrase.parse().ok()?, take))
    }
}

/// Where the assistant's side of the conversation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// Nothing prepared or playing: the caller has the floor.
    Idle,
    /// The model is writing the answer to `user_text` (and calling `tools`); nothing of it is
    /// spoken yet.
    Thinking {
        id: ReplyId,
        user_text: String,
        tools: Vec<ChatMessage>,
    },
    /// Phrases of `id` are being synthesized, sent or played, until Twilio echoes the last mark.
    Speaking { id: ReplyId, spoken: Spoken },
    /// The caller spoke over `id` once it was audible: its audio was cleared but kept, until
    /// their words show whether they took the floor or only acknowledged it.
    Paused {
        id: ReplyId,
        spoken: Spoken,
        pause: Pause,
    },
}

/// An interruption not yet known to be a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pause {
    /// The phrase that was playing: a resumed reply starts again there.
    pub(super) from: usize,
    /// What the caller had heard, to the word, for the history if it was a turn.
    pub(super) heard: String,
    /// When the caller spoke.
    pub(super) at: Instant,
    /// Words other than backchannels were seen (interim): no resuming for lack of words.
    pub(super) words: bool,
}

impl Reply {
    /// The reply being prepared or played, if any.
    pub(super) fn id(&self) -> Option<ReplyId> {
        match self {
            Reply::Idle => None,
            Reply::Thinking { id, .. } | Reply::Speaking { id, .. } | Reply::Paused { id, .. } => {
                Some(*id)
            }
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
    /// Its whole tool rounds so far, in Mistral's shape, for the history.
    pub(super) tools: Vec<ChatMessage>,
    /// When its audio went out and how long each phrase plays.
    pub(super) playout: Playout,
    /// Which playing of it is on the line: 0, then one more each time it resumes (the speaker
    /// sends the take [`Action::Resume`] names); marks of an older take echo audio that was
    /// cleared.
    pub(super) take: u32,
}

impl Spoken {
    pub(super) fn new(user_text: Option<String>) -> Self {
        Self {
            user_text,
            phrases: Vec::new(),
            played: 0,
            complete: false,
            tools: Vec::new(),
            playout: Playout::default(),
            take: 0,
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.complete && self.played >= self.phrases.len()
    }

    /// What the caller heard: whole phrases whose marks came back.
    pub(super) fn heard(&self) -> String {
        self.phrases[..self.played.min(self.phrases.len())].join(" ")
    }

    /// What the caller had heard at `now`, when they cut the reply off there: to the word,
    /// ending in [`CUT_OFF`], and the phrase that was playing. `None` while less than
    /// [`AUDIBLE`] of it had played.
    pub(super) fn heard_until(&self, now: Instant) -> Option<(String, usize)> {
        let position = self.playout.position(self.played, &self.phrases, now);
        if self.played == 0 && position.played < AUDIBLE {
            return None;
        }
        let mut words: Vec<&str> = self.phrases[..position.whole.min(self.phrases.len())]
            .iter()
            .map(String::as_str)
            .collect();
        if let Some(phrase) = self.phrases.get(position.whole) {
            let part = words_heard(phrase, position.part);
            if !part.is_empty() {
                words.push(part);
            }
        }
        let mut heard = words.join(" ");
        heard.push_str(CUT_OFF);
        Some((
            heard,
            position.whole.min(self.phrases.len().saturating_sub(1)),
        ))
    }

    /// Played again from phrase `from`: what was estimated from there on is void.
    pub(super) fn replay_from(&mut self, from: usize) {
        self.take += 1;
        self.played = from;
        self.playout.forget_from(from);
    }
}

impl Turns {
    /// Phrase `text` of reply `id` is on its way to the caller (the first one ends "thinking").
    /// Returns whether the call may tell it now: a preemptive reply's phrases are told when it
    /// is released, and never if it is dropped.
    pub fn on_phrase(&mut self, id: ReplyId, text: &str) -> bool {
        if let Reply::Thinking {
            id: current,
            user_text,
            tools,
        } = &mut self.reply
        {
            if *current == id {
                let mut spoken = Spoken::new(Some(std::mem::take(user_text)));
                spoken.tools = std::mem::take(tools);
                self.reply = Reply::Speaking { id, spoken };
            }
        }
        if let Reply::Speaking {
            id: current,
            spoken,
        }
        | Reply::Paused {
            id: current,
            spoken,
            ..
        } = &mut self.reply
        {
            if *current == id {
                spoken.phrases.push(text.to_owned());
            }
        }
        !self.is_held(id)
    }

    /// Reply `id` handed the first frame of phrase `index` to the socket at `now`.
    pub fn on_phrase_sent(&mut self, id: ReplyId, index: usize, now: Instant) {
        if let Some(spoken) = self.speaking(id) {
            spoken.playout.sent(index, now);
        }
    }

    /// All of phrase `index` of reply `id` is queued: its first frame went out at `sent`, and
    /// it plays for `length`.
    pub fn on_phrase_queued(&mut self, id: ReplyId, index: usize, sent: Instant, length: Duration) {
        if let Some(spoken) = self.speaking(id) {
            spoken.playout.queued(index, sent, length);
        }
    }

    /// The reply being spoken, if it is `id`.
    fn speaking(&mut self, id: ReplyId) -> Option<&mut Spoken> {
        match &mut self.reply {
            Reply::Speaking {
                id: current,
                spoken,
            } if *current == id => Some(spoken),
            _ => None,
        }
    }

    /// Every phrase of reply `id` and its mark are queued.
    pub fn on_reply_queued(&mut self, id: ReplyId, now: Instant) -> Vec<Action> {
        match &mut self.reply {
            Reply::Speaking {
                id: current,
                spoken,
            } if *current == id => {
                spoken.complete = true;
                if spoken.finished() {
                    self.finish_reply(now);
                }
            }
            Reply::Paused {
                id: current,
                spoken,
                ..
            } if *current == id => spoken.complete = true,
            // The model said nothing speakable: the caller's turn stays unanswered.
            Reply::Thinking { id: current, .. } if *current == id => {
                self.reply = Reply::Idle;
                self.floor_to_caller(now);
            }
            _ => {}
        }
        self.hang_up_when_done(Vec::new(), None)
    }

    /// Twilio echoed a mark: the caller heard that phrase (a clear sent before makes the reply
    /// no longer current, so echoes of discarded audio are ignored).
    pub fn on_mark(&mut self, name: &str, now: Instant) -> Vec<Action> {
        if let Some((id, index, take)) = ReplyId::parse_take_mark(name) {
            self.mark_played(id, index, take, now);
        }
        self.hang_up_when_done(Vec::new(), Some(now))
    }

    /// Phrase `index` of reply `id` played, if it is the next one of the current reply's take
    /// on the line.
    fn mark_played(&mut self, id: ReplyId, index: usize, take: u32, now: Instant) {
        if let Some(spoken) = self.speaking(id) {
            if index == spoken.played && take == spoken.take {
                spoken.played += 1;
                spoken.playout.confirmed(now);
                if spoken.finished() {
                    self.finish_reply(now);
                }
            }
        }
    }

    /// The current reply was heard to the end: the caller has the floor.
    pub(super) fn finish_reply(&mut self, now: Instant) {
        if let Reply::Speaking { spoken, .. } = &self.reply {
            let (spoken, heard) = (spoken.clone(), spoken.heard());
            self.remember(&spoken, heard);
        }
        self.reply = Reply::Idle;
        self.floor_to_caller(now);
    }

    /// What the caller had heard of the current reply at `now` and the phrase that was
    /// playing (for a paused reply: when it paused); `None` when nothing of it was audible.
    pub(super) fn heard_now(&self, now: Instant) -> Option<(String, usize)> {
        match &self.reply {
            Reply::Speaking { spoken, .. } => spoken.heard_until(now),
            Reply::Paused { pause, .. } => Some((pause.heard.clone(), pause.from)),
            Reply::Idle | Reply::Thinking { .. } => None,
        }
    }

    /// The current reply stops at `now` before its end: what the caller heard of it, to the
    /// word, goes into the history. Returns that text, or `None` when nothing was audible yet.
    pub(super) fn cut_off(&mut self, now: Instant) -> Option<String> {
        let (heard, _) = self.heard_now(now)?;
        let spoken = match &self.reply {
            Reply::Speaking { spoken, .. } | Reply::Paused { spoken, .. } => spoken.clone(),
            Reply::Idle | Reply::Thinking { .. } => return Some(heard),
        };
        self.remember(&spoken, heard.clone());
        Some(heard)
    }

    /// Adds a reply's exchange to the history: the caller's turn, its whole tool rounds and
    /// what they heard of the answer (fixed texts like the greeting answer no turn and are not
    /// kept). Tool traffic is always followed by an assistant message, as Mistral requires.
    pub(super) fn remember(&mut self, spoken: &Spoken, heard: String) {
        let Some(user_text) = &spoken.user_text else {
            return;
        };
        if heard.is_empty() && spoken.tools.is_empty() {
            return;
        }
        let heard = if heard.is_empty() {
            CUT_OFF.to_owned()
        } else {
            heard
        };
        let exchange = Exchange::new(user_text.as_str(), heard).with_tools(spoken.tools.clone());
        self.history.add(exchange);
    }

    /// A whole tool round of reply `id` (the assistant's calls, one result per call), kept
    /// for the history.
    pub fn on_tool_round(&mut self, id: ReplyId, messages: Vec<ChatMessage>) {
        match &mut self.reply {
            Reply::Thinking {
                id: current, tools, ..
            } if *current == id => tools.extend(messages),
            Reply::Speaking {
                id: current,
                spoken,
            }
            | Reply::Paused {
                id: current,
                spoken,
                ..
            } if *current == id => spoken.tools.extend(messages),
            _ => {}
        }
    }
}
