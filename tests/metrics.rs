//! `/metrics` parses as Prometheus text and its counters move during a call.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use support::{eventually, TestEnv};

/// Parses the text exposition: every sample line is `name{labels} value`; returns the samples.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(env: &TestEnv) -> HashMap<String, f64> {
    let response = reqwest::get(format!("{}/metrics", env.http_url()))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.contains("text"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"));
    parse(&text)
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_latencies_move_during_a_call() {
    let (env, failing) = tokio::join!(TestEnv::start(), TestEnv::start());
    // Meanwhile, on another server, a provider failure is counted by provider and kind.
    failing
        .llm
        .fail_next(2, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let failing_call = tokio::spawn({
        let url = failing.media_url();
        async move { support::replay(&url, &support::fixture::load("visiting_hours")).await }
    });
    let before = scrape(&env).await;
    assert_eq!(sample(&before, "ivr_bridge_active_calls"), 0.0);
    assert_eq!(sample(&before, "ivr_bridge_turns_total"), 0.0);

    let url = env.media_url();
    let call =
        tokio::spawn(
            async move { support::replay(&url, &support::fixture::load("barge_in")).await },
        );
    assert!(eventually(Duration::from_secs(2), || env.state.live_calls() == 1).await);
    let during = scrape(&env).await;
    assert_eq!(sample(&during, "ivr_bridge_active_calls"), 1.0);
    call.await.expect("replay");
    assert!(eventually(Duration::from_secs(2), || env.state.live_calls() == 0).await);

    let after = scrape(&env).await;
    assert_eq!(sample(&after, "ivr_bridge_active_calls"), 0.0);
    assert_eq!(sample(&after, "ivr_bridge_turns_total"), 2.0);
    assert_eq!(sample(&after, "ivr_bridge_barge_ins_total"), 1.0);
    assert_eq!(
        sample(&after, "ivr_bridge_calls_total{outcome=\"caller_hung_up\"}"),
        1.0
    );
    for histogram in [
        "ivr_bridge_stt_final_latency_seconds",
        "ivr_bridge_llm_first_token_seconds",
        "ivr_bridge_llm_total_seconds",
        "ivr_bridge_tts_first_byte_seconds",
        "ivr_bridge_turn_latency_seconds",
    ] {
        let count = sample(&after, &format!("{histogram}_count"));
        assert!(count >= 1.0, "{histogram} recorded nothing");
    }
    // The fakes answer in tens of milliseconds; the whole turn (speech end → first audio) must
    // be well under a second plus the silence timeout.
    let turns = sample(&after, "ivr_bridge_turn_latency_seconds_count");
    let mean = sample(&after, "ivr_bridge_turn_latency_seconds_sum") / turns;
    assert!(mean > 0.6 && mean < 2.0, "mean turn latency {mean} s");

    failing_call.await.expect("replay");
    let failed = scrape(&failing).await;
    assert_eq!(
        sample(
            &failed,
            "ivr_bridge_provider_errors_total{provider=\"mistral\",kind=\"http_503\"}"
        ),
        1.0
    );
}
