//! The brain's unit tests, with invented instants.

use super::*;

/// The rules of `TURN_DETECTION=deepgram`, in their own file.
mod deepgram;
/// What the caller hears when a provider fails, and when the call hangs up.
mod failures;
/// End of speech → first answer audio.
mod latency;

const TIMEOUT: Duration = Duration::from_millis(2000);

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

/// A call whose greeting is being spoken.
fn greeting() -> (Turns, Instant, ReplyId) {
    let mut turns = Turns::new(TIMEOUT, "Be brief.".into());
    let actions = turns.start("Hello.");
    let Action::Say { id, .. } = actions[0] else {
        panic!("{actions:?}")
    };
    turns.on_phrase(id, "Hello.");
    turns.on_reply_queued(id);
    (turns, Instant::now(), id)
}

/// A call whose greeting was heard: the caller has the floor.
fn listening() -> (Turns, Instant) {
    let (mut turns, t0, id) = greeting();
    turns.on_mark(&id.mark_name(0));
    assert!(!turns.is_speaking());
    (turns, t0)
}

/// The reply id and the caller's message of an `Answer` action.
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

/// Speaks `phrases` as reply `id` and plays the first `played` of them.
fn speak(turns: &mut Turns, id: ReplyId, phrases: &[&str], played: usize) {
    for phrase in phrases {
        turns.on_phrase(id, phrase);
    }
    turns.on_reply_queued(id);
    for index in 0..played {
        turns.on_mark(&id.mark_name(index));
    }
}

fn history(turns: &Turns) -> Vec<&str> {
    turns.history().iter().map(|m| m.content.as_str()).collect()
}

#[test]
fn mark_names_round_trip() {
    let name = ReplyId(7).mark_name(3);
    assert_eq!(ReplyId::parse_mark(&name), Some((ReplyId(7), 3)));
    assert_eq!(ReplyId::parse_mark("reply-x.1"), None);
    assert_eq!(ReplyId::parse_mark("other"), None);
}

#[test]
fn the_greeting_is_spoken_until_its_mark_returns() {
    let (mut turns, _, greeting) = greeting();
    assert!(turns.is_speaking());
    turns.on_mark("reply-999.0");
    turns.on_mark(&greeting.mark_name(1));
    assert!(turns.is_speaking());
    turns.on_mark(&greeting.mark_name(0));
    assert!(!turns.is_speaking());
    assert!(
        turns.history().is_empty(),
        "the greeting is in the system prompt, not the history"
    );
}

#[test]
fn interim_results_never_duplicate_words() {
    let (mut turns, t0) = listening();
    for (at, text) in [(0, "what"), (300, "what are"), (600, "what are your")] {
        assert!(turns
            .on_transcript(text, Heard::Interim, ms(t0, at))
            .is_empty());
    }
    turns.on_transcript("What are", Heard::Final, ms(t0, 800));
    turns.on_transcript("your", Heard::Interim, ms(t0, 900));
    turns.on_transcript("your hours?", Heard::Final, ms(t0, 1000));
    assert!(turns.on_tick(ms(t0, 2999)).is_empty());
    let (_, said, _) = asked(&turns.on_tick(ms(t0, 3000)));
    assert_eq!(said, "What are your hours?");
}

#[test]
fn every_transcript_restarts_the_silence_timer() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hello", Heard::Final, ms(t0, 0));
    turns.on_transcript("there", Heard::Interim, ms(t0, 1500));
    assert!(turns.on_tick(ms(t0, 2000)).is_empty());
    assert_eq!(turns.next_deadline(), Some(ms(t0, 3500)));
}

#[test]
fn timer_with_only_interim_text_waits_for_the_final() {
    let (mut turns, t0) = listening();
    turns.on_transcript("where is", Heard::Interim, ms(t0, 0));
    assert!(turns.on_tick(ms(t0, 2000)).is_empty());
    let (_, said, _) = asked(&turns.on_transcript("Where is it?", Heard::Final, ms(t0, 2100)));
    assert_eq!(said, "Where is it?");
}

#[test]
fn empty_transcripts_are_ignored() {
    let (mut turns, t0, _) = greeting();
    assert!(turns
        .on_transcript("  ", Heard::Final, ms(t0, 0))
        .is_empty());
    assert!(turns.is_speaking());
    assert_eq!(turns.next_deadline(), None);
}

