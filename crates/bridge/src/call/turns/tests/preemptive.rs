//! Preemptive generation: a reply prepared on a final transcript, held, and released when the
//! turn ends on its text — or dropped without a trace when the caller says more.

use super::*;

fn preemptive() -> (Turns, Instant) {
    let (turns, t0) = listening();
    (turns.with_preemptive(true), t0)
}

fn prepared(actions: &[Action]) -> (ReplyId, String) {
    match actions {
        [Action::Prepare { id, messages }] => (
            *id,
            messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default(),
        ),
        other => panic!("expected one Prepare, got {other:?}"),
    }
}

#[test]
fn a_final_transcript_prepares_the_answer_and_the_turn_end_releases_it() {
    let (mut turns, t0) = preemptive();
    turns.on_speech_ended(ms(t0, 900), ms(t0, 1000));
    let (id, said) =
        prepared(&turns.on_transcript("What are your hours?", Heard::Final, ms(t0, 1000)));
    assert_eq!(said, "What are your hours?");
    assert_eq!(turns.turns(), 0, "the turn is not over");
    // The answer streams in while the caller may still speak: nothing is told yet.
    assert!(!turns.on_phrase(id, "We open at eight."));
    turns.on_reply_queued(id, ms(t0, 1500));
    let actions = turns.on_tick(ms(t0, 3000));
    assert_eq!(
        actions,
        vec![Action::Release {
            id,
            text: "What are your hours?".into(),
            phrases: vec!["We open at eight.".into()]
        }]
    );
    assert_eq!(turns.turns(), 1);
    assert_eq!(turns.preemptives().collect::<Vec<_>>(), [Preemptive::Used]);
    assert!(turns.on_phrase(id, "Anything else?"), "told once released");
    // Its first audio right after the release: the turn waited only for the timer.
    assert_eq!(
        turns.on_first_audio(id, ms(t0, 3001)),
        Some(Duration::from_millis(2101))
    );
    speak_at(&mut turns, id, &[], 0, ms(t0, 3001));
    turns.on_phrase_queued(id, 0, ms(t0, 3001), PHRASE);
    turns.on_phrase_queued(id, 1, ms(t0, 3001), PHRASE);
    turns.on_mark(&id.mark_name(0), ms(t0, 4001));
    turns.on_mark(&id.mark_name(1), ms(t0, 5001));
    assert_eq!(
        history(&turns),
        ["What are your hours?", "We open at eight. Anything else?"]
    );
}

#[test]
fn more_words_drop_the_prepared_answer_and_the_next_final_starts_again() {
    let (mut turns, t0) = preemptive();
    let (first, _) = prepared(&turns.on_transcript("What are your hours", Heard::Final, ms(t0, 0)));
    turns.on_phrase(first, "We open at eight.");
    // The caller goes on: the prepared answer goes, nothing of it was heard or told.
    assert_eq!(
        turns.on_transcript("on", Heard::Interim, ms(t0, 900)),
        vec![Action::Discard { id: first }]
    );
    assert_eq!(turns.barge_ins(), 0, "not an interruption");
    let (second, said) = prepared(&turns.on_transcript("on Sunday?", Heard::Final, ms(t0, 1200)));
    assert!(second > first);
    assert_eq!(said, "What are your hours on Sunday?");
    let actions = turns.on_tick(ms(t0, 3200));
    assert!(
        matches!(actions.as_slice(), [Action::Release { id, .. }] if *id == second),
        "{actions:?}"
    );
    assert_eq!(
        turns.preemptives().collect::<Vec<_>>(),
        [Preemptive::Discarded, Preemptive::Used]
    );
    assert!(turns.history().is_empty());
}

#[test]
fn a_failed_prepared_answer_leaves_no_trace_and_the_turn_end_asks_again() {
    let (mut turns, t0) = preemptive();
    let (id, _) = prepared(&turns.on_transcript("Hours?", Heard::Final, ms(t0, 0)));
    let fallback = turns.on_reply_failed(id, ReplyFailure::Model, ms(t0, 500));
    assert!(
        fallback.is_empty(),
        "the caller hears nothing of it: {fallback:?}"
    );
    let (_, said, _) = asked(&turns.on_tick(ms(t0, 2000)));
    assert_eq!(said, "Hours?");
}

#[test]
fn with_deepgram_the_end_of_speech_releases_it_at_once() {
    let (turns, t0) = listening();
    let mut turns = turns
        .with_detection(TurnDetection::Deepgram)
        .with_preemptive(true);
    let (id, _) = prepared(&turns.on_transcript("What are your hours", Heard::Final, ms(t0, 0)));
    let actions = turns.on_transcript("", Heard::EndOfSpeech, ms(t0, 300));
    assert!(
        matches!(actions.as_slice(), [Action::Release { id: r, .. }] if *r == id),
        "{actions:?}"
    );
}

#[test]
fn keys_drop_the_prepared_answer() {
    let (mut turns, t0) = preemptive();
    let (id, _) = prepared(&turns.on_transcript("My number is", Heard::Final, ms(t0, 0)));
    turns.on_dtmf("4", ms(t0, 500));
    let actions = turns.on_dtmf("#", ms(t0, 900));
    assert!(
        matches!(actions.as_slice(), [Action::Discard { id: d }, Action::Answer { .. }] if *d == id),
        "{actions:?}"
    );
}
