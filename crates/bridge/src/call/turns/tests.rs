//! The brain's unit tests, with invented instants.

use super::*;
use crate::llm::Role;
use crate::store::instructions;

/// The rules of `TURN_DETECTION=deepgram`, in their own file.
mod deepgram;
/// What the caller hears when a provider fails, and when the call hangs up.
mod failures;
/// The rules of `TURN_DETECTION=flux`, in their own file.
mod flux;
/// Prompts for a silent caller, and their goodbye.
mod idle;
/// Backchannels resume a reply; real words take the floor.
mod interruptions;
/// End of speech → first answer audio.
mod latency;
/// Answers prepared before the turn ends.
mod preemptive;

const TIMEOUT: Duration = Duration::from_millis(2000);

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

/// A call whose greeting is being spoken.
fn greeting() -> (Turns, Instant, ReplyId) {
    let t0 = Instant::now();
    let mut turns = Turns::new(TIMEOUT, instructions("Be brief.", "Hello.").into());
    let actions = turns.start("Hello.");
    let Action::Say { id, .. } = actions[0] else {
        panic!("{actions:?}")
    };
    turns.on_phrase(id, "Hello.");
    turns.on_reply_queued(id, t0);
    (turns, t0, id)
}

/// A call whose greeting was heard: the caller has the floor.
fn listening() -> (Turns, Instant) {
    let (mut turns, t0, id) = greeting();
    turns.on_mark(&id.mark_name(0), t0);
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

/// Each phrase's audio in [`speak_at`]: one second.
const PHRASE: Duration = Duration::from_secs(1);

/// Speaks `phrases` as reply `id` and plays the first `played` of them.
fn speak(turns: &mut Turns, id: ReplyId, phrases: &[&str], played: usize) {
    speak_at(turns, id, phrases, played, Instant::now());
}

/// Speaks `phrases` as reply `id`, all their audio ([`PHRASE`] each) sent at `at`, and plays
/// the first `played` of them: phrase `n` is heard from `at + n s` to `at + (n + 1) s`.
fn speak_at(turns: &mut Turns, id: ReplyId, phrases: &[&str], played: usize, at: Instant) {
    for (index, phrase) in phrases.iter().enumerate() {
        turns.on_phrase(id, phrase);
        turns.on_phrase_queued(id, index, at, PHRASE);
    }
    turns.on_reply_queued(id, at);
    for index in 0..played {
        let heard = at + PHRASE * u32::try_from(index + 1).unwrap_or(u32::MAX);
        turns.on_mark(&id.mark_name(index), heard);
    }
}

/// What the brain says when reply `id` plays again from phrase `from`, as take `take`.
fn resumed(id: ReplyId, from: usize, take: u32) -> Vec<Action> {
    vec![Action::Resume { id, from, take }]
}

fn history(turns: &Turns) -> Vec<String> {
    turns.history().into_iter().map(|m| m.content).collect()
}

#[test]
fn mark_names_round_trip() {
    let name = ReplyId(7).mark_name(3);
    assert_eq!(ReplyId::parse_mark(&name), Some((ReplyId(7), 3)));
    assert_eq!(ReplyId::parse_mark("reply-x.1"), None);
    assert_eq!(ReplyId::parse_mark("other"), None);
}

/// The speaker is told how many phrases were heard to the end, counting only the marks the
/// brain takes as heard, and nothing once the reply is over.
#[test]
fn phrases_heard_to_the_end_are_counted() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hi", Heard::Final, ms(t0, 0));
    let (id, ..) = asked(&turns.on_tick(ms(t0, 2000)));
    speak(&mut turns, id, &["One.", "Two.", "Three."], 1);
    assert_eq!(turns.heard_phrases(), Some((id, 1)));
    turns.on_mark(&id.mark_name(2), Instant::now());
    assert_eq!(turns.heard_phrases(), Some((id, 1)), "out of order");
    turns.on_mark(&id.take_mark_name(1, 1), Instant::now());
    assert_eq!(turns.heard_phrases(), Some((id, 1)), "another take");
    turns.on_mark(&id.mark_name(1), Instant::now());
    assert_eq!(turns.heard_phrases(), Some((id, 2)));
    turns.on_mark(&id.mark_name(2), Instant::now());
    assert_eq!(turns.heard_phrases(), None);
}

#[test]
fn the_greeting_is_spoken_until_its_mark_returns() {
    let (mut turns, t0, greeting) = greeting();
    assert!(turns.is_speaking());
    turns.on_mark("reply-999.0", t0);
    turns.on_mark(&greeting.mark_name(1), t0);
    assert!(turns.is_speaking());
    turns.on_mark(&greeting.mark_name(0), t0);
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
    assert_eq!(
        actions,
        vec![Action::Interrupt {
            id: greeting,
            heard: None,
            hold: false
        }]
    );
    assert!(!turns.is_speaking());
    // Twilio echoes the discarded mark after the clear: it changes nothing.
    turns.on_mark(&greeting.mark_name(0), t0);
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
    assert_eq!(
        actions,
        vec![Action::Interrupt {
            id: first,
            heard: None,
            hold: false
        }]
    );
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
fn interrupting_before_the_answer_was_audible_joins_the_turn_too() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Directions please", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    speak_at(
        &mut turns,
        id,
        &["From the station,", "walk north."],
        0,
        ms(t0, 2400),
    );
    assert!(turns.is_speaking());
    // 99 ms of audio played: not yet heard.
    assert_eq!(
        turns.on_transcript("by car", Heard::Interim, ms(t0, 2499)),
        vec![Action::Interrupt {
            id,
            heard: None,
            hold: false
        }]
    );
    turns.on_transcript("by car", Heard::Final, ms(t0, 2600));
    let (_, said, len) = asked(&turns.on_tick(ms(t0, 4600)));
    assert_eq!(said, "Directions please by car");
    assert_eq!(len, 2);
    assert!(turns.history().is_empty());
}

