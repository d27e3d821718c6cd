//! The idle caller: prompts after silence, the goodbye, and what counts as an answer.

use super::*;

const IDLE: Duration = Duration::from_secs(10);

/// A call whose greeting was heard at `t0` and that checks on silent callers twice.
fn idle_call() -> (Turns, Instant) {
    let (turns, t0) = listening();
    let mut turns = turns.with_idle(IdlePolicy {
        timeout: IDLE,
        prompt: "Are you still there?".into(),
        prompts: 2,
        goodbye: "Goodbye.".into(),
    });
    // The greeting's mark came back at t0 in `listening`, before the policy was set: hand the
    // floor over again so the count starts at t0.
    turns.floor_to_caller(t0);
    (turns, t0)
}

/// Expects an idle step followed by the `Say` of `text`; returns the `Say`'s id.
fn expect_idle(actions: &[Action], step: IdleStep, text: &str) -> ReplyId {
    match actions {
        [Action::Idle(got), Action::Say { id, text: said }] if *got == step && said == text => *id,
        other => panic!("expected {step:?} saying {text:?}, got {other:?}"),
    }
}

/// Both prompts of [`idle_call`] said and heard (a second each) with no answer; returns the
/// ms after `t0` when the second was heard.
fn unanswered_prompts(turns: &mut Turns, t0: Instant) -> u64 {
    let mut now = 0;
    for _ in 0..2 {
        now += 10_000;
        let id = match turns.on_tick(ms(t0, now)).as_slice() {
            [Action::Idle(_), Action::Say { id, .. }] => *id,
            other => panic!("{other:?}"),
        };
        speak_at(turns, id, &["Still there?"], 1, ms(t0, now));
        now += 1000;
    }
    now
}

#[test]
fn a_silent_caller_is_prompted_after_the_timeout_then_told_goodbye() {
    let (mut turns, t0) = idle_call();
    assert_eq!(turns.next_deadline(), Some(t0 + IDLE));
    assert!(turns.on_tick(ms(t0, 9_999)).is_empty());
    let first = expect_idle(
        &turns.on_tick(ms(t0, 10_000)),
        IdleStep::Prompt(1),
        "Are you still there?",
    );
    assert_eq!(turns.next_deadline(), None, "not while the prompt plays");
    speak_at(
        &mut turns,
        first,
        &["Are you still there?"],
        1,
        ms(t0, 10_000),
    );
    // Heard at 11 s: the next count starts there.
    assert_eq!(turns.next_deadline(), Some(ms(t0, 21_000)));
    let second = expect_idle(
        &turns.on_tick(ms(t0, 21_000)),
        IdleStep::Prompt(2),
        "Are you still there?",
    );
    speak_at(
        &mut turns,
        second,
        &["Are you still there?"],
        1,
        ms(t0, 21_000),
    );
    let goodbye = expect_idle(
        &turns.on_tick(ms(t0, 32_000)),
        IdleStep::Goodbye,
        "Goodbye.",
    );
    turns.on_phrase(goodbye, "Goodbye.");
    assert!(turns.on_reply_queued(goodbye, ms(t0, 32_000)).is_empty());
    assert_eq!(
        turns.on_mark(&goodbye.mark_name(0), ms(t0, 33_000)),
        vec![Action::Hangup(Goodbye::Idle)]
    );
    assert!(turns.history().is_empty(), "prompts are not exchanges");
}

#[test]
fn an_idle_goodbye_still_playing_at_the_limit_hangs_up_there() {
    let (mut turns, t0) = idle_call();
    let now = unanswered_prompts(&mut turns, t0) + 10_000;
    let goodbye = expect_idle(&turns.on_tick(ms(t0, now)), IdleStep::Goodbye, "Goodbye.");
    turns.on_phrase(goodbye, "Goodbye.");
    let limit = ms(t0, now) + FAREWELL_LIMIT;
    assert_eq!(turns.next_deadline(), Some(limit));
    assert_eq!(turns.on_tick(limit), vec![Action::Hangup(Goodbye::Idle)]);
}

