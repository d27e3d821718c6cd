//! Providers fail mid-call: the caller is never left in silence and no speech is lost.

mod support;

use std::time::Duration;

use ivr_bridge::tts::text::speakable;
use support::expect::call_audio;
use support::faq::HOURS;
use support::fixture::{pcm16le, FRAME_BYTES};
use support::{Fixture, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recogniser_dropped_mid_call_is_reconnected_without_losing_the_question() {
    let env = TestEnv::start().await;
    let fixture = Fixture::load("one_question");
    let url = env.media_url();
    let call = tokio::spawn({
        let fixture = Fixture::load("one_question");
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
        Some(fixture.meta.utterances[0].text.as_str())
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
    assert!(heard.ends_with(&support::framed(&support::fake_tts::audio_for(&apology))));
    let closed = log.server_closed_at.expect("the server ended the call");
    assert!(
        closed < log.stop_sent_at.unwrap_or(log.finished),
        "ended before the caller hung up"
    );
    assert!(env.llm.requests().is_empty());
}
