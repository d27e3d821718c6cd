//! False interruptions: a backchannel or a noise over a reply resumes it; real words take the
//! floor; too few words never interrupt.

use super::*;

/// A call answering "Directions?" with three 1-second phrases, sent at 2 s: the first heard
/// from 2 s to 3 s (its mark came back), the second playing from 3 s.
fn answering() -> (Turns, Instant, ReplyId) {
    let (mut turns, t0) = listening();
    turns.on_transcript("Directions?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    let phrases = ["From the station,", "walk north.", "Then left."];
    speak_at(&mut turns, id, &phrases, 1, ms(t0, 2000));
    (turns, t0, id)
}

fn counted(turns: &mut Turns) -> Vec<Interruption> {
    turns.counted().collect()
}

#[test]
fn a_backchannel_over_a_reply_resumes_it_from_the_cut_phrase() {
    let (mut turns, t0, id) = answering();
    let actions = turns.on_transcript("mm", Heard::Interim, ms(t0, 3500));
    assert_eq!(
        actions,
        vec![Action::Interrupt {
            id,
            heard: Some("From the station, walk…".into()),
            hold: true
        }],
        "the clear is immediate"
    );
    assert!(!turns.is_speaking());
    assert_eq!(turns.current_reply(), Some(id));
    assert!(turns.history().is_empty(), "not decided yet");
    let actions = turns.on_transcript("Mm-hmm.", Heard::Final, ms(t0, 3800));
    assert_eq!(actions, resumed(id, 1, 1));
    assert_eq!(counted(&mut turns), [Interruption::Resumed]);
    assert!(turns.is_speaking());
    assert_eq!(turns.next_deadline(), None, "no turn is pending");
    // The second and third phrases play again and are heard: the history is as if the
    // backchannel never happened.
    turns.on_phrase_queued(id, 1, ms(t0, 3800), PHRASE);
    turns.on_phrase_queued(id, 2, ms(t0, 3800), PHRASE);
    turns.on_mark(&id.take_mark_name(1, 1), ms(t0, 4800));
    turns.on_mark(&id.take_mark_name(1, 2), ms(t0, 5800));
    assert!(!turns.is_speaking());
    assert_eq!(
        history(&turns),
        ["Directions?", "From the station, walk north. Then left."]
    );
    assert_eq!(turns.turns(), 1);
}

#[test]
fn real_words_take_the_floor_and_keep_what_was_heard() {
    let (mut turns, t0, id) = answering();
    turns.on_transcript("mm", Heard::Interim, ms(t0, 3500));
    let actions = turns.on_transcript("Mm, and by car?", Heard::Final, ms(t0, 3900));
    assert_eq!(actions, vec![Action::Discard { id }]);
    assert_eq!(counted(&mut turns), [Interruption::BargeIn]);
    assert_eq!(history(&turns), ["Directions?", "From the station, walk…"]);
    let (_, said, _) = asked(&turns.on_tick(ms(t0, 5900)));
    assert_eq!(said, "Mm, and by car?");
}

#[test]
fn final_words_beyond_a_backchannel_interrupt_for_good_at_once() {
    let (mut turns, t0, id) = answering();
    let actions = turns.on_transcript("Wait, by car?", Heard::Final, ms(t0, 3500));
    assert_eq!(
        actions,
        vec![Action::Interrupt {
            id,
            heard: Some("From the station, walk…".into()),
            hold: false
        }]
    );
    assert_eq!(counted(&mut turns), [Interruption::BargeIn]);
}

#[test]
fn words_revised_to_nothing_resume_at_once() {
    let (mut turns, t0, id) = answering();
    turns.on_transcript("what", Heard::Interim, ms(t0, 3500));
    let actions = turns.on_transcript("", Heard::Final, ms(t0, 3700));
    assert_eq!(actions, resumed(id, 1, 1));
}

#[test]
fn no_words_by_the_false_interruption_limit_resume_the_reply() {
    let (mut turns, t0, id) = answering();
    turns.on_transcript("uh", Heard::Interim, ms(t0, 3500));
    // 1.5 s after the interruption, before the silence timer's 2 s.
    assert_eq!(turns.next_deadline(), Some(ms(t0, 5000)));
    assert!(turns.on_tick(ms(t0, 4999)).is_empty());
    assert_eq!(turns.on_tick(ms(t0, 5000)), resumed(id, 1, 1));

    // Real words still being recognised are not "no words": the reply waits for them.
    let (mut turns, t0, _) = answering();
    turns.on_transcript("wait what", Heard::Interim, ms(t0, 3500));
    assert!(turns.on_tick(ms(t0, 5000)).is_empty());
    assert_eq!(
        turns.current_reply().map(|_| turns.is_speaking()),
        Some(false)
    );
}

#[test]
fn too_few_words_never_interrupt() {
    let (turns, t0) = listening();
    let mut turns = turns.with_interruptions(InterruptionPolicy {
        min_words: 2,
        ..InterruptionPolicy::default()
    });
    turns.on_transcript("Directions?", Heard::Final, ms(t0, 0));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 2000)));
    speak_at(
        &mut turns,
        id,
        &["From the station,", "walk north."],
        0,
        ms(t0, 2000),
    );
    assert!(turns
        .on_transcript("yes", Heard::Interim, ms(t0, 2500))
        .is_empty());
    assert!(turns
        .on_transcript("Yes.", Heard::Final, ms(t0, 2700))
        .is_empty());
    assert_eq!(counted(&mut turns), [Interruption::Ignored]);
    assert!(turns.is_speaking());
    assert_eq!(turns.next_deadline(), None, "the word is not a turn either");
    let actions = turns.on_transcript("Yes but wait", Heard::Interim, ms(t0, 2900));
    assert!(
        matches!(actions.as_slice(), [Action::Interrupt { .. }]),
        "{actions:?}"
    );
}

