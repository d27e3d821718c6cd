//! The fallback phrase after a failed reply; the apology and the hang-up when speech
//! recognition is gone.

use super::*;

const FALLBACK: &str = "Sorry, could you say that again?";

/// A call whose greeting was heard and that says [`FALLBACK`] when a reply fails.
fn with_fallback() -> (Turns, Instant) {
    let (turns, t0) = listening();
    (turns.with_fallback(FALLBACK.into()), t0)
}

/// The caller asked; the answer is being prepared.
fn answering(turns: &mut Turns, t0: Instant) -> ReplyId {
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 0));
    asked(&turns.on_tick(ms(t0, 2000))).0
}

/// Speech recognition was lost at `t0` while the caller had the floor: the apology's id.
fn apologising(turns: &mut Turns, t0: Instant) -> ReplyId {
    let actions = turns.on_stt_lost(t0);
    let [Action::Say { id, text }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(text, STT_APOLOGY);
    *id
}

#[test]
fn a_failed_answer_gets_the_fallback_phrase_and_the_call_listens_again() {
    let (mut turns, t0) = with_fallback();
    let id = answering(&mut turns, t0);
    let fallback = ReplyId(id.0 + 1);
    assert_eq!(
        turns.on_reply_failed(id, ReplyFailure::Model, t0),
        vec![Action::Say {
            id: fallback,
            text: FALLBACK.into()
        }]
    );
    assert_eq!(turns.current_reply(), Some(fallback));
    assert!(turns.history().is_empty(), "no orphaned turn");
    speak(&mut turns, fallback, &[FALLBACK], 1);
    assert!(!turns.is_speaking());
    let (_, said, _) = {
        turns.on_transcript("Address?", Heard::Final, ms(t0, 9000));
        asked(&turns.on_tick(ms(t0, 11_000)))
    };
    assert_eq!(said, "Address?");
}

#[test]
fn a_failing_fallback_is_not_followed_by_another() {
    let (mut turns, t0) = with_fallback();
    let id = answering(&mut turns, t0);
    turns.on_reply_failed(id, ReplyFailure::Model, t0);
    let fallback = ReplyId(id.0 + 1);
    assert!(turns
        .on_reply_failed(fallback, ReplyFailure::Model, t0)
        .is_empty());
    assert_eq!(turns.current_reply(), None);
}

#[test]
fn with_the_voice_failing_the_fallback_is_said_only_from_the_cache() {
    let (mut turns, t0) = with_fallback();
    let id = answering(&mut turns, t0);
    let uncached = ReplyFailure::Voice {
        fallback_cached: false,
    };
    assert!(turns.on_reply_failed(id, uncached, t0).is_empty());
    assert_eq!(turns.current_reply(), None);

    let (mut turns, t0) = with_fallback();
    let id = answering(&mut turns, t0);
    let cached = ReplyFailure::Voice {
        fallback_cached: true,
    };
    let actions = turns.on_reply_failed(id, cached, t0);
    assert!(
        matches!(actions.as_slice(), [Action::Say { text, .. }] if text == FALLBACK),
        "{actions:?}"
    );
}

#[test]
fn an_older_reply_failing_late_cuts_off_the_current_one_for_the_fallback() {
    let (mut turns, t0) = with_fallback();
    let first = answering(&mut turns, t0);
    turns.on_transcript("on Sunday?", Heard::Final, ms(t0, 2100));
    let second = asked(&turns.on_tick(ms(t0, 4100))).0;
    assert_eq!(
        turns.on_reply_failed(first, ReplyFailure::Model, t0),
        vec![
            Action::Interrupt {
                id: second,
                heard: None,
                hold: false
            },
            Action::Say {
                id: ReplyId(second.0 + 1),
                text: FALLBACK.into()
            }
        ]
    );
}

#[test]
fn lost_recognition_apologises_then_hangs_up_once_the_apology_was_heard() {
    let (mut turns, t0) = with_fallback();
    let apology = apologising(&mut turns, t0);
    assert_eq!(turns.next_deadline(), Some(t0 + FAREWELL_LIMIT));
    turns.on_phrase(apology, STT_APOLOGY);
    assert!(turns.on_reply_queued(apology, t0).is_empty());
    assert!(turns.on_tick(ms(t0, 5000)).is_empty());
    assert!(turns.on_mark("reply-999.0", t0).is_empty());
    assert_eq!(
        turns.on_mark(&apology.mark_name(0), t0),
        vec![Action::Hangup(Goodbye::SttLost)]
    );
    assert_eq!(turns.next_deadline(), None);
    assert!(
        turns.on_tick(t0 + FAREWELL_LIMIT).is_empty(),
        "hangs up once"
    );
}

#[test]
fn an_apology_still_playing_at_the_limit_hangs_up_there() {
    let (mut turns, t0) = listening();
    let apology = apologising(&mut turns, t0);
    turns.on_phrase(apology, STT_APOLOGY);
    turns.on_reply_queued(apology, t0);
    let limit = t0 + FAREWELL_LIMIT;
    assert!(turns.on_tick(limit - Duration::from_millis(1)).is_empty());
    assert_eq!(turns.on_tick(limit), vec![Action::Hangup(Goodbye::SttLost)]);
    assert!(turns.on_tick(limit + FAREWELL_LIMIT).is_empty());
}

#[test]
fn lost_recognition_cuts_off_what_the_assistant_was_saying() {
    let (mut turns, t0, greeting) = greeting();
    let actions = turns.on_stt_lost(t0);
    assert!(
        matches!(actions.as_slice(), [Action::Interrupt { id, .. }, Action::Say { text, .. }] if *id == greeting && text == STT_APOLOGY),
        "{actions:?}"
    );
}

#[test]
fn a_failed_apology_hangs_up_at_once_without_a_fallback() {
    let (mut turns, t0) = with_fallback();
    let apology = apologising(&mut turns, t0);
    assert_eq!(
        turns.on_reply_failed(apology, ReplyFailure::Model, t0),
        vec![Action::Hangup(Goodbye::SttLost)]
    );
}

#[test]
fn no_reply_fails_into_a_fallback_during_the_apology() {
    let (mut turns, t0) = with_fallback();
    let answer = answering(&mut turns, t0);
    let actions = turns.on_stt_lost(ms(t0, 2500));
    let [Action::Interrupt { id, .. }, Action::Say { id: apology, .. }] = actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(id, answer);
    // The cut-off answer reports its failure late: the apology goes on.
    assert!(turns
        .on_reply_failed(answer, ReplyFailure::Model, t0)
        .is_empty());
    assert_eq!(turns.current_reply(), Some(apology));
}

#[test]
fn an_apology_with_nothing_to_play_hangs_up_when_queued() {
    let (mut turns, t0) = listening();
    let apology = apologising(&mut turns, t0);
    assert_eq!(
        turns.on_reply_queued(apology, t0),
        vec![Action::Hangup(Goodbye::SttLost)]
    );
}

#[test]
fn keys_over_the_apology_are_answered_and_the_call_ends() {
    let (mut turns, t0) = listening();
    let apology = apologising(&mut turns, t0);
    turns.on_dtmf("1", ms(t0, 100));
    let actions = turns.on_dtmf("#", ms(t0, 200));
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Interrupt { id, .. }, Action::Answer { .. }, Action::Hangup(Goodbye::SttLost)] if *id == apology
        ),
        "{actions:?}"
    );
}
