//! Transcription-only mode: a call's final segments reach a local webhook receiver with the
//! right fields, in order, retried through a failing receiver; no model or voice is asked for
//! anything; the binary starts without a Mistral key and refuses a bad MODE in one line.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use support::{eventually, spawn_http, Fixture, TestEnv};
use support::{replay_with, Inject, PlayOptions};

/// A transcript webhook receiver on 127.0.0.1 that records every POST and answers the first
/// `fail_first` of them with 500.
#[derive(Clone, Default)]
struct Receiver {
    /// Every request body and the status it was answered with, in arrival order.
    attempts: Arc<Mutex<Vec<(Value, u16)>>>,
    fail_first: usize,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Self, String) {
        let receiver = Self {
            fail_first,
            ..Self::default()
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let addr = spawn_http(app).await;
        (receiver, format!("http://{addr}/hook"))
    }

    /// The bodies answered with 200, in arrival order.
    fn delivered(&self) -> Vec<Value> {
        let attempts = self.attempts.lock().unwrap();
        attempts
            .iter()
            .filter(|(_, status)| *status == 200)
            .map(|(body, _)| body.clone())
            .collect()
    }

    fn call_ended(&self) -> bool {
        self.delivered().iter().any(|m| m["type"] == "call_ended")
    }
}

async fn receive(State(receiver): State<Receiver>, body: String) -> StatusCode {
    let body: Value = serde_json::from_str(&body).expect("the webhook body is JSON");
    let mut attempts = receiver.attempts.lock().unwrap();
    let status = if attempts.len() < receiver.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    attempts.push((body, status.as_u16()));
    status
}

async fn transcribing_env(webhook: &str) -> TestEnv {
    let url = reqwest::Url::parse(webhook).unwrap();
    TestEnv::start_with(|config| {
        config.server.mode = ivr_bridge::config::Mode::Transcribe;
        config.transcribe.transcript_webhook_url = Some(url);
    })
    .await
}

/// `visiting_hours`' audio as the outbound track of `call`'s stream, starting `shift_ms` later
/// (as a `<Start><Stream track="both_tracks">` stream interleaves it), cut before `call` stops.
fn outbound_track(call: &Fixture, other: &Fixture, shift_ms: u64) -> Vec<(u64, Inject)> {
    let stop_ms = call.sidecar.duration_ms;
    other
        .inbound
        .iter()
        .filter(|l| l.msg["event"] == "media")
        .map(|l| (l.at_ms + shift_ms, l.msg.clone()))
        .filter(|(at, _)| *at < stop_ms)
        .map(|(at, mut msg)| {
            msg["streamSid"] = call.stream_sid().into();
            msg["media"]["track"] = "outbound".into();
            msg["media"]["timestamp"] = at.to_string().into();
            (at, Inject::Message(msg))
        })
        .collect()
}

fn segments<'a>(messages: &'a [Value], track: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "segment" && m["track"] == track)
        .collect()
}

fn text_of(segments: &[&Value]) -> String {
    let words: Vec<&str> = segments.iter().filter_map(|s| s["text"].as_str()).collect();
    words.join(" ")
}

fn seconds(value: &Value) -> f64 {
    value.as_f64().expect("a number of seconds")
}

