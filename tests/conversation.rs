//! Whole calls replayed from recordings: what the model sees, what Twilio receives, the marks.

mod support;

use support::faq::{answer_for, ADDRESS, GOODBYE, HOURS};
use support::fixture::{pcm16le, FRAME_BYTES};
use support::{spoken, Fixture, TestEnv, DEEPGRAM_KEY};

const GREETING: &str = ivr_bridge::config::DEFAULT_GREETING;

/// (role, content) pairs of a request, without the system prompt.
fn dialogue(messages: &[(String, String)]) -> Vec<(&str, &str)> {
    messages
        .iter()
        .skip(1)
        .map(|(role, content)| (role.as_str(), content.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_question_is_answered_with_the_tts_audio_in_whole_frames() {
    let env = TestEnv::start().await;
    let fixture = Fixture::load("one_question");
    let question = &fixture.meta.utterances[0].text;
    let log = env.replay("one_question").await;

    assert!(
        log.violations.is_empty(),
        "Twilio rule breaches: {:?}",
        log.violations
    );

    // The model saw exactly what was said, once, after the system prompt.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1, "one turn, one request");
    let messages = &requests[0].messages;
    assert_eq!(messages[0].0, "system");
    assert!(messages[0].1.contains("City General Hospital"));
    assert_eq!(dialogue(messages), vec![("user", question.as_str())]);
    assert_eq!(answer_for(question), HOURS);

    // The greeting and the answer were synthesized, in that order.
    let texts = env.tts.texts();
    assert_eq!(texts, vec![GREETING.to_owned(), HOURS.to_owned()]);

    // Twilio received exactly that audio: 160-byte frames on the call's streamSid, no header,
    // only the last frame of each reply padded.
    assert!(log
        .media
        .iter()
        .all(|f| f.bytes.len() == FRAME_BYTES && f.stream_sid == fixture.meta.stream_sid));
    assert_eq!(log.media_bytes(), spoken(&texts));
    assert!(log.clears.is_empty(), "nobody interrupted");

    // Each reply ended with a mark that came back because its audio played.
    let marks: Vec<_> = log.marks.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(marks, ["reply-1", "reply-2"]);
    assert!(log
        .marks
        .iter()
        .all(|m| m.echoed_at.is_some() && !m.discarded));
    assert_eq!(log.heard(), spoken(&texts), "the caller heard all of it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_audio_reaches_deepgram_as_pcm_with_the_documented_parameters() {
    let env = TestEnv::start().await;
    let fixture = Fixture::load("one_question");
    let _log = env.replay("one_question").await;

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
    let fixture = Fixture::load("three_turns");
    let said: Vec<&str> = fixture
        .meta
        .utterances
        .iter()
        .map(|u| u.text.as_str())
        .collect();
    let log = env.replay("three_turns").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The fake recogniser sends growing interims and splits finals: the turns must still be
    // exactly what was said.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 3);
    let answers = [HOURS, ADDRESS, GOODBYE];
    assert_eq!(dialogue(&requests[0].messages), vec![("user", said[0])]);
    assert_eq!(
        dialogue(&requests[1].messages),
        vec![
            ("user", said[0]),
            ("assistant", answers[0]),
            ("user", said[1])
        ]
    );
    assert_eq!(
        dialogue(&requests[2].messages),
        vec![
            ("user", said[0]),
            ("assistant", answers[0]),
            ("user", said[1]),
            ("assistant", answers[1]),
            ("user", said[2]),
        ]
    );

    // The address answer's Markdown was stripped before it was spoken.
    let texts = env.tts.texts();
    assert_eq!(texts.len(), 4);
    assert!(
        !texts[2].contains("**") && !texts[2].contains("]("),
        "{}",
        texts[2]
    );
    assert!(texts[2].contains("100 Main Street") && texts[2].contains("see it on the map"));
    assert_eq!(log.media_bytes(), spoken(&texts));
    assert_eq!(log.marks.len(), 4);
    assert!(log.marks.iter().all(|m| !m.discarded));
}
