//! `ivr-bridge loadtest` runs a few calls against a child server and reports every measure.
//! No timing is asserted: the numbers belong in BENCHMARKS.md, not in a pass/fail test.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_load_test_reports_every_measure() {
    let output = Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "loadtest",
            "--calls",
            "3",
            "--ramp-s",
            "0.5",
            "--barge-in-share",
            "0.34",
            "--llm-total-ms",
            "600",
            "--json",
        ])
        .env_remove("DEEPGRAM_API_KEY")
        .env_remove("MISTRAL_API_KEY")
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");

    assert_eq!(report["calls"], 3, "{report:#}");
    assert_eq!(report["barge_in_calls"], 1);
    assert_eq!(report["completed"], 3, "{report:#}");
    assert_eq!(report["failed"], 0);
    // one_question has one turn, barge_in two.
    assert_eq!(report["turns_expected"], 4);
    assert_eq!(report["turns_answered"], 4, "{report:#}");
    assert_eq!(report["frames_lost"], 0);
    assert_eq!(report["probe_dropped"], 0);

    // Every caller frame was seen at the STT stand-in: both recordings are ~500–700 frames.
    let frames = report["forwarding_ms"]["count"].as_u64().unwrap();
    assert!(frames > 1500, "forwarded frames: {frames}");
    for measure in [
        "turn_latency_ms",
        "first_reply_audio_ms",
        "bridge_share_ms",
        "stt_to_llm_ms",
        "llm_to_tts_ms",
        "tts_to_caller_ms",
    ] {
        assert_eq!(report[measure]["count"], 4, "{measure}: {report:#}");
    }
    assert!(report["barge_in_ms"]["count"].as_u64().unwrap() >= 1);
    for measure in [
        "forwarding_ms",
        "turn_latency_ms",
        "bridge_share_ms",
        "barge_in_ms",
    ] {
        let s = &report[measure];
        let (p50, p99, max) = (s["p50"].as_f64(), s["p99"].as_f64(), s["max"].as_f64());
        let (p50, p99, max) = (p50.unwrap(), p99.unwrap(), max.unwrap());
        assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{measure}: {s}");
    }
    // A turn includes the silence timer (1000 ms): the share is far below the whole turn.
    let turn = report["turn_latency_ms"]["p50"].as_f64().unwrap();
    assert!(turn > 1000.0, "turn latency {turn}");

    let cpu = report["server_cpu_s_per_call_minute"].as_f64().unwrap();
    assert!(cpu > 0.0, "server CPU per call-minute: {cpu}");
    assert!(report["server_rss_peak_kib"].as_u64().unwrap() > 0);
    assert_eq!(report["idle_calls"], 3);
    assert_eq!(report["idle_greeted"], 3);
    assert!(report["rss_per_idle_call_kib"].is_number());
    assert!(report["rss_per_call_kib"].is_number());
}
