//! Preemptive generation through the real server: the answer is asked for on the final
//! transcript, before the silence timer ends the turn, held, and released when it does; the
//! caller hears exactly the answer, once.

use crate::support;

use std::time::Duration;

use ivr_sim::standin::faq::HOURS;
use support::expect::call_audio;
use support::TestEnv;

const TIMER: Duration = Duration::from_millis(2000);

async fn metrics(env: &TestEnv) -> String {
    reqwest::get(format!("{}/metrics", env.http_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_is_asked_for_before_the_turn_ends_and_heard_once() {
    let env = TestEnv::start_with(|config| {
        config.turns.preemptive_generation = true;
        config.turns.silence_timeout = TIMER;
    })
    .await;
    let fixture = support::fixture::load("one_question");
    let question = &fixture.sidecar.utterances[0];
    let log = env.replay("one_question").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The request that was answered came before the silence timer could end the turn.
    let turn_end = log.started + Duration::from_millis(question.end_ms) + TIMER;
    let requests = env.llm.requests();
    let used = requests
        .iter()
        .rfind(|r| r.messages.last().is_some_and(|m| m.1 == question.text))
        .expect("the question was asked");
    assert!(used.at < turn_end, "asked only after the turn ended");

    // The caller heard the greeting and the answer, once, whatever was prepared and dropped.
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
    let metrics = metrics(&env).await;
    assert!(
        metrics.contains("ivr_bridge_preemptive_replies_total{outcome=\"used\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("ivr_bridge_turns_total 1\n"), "{metrics}");
}
