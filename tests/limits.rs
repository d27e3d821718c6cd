//! Limits and hostile input: a full server refuses politely, garbage never hurts a good call,
//! and every call's resources are freed when it ends.

use crate::support;

use std::time::Duration;

use futures::SinkExt;
use ivr_sim::standin::faq;
use serde_json::json;
use support::expect::call_audio;
use support::{eventually, TestEnv};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_calls_new_calls_are_refused_politely_and_slots_come_back() {
    let env = TestEnv::start_with(|config| config.server.max_calls = 1).await;
    let url = env.media_url();
    let first = tokio::spawn(async move {
        support::replay(&url, &support::fixture::load("visiting_hours")).await
    });
    assert!(eventually(Duration::from_secs(2), || env.state.live_calls() == 1).await);

    // The webhook answers 503 with TwiML that apologises and hangs up.
    let response = reqwest::Client::new()
        .post(format!("{}/", env.http_url()))
        .form(&[("CallSid", "CA2")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let twiml = response.text().await.unwrap();
    let doc = roxmltree::Document::parse(&twiml).expect("TwiML");
    let verbs: Vec<&str> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(verbs, ["Say", "Hangup"]);
    // A second Media Stream is refused before the upgrade.
    let refused = tokio_tungstenite::connect_async(env.media_url()).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("503")));

    let log = first.await.unwrap();
    assert!(log.violations.is_empty());
    assert!(
        eventually(Duration::from_secs(2), || env.state.live_calls() == 0).await,
        "slot not freed"
    );
    let response = reqwest::Client::new()
        .post(format!("{}/", env.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "a new call is taken once the first ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_do_not_disturb_a_good_call() {
    let env = TestEnv::start().await;
    let url = env.media_url();
    let good = tokio::spawn({
        let url = url.clone();
        async move { support::replay(&url, &support::fixture::load("one_question")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = json!({"event":"start","sequenceNumber":"1","streamSid":"MZbad","start":{
        "accountSid":"AC1","streamSid":"MZbad","callSid":"CAbad","tracks":["inbound"],
        "customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}})
    .to_string();
    let attacks: Vec<Vec<Message>> = vec![
        // Garbage before any start.
        vec![
            Message::text("{not json"),
            Message::binary(vec![0u8; 1000]),
            Message::text(json!({"event":"media","media":{"payload":"//8="}}).to_string()),
        ],
        // A started stream, then nonsense of every kind.
        vec![
            Message::text(start.clone()),
            Message::text(
                json!({"event":"media","streamSid":"MZbad","media":{"payload":"***"}}).to_string(),
            ),
            Message::text(json!({"event":"teleport","streamSid":"MZbad"}).to_string()),
            Message::binary(vec![1u8; 5000]),
        ],
        // A 2 MiB message (over the 64 KiB limit: that socket is closed, nothing else).
        vec![
            Message::text(start.clone()),
            Message::text("x".repeat(2 * 1024 * 1024)),
        ],
    ];
    for messages in attacks {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        for message in messages {
            if socket.send(message).await.is_err() {
                break;
            }
        }
        drop(socket);
    }
    // A burst of 10,000 messages on a started stream.
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    socket.send(Message::text(start)).await.expect("start");
    let unknown =
        json!({"event":"media","streamSid":"MZbad","media":{"payload":"//////////8="}}).to_string();
    for i in 0..10_000 {
        let message = if i % 2 == 0 {
            unknown.clone()
        } else {
            format!("{{\"garbage\":{i}}}")
        };
        if socket.feed(Message::text(message)).await.is_err() {
            break;
        }
    }
    let _ = socket.flush().await;
    drop(socket);

    let log = good.await.expect("good call");
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    let question = &support::fixture::load("one_question").sidecar.utterances[0].text;
    assert_eq!(log.media_bytes(), call_audio(&[faq::answer(question)]));
    let health = reqwest::get(format!("{}/healthz", env.http_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server stays healthy");
    assert!(
        eventually(Duration::from_secs(3), || env.state.live_calls() == 0).await,
        "every call, good or hostile, was freed: {} left",
        env.state.live_calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_twilio_socket_frees_the_call() {
    let env = TestEnv::start().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(env.media_url())
        .await
        .expect("connect");
    let fixture = support::fixture::load("one_question");
    for line in fixture.inbound.iter().take(50) {
        socket
            .send(Message::text(line.msg.to_string()))
            .await
            .expect("send");
    }
    assert!(eventually(Duration::from_secs(2), || env.state.live_calls() == 1).await);
    drop(socket);
    assert!(
        eventually(Duration::from_secs(1), || env.state.live_calls() == 0).await,
        "the call outlived its socket"
    );
}
