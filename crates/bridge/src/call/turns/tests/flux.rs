//! `TURN_DETECTION=flux`: Flux's turn events start, interrupt and end turns; an interrupted
//! reply is held and the turn's transcript decides (section 2's rules); no silence timer runs,
//! and a recogniser that drops mid-turn leaves the turn to the new connection.

use super::*;

/// The default `FALSE_INTERRUPTION_MS`.
const FALSE_AFTER: Duration = Duration::from_millis(1500);

/// A call whose greeting was heard, following Deepgram Flux's turns.
fn flux() -> (Turns, Instant) {
    let (turns, t0) = listening();
    (turns.with_detection(TurnDetection::Flux), t0)
}

#[test]
fn end_of_turn_ends_the_turn_at_once_with_its_transcript() {
    let (mut turns, t0) = flux();
    assert!(turns.on_start_of_turn(ms(t0, 0)).is_empty());
    assert!(turns.on_turn_update("What are", ms(t0, 250)).is_empty());
    assert!(turns
        .on_turn_update("What are your hours", ms(t0, 500))
        .is_empty());
    assert_eq!(turns.next_deadline(), None, "no silence timer runs");
    let (_, said, _) = asked(&turns.on_end_of_turn("What are your hours?", ms(t0, 900)));
    assert_eq!(said, "What are your hours?");
    assert_eq!(turns.turns(), 1);
    assert_eq!(turns.next_deadline(), None);
}

#[test]
fn an_end_of_turn_without_text_takes_the_last_update() {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    turns.on_turn_update("Directions please", ms(t0, 300));
    let (_, said, _) = asked(&turns.on_end_of_turn("", ms(t0, 800)));
    assert_eq!(said, "Directions please");
}

/// A Flux call answering "Directions?" with three 1-second phrases sent at 1 s: the first
/// heard from 1 s to 2 s (its mark came back), the second playing from 2 s.
fn answering() -> (Turns, Instant, ReplyId) {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    let (id, _, _) = asked(&turns.on_end_of_turn("Directions?", ms(t0, 500)));
    let phrases = ["From the station,", "walk north.", "Then left."];
    speak_at(&mut turns, id, &phrases, 1, ms(t0, 1_000));
    (turns, t0, id)
}

#[test]
fn start_of_turn_holds_a_playing_reply_before_any_words() {
    let (mut turns, t0, id) = answering();
    let actions = turns.on_start_of_turn(ms(t0, 2_500));
    assert_eq!(
        actions,
        vec![Action::Interrupt {
            id,
            heard: Some("From the station, walk…".into()),
            hold: true
        }],
        "the clear is immediate"
    );
    assert_eq!(turns.barge_ins(), 1);
    assert!(!turns.is_speaking());
    assert!(turns.on_turn_update("And by", ms(t0, 2_800)).is_empty());
    // Real words: the interruption is a turn of its own, decided on its transcript.
    let actions = turns.on_end_of_turn("And by car?", ms(t0, 3_500));
    let [Action::Discard { id: dropped }, answer] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(*dropped, id);
    let (_, said, _) = asked(std::slice::from_ref(answer));
    assert_eq!(said, "And by car?");
    assert_eq!(history(&turns), ["Directions?", "From the station, walk…"]);
    assert_eq!(turns.counted().collect::<Vec<_>>(), [Interruption::BargeIn]);
}

#[test]
fn a_backchannel_turn_resumes_the_held_reply_and_leaves_no_trace() {
    let (mut turns, t0, id) = answering();
    turns.on_start_of_turn(ms(t0, 2_500));
    turns.on_turn_update("Mm-hmm", ms(t0, 2_700));
    assert_eq!(turns.next_deadline(), Some(ms(t0, 2_500) + FALSE_AFTER));
    let actions = turns.on_end_of_turn("Mm-hmm.", ms(t0, 3_200));
    assert_eq!(actions, resumed(id, 1, 1));
    assert!(turns.is_speaking());
    assert_eq!(turns.turns(), 1, "no new turn");
    assert_eq!(turns.counted().collect::<Vec<_>>(), [Interruption::Resumed]);
    assert_eq!(turns.next_deadline(), None);
}

#[test]
fn a_turn_without_words_resumes_the_held_reply() {
    let (mut turns, t0, id) = answering();
    turns.on_start_of_turn(ms(t0, 2_500));
    let actions = turns.on_end_of_turn("", ms(t0, 3_000));
    assert_eq!(actions, resumed(id, 1, 1));
}

#[test]
fn no_words_by_the_false_interruption_limit_resume_the_reply() {
    let (mut turns, t0, id) = answering();
    turns.on_start_of_turn(ms(t0, 2_500));
    assert!(turns.on_tick(ms(t0, 3_999)).is_empty());
    let actions = turns.on_tick(ms(t0, 2_500) + FALSE_AFTER);
    assert_eq!(actions, resumed(id, 1, 1));
    // Flux's late end of that wordless turn changes nothing.
    assert!(turns.on_end_of_turn("", ms(t0, 4_500)).is_empty());
    assert!(turns.is_speaking());
}

