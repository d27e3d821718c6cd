//! Garbage on a call's socket is skipped: the call goes on, and other calls never notice.

use crate::support;

use std::time::Duration;

use ivr_sim::standin::faq::HOURS;
use serde_json::json;
use support::expect::{call_audio, call_texts, sorted};
use support::TestEnv;
use support::{replay_with, Inject, PlayOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_skipped_and_the_call_completes() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("one_question");
    let sid = fixture.sidecar.stream_sid.clone();
    let garbage = vec![
        (500, Inject::Text("this is not json".into())),
        (520, Inject::Text("{\"event\":".into())),
        (540, Inject::Binary(vec![0xFF; 160])),
        (
            560,
            Inject::Message(json!({"event":"hologram","streamSid":sid})),
        ),
        (
            580,
            Inject::Message(
                json!({"event":"media","streamSid":sid,"media":{"payload":"%%%not base64%%%"}}),
            ),
        ),
        (
            600,
            Inject::Message(json!({"event":"media","streamSid":sid,"media":{}})),
        ),
        (
            620,
            Inject::Message(json!({"event":"media","streamSid":sid,"media":{"payload":42}})),
        ),
        (
            640,
            Inject::Message(json!({"event":"mark","streamSid":sid,"mark":{"name":"not-ours"}})),
        ),
        (
            660,
            Inject::Message(
                json!({"event":"dtmf","streamSid":sid,"dtmf":{"track":"inbound_track","digit":"5"}}),
            ),
        ),
        (
            680,
            Inject::Message(
                json!({"event":"start","streamSid":"MZother","start":{"streamSid":"MZother","callSid":"CAother"}}),
            ),
        ),
        (
            700,
            Inject::Text(format!(
                "{{\"event\":\"media\",\"media\":{{\"payload\":\"{}\"}}}}",
                "*".repeat(40_000)
            )),
        ),
        (720, Inject::Text("[]".into())),
        (740, Inject::Text("null".into())),
    ];
    let log = replay_with(
        &env.media_url(),
        &fixture,
        PlayOptions {
            inject: garbage,
            ..PlayOptions::default()
        },
    )
    .await;

    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert!(log
        .server_closed_at
        .is_none_or(|at| at >= log.stop_sent_at.unwrap_or(at)));
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].messages.last().map(|(_, c)| c.as_str()),
        Some(fixture.sidecar.utterances[0].text.as_str())
    );
    assert_eq!(
        sorted(support::expect::requested(&env.tts)),
        sorted(call_texts(&[HOURS]))
    );
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_does_not_disturb_a_good_call() {
    let env = TestEnv::start().await;
    let url = env.media_url();
    let good = tokio::spawn({
        let url = url.clone();
        async move { support::replay(&url, &support::fixture::load("visiting_hours")).await }
    });

    // Meanwhile: a socket that sends media before start, garbage, and an oversized message.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut bad, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let media = json!({"event":"media","streamSid":"MZx","media":{"payload":"//8="}}).to_string();
    for text in [media.as_str(), "garbage", "{}"] {
        bad.send(Message::text(text)).await.expect("send");
    }
    let _ = bad.send(Message::text("x".repeat(200_000))).await;
    drop(bad);
    // And one that connects and vanishes without a word.
    drop(
        tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect"),
    );

    let log = good.await.expect("good call");
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1, "only the good call spoke");
    assert_eq!(
        env.stt.connections().len(),
        1,
        "no recogniser for a stream that never started"
    );
    let question = &support::fixture::load("visiting_hours").sidecar.utterances[0].text;
    assert_eq!(
        log.media_bytes(),
        call_audio(&[ivr_sim::standin::faq::answer(question)])
    );
}
