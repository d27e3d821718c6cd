//! Turn latency: from the end of the caller's speech to the first audio of the answer.

use super::*;

#[test]
fn turn_latency_runs_from_the_end_of_speech_to_the_first_audio() {
    let (mut turns, t0) = listening();
    turns.on_speech_ended(ms(t0, 800), ms(t0, 1000));
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 1000));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 3000)));
    assert_eq!(
        turns.on_first_audio(id, ms(t0, 3500)),
        Some(Duration::from_millis(2700))
    );
    assert_eq!(turns.on_first_audio(id, ms(t0, 3600)), None, "once a turn");
    assert_eq!(turns.turn_latencies(), [Duration::from_millis(2700)]);
}

#[test]
fn a_speech_end_ahead_of_our_clock_counts_from_now() {
    let (mut turns, t0) = listening();
    turns.on_speech_ended(ms(t0, 1200), ms(t0, 1000));
    turns.on_transcript("Hours?", Heard::Final, ms(t0, 1000));
    let (id, _, _) = asked(&turns.on_tick(ms(t0, 3000)));
    assert_eq!(
        turns.on_first_audio(id, ms(t0, 3100)),
        Some(Duration::from_millis(2100))
    );
}

#[test]
fn only_the_answer_to_the_latest_turn_is_timed() {
    let (mut turns, t0, greeting) = greeting();
    assert_eq!(turns.on_first_audio(greeting, t0), None, "the greeting");
    turns.on_mark(&greeting.mark_name(0), t0);
    turns.on_speech_ended(ms(t0, 900), ms(t0, 1000));
    turns.on_transcript("What are your hours", Heard::Final, ms(t0, 1000));
    let (first, _, _) = asked(&turns.on_tick(ms(t0, 3000)));
    turns.on_speech_ended(ms(t0, 3050), ms(t0, 3100));
    turns.on_transcript("on Sunday?", Heard::Final, ms(t0, 3100));
    let (second, _, _) = asked(&turns.on_tick(ms(t0, 5100)));
    assert_eq!(turns.on_first_audio(first, ms(t0, 5200)), None, "cut off");
    assert_eq!(
        turns.on_first_audio(second, ms(t0, 5300)),
        Some(Duration::from_millis(2250))
    );
    assert_eq!(turns.turn_latencies(), [Duration::from_millis(2250)]);
}

#[test]
fn a_turn_without_speech_counts_from_its_end() {
    let (mut turns, t0) = listening();
    turns.on_dtmf("4", ms(t0, 4000));
    let (id, said, _) = asked(&turns.on_dtmf("#", ms(t0, 5000)));
    assert_eq!(said, "The caller pressed: 4");
    assert_eq!(
        turns.on_first_audio(id, ms(t0, 5400)),
        Some(Duration::from_millis(400))
    );
}