#[test]
fn real_words_in_an_update_keep_the_reply_held_past_the_limit() {
    let (mut turns, t0, _) = answering();
    turns.on_start_of_turn(ms(t0, 2_500));
    turns.on_turn_update("Actually I", ms(t0, 2_800));
    assert_eq!(
        turns.next_deadline(),
        None,
        "words came: no resuming for lack of them"
    );
    assert!(turns.on_tick(ms(t0, 9_000)).is_empty());
}

#[test]
fn a_turn_started_while_the_answer_is_prepared_continues_the_earlier_turn() {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    let (id, _, _) = asked(&turns.on_end_of_turn("What are your hours?", ms(t0, 500)));
    let actions = turns.on_start_of_turn(ms(t0, 600));
    assert_eq!(
        actions,
        vec![Action::Interrupt {
            id,
            heard: None,
            hold: false
        }]
    );
    let (_, said, _) = asked(&turns.on_end_of_turn("And your address?", ms(t0, 1_500)));
    assert_eq!(said, "What are your hours? And your address?");
    assert_eq!(turns.turns(), 1, "still the caller's first turn");
}

#[test]
fn a_turn_without_words_asks_nothing_and_leaves_the_floor_to_the_caller() {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    assert!(turns.on_end_of_turn("  ", ms(t0, 700)).is_empty());
    assert_eq!(turns.turns(), 0);
    assert_eq!(turns.current_reply(), None);
}

#[test]
fn eager_end_of_turn_and_turn_resumed_change_nothing_yet() {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    assert!(turns
        .on_eager_end_of_turn("What are your hours", ms(t0, 600))
        .is_empty());
    assert!(turns.on_turn_resumed(ms(t0, 700)).is_empty());
    assert_eq!(turns.current_reply(), None);
    assert_eq!(turns.next_deadline(), None);
    // The eager transcript counts like an Update if EndOfTurn brings none.
    let (_, said, _) = asked(&turns.on_end_of_turn("", ms(t0, 900)));
    assert_eq!(said, "What are your hours");
}

#[test]
fn a_drop_mid_turn_leaves_the_turn_to_the_new_connection() {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    turns.on_turn_update("What are the", ms(t0, 500));
    turns.on_stt_dropped(ms(t0, 600));
    assert_eq!(
        turns.next_deadline(),
        None,
        "no timer: Flux will end the turn"
    );
    // The new connection hears the whole turn again, from its start.
    assert!(turns.on_start_of_turn(ms(t0, 900)).is_empty());
    turns.on_turn_update("What are the opening", ms(t0, 1_000));
    let (_, said, _) = asked(&turns.on_end_of_turn("", ms(t0, 1_500)));
    assert_eq!(
        said, "What are the opening",
        "the old Update is not kept twice"
    );
}

#[test]
fn a_drop_between_turns_changes_nothing() {
    let (mut turns, t0) = flux();
    turns.on_stt_dropped(ms(t0, 100));
    assert_eq!(turns.current_reply(), None);
    assert!(turns.on_tick(ms(t0, 10_000)).is_empty());
}

#[test]
fn the_idle_timer_waits_while_the_caller_is_mid_turn() {
    let (turns, t0) = flux();
    let mut turns = turns.with_idle(IdlePolicy {
        timeout: Duration::from_secs(10),
        prompt: "Still there?".into(),
        prompts: 1,
        goodbye: "Bye.".into(),
    });
    turns.floor_to_caller(t0);
    turns.on_start_of_turn(ms(t0, 9_000));
    assert_eq!(turns.next_deadline(), None, "the caller is speaking");
    turns.on_end_of_turn("", ms(t0, 12_000));
    assert_eq!(turns.next_deadline(), Some(ms(t0, 22_000)));
}

#[test]
fn eager_end_of_turn_prepares_the_answer_and_end_of_turn_releases_it() {
    let (turns, t0) = flux();
    let mut turns = turns.with_preemptive(true);
    assert!(turns.on_start_of_turn(ms(t0, 0)).is_empty());
    turns.on_turn_update("What are your hours", ms(t0, 800));
    let actions = turns.on_eager_end_of_turn("What are your hours?", ms(t0, 1200));
    let [Action::Prepare { id, messages }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(
        messages.last().map(|m| m.content.as_str()),
        Some("What are your hours?")
    );
    assert!(
        turns
            .on_turn_update("What are your hours?", ms(t0, 1300))
            .is_empty(),
        "same words"
    );
    let actions = turns.on_end_of_turn("What are your hours?", ms(t0, 1500));
    assert!(
        matches!(actions.as_slice(), [Action::Release { id: r, .. }] if r == id),
        "{actions:?}"
    );
    assert_eq!(turns.turns(), 1);
}

#[test]
fn turn_resumed_drops_the_prepared_answer() {
    let (turns, t0) = flux();
    let mut turns = turns.with_preemptive(true);
    turns.on_start_of_turn(ms(t0, 0));
    let actions = turns.on_eager_end_of_turn("What are your hours", ms(t0, 1200));
    let [Action::Prepare { id, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    let id = *id;
    assert_eq!(
        turns.on_turn_resumed(ms(t0, 1400)),
        vec![Action::Discard { id }]
    );
    let (_, said, _) = asked(&turns.on_end_of_turn("What are your hours on Sunday?", ms(t0, 2500)));
    assert_eq!(said, "What are your hours on Sunday?");
    assert_eq!(
        turns.preemptives().collect::<Vec<_>>(),
        [Preemptive::Discarded]
    );
}
