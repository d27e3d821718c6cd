//! Graceful drain, with a real SIGTERM to a real server process: the balancer is told at once
//! (503), new calls are refused, calls in progress finish, then the process exits 0.

use crate::support;

use std::time::Duration;

use ivr_sim::standin::faq::HOURS;
use support::expect::call_audio;
use support::instance::Instance;
use support::{LlmStandIn, SttStandIn, TtsStandIn};

/// The server binary as a child process (killed if a test fails midway), ending turns after
/// 600 ms of silence and draining for at most `drain_s`.
async fn start_server(fakes: (&SttStandIn, &TtsStandIn, &LlmStandIn), drain_s: u32) -> Instance {
    let settings = [
        ("SILENCE_TIMEOUT_MS", "600".to_owned()),
        ("DRAIN_TIMEOUT_S", drain_s.to_string()),
    ];
    Instance::start(env!("CARGO_BIN_EXE_ivr-bridge"), fakes, &settings).await
}

async fn fakes() -> (SttStandIn, TtsStandIn, LlmStandIn) {
    (
        support::start_stt().await,
        support::start_tts().await,
        support::start_llm().await,
    )
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_calls_and_lets_the_call_in_progress_finish() {
    let (stt, tts, llm) = fakes().await;
    let mut server = start_server((&stt, &tts, &llm), 30).await;
    let http = reqwest::Client::new();
    assert_eq!(
        status(http.get(format!("{}/healthz", server.http_url()))).await,
        200
    );

    let media = format!("ws://127.0.0.1:{}/media", server.port);
    let call = tokio::spawn({
        let media = media.clone();
        async move { support::replay(&media, &support::fixture::load("one_question")).await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.terminate();

    // At once: health says 503, new calls are refused on both flows and on the socket.
    let mut refused = false;
    for _ in 0..20 {
        if status(http.get(format!("{}/healthz", server.http_url()))).await == 503 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "health did not turn 503 after SIGTERM");
    assert_eq!(
        status(
            http.post(format!("{}/", server.http_url()))
                .form(&[("CallSid", "CA9")])
        )
        .await,
        503
    );
    assert_eq!(
        status(
            http.post(format!("{}/call", server.http_url()))
                .form(&[("CallSid", "CA9")])
        )
        .await,
        503
    );
    let socket = tokio_tungstenite::connect_async(&media).await;
    assert!(socket.is_err_and(|e| e.to_string().contains("503")));

    // The call in progress is served to its end.
    let log = call.await.expect("replay");
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
    assert_eq!(llm.requests().len(), 1);
    // Then the process exits cleanly.
    assert_eq!(server.exit_code(Duration::from_secs(5)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_drain_timeout_is_ended_and_the_process_exits() {
    let (stt, tts, llm) = fakes().await;
    let mut server = start_server((&stt, &tts, &llm), 1).await;
    let media = format!("ws://127.0.0.1:{}/media", server.port);
    let call = tokio::spawn(async move {
        support::replay(&media, &support::fixture::load("three_turns")).await
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let signalled = tokio::time::Instant::now();
    server.terminate();

    let log = call.await.expect("replay");
    let closed = log.server_closed_at.expect("the server ended the call");
    let after = closed.duration_since(signalled);
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "ended {after:?} after SIGTERM"
    );
    assert!(log.stop_sent_at.is_none(), "the caller had not hung up");
    assert_eq!(server.exit_code(Duration::from_secs(5)).await, Some(0));
}
