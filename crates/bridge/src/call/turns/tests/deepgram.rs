//! `TURN_DETECTION=deepgram`: the recogniser's end of speech ends the turn, the silence timer
//! stays as the fallback, and `timer` ignores both signals.

use super::*;

/// A call whose greeting was heard, ending turns on Deepgram's signals.
fn deepgram() -> (Turns, Instant) {
    let (turns, t0) = listening();
    (turns.with_detection(TurnDetection::Deepgram), t0)
}

#[test]
fn speech_final_ends_the_turn_at_once() {
    let (mut turns, t0) = deepgram();
    turns.on_transcript("what are", Heard::Interim, ms(t0, 0));
    let (_, said, _) =
        asked(&turns.on_transcript("What are your hours?", Heard::EndOfSpeech, ms(t0, 700)));
    assert_eq!(said, "What are your hours?");
    assert_eq!(turns.next_deadline(), None, "the silence timer is off");
    assert_eq!(turns.turns(), 1);
}

#[test]
fn split_finals_wait_for_the_one_marked_speech_final() {
    let (mut turns, t0) = deepgram();
    assert!(turns
        .on_transcript("What time do", Heard::Final, ms(t0, 0))
        .is_empty());
    let (_, said, _) =
        asked(&turns.on_transcript("you open on Monday?", Heard::EndOfSpeech, ms(t0, 10)));
    assert_eq!(said, "What time do you open on Monday?");
}

#[test]
fn an_empty_speech_final_after_final_text_ends_the_turn() {
    let (mut turns, t0) = deepgram();
    assert!(turns
        .on_transcript("", Heard::EndOfSpeech, ms(t0, 0))
        .is_empty());
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 100));
    let (_, said, _) = asked(&turns.on_transcript("", Heard::EndOfSpeech, ms(t0, 400)));
    assert_eq!(said, "Hours?");
}

#[test]
fn speech_final_with_words_still_interim_waits_for_their_final() {
    let (mut turns, t0) = deepgram();
    turns.on_transcript("Hours", Heard::Final, ms(t0, 0));
    turns.on_transcript("on Sunday", Heard::Interim, ms(t0, 100));
    assert!(turns
        .on_transcript("", Heard::EndOfSpeech, ms(t0, 200))
        .is_empty());
    let (_, said, _) = asked(&turns.on_transcript("on Sunday?", Heard::EndOfSpeech, ms(t0, 300)));
    assert_eq!(said, "Hours on Sunday?");
}

#[test]
fn utterance_end_ends_the_turn_when_speech_final_never_came() {
    let (mut turns, t0) = deepgram();
    turns.on_transcript("Directions", Heard::Final, ms(t0, 0));
    turns.on_transcript("please", Heard::Final, ms(t0, 400));
    let (_, said, _) = asked(&turns.on_utterance_end(ms(t0, 1400)));
    assert_eq!(said, "Directions please");
    // Deepgram's late UtteranceEnd after a speech_final finds nothing left to end.
    assert!(turns.on_utterance_end(ms(t0, 2400)).is_empty());
    assert_eq!(turns.turns(), 1);
}

#[test]
fn utterance_end_with_only_interim_text_takes_the_next_final() {
    let (mut turns, t0) = deepgram();
    turns.on_transcript("where is", Heard::Interim, ms(t0, 0));
    assert!(turns.on_utterance_end(ms(t0, 1000)).is_empty());
    let (_, said, _) = asked(&turns.on_transcript("Where is it?", Heard::Final, ms(t0, 1100)));
    assert_eq!(said, "Where is it?");
}

#[test]
fn utterance_end_with_nothing_heard_changes_nothing() {
    let (mut turns, t0) = deepgram();
    assert!(turns.on_utterance_end(ms(t0, 0)).is_empty());
    assert_eq!(turns.current_reply(), None);
}

#[test]
fn the_silence_timer_stays_as_the_fallback() {
    let (mut turns, t0) = deepgram();
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 0));
    assert!(turns.on_tick(ms(t0, 1999)).is_empty());
    let (_, said, _) = asked(&turns.on_tick(ms(t0, 2000)));
    assert_eq!(said, "Hours?");
}

#[test]
fn the_timer_setting_ignores_deepgrams_end_of_speech() {
    let (mut turns, t0) = listening();
    assert!(turns
        .on_transcript("Hours?", Heard::EndOfSpeech, ms(t0, 0))
        .is_empty());
    assert!(turns
        .on_transcript("", Heard::EndOfSpeech, ms(t0, 300))
        .is_empty());
    assert!(turns.on_utterance_end(ms(t0, 1000)).is_empty());
    assert!(turns.on_tick(ms(t0, 1999)).is_empty());
    let (_, said, _) = asked(&turns.on_tick(ms(t0, 2000)));
    assert_eq!(said, "Hours?");
}

#[test]
fn speech_during_a_reply_interrupts_then_ends_the_joined_turn_on_speech_final() {
    let (mut turns, t0) = deepgram();
    let (first, _, _) = asked(&turns.on_transcript("Hours", Heard::EndOfSpeech, ms(t0, 0)));
    let actions = turns.on_transcript("on Sunday?", Heard::EndOfSpeech, ms(t0, 500));
    let [Action::Interrupt { id, .. }, Action::Answer { messages, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(*id, first);
    assert_eq!(messages.last().unwrap().content, "Hours on Sunday?");
    assert_eq!(turns.turns(), 1);
}
