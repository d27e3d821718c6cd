//! `TURN_DETECTION=deepgram`: the caller's turn ends on Deepgram's `speech_final`, long before
//! the silence timer, and the conversation is otherwise exactly the one the timer gives.

use crate::support;

use std::time::Duration;

use ivr_bridge::config::TurnDetection;
use ivr_sim::standin::faq::{ADDRESS, GOODBYE, HOURS};
use support::expect::{call_audio, call_marks, call_texts, heard, requested, sorted};
use support::TestEnv;

/// A silence timer far longer than Deepgram's end of speech, so the two cannot be confused.
const SILENCE: Duration = Duration::from_millis(3000);
/// The fake recogniser marks `speech_final` after 400 ms of silence; the turn must end within
/// this long of the utterance's last frame (the timer would need 3 s more).
const TURN_END_LIMIT: Duration = Duration::from_millis(1000);

/// The server with Deepgram deciding turns and a 3 s silence fallback.
async fn deepgram_env(endpointing_ms: u64, utterance_end_ms: u64) -> TestEnv {
    TestEnv::start_with(|config| {
        config.turns.turn_detection = TurnDetection::Deepgram;
        config.turns.silence_timeout = SILENCE;
        config.stt.stt_endpointing = Duration::from_millis(endpointing_ms);
        config.stt.stt_utterance_end = Duration::from_millis(utterance_end_ms);
    })
    .await
}

/// (role, content) pairs of a request, without the system prompt.
fn dialogue(messages: &[(String, String)]) -> Vec<(&str, &str)> {
    messages
        .iter()
        .skip(1)
        .map(|(role, content)| (role.as_str(), content.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_final_ends_the_turn_well_before_the_silence_timer() {
    let env = deepgram_env(300, 1000).await;
    let fixture = support::fixture::load("one_question");
    let utterance = &fixture.sidecar.utterances[0];
    let log = env.replay("one_question").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1, "one turn, one request");
    let spoken_until = log.at(utterance.end_ms);
    let turn_end = requests[0].at.saturating_duration_since(spoken_until);
    assert!(
        requests[0].at > spoken_until && turn_end <= TURN_END_LIMIT,
        "the model was asked {turn_end:?} after the caller stopped (timer: {SILENCE:?})"
    );

    // It was Deepgram's speech_final that ended it, and the bridge reacted at once.
    let stt = &env.stt.connections()[0];
    let speech_final = stt
        .sent
        .iter()
        .find(|s| s.msg["type"] == "Results" && s.msg["speech_final"] == true)
        .expect("the recogniser marked the end of speech");
    // The silence timer started at the last words, at or before speech_final: asked sooner
    // than the timer could run out, the model was asked on speech_final.
    let reaction = requests[0].at.saturating_duration_since(speech_final.at);
    assert!(
        requests[0].at >= speech_final.at && reaction < SILENCE,
        "model asked {reaction:?} after speech_final (timer: {SILENCE:?})"
    );
    assert_eq!(stt.query.get("endpointing"), Some("300"));
    assert_eq!(stt.query.get("utterance_end_ms"), Some("1000"));

    // Otherwise the same call as with the timer.
    assert_eq!(
        dialogue(&requests[0].messages),
        vec![("user", utterance.text.as_str())]
    );
    assert_eq!(sorted(requested(&env.tts)), sorted(call_texts(&[HOURS])));
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
    let marks: Vec<String> = log.marks.iter().map(|m| m.name.clone()).collect();
    assert_eq!(marks, call_marks(&[HOURS]));
    assert!(log.clears.is_empty(), "nobody interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_finals_make_the_same_three_turns_as_the_timer() {
    let env = deepgram_env(450, 1200).await;
    let fixture = support::fixture::load("three_turns");
    let log = env.replay("three_turns").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    let stt = &env.stt.connections()[0];
    assert_eq!(stt.query.get("endpointing"), Some("450"));
    assert_eq!(stt.query.get("utterance_end_ms"), Some("1200"));

    // Every turn ended soon after the caller stopped, never on a final before speech_final.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 3, "three turns, three requests");
    for (request, utterance) in requests.iter().zip(&fixture.sidecar.utterances) {
        let spoken_until = log.at(utterance.end_ms);
        let turn_end = request.at.saturating_duration_since(spoken_until);
        assert!(
            request.at > spoken_until && turn_end <= TURN_END_LIMIT,
            "{:?} answered {turn_end:?} after the caller stopped",
            utterance.text
        );
    }

    // The same history as the timer gives (tests/conversation.rs).
    let said = fixture.said();
    let (first, second) = (heard(HOURS), heard(ADDRESS));
    assert_eq!(
        dialogue(&requests[2].messages),
        vec![
            ("user", said[0]),
            ("assistant", first.as_str()),
            ("user", said[1]),
            ("assistant", second.as_str()),
            ("user", said[2]),
        ]
    );
    let answers = [HOURS, ADDRESS, GOODBYE];
    assert_eq!(sorted(requested(&env.tts)), sorted(call_texts(&answers)));
    assert_eq!(log.media_bytes(), call_audio(&answers));
    assert!(log.clears.is_empty(), "nobody interrupted");
}
