//! The call's brain: who is speaking, when the caller's turn ends, and when to barge in.
//!
//! Sans-IO: it takes transcripts, marks and reply progress with the current instant, and returns
//! [`Action`]s for the call task to carry out. It never touches a socket or a clock, so every
//! timing rule is an ordinary unit test with invented instants.

use std::time::Duration;

use tokio::time::Instant;

use crate::llm::{ChatMessage, Role};

/// Identifies one reply (the greeting included); ids only grow, so "this reply and every older
/// one" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyId(pub u64);

impl ReplyId {
    /// The name of the mark sent after this reply's audio; its echo means the reply was heard.
    pub fn mark_name(self) -> String {
        format!("reply-{}", self.0)
    }
}

/// What the call task must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Speak fixed text (the greeting) through the speaking path.
    Say {
        /// The reply this becomes.
        id: ReplyId,
        /// What to say.
        text: String,
    },
    /// Ask the model with these messages, then speak its answer.
    Answer {
        /// The reply this becomes.
        id: ReplyId,
        /// System prompt, history and the caller's new turn.
        messages: Vec<ChatMessage>,
    },
    /// Barge-in: cancel reply `id`, drop its queued audio and send Twilio `clear`.
    Interrupt {
        /// The reply being cut off.
        id: ReplyId,
    },
}

/// Where the assistant's side of the conversation is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// Nothing prepared or playing: the caller has the floor.
    Idle,
    /// The model is writing the answer to `user_text`.
    Thinking { id: ReplyId, user_text: String },
    /// Audio of `id` is being sent or played, until Twilio echoes its mark.
    Speaking { id: ReplyId },
}

/// The turn-taking state of one call.
#[derive(Debug)]
pub struct Turns {
    /// Silence after the caller's last words that ends their turn.
    silence_timeout: Duration,
    /// The assistant's instructions, first message of every request.
    system_prompt: String,
    /// Final transcript segments of the caller's current turn, in order. Interim results never
    /// land here: they are revised later, and keeping them would repeat words.
    heard: Vec<String>,
    /// An interim result showed speech that no final segment has covered yet.
    interim_pending: bool,
    /// When the caller's turn ends unless they speak again.
    deadline: Option<Instant>,
    /// The timer fired while only interim text existed: end the turn on the next final.
    end_on_final: bool,
    /// The assistant's side.
    reply: Reply,
    /// Id for the next reply.
    next_id: u64,
    /// Everything said so far, without the system prompt.
    history: Vec<ChatMessage>,
    /// Caller turns that were answered (or are being answered).
    turns: u32,
    /// Times the caller talked over the assistant.
    barge_ins: u32,
}

impl Turns {
    /// A call that has not started.
    pub fn new(silence_timeout: Duration, system_prompt: String) -> Self {
        Self {
            silence_timeout,
            system_prompt,
            heard: Vec::new(),
            interim_pending: false,
            deadline: None,
            end_on_final: false,
            reply: Reply::Idle,
            next_id: 0,
            history: Vec::new(),
            turns: 0,
            barge_ins: 0,
        }
    }

    /// The stream started: speak the greeting.
    pub fn start(&mut self, greeting: &str) -> Vec<Action> {
        let id = self.new_id();
        self.reply = Reply::Speaking { id };
        self.system_prompt = format!(
            "{}\n\nThe call opened with this greeting, already spoken to the caller: \"{greeting}\"",
            self.system_prompt
        );
        vec![Action::Say {
            id,
            text: greeting.to_owned(),
        }]
    }

    /// A transcript from speech recognition, interim (`is_final == false`) or final.
    pub fn on_transcript(&mut self, text: &str, is_final: bool, now: Instant) -> Vec<Action> {
        let text = text.trim();
        if text.is_empty() {
            return Vec::new();
        }
        let mut actions = self.barge_in();
        self.deadline = Some(now + self.silence_timeout);
        if is_final {
            self.heard.push(text.to_owned());
            self.interim_pending = false;
            if self.end_on_final {
                actions.extend(self.end_turn());
            }
        } else {
            self.interim_pending = true;
        }
        actions
    }

