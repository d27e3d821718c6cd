//! A call's life outside the conversation: a quiet line keeps the recogniser alive, and a hang-up
//! frees everything the call started within a second.

use crate::support;

use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use support::{eventually, TestEnv};
use support::{replay_with, PlayOptions};
use tokio_tungstenite::tungstenite::Message;

/// Twilio's first two messages for a made-up stream.
fn opening(stream_sid: &str) -> [String; 2] {
    [
        json!({"event":"connected","protocol":"Call","version":"1.0.0"}).to_string(),
        json!({"event":"start","sequenceNumber":"1","streamSid":stream_sid,"start":{
            "accountSid":"AC1","streamSid":stream_sid,"callSid":"CA1","tracks":["inbound"],
            "customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}})
        .to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_flows_while_no_audio_does_and_closestream_ends_the_call() {
    let env = TestEnv::start().await;
    let (mut twilio, _) = tokio_tungstenite::connect_async(env.media_url())
        .await
        .expect("connect");
    for text in opening("MZquiet") {
        twilio.send(Message::text(text)).await.expect("send");
    }
    // No media at all for a while (a line on hold): Deepgram must still hear from us.
    assert!(
        eventually(Duration::from_secs(6), || env
            .stt
            .connections()
            .first()
            .is_some_and(|c| c.keepalives >= 1))
        .await,
        "no KeepAlive within 6 s of silence"
    );
    let stop = json!({"event":"stop","sequenceNumber":"2","streamSid":"MZquiet",
        "stop":{"accountSid":"AC1","callSid":"CA1"}});
    twilio
        .send(Message::text(stop.to_string()))
        .await
        .expect("send");
    assert!(
        eventually(Duration::from_secs(1), || env
            .stt
            .connections()
            .first()
            .is_some_and(|c| c.close_streams == 1 && c.ended_at.is_some()))
        .await,
        "recogniser not closed within 1 s of stop"
    );
    let connection = &env.stt.connections()[0];
    assert!(
        connection.violations.is_empty(),
        "{:?}",
        connection.violations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_mid_reply_frees_the_call_within_a_second() {
    let env = TestEnv::start().await;
    // Hang up while the long directions are playing.
    let log = replay_with(
        &env.media_url(),
        &support::fixture::load("barge_in"),
        PlayOptions {
            hang_up_at_ms: Some(5_500),
            linger: Duration::from_millis(1_200),
            ..PlayOptions::default()
        },
    )
    .await;
    let stop = log.stop_sent_at.expect("stop was sent");
    let closed = log.server_closed_at.expect("the server closed the socket");
    assert!(
        closed.duration_since(stop) <= Duration::from_secs(1),
        "{:?}",
        closed - stop
    );
    let within =
        (stop + Duration::from_secs(1)).saturating_duration_since(tokio::time::Instant::now());
    let closed_in_time = eventually(within, || {
        env.stt.connections()[0]
            .ended_at
            .is_some_and(|ended| ended.duration_since(stop) <= Duration::from_secs(1))
    })
    .await;
    assert!(
        closed_in_time,
        "recogniser socket not closed within 1 s of stop"
    );
    assert_eq!(env.stt.connections()[0].close_streams, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_cancels_the_thinking_model_and_the_recogniser() {
    let env = TestEnv::start().await;
    env.llm.set_total_delay(Duration::from_secs(5));
    let fixture = support::fixture::load("one_question");
    let (mut twilio, _) = tokio_tungstenite::connect_async(env.media_url())
        .await
        .expect("connect");
    // Play the call up to the moment the model is thinking, then vanish without `stop`.
    let started = tokio::time::Instant::now();
    for line in &fixture.inbound {
        if line.msg["event"] == "stop" {
            break;
        }
        tokio::time::sleep_until(started + Duration::from_millis(line.at_ms)).await;
        twilio
            .send(Message::text(line.msg.to_string()))
            .await
            .expect("send");
        if !env.llm.requests().is_empty() {
            break;
        }
    }
    assert_eq!(env.llm.requests().len(), 1, "the model was asked");
    let dropped_at = tokio::time::Instant::now();
    drop(twilio);

    assert!(
        eventually(Duration::from_secs(1), || env
            .stt
            .connections()
            .first()
            .is_some_and(|c| c.ended_at.is_some()))
        .await,
        "recogniser still open 1 s after the caller vanished"
    );
    // The model's answer is never awaited: the request was dropped, not completed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let request = &env.llm.requests()[0];
    assert!(!request.completed, "the model request outlived the call");
    assert!(dropped_at.elapsed() < Duration::from_secs(5));
    assert_eq!(
        support::expect::requested(&env.tts).len(),
        1,
        "only the greeting was ever synthesized"
    );
}
