//! Providers fail mid-call: the caller is never left in silence and no speech is lost.

use crate::support;

use std::time::Duration;

use ivr_bridge::tts::text::speakable;
use ivr_sim::standin::faq::HOURS;
use support::expect::call_audio;
use support::fixture::{pcm16le, FRAME_BYTES};
use support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recogniser_dropped_mid_call_is_reconnected_without_losing_the_question() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("one_question");
    let url = env.media_url();
    let call = tokio::spawn({
        let fixture = support::fixture::load("one_question");
        async move { support::replay(&url, &fixture).await }
    });
    // Deepgram drops the socket a second into the call, before the caller asks.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    env.stt.disconnect_all();
    let log = call.await.expect("replay");

    let connections = env.stt.connections();
    assert_eq!(connections.len(), 2, "one reconnection");
    // All caller audio reached Deepgram across both sockets (at most the frame in flight at
    // the moment of the drop is gone).
    let received: Vec<u8> = connections
        .iter()
        .flat_map(|c| c.audio.iter().copied())
        .collect();
    let sent = pcm16le(&fixture.inbound_mulaw());
    assert!(
        received.len() + 2 * 2 * FRAME_BYTES >= sent.len(),
        "{} of {}",
        received.len(),
        sent.len()
    );
    assert!(sent.starts_with(&connections[0].audio));

    // The question was still heard and answered in full.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].messages.last().map(|(_, c)| c.as_str()),
        Some(fixture.sidecar.utterances[0].text.as_str())
    );
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_recogniser_gets_an_apology_and_a_clean_end() {
    let env = TestEnv::start().await;
    env.stt.set_refuse_all(true);
    let log = env.replay("one_question").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // Every attempt was refused; then the caller heard the apology and the server hung up
    // before the caller did.
    assert!(env.stt.refusals().len() >= 2, "retried before giving up");
    assert!(env.stt.connections().is_empty());
    let apology = speakable(ivr_bridge::call::STT_APOLOGY);
    assert!(env.tts.texts().contains(&apology), "{:?}", env.tts.texts());
    let heard = log.heard();
    assert!(heard.ends_with(&support::framed(&support::tones(&apology))));
    let closed = log.server_closed_at.expect("the server ended the call");
    assert!(
        closed < log.stop_sent_at.unwrap_or(log.finished),
        "ended before the caller hung up"
    );
    assert!(env.llm.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_model_is_retried_once_and_the_caller_never_notices() {
    let env = TestEnv::start().await;
    env.llm.fail_next(1, reqwest::StatusCode::TOO_MANY_REQUESTS);
    let log = env.replay("one_question").await;
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2, "one 429, one retry");
    assert_eq!(requests[0].status, 429);
    assert_eq!(requests[0].messages, requests[1].messages);
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_gets_the_fallback_phrase_and_no_orphaned_turn() {
    let env = TestEnv::start().await;
    // The first question fails twice (request and retry); the second works.
    env.llm
        .fail_next(2, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let fixture = support::fixture::load("barge_in");
    let said = fixture.said();
    let log = env.replay("barge_in").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    let fallback = speakable(ivr_bridge::config::DEFAULT_FALLBACK_PHRASE);
    let fallback_audio = support::framed(&support::tones(&fallback));
    let heard = log.heard();
    assert!(
        heard
            .windows(fallback_audio.len())
            .any(|w| w == fallback_audio.as_slice()),
        "the caller heard the fallback phrase"
    );
    // The call kept listening: the next question was asked with a history free of the failed
    // turn (no user message without its answer).
    let requests = env.llm.requests();
    let summary: Vec<_> = requests
        .iter()
        .map(|r| (r.status, r.messages.last().cloned()))
        .collect();
    assert_eq!(requests.len(), 3, "{summary:?}");
    let second = support::expect::dialogue(&requests[2].messages);
    assert_eq!(second, vec![("user", said[1])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_hangs_is_cut_at_the_budget() {
    let env =
        TestEnv::start_with(|config| config.llm.llm_timeout = Duration::from_millis(1_000)).await;
    env.llm.hang_next(1);
    let log = env.replay("one_question").await;
    let fallback = speakable(ivr_bridge::config::DEFAULT_FALLBACK_PHRASE);
    let texts = support::expect::requested(&env.tts);
    let requests = env.llm.requests();
    assert_eq!(
        requests.len(),
        1,
        "a timeout is not retried: the budget is spent"
    );
    // The fallback was spoken (from the cache or synthesized), within ~1 s of the turn's end.
    let fallback_audio = support::framed(&support::tones(&fallback));
    assert!(log.media_bytes().ends_with(&fallback_audio), "{texts:?}");
    let asked = requests[0].at;
    let first_fallback_frame = log
        .media
        .iter()
        .rev()
        .nth(fallback_audio.len() / 160 - 1)
        .expect("fallback frames");
    let waited = first_fallback_frame.at.duration_since(asked);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2_000),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_voice_is_retried_once() {
    let env = TestEnv::start().await;
    let log = {
        // Let the greeting through, then fail the next synthesis once.
        let url = env.media_url();
        let call = tokio::spawn(async move {
            support::replay(&url, &support::fixture::load("one_question")).await
        });
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        env.tts.fail_next(1);
        call.await.expect("replay")
    };
    assert_eq!(
        log.media_bytes(),
        call_audio(&[HOURS]),
        "the retry produced the same audio"
    );
    assert!(env.tts.requests().iter().any(|r| r.status == 500));
}
