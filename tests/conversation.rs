//! Whole calls replayed from recordings: what the model sees, what Twilio receives, the marks.

use crate::support;

use ivr_sim::standin::faq::{self, ADDRESS, GOODBYE, HOURS};
use support::expect::{call_audio, call_marks, call_texts, dialogue, heard, sorted};
use support::fixture::{pcm16le, FRAME_BYTES};
use support::{TestEnv, DEEPGRAM_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_question_is_answered_with_the_tts_audio_in_whole_frames() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("one_question");
    let question = &fixture.sidecar.utterances[0].text;
    let log = env.replay("one_question").await;

    assert!(
        log.violations.is_empty(),
        "Twilio rule breaches: {:?}",
        log.violations
    );

    // The model saw exactly what was said, once, after the system prompt.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1, "one turn, one request");
    assert!(requests[0].stream, "the reply is streamed");
    let messages = &requests[0].messages;
    assert_eq!(messages[0].0, "system");
    assert!(messages[0].1.contains("City General Hospital"));
    assert_eq!(dialogue(messages), vec![("user", question.as_str())]);
    assert_eq!(faq::answer(question), HOURS);

    // The greeting and the answer's phrases were synthesized.
    assert_eq!(
        sorted(support::expect::requested(&env.tts)),
        sorted(call_texts(&[HOURS]))
    );

    // Twilio received exactly that audio, in order: 160-byte frames on the call's streamSid,
    // no header, only the last frame of each phrase padded.
    assert!(log
        .media
        .iter()
        .all(|f| f.bytes.len() == FRAME_BYTES && f.stream_sid == fixture.sidecar.stream_sid));
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
    assert!(log.clears.is_empty(), "nobody interrupted");

    // Each phrase ended with a mark that came back because its audio played.
    let marks: Vec<String> = log.marks.iter().map(|m| m.name.clone()).collect();
    assert_eq!(marks, call_marks(&[HOURS]));
    assert!(log
        .marks
        .iter()
        .all(|m| m.echoed_at.is_some() && !m.discarded));
    assert_eq!(
        log.heard(),
        call_audio(&[HOURS]),
        "the caller heard all of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_audio_reaches_deepgram_as_pcm_with_the_documented_parameters() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("one_question");
    let _log = env.replay("one_question").await;
    // The Twilio socket may close a moment before the recogniser's own close handshake ends
    // (the call closes both at once); wait for it, within the 1 s the call has to clean up.
    let closed = support::eventually(std::time::Duration::from_secs(1), || {
        env.stt
            .connections()
            .first()
            .is_some_and(|c| c.ended_at.is_some())
    })
    .await;
    assert!(closed, "the recogniser socket was not closed within 1 s");

    let connections = env.stt.connections();
    assert_eq!(connections.len(), 1, "one Deepgram socket per call");
    let stt = &connections[0];
    assert_eq!(
        stt.authorization.as_deref(),
        Some(format!("Token {DEEPGRAM_KEY}").as_str())
    );
    for (key, value) in [
        ("model", "nova-2"),
        ("encoding", "linear16"),
        ("sample_rate", "8000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("punctuate", "true"),
        ("smart_format", "true"),
        ("vad_events", "true"),
    ] {
        assert_eq!(stt.query.get(key), Some(value), "query parameter {key}");
    }
    // Every caller frame arrived, decoded bit-exactly, one binary message per frame.
    let inbound = fixture.inbound_mulaw();
    assert_eq!(stt.audio, pcm16le(&inbound));
    assert_eq!(stt.binary_frames, inbound.len() / FRAME_BYTES);
    assert_eq!(stt.close_streams, 1, "CloseStream at the end of the call");
    assert!(stt.violations.is_empty(), "{:?}", stt.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_turns_keep_the_whole_history_and_never_repeat_words() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("three_turns");
    let said = fixture.said();
    let log = env.replay("three_turns").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The fake recogniser sends growing interims and splits finals: the turns must still be
    // exactly what was said. The history keeps the replies as heard (Markdown stripped).
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 3);
    let answers = [HOURS, ADDRESS, GOODBYE];
    let (first, second) = (heard(answers[0]), heard(answers[1]));
    assert_eq!(dialogue(&requests[0].messages), vec![("user", said[0])]);
    assert_eq!(
        dialogue(&requests[1].messages),
        vec![
            ("user", said[0]),
            ("assistant", first.as_str()),
            ("user", said[1])
        ]
    );
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

    // The address answer's Markdown was stripped before it was spoken.
    let texts = support::expect::requested(&env.tts);
    assert_eq!(sorted(texts.clone()), sorted(call_texts(&answers)));
    assert!(
        texts.iter().all(|t| !t.contains("**") && !t.contains("](")),
        "{texts:?}"
    );
    assert!(second.contains("100 Main Street") && second.contains("see it on the map"));
    assert_eq!(log.media_bytes(), call_audio(&answers));
    let marks: Vec<String> = log.marks.iter().map(|m| m.name.clone()).collect();
    assert_eq!(marks, call_marks(&answers));
    assert!(log.marks.iter().all(|m| !m.discarded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keypad_digits_then_hash_reach_the_model_as_a_turn() {
    use serde_json::json;
    use support::{replay_with, Inject, PlayOptions};
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("visiting_hours");
    let sid = fixture.sidecar.stream_sid.clone();
    let key = |at: u64, digit: &str| {
        let message = json!({"event":"dtmf","streamSid":sid,"sequenceNumber":"1",
            "dtmf":{"track":"inbound_track","digit":digit}});
        (at, Inject::Message(message))
    };
    let inject = vec![key(7_000, "4"), key(7_100, "2"), key(7_200, "#")];
    let options = PlayOptions {
        inject,
        ..PlayOptions::default()
    };
    let log = replay_with(&env.media_url(), &fixture, options).await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2);
    let last = requests[1].messages.last().expect("a user message");
    assert_eq!(
        last,
        &("user".to_owned(), "The caller pressed: 4 2".to_owned())
    );
    assert_eq!(requests[1].messages.len(), 4, "the spoken turn came first");
}