#[test]
fn interrupting_audible_speech_is_a_new_turn_even_in_the_first_phrase() {
    let (mut turns, t0) = listening();
    turns.on_transcript("What are your hours?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    // A 3-second first sentence; its audio went out at 2.4 s.
    let sentence = "We are open from eight in the morning until six in the evening.";
    turns.on_phrase(id, sentence);
    turns.on_phrase_sent(id, 0, ms(t0, 2400));
    // 0.4 s into it the caller asks something else: no mark has come back yet.
    let actions = turns.on_transcript("What is", Heard::Interim, ms(t0, 2800));
    let [Action::Interrupt {
        id: cut,
        heard: Some(heard),
        ..
    }] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*cut, id);
    assert!(
        heard.starts_with("We are") && heard.ends_with(CUT_OFF),
        "{heard}"
    );
    turns.on_transcript("What is your address?", Heard::Final, ms(t0, 3200));
    let (_, said, len) = asked(&turns.on_tick(ms(t0, 5200)));
    assert_eq!(
        said, "What is your address?",
        "not glued to the old question"
    );
    assert_eq!(
        len, 4,
        "system, the answered turn and what was heard of it, the new turn"
    );
    assert_eq!(history(&turns)[0], "What are your hours?");
    assert_eq!(turns.turns(), 2);
}

#[test]
fn an_interrupted_reply_is_remembered_to_the_word() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Directions please", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    // Heard from 2 s: "From the station," then "walk north." then "Then left." (1 s each).
    let phrases = ["From the station,", "walk north.", "Then left."];
    speak_at(&mut turns, id, &phrases, 2, ms(t0, 2000));
    assert!(turns.is_speaking());
    // Halfway through the third phrase.
    turns.on_transcript("Sorry, by car?", Heard::Final, ms(t0, 4500));
    // The echo of the discarded third phrase arrives after the clear: ignored.
    turns.on_mark(&id.mark_name(2), ms(t0, 4600));
    assert_eq!(
        history(&turns),
        ["Directions please", "From the station, walk north. Then…"]
    );
    let (_, said, len) = asked(&turns.on_tick(ms(t0, 6500)));
    assert_eq!(said, "Sorry, by car?");
    assert_eq!(len, 4);
}

#[test]
fn a_twelve_word_phrase_cut_halfway_keeps_about_six_words() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    let sentence = "Our main clinic opens at eight and closes at six each weekday.";
    turns.on_phrase(id, sentence);
    turns.on_phrase_queued(id, 0, ms(t0, 2000), Duration::from_millis(3000));
    turns.on_reply_queued(id, ms(t0, 2100));
    let actions = turns.on_transcript("And Sunday?", Heard::Final, ms(t0, 3500));
    let [Action::Interrupt {
        heard: Some(heard), ..
    }] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    let words = heard.trim_end_matches(CUT_OFF).split_whitespace().count();
    assert!((5..=7).contains(&words), "{heard}");
    assert_eq!(history(&turns)[1], heard.as_str());
}

#[test]
fn a_late_mark_moves_the_estimate() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    speak_at(
        &mut turns,
        id,
        &["Eight to six.", "one two three four"],
        0,
        ms(t0, 2000),
    );
    // Twilio began playing late: the first phrase ended at 3.5 s, not 3 s.
    turns.on_mark(&id.mark_name(0), ms(t0, 3500));
    let actions = turns.on_transcript("Thanks", Heard::Final, ms(t0, 3850));
    let [Action::Interrupt { heard, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    // 350 ms into the second phrase (not 850 ms).
    assert_eq!(heard.as_deref(), Some("Eight to six. one two…"));
}

#[test]
fn a_reply_is_over_when_its_last_phrase_was_heard() {
    let (mut turns, t0) = listening();
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    turns.on_phrase(id, "Eight to six.");
    turns.on_mark(&id.mark_name(0), t0);
    assert!(
        turns.is_speaking(),
        "more phrases may follow until the reply is queued"
    );
    turns.on_phrase(id, "Anything else?");
    turns.on_reply_queued(id, t0);
    assert!(turns.is_speaking());
    turns.on_mark(&id.mark_name(1), t0);
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
    assert_eq!(
        actions[0],
        Action::Interrupt {
            id: greeting,
            heard: None,
            hold: false
        }
    );
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
        turns
            .on_reply_failed(id, ReplyFailure::Model, t0)
            .is_empty(),
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
    let actions = turns.say("Sorry, goodbye.", t0);
    let [Action::Say { id: apology, text }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert!(*apology > id);
    assert_eq!(text, "Sorry, goodbye.");
    assert_eq!(turns.next_deadline(), None);
    assert_eq!(turns.current_reply(), Some(*apology));

    let (mut turns, _, greeting) = greeting();
    let actions = turns.say("Sorry.", t0);
    assert_eq!(
        actions[0],
        Action::Interrupt {
            id: greeting,
            heard: None,
            hold: false
        }
    );
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