    /// Time passed; ends the caller's turn when the silence timer has run out.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(deadline) if deadline <= now => {}
            _ => return Vec::new(),
        }
        self.deadline = None;
        if !self.heard.is_empty() && !self.interim_pending {
            return self.end_turn();
        }
        if self.interim_pending {
            // Words are still being finalized: take them as soon as the final arrives.
            self.end_on_final = true;
        }
        Vec::new()
    }

    /// The model's answer to reply `id` arrived: it joins the history with the caller's turn.
    pub fn on_reply_text(&mut self, id: ReplyId, text: &str) {
        let Reply::Thinking {
            id: current,
            user_text,
        } = &self.reply
        else {
            return;
        };
        if *current != id {
            return;
        }
        self.history
            .push(ChatMessage::new(Role::User, user_text.clone()));
        self.history.push(ChatMessage::new(Role::Assistant, text));
        self.reply = Reply::Speaking { id };
    }

    /// Reply `id` could not be produced; the caller's turn is dropped rather than left half in
    /// the history.
    pub fn on_reply_failed(&mut self, id: ReplyId) {
        if self.current_reply() == Some(id) {
            self.reply = Reply::Idle;
        }
    }

    /// Twilio echoed a mark: if it is the current reply's, the caller has heard all of it.
    pub fn on_mark(&mut self, name: &str) {
        if let Reply::Speaking { id } = self.reply {
            if id.mark_name() == name {
                self.reply = Reply::Idle;
            }
        }
    }

    /// When [`Turns::on_tick`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The reply being prepared or played, if any.
    pub fn current_reply(&self) -> Option<ReplyId> {
        match &self.reply {
            Reply::Idle => None,
            Reply::Thinking { id, .. } | Reply::Speaking { id } => Some(*id),
        }
    }

    /// True while the assistant's audio is being sent or played.
    pub fn is_speaking(&self) -> bool {
        matches!(self.reply, Reply::Speaking { .. })
    }

    /// Caller turns taken so far.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// Times the caller interrupted the assistant.
    pub fn barge_ins(&self) -> u32 {
        self.barge_ins
    }

    /// The conversation so far (without the system prompt).
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// The caller spoke: stop whatever the assistant is preparing or saying.
    fn barge_in(&mut self) -> Vec<Action> {
        match std::mem::replace(&mut self.reply, Reply::Idle) {
            Reply::Idle => Vec::new(),
            Reply::Speaking { id } => {
                self.barge_ins += 1;
                vec![Action::Interrupt { id }]
            }
            Reply::Thinking { id, user_text } => {
                // The caller is still talking: their earlier words and the new ones are one turn.
                self.heard.insert(0, user_text);
                self.turns = self.turns.saturating_sub(1);
                self.barge_ins += 1;
                vec![Action::Interrupt { id }]
            }
        }
    }

    fn end_turn(&mut self) -> Vec<Action> {
        self.end_on_final = false;
        self.deadline = None;
        let user_text = self.heard.join(" ");
        self.heard.clear();
        let id = self.new_id();
        let mut messages = Vec::with_capacity(self.history.len() + 2);
        messages.push(ChatMessage::new(Role::System, self.system_prompt.clone()));
        messages.extend(self.history.iter().cloned());
        messages.push(ChatMessage::new(Role::User, user_text.clone()));
        self.reply = Reply::Thinking { id, user_text };
        self.turns += 1;
        vec![Action::Answer { id, messages }]
    }

    fn new_id(&mut self) -> ReplyId {
        self.next_id += 1;
        ReplyId(self.next_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(2000);

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    fn started() -> (Turns, Instant, ReplyId) {
        let mut turns = Turns::new(TIMEOUT, "Be brief.".into());
        let actions = turns.start("Hello.");
        let Action::Say { id, .. } = actions[0] else {
            panic!("{actions:?}")
        };
        (turns, Instant::now(), id)
    }

    /// The caller's user message of an `Answer` action.
    fn asked(actions: &[Action]) -> (ReplyId, String, usize) {
        match actions {
            [Action::Answer { id, messages }] => (
                *id,
                messages
                    .last()
                    .map(|m| m.content.clone())
                    .unwrap_or_default(),
                messages.len(),
            ),
            other => panic!("expected one Answer, got {other:?}"),
        }
    }

    #[test]
    fn greeting_is_spoken_first_and_heard_when_its_mark_returns() {
        let (mut turns, _, greeting) = started();
        assert!(turns.is_speaking());
        turns.on_mark("reply-999");
        assert!(turns.is_speaking());
        turns.on_mark(&greeting.mark_name());
        assert!(!turns.is_speaking());
    }

    #[test]
    fn interim_results_never_duplicate_words() {
        let (mut turns, t0, g) = started();
        turns.on_mark(&g.mark_name());
        for (at, text) in [(0, "what"), (300, "what are"), (600, "what are your")] {
            assert!(turns.on_transcript(text, false, ms(t0, at)).is_empty());
        }
        turns.on_transcript("What are", true, ms(t0, 800));
        turns.on_transcript("your", false, ms(t0, 900));
        turns.on_transcript("your hours?", true, ms(t0, 1000));
        assert!(turns.on_tick(ms(t0, 2999)).is_empty());
        let (_, said, _) = asked(&turns.on_tick(ms(t0, 3000)));
        assert_eq!(said, "What are your hours?");
    }

    #[test]
    fn every_transcript_restarts_the_silence_timer() {
        let (mut turns, t0, g) = started();
        turns.on_mark(&g.mark_name());
        turns.on_transcript("Hello", true, ms(t0, 0));
        turns.on_transcript("there", false, ms(t0, 1500));
        assert!(turns.on_tick(ms(t0, 2000)).is_empty());
        assert_eq!(turns.next_deadline(), Some(ms(t0, 3500)));
    }

    #[test]
    fn timer_with_only_interim_text_waits_for_the_final() {
        let (mut turns, t0, g) = started();
        turns.on_mark(&g.mark_name());
        turns.on_transcript("where is", false, ms(t0, 0));
        assert!(turns.on_tick(ms(t0, 2000)).is_empty());
        let (_, said, _) = asked(&turns.on_transcript("Where is it?", true, ms(t0, 2100)));
        assert_eq!(said, "Where is it?");
    }

    #[test]
    fn empty_transcripts_are_ignored() {
        let (mut turns, t0, _) = started();
        assert!(turns.on_transcript("  ", true, ms(t0, 0)).is_empty());
        assert!(turns.is_speaking());
        assert_eq!(turns.next_deadline(), None);
    }

    #[test]
    fn speech_during_playback_interrupts_the_reply() {
        let (mut turns, t0, greeting) = started();
        let actions = turns.on_transcript("wait", false, ms(t0, 100));
        assert_eq!(actions, vec![Action::Interrupt { id: greeting }]);
        assert!(!turns.is_speaking());
        // The echo of the interrupted reply's mark (Twilio echoes pending marks on clear) is
        // not mistaken for anything.
        turns.on_mark(&greeting.mark_name());
        assert_eq!(turns.barge_ins(), 1);
    }

    #[test]
    fn speech_after_the_mark_returned_does_not_interrupt() {
        let (mut turns, t0, greeting) = started();
        turns.on_mark(&greeting.mark_name());
        assert!(turns.on_transcript("hi", false, ms(t0, 0)).is_empty());
    }

    #[test]
    fn speech_while_thinking_cancels_and_joins_the_turn() {
        let (mut turns, t0, g) = started();
        turns.on_mark(&g.mark_name());
        turns.on_transcript("What are your hours", true, ms(t0, 0));
        let (first, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
        let actions = turns.on_transcript("on Sunday?", true, ms(t0, 2100));
        assert_eq!(actions, vec![Action::Interrupt { id: first }]);
        // A late answer to the cancelled reply changes nothing.
        turns.on_reply_text(first, "We open at eight.");
        assert!(turns.history().is_empty());
        let (second, said, _) = asked(&turns.on_tick(ms(t0, 4100)));
        assert!(second > first);
        assert_eq!(said, "What are your hours on Sunday?");
        assert_eq!(turns.turns(), 1);
    }

    #[test]
    fn history_grows_by_one_exchange_per_answered_turn() {
        let (mut turns, t0, g) = started();
        turns.on_mark(&g.mark_name());
        let mut now = 0;
        for (question, answer) in [("Hours?", "Eight to six."), ("Address?", "Main Street.")] {
            turns.on_transcript(question, true, ms(t0, now));
            now += 2000;
            let (id, said, len) = asked(&turns.on_tick(ms(t0, now)));
            assert_eq!(said, question);
            assert_eq!(len, turns.history().len() + 2);
            turns.on_reply_text(id, answer);
            turns.on_mark(&id.mark_name());
        }
        let contents: Vec<_> = turns.history().iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            ["Hours?", "Eight to six.", "Address?", "Main Street."]
        );
        assert_eq!(turns.turns(), 2);
    }

    #[test]
    fn a_failed_reply_leaves_no_orphaned_turn() {
        let (mut turns, t0, g) = started();
        turns.on_mark(&g.mark_name());
        turns.on_transcript("Hours?", true, ms(t0, 0));
        let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
        turns.on_reply_failed(id);
        assert!(turns.history().is_empty());
        assert_eq!(turns.current_reply(), None);
    }

    #[test]
    fn system_prompt_leads_and_mentions_the_greeting() {
        let (mut turns, t0, g) = started();
        turns.on_mark(&g.mark_name());
        turns.on_transcript("Hi", true, ms(t0, 0));
        let actions = turns.on_tick(ms(t0, 2000));
        let Action::Answer { messages, .. } = &actions[0] else {
            panic!()
        };
        assert_eq!(messages[0].role, Role::System);
        assert!(messages[0].content.starts_with("Be brief."));
        assert!(messages[0].content.contains("Hello."));
    }
}