#[test]
fn words_from_the_caller_start_the_count_again() {
    let (mut turns, t0) = idle_call();
    let prompt = expect_idle(
        &turns.on_tick(ms(t0, 10_000)),
        IdleStep::Prompt(1),
        "Are you still there?",
    );
    speak_at(
        &mut turns,
        prompt,
        &["Are you still there?"],
        1,
        ms(t0, 10_000),
    );
    turns.on_transcript("Yes, sorry.", Heard::Final, ms(t0, 12_000));
    assert_eq!(
        turns.next_deadline(),
        Some(ms(t0, 14_000)),
        "the silence timer"
    );
    let (id, said, _) = asked(&turns.on_tick(ms(t0, 14_000)));
    assert_eq!(said, "Yes, sorry.");
    assert_eq!(
        turns.next_deadline(),
        None,
        "not while the answer is prepared"
    );
    speak_at(&mut turns, id, &["How can I help?"], 1, ms(t0, 15_000));
    // Heard at 16 s; the count starts from one again.
    expect_idle(
        &turns.on_tick(ms(t0, 26_000)),
        IdleStep::Prompt(1),
        "Are you still there?",
    );
}

#[test]
fn keys_are_an_answer_too() {
    let (mut turns, t0) = idle_call();
    turns.on_dtmf("5", ms(t0, 9_000));
    assert!(turns.on_tick(ms(t0, 10_000)).is_empty());
    // A key alone is not a turn: the caller still has the floor, the count restarts only
    // when the assistant next finishes speaking.
    assert_eq!(turns.next_deadline(), None);
}

#[test]
fn noise_without_words_is_no_answer_and_speech_pauses_the_timer() {
    let (mut turns, t0) = idle_call();
    assert!(turns
        .on_transcript("", Heard::Final, ms(t0, 5_000))
        .is_empty());
    assert_eq!(
        turns.next_deadline(),
        Some(t0 + IDLE),
        "noise changes nothing"
    );
    // Words that never become final: the timer waits, then the caller has the floor again.
    turns.on_transcript("uh", Heard::Interim, ms(t0, 9_000));
    assert_eq!(
        turns.next_deadline(),
        Some(ms(t0, 11_000)),
        "the silence timer only"
    );
    assert!(turns.on_tick(ms(t0, 11_000)).is_empty());
    turns.on_transcript("", Heard::Final, ms(t0, 11_100));
    assert!(turns.on_tick(ms(t0, 13_000)).is_empty());
}

#[test]
fn a_caller_who_speaks_over_the_goodbye_keeps_the_call() {
    let (mut turns, t0) = idle_call();
    let now = unanswered_prompts(&mut turns, t0) + 10_000;
    let goodbye = expect_idle(&turns.on_tick(ms(t0, now)), IdleStep::Goodbye, "Goodbye.");
    speak_at(&mut turns, goodbye, &["Goodbye."], 0, ms(t0, now));
    let actions = turns.on_transcript("Wait, I'm here!", Heard::Final, ms(t0, now + 500));
    assert!(
        matches!(actions.as_slice(), [Action::Interrupt { id, .. }] if *id == goodbye),
        "{actions:?}"
    );
    let (_, said, _) = asked(&turns.on_tick(ms(t0, now + 2_500)));
    assert_eq!(said, "Wait, I'm here!");
    let later = turns.on_tick(ms(t0, now) + FAREWELL_LIMIT);
    assert!(
        !later.iter().any(|a| matches!(a, Action::Hangup(_))),
        "{later:?}"
    );
}

#[test]
fn a_zero_timeout_never_prompts() {
    let (turns, t0) = listening();
    let mut turns = turns.with_idle(IdlePolicy {
        timeout: Duration::ZERO,
        prompt: "?".into(),
        prompts: 2,
        goodbye: "Bye.".into(),
    });
    turns.floor_to_caller(t0);
    assert_eq!(turns.next_deadline(), None);
    assert!(turns.on_tick(ms(t0, 60_000)).is_empty());
}
