//! A caller who goes silent: prompted after `IDLE_TIMEOUT_S`, told goodbye after `IDLE_PROMPTS`
//! unanswered prompts, and the call ends once the goodbye was heard.

use crate::support;

use std::time::Duration;

use ivr_bridge::config::{DEFAULT_IDLE_GOODBYE, DEFAULT_IDLE_PROMPT};
use support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_is_prompted_twice_then_told_goodbye_and_the_call_ends() {
    let env = TestEnv::start_with(|config| config.idle.idle_timeout = Duration::from_secs(1)).await;
    let fixture = support::fixture::load("silent_caller");
    let log = env.replay("silent_caller").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The question was answered; then nothing but line noise.
    assert_eq!(env.llm.requests().len(), 1);
    let texts = support::expect::requested(&env.tts);
    let prompts = texts.iter().filter(|t| *t == DEFAULT_IDLE_PROMPT).count();
    assert!(
        (1..=2).contains(&prompts),
        "the prompt is synthesized once, then served from the cache: {texts:?}"
    );
    assert!(texts.iter().any(|t| t == DEFAULT_IDLE_GOODBYE), "{texts:?}");

    // The server ended the call well before the recording did, after the goodbye's mark came
    // back: the caller heard it to the end.
    let closed = log.server_closed_at.expect("the server ended the call");
    let end = log.started + Duration::from_millis(fixture.sidecar.duration_ms);
    assert!(closed < end, "the call outlived the recording");
    let last_mark = log.marks.last().expect("marks");
    assert!(!last_mark.discarded, "{last_mark:?}");
    assert!(last_mark.echoed_at.is_some_and(|at| at <= closed));
    assert!(log.clears.is_empty(), "nothing interrupted anything");

    let metrics = reqwest::get(format!("{}/metrics", env.http_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains("ivr_bridge_idle_prompts_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ivr_bridge_calls_total{outcome=\"idle\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_idle_timeout_off_a_silent_caller_is_left_alone() {
    // 0 turns the checks off (it does not mean "at once": that would prompt in the 6 s of
    // silence this recording ends with).
    let env = TestEnv::start_with(|config| config.idle.idle_timeout = Duration::ZERO).await;
    let log = env.replay("one_question").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    let texts = support::expect::requested(&env.tts);
    assert!(!texts.iter().any(|t| t == DEFAULT_IDLE_PROMPT), "{texts:?}");
}