async fn metric(env: &TestEnv, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", env.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tracks_are_transcribed_separately_and_delivered_with_their_fields() {
    let (receiver, hook) = Receiver::start(0).await;
    let env = transcribing_env(&hook).await;
    let call = support::fixture::load("one_question");
    let other = support::fixture::load("visiting_hours");
    let options = PlayOptions {
        inject: outbound_track(&call, &other, 1000),
        ..PlayOptions::default()
    };
    let log = replay_with(&env.media_url(), &call, options).await;
    assert!(
        log.media.is_empty(),
        "transcription never talks on the line"
    );
    assert!(
        eventually(Duration::from_secs(10), || receiver.call_ended()).await,
        "no call_ended message; got {:?}",
        receiver.delivered()
    );

    let messages = receiver.delivered();
    let sequences: Vec<u64> = messages
        .iter()
        .map(|m| m["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=messages.len() as u64).collect::<Vec<_>>());
    for message in &messages {
        assert_eq!(message["call_sid"], call.sidecar.call_sid.as_str());
        assert_eq!(message["stream_sid"], call.stream_sid());
    }
    let caller = segments(&messages, "inbound");
    let other_party = segments(&messages, "outbound");
    assert_eq!(text_of(&caller), call.said().join(" "));
    assert_eq!(text_of(&other_party), other.said().join(" "));
    assert_eq!(caller.len() + other_party.len() + 1, messages.len());
    // Times are in the stream: the caller speaks 2.0–4.06 s in; the other party's audio starts
    // 1 s into the stream, so its words (2.0–3.38 s into its own audio) sit 3.0–4.38 s in.
    for (said, expect_start, expect_end) in [(&caller, 2.0, 4.06), (&other_party, 3.0, 4.38)] {
        let start = seconds(&said[0]["start"]);
        let end = seconds(&said[said.len() - 1]["end"]);
        assert!(
            (start - expect_start).abs() < 0.25,
            "start {start} vs {expect_start}"
        );
        assert!((end - expect_end).abs() < 0.25, "end {end} vs {expect_end}");
        for segment in said {
            assert!(
                seconds(&segment["start"]) < seconds(&segment["end"]),
                "{segment}"
            );
            let confidence = seconds(&segment["confidence"]);
            assert!((0.9..=1.0).contains(&confidence), "{segment}");
        }
    }
    let ended = &messages[messages.len() - 1];
    assert_eq!(ended["type"], "call_ended");
    assert_eq!(ended["segments"], messages.len() as u64 - 1);
    assert_eq!(ended["reason"], "caller_hung_up");
    assert_eq!(ended["complete"], true);

    // Two recognisers, one per track; no model, no voice.
    assert_eq!(env.stt.connections().len(), 2);
    assert!(env.llm.requests().is_empty(), "the model was asked");
    assert!(env.tts.requests().is_empty(), "the voice was asked");
    let delivered = r#"ivr_bridge_transcript_webhooks_total{outcome="delivered"}"#;
    assert_eq!(metric(&env, delivered).await, messages.len() as f64);

    // The voice webhook streams the call; the Gather flow is not served.
    let http = reqwest::Client::new();
    let twiml = http.post(env.http_url()).send().await.unwrap();
    let twiml = twiml.text().await.unwrap();
    assert!(twiml.contains("<Connect><Stream url=\"ws://"), "{twiml}");
    // No `<Connect action>`: nothing records a next step here, and the `<Hangup/>` after
    // `<Connect>` ends the call as soon as the stream does.
    let verbs = support::gather_phone::verbs(&twiml);
    let names: Vec<&str> = verbs.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["Connect", "Hangup"], "{twiml}");
    assert!(!verbs[0].attrs.contains_key("action"), "{twiml}");
    let gather = http.post(format!("{}/call", env.http_url())).send().await;
    assert_eq!(gather.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_and_gets_every_message_in_order() {
    let (receiver, hook) = Receiver::start(2).await;
    let env = transcribing_env(&hook).await;
    let call = support::fixture::load("visiting_hours");
    env.replay("visiting_hours").await;
    assert!(
        eventually(Duration::from_secs(10), || receiver.call_ended()).await,
        "no call_ended message; got {:?}",
        receiver.attempts.lock().unwrap()
    );

    let attempts = receiver.attempts.lock().unwrap().clone();
    assert_eq!(attempts[0].1, 500);
    assert_eq!(attempts[1].1, 500);
    assert_eq!(
        attempts[0].0, attempts[2].0,
        "the first message was sent again"
    );
    let messages = receiver.delivered();
    let sequences: Vec<u64> = messages
        .iter()
        .map(|m| m["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=messages.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        text_of(&segments(&messages, "inbound")),
        call.said().join(" ")
    );
    assert_eq!(attempts.len(), messages.len() + 2);

    let series =
        |outcome: &str| format!("ivr_bridge_transcript_webhooks_total{{outcome=\"{outcome}\"}}");
    assert_eq!(
        metric(&env, &series("delivered")).await,
        messages.len() as f64
    );
    assert_eq!(metric(&env, &series("failed")).await, 0.0);
    assert!(env.llm.requests().is_empty() && env.tts.requests().is_empty());
}

/// `ivr-bridge` with only `vars` in its environment, in an empty directory (no `.env`).
fn binary(vars: &[(&str, &str)], args: &[&str], dir_name: &str) -> (Command, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ivr-bridge-{dir_name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ivr-bridge"));
    command
        .env_clear()
        .envs(vars.iter().copied())
        .args(args)
        .current_dir(&dir);
    (command, dir)
}

#[test]
fn serve_transcribe_starts_without_a_mistral_key() {
    let vars = [("DEEPGRAM_API_KEY", "dg-key"), ("PORT", "0")];
    let (mut command, dir) = binary(&vars, &["serve", "--transcribe"], "transcribe-start");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let started = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("transcription mode") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        started && exited.is_none(),
        "did not start: {seen:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_bad_mode_or_webhook_url_is_one_line_naming_it() {
    let keys = [
        ("DEEPGRAM_API_KEY", "dg-very-secret"),
        ("MISTRAL_API_KEY", "mi-very-secret"),
    ];
    for (var, value, extra) in [
        ("MODE", "bogus", None),
        (
            "TRANSCRIPT_WEBHOOK_URL",
            "ftp://example.com/hook",
            Some(("MODE", "transcribe")),
        ),
    ] {
        let mut vars = keys.to_vec();
        vars.push((var, value));
        vars.extend(extra);
        let (mut command, dir) = binary(&vars, &[], &format!("bad-{var}"));
        let output = command.output().expect("the binary runs");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
        assert!(
            lines[0].contains(var) && !lines[0].contains("very-secret"),
            "{}",
            lines[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_speech_recognition_the_call_goes_on_and_is_reported_incomplete() {
    let (receiver, hook) = Receiver::start(0).await;
    let env = transcribing_env(&hook).await;
    env.stt.set_refuse_all(true);
    let log = env.replay("one_question").await;
    let stop = log.stop_sent_at.expect("the replay sent stop");
    assert!(
        log.server_closed_at.is_none_or(|closed| closed >= stop),
        "the server ended the stream before Twilio did"
    );
    assert!(
        eventually(Duration::from_secs(10), || receiver.call_ended()).await,
        "no call_ended message"
    );
    let messages = receiver.delivered();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["segments"], 0);
    assert_eq!(messages[0]["complete"], false);
    let lost = r#"ivr_bridge_provider_errors_total{provider="deepgram_stt",kind="unreachable"}"#;
    assert_eq!(metric(&env, lost).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_times_stay_in_the_call_across_a_recogniser_reconnection() {
    let (receiver, hook) = Receiver::start(0).await;
    let env = transcribing_env(&hook).await;
    let call = support::fixture::load("one_question");
    let stt = env.stt.clone();
    // Deepgram drops the socket 1 s in, before the caller speaks (2.0–4.06 s): the new
    // connection's clock restarts at zero, the transcript's must not.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        stt.disconnect_all();
    });
    env.replay("one_question").await;
    assert!(
        eventually(Duration::from_secs(10), || receiver.call_ended()).await,
        "no call_ended message"
    );
    assert_eq!(env.stt.connections().len(), 2, "one reconnection");
    let messages = receiver.delivered();
    let said = segments(&messages, "inbound");
    assert_eq!(text_of(&said), call.said().join(" "));
    let start = seconds(&said[0]["start"]);
    let end = seconds(&said[said.len() - 1]["end"]);
    assert!((start - 2.0).abs() < 0.25, "start {start}");
    assert!((end - 4.06).abs() < 0.25, "end {end}");
}