#[test]
fn speech_during_the_greeting_interrupts_it() {
    let (mut turns, t0, greeting) = greeting();
    let actions = turns.on_transcript("wait", Heard::Interim, ms(t0, 100));
    assert_eq!(actions, vec![Action::Interrupt { id: greeting }]);
    assert!(!turns.is_speaking());
    // Twilio echoes the discarded mark after the clear: it changes nothing.
    turns.on_mark(&greeting.mark_name(0));
    assert_eq!(turns.barge_ins(), 1);
    assert!(turns.history().is_empty());
}

#[test]
fn speech_after_the_last_mark_returned_does_not_interrupt() {
    let (mut turns, t0) = listening();
    assert!(turns
        .on_transcript("hi", Heard::Interim, ms(t0, 0))
        .is_empty());
}

#[test]
fn speech_while_thinking_cancels_and_joins_the_turn() {
    let (mut turns, t0) = listening();
    turns.on_transcript("What are your hours", Heard::Final, ms(t0, 0));
    let (first, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    let actions = turns.on_transcript("on Sunday?", Heard::Final, ms(t0, 2100));
    assert_eq!(actions, vec![Action::Interrupt { id: first }]);
    // A late phrase of the cancelled reply changes nothing.
    turns.on_phrase(first, "We open at eight.");
    assert!(!turns.is_speaking());
    let (second, said, _) = asked(&turns.on_tick(ms(t0, 4100)));
    assert!(second > first);
    assert_eq!(said, "What are your hours on Sunday?");
    assert_eq!(turns.turns(), 1);
    assert!(turns.history().is_empty());
}

#[test]
fn interrupting_before_a_whole_phrase_was_heard_joins_the_turn_too() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Directions please", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    speak(&mut turns, id, &["From the station,", "walk north."], 0);
    assert!(turns.is_speaking());
    assert_eq!(
        turns.on_transcript("by car", Heard::Final, ms(t0, 2500)),
        vec![Action::Interrupt { id }]
    );
    let (_, said, len) = asked(&turns.on_tick(ms(t0, 4500)));
    assert_eq!(said, "Directions please by car");
    assert_eq!(len, 2);
}

#[test]
fn an_interrupted_reply_is_remembered_as_far_as_it_was_heard() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Directions please", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    speak(
        &mut turns,
        id,
        &["From the station,", "walk north.", "Then left."],
        2,
    );
    assert!(turns.is_speaking());
    turns.on_transcript("Sorry, by car?", Heard::Final, ms(t0, 5000));
    // The echo of the discarded third phrase arrives after the clear: ignored.
    turns.on_mark(&id.mark_name(2));
    assert_eq!(
        history(&turns),
        ["Directions please", "From the station, walk north."]
    );
    let (_, said, len) = asked(&turns.on_tick(ms(t0, 7000)));
    assert_eq!(said, "Sorry, by car?");
    assert_eq!(len, 4);
}

#[test]
fn a_reply_is_over_when_its_last_phrase_was_heard() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    turns.on_phrase(id, "Eight to six.");
    turns.on_mark(&id.mark_name(0));
    assert!(
        turns.is_speaking(),
        "more phrases may follow until the reply is queued"
    );
    turns.on_phrase(id, "Anything else?");
    turns.on_reply_queued(id);
    assert!(turns.is_speaking());
    turns.on_mark(&id.mark_name(1));
    assert!(!turns.is_speaking());
    assert_eq!(history(&turns), ["Hours?", "Eight to six. Anything else?"]);
}

#[test]
fn history_grows_by_one_exchange_per_answered_turn() {
    let (mut turns, t0) = listening();
    let mut now = 0;
    for (question, answer) in [("Hours?", "Eight to six."), ("Address?", "Main Street.")] {
        turns.on_transcript(question, Heard::Final, ms(t0, now));
        now += 2000;
        let (id, said, len) = asked(&turns.on_tick(ms(t0, now)));
        assert_eq!(said, question);
        assert_eq!(len, turns.history().len() + 2);
        speak(&mut turns, id, &[answer], 1);
    }
    assert_eq!(
        history(&turns),
        ["Hours?", "Eight to six.", "Address?", "Main Street."]
    );
    assert_eq!(turns.turns(), 2);
}

