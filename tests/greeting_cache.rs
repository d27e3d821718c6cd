//! The greeting is synthesized once per process: every later call plays the cached audio.

use crate::support;

use support::expect::{requested, GREETING};
use support::tones;
use support::{framed, TestEnv};
use support::{replay_with, PlayOptions};

/// Long enough for the greeting's audio to be synthesized and sent, short of the question.
const HANG_UP_AT_MS: u64 = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_in_a_row_synthesize_the_greeting_once() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("one_question");
    let options = PlayOptions {
        hang_up_at_ms: Some(HANG_UP_AT_MS),
        ..PlayOptions::default()
    };
    let first = replay_with(&env.media_url(), &fixture, options.clone()).await;
    let second = replay_with(&env.media_url(), &fixture, options).await;

    let greetings = requested(&env.tts)
        .iter()
        .filter(|text| text.as_str() == GREETING)
        .count();
    assert_eq!(greetings, 1, "TTS texts: {:?}", env.tts.texts());
    assert_eq!(env.stt.connections().len(), 2, "two calls were served");

    // Both callers heard the same greeting audio, the second from the cache.
    let greeting = framed(&tones(GREETING));
    for (call, log) in [("first", &first), ("second", &second)] {
        assert!(log.violations.is_empty(), "{call}: {:?}", log.violations);
        assert_eq!(log.media_bytes(), greeting, "{call} call's greeting audio");
    }
}
