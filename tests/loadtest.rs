//! `ivr-bridge loadtest` runs a few calls against a child server and reports every measure.
//! No timing is asserted: the numbers belong in BENCHMARKS.md, not in a pass/fail test.

use std::process::{Command, Output};

use serde_json::Value;

/// Runs `ivr-bridge loadtest ARGS --json` from the repository's root (the fixtures' paths).
fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("loadtest")
        .args(args)
        .arg("--json")
        .env_remove("DEEPGRAM_API_KEY")
        .env_remove("MISTRAL_API_KEY")
        .output()
        .expect("run loadtest")
}

/// The JSON report of a run that must succeed.
fn report_of(output: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

/// Cores this test process may use, from the kernel's own list (`0-1`, `0,2`).
fn cores_here() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned();
    list.split(',')
        .map(|item| match item.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// One short call: the shortest recording, nobody barging in.
const ONE_SHORT_CALL: [&str; 8] = [
    "--fixture",
    "fixtures/calls/visiting_hours.jsonl",
    "--barge-in-share",
    "0",
    "--llm-total-ms",
    "600",
    "--ramp-s",
    "0.2",
];

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

#[test]
fn the_generator_and_the_server_run_on_the_cores_they_were_given() {
    if cores_here() < 2 {
        eprintln!("SKIPPED: pinning the generator and the server apart needs 2 cores; this machine lets the test use 1");
        return;
    }
    let mut args = ONE_SHORT_CALL.to_vec();
    args.extend([
        "--calls",
        "1",
        "--no-idle",
        "--generator-cpus",
        "0",
        "--server-cpus",
        "1",
        "--busy-poll",
    ]);
    let report = report_of(&loadtest(&args));
    // Read back from /proc/<pid>/status of each process by the generator itself.
    assert_eq!(report["generator_cpus"], "0", "{report:#}");
    assert_eq!(report["server_cpus"], "1", "{report:#}");
    assert_eq!(report["server_cores"], 1);
    assert_eq!(report["calls_per_server_core"], 1.0);
    assert_eq!(report["completed"], 1, "{report:#}");
    assert!(report["generator_late"].is_boolean());
    assert!(report["loadgen_cpu_share"].is_number());
    assert_eq!(report["generator_busy_poll"], true);
    // Polling, the generator used its core all the time the calls ran.
    assert!(
        report["loadgen_cpu_share"].as_f64().unwrap() > 0.5,
        "{report:#}"
    );
}

#[test]
fn bad_core_lists_are_one_line_errors() {
    for (args, needle) in [
        (vec!["--server-cpus", "3-1"], "backwards"),
        (vec!["--generator-cpus", "x"], "not a CPU number"),
        (vec!["--generator-cpus", ""], "empty CPU list"),
        (vec!["--server-cpus", "1023"], "not available here"),
        (vec!["--busy-poll"], "--generator-cpus with one core"),
        (
            vec!["--url", "ws://127.0.0.1:9/media", "--server-cpus", "0"],
            "--server-pid",
        ),
    ] {
        let output = loadtest(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one line, got: {stderr}");
        assert!(
            lines[0].contains(needle),
            "{args:?}: {needle} not in {stderr}"
        );
    }
}

#[test]
fn a_short_soak_reports_memory_and_open_files_before_during_and_after() {
    let mut args = ONE_SHORT_CALL.to_vec();
    args.extend(["--soak", "4", "--calls", "2"]);
    let report = report_of(&loadtest(&args));
    assert_eq!(report["calls"], 4, "{report:#}");
    assert_eq!(report["completed"], 4, "{report:#}");
    assert_eq!(report["turns_answered"], report["turns_expected"]);
    // No idle phase in a soak: the warm-up call is the baseline.
    assert!(report["idle_calls"].is_null());
    let soak = &report["soak"];
    assert_eq!(soak["total"], 4, "{soak:#}");
    assert_eq!(soak["at_a_time"], 2);
    assert_eq!(soak["after_each_batch"].as_array().map(Vec::len), Some(2));
    for reading in ["before", "peak", "after"] {
        let rss = soak[reading]["rss_kib"].as_u64().expect("rss");
        let fds = soak[reading]["fds"].as_u64().expect("fds");
        assert!(rss > 0 && fds > 0, "{reading}: {soak:#}");
    }
    // While two calls were connected the server held more sockets than before or after.
    let (before, peak) = (soak["before"]["fds"].as_u64(), soak["peak"]["fds"].as_u64());
    assert!(peak > before, "{soak:#}");
    let growth = soak["rss_growth_kib"].as_i64().expect("growth");
    assert_eq!(soak["rss_returned"], growth <= 4096, "{soak:#}");
    assert!(soak["fds_returned"].is_boolean());
    assert!(soak["fds_flat"].is_boolean());
    assert_eq!(soak["settle_s"], 2.0);
}