#[test]
fn a_backchannel_over_the_greeting_resumes_it() {
    let (mut turns, t0, greeting) = greeting();
    turns.on_phrase_queued(greeting, 0, t0, PHRASE);
    turns.on_transcript("okay", Heard::Interim, ms(t0, 500));
    assert_eq!(
        turns.on_transcript("Okay.", Heard::Final, ms(t0, 700)),
        resumed(greeting, 0, 1)
    );
}

#[test]
fn keys_while_paused_take_the_floor() {
    let (mut turns, t0, id) = answering();
    turns.on_transcript("uh", Heard::Interim, ms(t0, 3500));
    turns.on_dtmf("1", ms(t0, 3600));
    let actions = turns.on_dtmf("#", ms(t0, 3700));
    assert!(
        matches!(actions.as_slice(), [Action::Discard { id: d }, Action::Answer { .. }] if *d == id),
        "{actions:?}"
    );
    assert_eq!(history(&turns), ["Directions?", "From the station, walk…"]);
}

#[test]
fn speaking_again_after_a_resume_interrupts_again() {
    let (mut turns, t0, id) = answering();
    turns.on_transcript("Yeah.", Heard::Final, ms(t0, 3500));
    assert!(turns.is_speaking(), "resumed");
    turns.on_phrase_queued(id, 1, ms(t0, 3600), PHRASE);
    let actions = turns.on_transcript("Sorry, by car?", Heard::Final, ms(t0, 4200));
    assert!(
        matches!(actions.as_slice(), [Action::Interrupt { hold: false, heard: Some(h), .. }] if h == "From the station, walk…"),
        "{actions:?}"
    );
    assert_eq!(
        counted(&mut turns),
        [Interruption::Resumed, Interruption::BargeIn]
    );
}

#[test]
fn echoes_of_the_cleared_audio_after_a_resume_are_not_the_resumed_phrases() {
    // "Yeah." arrives as a final with no interim before it: the clear and the resume go out
    // together, and Twilio's echoes of the cleared marks come back after the resume.
    let (mut turns, t0, id) = answering();
    let actions = turns.on_transcript("Yeah.", Heard::Final, ms(t0, 3500));
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::Interrupt { hold: true, .. },
                Action::Resume { from: 1, .. }
            ]
        ),
        "{actions:?}"
    );
    turns.on_mark(&id.mark_name(1), ms(t0, 3510));
    turns.on_mark(&id.mark_name(2), ms(t0, 3510));
    assert!(
        turns.is_speaking(),
        "the resumed phrases have not played yet"
    );
    // The resumed take's own marks are the ones that count.
    turns.on_phrase_queued(id, 1, ms(t0, 3520), PHRASE);
    turns.on_phrase_queued(id, 2, ms(t0, 3520), PHRASE);
    turns.on_mark(&id.take_mark_name(1, 1), ms(t0, 4520));
    assert!(turns.is_speaking());
    turns.on_mark(&id.take_mark_name(1, 2), ms(t0, 5520));
    assert!(!turns.is_speaking(), "heard to the end");
    assert_eq!(
        history(&turns),
        ["Directions?", "From the station, walk north. Then left."]
    );
}

#[test]
fn mark_names_carry_the_take_once_a_reply_resumed() {
    let id = ReplyId(7);
    assert_eq!(id.take_mark_name(0, 2), id.mark_name(2));
    assert_eq!(id.take_mark_name(3, 2), "reply-7.2.3");
    assert_eq!(ReplyId::parse_take_mark("reply-7.2.3"), Some((id, 2, 3)));
    assert_eq!(ReplyId::parse_take_mark("reply-7.2"), Some((id, 2, 0)));
    assert_eq!(ReplyId::parse_mark("reply-7.2.3"), Some((id, 2)));
    assert_eq!(ReplyId::parse_take_mark("reply-7.2.x"), None);
}

#[test]
fn each_resume_of_a_reply_is_a_take_of_its_own() {
    let (mut turns, t0, id) = answering();
    turns.on_transcript("mm", Heard::Interim, ms(t0, 3500));
    let first = turns.on_transcript("Mm-hmm.", Heard::Final, ms(t0, 3800));
    assert_eq!(first, resumed(id, 1, 1));
    turns.on_transcript("yeah", Heard::Interim, ms(t0, 4200));
    let second = turns.on_transcript("Yeah.", Heard::Final, ms(t0, 4400));
    assert!(
        matches!(second.as_slice(), [Action::Resume { id: r, take: 2, .. }] if *r == id),
        "{second:?}"
    );
}
