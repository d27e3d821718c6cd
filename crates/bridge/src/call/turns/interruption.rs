//! False interruptions: the caller's "mm-hmm" over a reply, or a noise, clears the audio at
//! once like any barge-in, but once their words show it was not a turn, the reply resumes from
//! the phrase that was cut, with the audio it already has, and the history is as if nothing
//! happened. Words too few to count never interrupt at all.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::failures::Farewell;
use super::progress::{Pause, Reply};
use super::{Action, Turns};

/// The words that acknowledge without taking the floor, unless `BACKCHANNEL_WORDS` says
/// otherwise.
pub const DEFAULT_BACKCHANNEL_WORDS: &[&str] = &[
    "uh-huh", "mm-hmm", "mhm", "uh", "um", "hmm", "okay", "ok", "right", "yeah",
];

/// How interruptions are told apart from acknowledgements (`BACKCHANNEL_WORDS`,
/// `FALSE_INTERRUPTION_MS`, `BARGE_IN_MIN_WORDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptionPolicy {
    /// Words that alone are no turn, lower case; shared by every call.
    pub backchannel: Arc<[String]>,
    /// An interruption with no words by then resumes the reply.
    pub false_after: Duration,
    /// Fewer words than this never interrupt.
    pub min_words: usize,
}

impl Default for InterruptionPolicy {
    fn default() -> Self {
        Self {
            backchannel: DEFAULT_BACKCHANNEL_WORDS
                .iter()
                .map(|w| (*w).to_owned())
                .collect(),
            false_after: Duration::from_millis(1500),
            min_words: 1,
        }
    }
}

/// What became of an interruption, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The caller took the floor: the reply stopped for good.
    BargeIn,
    /// It was a backchannel or a noise: the reply went on.
    Resumed,
    /// Too few words to interrupt: the reply never stopped.
    Ignored,
}

impl Interruption {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::BargeIn => "barge_in",
            Self::Resumed => "resumed",
            Self::Ignored => "ignored",
        }
    }
}

/// A word as compared with the backchannel list: lower case, without the punctuation around it.
fn bare(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

/// The words of `text` (punctuation alone is none).
pub(super) fn word_count(text: &str) -> usize {
    text.split_whitespace()
        .filter(|w| !bare(w).is_empty())
        .count()
}

impl InterruptionPolicy {
    /// Whether `text` is only acknowledgements (or no words at all).
    pub(super) fn is_backchannel(&self, text: &str) -> bool {
        text.split_whitespace()
            .map(bare)
            .filter(|w| !w.is_empty())
            .all(|w| self.backchannel.contains(&w))
    }
}

impl Turns {
    /// Tells interruptions from acknowledgements by `policy`; a new brain uses the defaults.
    pub fn with_interruptions(mut self, policy: InterruptionPolicy) -> Self {
        self.interruptions = policy;
        self
    }

    /// While a reply plays, `text` has too few words to interrupt it.
    pub(super) fn too_few_to_interrupt(&self, text: &str) -> bool {
        matches!(self.reply, Reply::Speaking { id, .. } if !self.is_held(id))
            && word_count(text) < self.interruptions.min_words
    }

    /// The interrupted reply, when it may resume, waits for the caller's words; otherwise the
    /// caller took the floor.
    pub(super) fn pause(&mut self, heard: String, from: usize, now: Instant) {
        if let Reply::Speaking { id, spoken } = std::mem::replace(&mut self.reply, Reply::Idle) {
            let pause = Pause {
                from,
                heard,
                at: now,
                words: false,
            };
            self.reply = Reply::Paused { id, spoken, pause };
        }
    }

    /// Interim words while paused: real words rule out resuming for lack of words.
    pub(super) fn paused_interim(&mut self, text: &str) {
        let backchannel = self.interruptions.is_backchannel(text);
        if let Reply::Paused { pause, .. } = &mut self.reply {
            pause.words |= !backchannel;
        }
    }

    /// Decides a paused reply's fate once the caller's words allow it: final words that are
    /// only acknowledgements (or none) resume it; any other word makes the interruption a turn.
    /// With no words at all by `FALSE_INTERRUPTION_MS` after it, it resumes too.
    pub(super) fn settle(&mut self, now: Instant) -> Vec<Action> {
        let Reply::Paused { pause, .. } = &self.reply else {
            return Vec::new();
        };
        let said = self.heard.join(" ");
        if !said.trim().is_empty() {
            if !self.interruptions.is_backchannel(&said) {
                return self.take_the_floor();
            }
            if self.interim_pending {
                return Vec::new();
            }
            return self.resume();
        }
        let silent_too_long = now >= pause.at + self.interruptions.false_after;
        if silent_too_long && !pause.words {
            return self.resume();
        }
        Vec::new()
    }

    /// When a paused reply resumes for lack of words, if it is waiting for that.
    pub(super) fn pause_deadline(&self) -> Option<Instant> {
        match &self.reply {
            Reply::Paused { pause, .. } if self.heard.is_empty() && !pause.words => {
                Some(pause.at + self.interruptions.false_after)
            }
            _ => None,
        }
    }

    /// The interruption was no turn: the reply plays again from the phrase that was cut, and
    /// the acknowledgement leaves no trace.
    pub(super) fn resume(&mut self) -> Vec<Action> {
        let Reply::Paused {
            id,
            mut spoken,
            pause,
        } = std::mem::replace(&mut self.reply, Reply::Idle)
        else {
            return Vec::new();
        };
        spoken.replay_from(pause.from);
        let take = spoken.take;
        self.reply = Reply::Speaking { id, spoken };
        self.heard.clear();
        self.interim_pending = false;
        self.end_on_final = false;
        self.deadline = None;
        self.counted.push(Interruption::Resumed);
        vec![Action::Resume {
            id,
            from: pause.from,
            take,
        }]
    }

    /// The interruption was a turn: what the caller heard goes into the history, the kept
    /// audio goes, and their words go on as their turn. A caller who answers the idle goodbye
    /// keeps the call.
    pub(super) fn take_the_floor(&mut self) -> Vec<Action> {
        let Reply::Paused { id, spoken, pause } = std::mem::replace(&mut self.reply, Reply::Idle)
        else {
            return Vec::new();
        };
        self.remember(&spoken, pause.heard);
        self.keep_the_call(id);
        self.counted.push(Interruption::BargeIn);
        vec![Action::Discard { id }]
    }

    /// The caller spoke over the goodbye `id` (the idle goodbye, the farewell or the transfer
    /// announcement): nothing irreversible happens, the call goes on.
    pub(super) fn keep_the_call(&mut self, id: super::ReplyId) {
        if let Farewell::Saying {
            id: goodbye, why, ..
        } = self.farewell
        {
            if goodbye == id && why.revocable() {
                self.farewell = Farewell::None;
            }
        }
    }
}