#[test]
fn remembered_counts_exchanges_even_once_trimmed() {
    let (mut turns, t0) = listening();
    let mut now = 0;
    let total = MAX_HISTORY_EXCHANGES + 3;
    for n in 0..total {
        turns.on_transcript(&format!("Question {n}?"), Heard::Final, ms(t0, now));
        now += 2000;
        let (id, _, _) = asked(&turns.on_tick(ms(t0, now)));
        speak(&mut turns, id, &["Answer."], 1);
        assert_eq!(turns.remembered(), n as u64 + 1);
    }
    assert_eq!(turns.history().len(), 2 * MAX_HISTORY_EXCHANGES);
    assert_eq!(turns.remembered(), total as u64);
}

#[test]
fn digits_then_hash_become_a_turn_for_the_model() {
    let (mut turns, t0, greeting) = greeting();
    for key in ["1", "2", "*", "4", "5", "6"] {
        assert!(turns.on_dtmf(key, t0).is_empty());
    }
    let actions = turns.on_dtmf("#", t0);
    assert_eq!(actions[0], Action::Interrupt { id: greeting });
    let (_, said, _) = asked(&actions[1..]);
    assert_eq!(said, "The caller pressed: 4 5 6");
    assert_eq!(turns.keyed(), "12*456#");
    assert!(turns.on_dtmf("#", t0).is_empty(), "# alone sends nothing");
}

#[test]
fn history_is_bounded_oldest_first() {
    let (mut turns, t0) = listening();
    let long = "x".repeat(MAX_HISTORY_CHARS / 4);
    for n in 0..(MAX_HISTORY_EXCHANGES + 5) {
        turns.on_transcript(&format!("question {n}"), Heard::Final, ms(t0, 0));
        let (id, _, _) = asked(&turns.on_tick(ms(t0, 5000)));
        let answer = if n == MAX_HISTORY_EXCHANGES + 4 {
            long.as_str()
        } else {
            "ok"
        };
        speak(&mut turns, id, &[answer], 1);
        assert!(turns.history().len() <= 2 * MAX_HISTORY_EXCHANGES);
    }
    let kept = turns.history();
    assert_eq!(kept.last().map(|m| m.content.as_str()), Some(long.as_str()));
    assert_eq!(
        kept[kept.len() - 2].content,
        format!("question {}", MAX_HISTORY_EXCHANGES + 4)
    );
    assert_eq!(kept[0].role, Role::User, "exchanges are dropped whole");
    assert!(!kept.iter().any(|m| m.content == "question 0"));
    let chars: usize = kept.iter().map(|m| m.content.chars().count()).sum();
    assert!(chars <= MAX_HISTORY_CHARS);
}

#[test]
fn a_failed_reply_leaves_no_orphaned_turn() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    assert!(
        turns.on_reply_failed(id, ReplyFailure::Model).is_empty(),
        "no fallback phrase was given"
    );
    assert!(turns.history().is_empty());
    assert_eq!(turns.current_reply(), None);
}

#[test]
fn saying_something_now_interrupts_and_forgets_unfinished_words() {
    let (mut turns, t0) = listening();
    turns.on_transcript("What are", Heard::Final, ms(t0, 0));
    turns.on_transcript("Directions", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    turns.on_transcript("half a sentence", Heard::Interim, ms(t0, 2100));
    let actions = turns.say("Sorry, goodbye.");
    let [Action::Say { id: apology, text }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert!(*apology > id);
    assert_eq!(text, "Sorry, goodbye.");
    assert_eq!(turns.next_deadline(), None);
    assert_eq!(turns.current_reply(), Some(*apology));

    let (mut turns, _, greeting) = greeting();
    let actions = turns.say("Sorry.");
    assert_eq!(actions[0], Action::Interrupt { id: greeting });
}

#[test]
fn system_prompt_leads_and_mentions_the_greeting() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hi", Heard::Final, ms(t0, 0));
    let actions = turns.on_tick(ms(t0, 2000));
    let Action::Answer { messages, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(messages[0].role, Role::System);
    assert!(messages[0].content.starts_with("Be brief."));
    assert!(messages[0].content.contains("Hello."));
}
