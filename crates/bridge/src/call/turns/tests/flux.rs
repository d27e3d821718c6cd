//! `TURN_DETECTION=flux`: Flux's turn events start, interrupt and end turns; no silence timer
//! runs, and a recogniser that drops mid-turn leaves the turn to the new connection.

use super::*;

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

#[test]
fn start_of_turn_interrupts_a_playing_reply_before_any_words() {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    let (id, _, _) = asked(&turns.on_end_of_turn("Hours?", ms(t0, 500)));
    let at = ms(t0, 1_000);
    speak_at(
        &mut turns,
        id,
        &["We open at eight.", "We close at six."],
        1,
        at,
    );
    // 1.5 s into the reply: the first phrase was heard, the second half played.
    let actions = turns.on_start_of_turn(ms(t0, 2_500));
    match actions.as_slice() {
        [Action::Interrupt {
            id: cut,
            heard: Some(heard),
        }] => {
            assert_eq!(*cut, id);
            assert!(heard.starts_with("We open at eight."), "{heard}");
        }
        other => panic!("expected one Interrupt, got {other:?}"),
    }
    assert_eq!(turns.barge_ins(), 1);
    assert!(!turns.is_speaking());
    // The interruption is a turn of its own, decided on its transcript.
    let (_, said, _) = asked(&turns.on_end_of_turn("And on Sunday?", ms(t0, 3_500)));
    assert_eq!(said, "And on Sunday?");
}

#[test]
fn a_turn_started_while_the_answer_is_prepared_continues_the_earlier_turn() {
    let (mut turns, t0) = flux();
    turns.on_start_of_turn(ms(t0, 0));
    let (id, _, _) = asked(&turns.on_end_of_turn("What are your hours?", ms(t0, 500)));
    let actions = turns.on_start_of_turn(ms(t0, 600));
    assert_eq!(actions, vec![Action::Interrupt { id, heard: None }]);
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
