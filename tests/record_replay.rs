//! `RECORD_DIR` saves a call as a fixture, and `ivr-bridge replay` of that recording reproduces
//! its conversation (exit 0), or says where it differs (exit 1).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use ivr_sim::fixture::CallFixture;
use ivr_sim::standin::{Delays, StandIns};
use support::eventually;
use support::{replay_with, PlayOptions};

/// The server on stand-ins that recognise `one_question`, recording into `dir`.
async fn recording_server(dir: &Path) -> (String, StandIns) {
    let mut config = ivr_bridge::Config::builder()
        .set("DEEPGRAM_API_KEY", "x")
        .set("MISTRAL_API_KEY", "x")
        .build()
        .expect("config");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixture = CallFixture::load(&root.join("fixtures/calls/one_question.jsonl")).unwrap();
    let stand_ins = StandIns::start(fixture.bank(), Delays::default())
        .await
        .unwrap();
    stand_ins.configure(&mut config);
    config.turns.silence_timeout = Duration::from_millis(600);
    config.assistant.greeting = "Hello.".into();
    ivr_bridge::record::check_dir(dir).expect("a writable RECORD_DIR");
    config.record.record_dir = Some(dir.to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media", listener.local_addr().unwrap());
    let state = Arc::new(ivr_bridge::AppState::new(config).unwrap());
    tokio::spawn(ivr_bridge::server::serve_state(
        listener,
        state,
        std::future::pending(),
    ));
    (url, stand_ins)
}

fn recorded_file(dir: &Path, ext: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == ext))
}

fn replay(file: &Path, url: Option<&str>) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .env_clear()
        .arg("replay")
        .arg(file)
        .args(url.map(|u| ["--url", u]).into_iter().flatten())
        .current_dir(file.parent().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_replays_the_same_and_a_changed_one_differs() {
    support::init_tracing();
    let dir = std::env::temp_dir().join(format!("ivr-bridge-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (url, _stand_ins) = recording_server(&dir).await;
    let options = PlayOptions {
        hang_up_at_ms: Some(8000),
        ..PlayOptions::default()
    };
    replay_with(&url, &support::fixture::load("one_question"), options).await;
    assert!(
        eventually(Duration::from_secs(5), || recorded_file(&dir, "jsonl")
            .is_some())
        .await,
        "no recording in {}",
        dir.display()
    );

    // The recording is a fixture: it loads, both directions are there, the sidecar says what was
    // heard and answered, and the WAV has the caller left and the assistant right.
    let jsonl = recorded_file(&dir, "jsonl").unwrap();
    let name = jsonl.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("CA72e2b1e82757e02fc7fe2f100a3b4585_"),
        "{name}"
    );
    let fixture = CallFixture::load(&jsonl).expect("the recording loads as a fixture");
    let media = fixture.inbound.iter().filter(|s| s.audio.is_some()).count();
    assert_eq!(media, 401, "every frame sent up to the hang-up at 8 s");
    assert!(
        fixture.inbound.iter().any(|s| s.msg["event"] == "mark"),
        "echoed marks"
    );
    assert!(fixture.outbound.iter().any(|(_, m)| m["event"] == "mark"));
    let s = &fixture.sidecar;
    assert_eq!(s.stream_sid, "MZ1a713b52c7f6172e85f84b505940444e");
    let turns: Vec<&str> = s.turns.iter().flatten().map(|t| t.text.as_str()).collect();
    assert_eq!(turns, ["What are the hospital's opening hours?"]);
    assert_eq!(s.utterances.len(), 1);
    assert_eq!(s.utterances[0].text, turns[0]);
    let replies = s.replies.clone().unwrap();
    assert_eq!(replies.len(), 2, "greeting and answer: {replies:?}");
    assert_eq!(s.end_reason.as_deref(), Some("caller_hung_up"));
    let wav = std::fs::read(jsonl.with_extension("wav")).unwrap();
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "two channels");
    assert!(wav.len() > 44 + 7 * 8000 * 4, "about 8 s of audio");
    assert!(!dir
        .read_dir()
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".part") }));

    // The same recording with a different answer written into its sidecar.
    let changed = dir.join("changed.jsonl");
    std::fs::copy(&jsonl, &changed).unwrap();
    let mut sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(jsonl.with_extension("json")).unwrap()).unwrap();
    sidecar["replies"][1]["phrases"] = serde_json::json!(["We are closed on Mondays."]);
    std::fs::write(changed.with_extension("json"), sidecar.to_string()).unwrap();
    // And one whose model ended the call, which this one's does not.
    let tooled = dir.join("tooled.jsonl");
    std::fs::copy(&jsonl, &tooled).unwrap();
    let mut sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(jsonl.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["tool_calls"], serde_json::json!([]), "{sidecar}");
    sidecar["tool_calls"] = serde_json::json!([{"at_ms": 7000, "reply": 2, "name": "end_call",
        "arguments": "{}", "result": "{\"ok\": true}"}]);
    std::fs::write(tooled.with_extension("json"), sidecar.to_string()).unwrap();

    // Both at once, and the recording against the recording server itself, where only the wire
    // can be compared.
    let runs = [
        replay(&jsonl, None),
        replay(&changed, None),
        replay(&jsonl, Some(&url)),
        replay(&tooled, None),
    ];
    let [same, differs, wire, tools_differ] = runs.map(|child| child.wait_with_output().unwrap());
    assert_eq!(
        tools_differ.status.code(),
        Some(1),
        "{}",
        text(&tools_differ)
    );
    assert!(
        text(&tools_differ).contains("tool call 1"),
        "{}",
        text(&tools_differ)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(same.status.success(), "{}\n{same:?}", text(&same));
    assert!(
        text(&same).contains("result: the replay matches the recording"),
        "{}",
        text(&same)
    );
    assert!(text(&same).contains("caller turn 1"), "{}", text(&same));
    assert_eq!(
        differs.status.code(),
        Some(1),
        "{}\n{differs:?}",
        text(&differs)
    );
    assert!(
        text(&differs).contains("reply 2                  DIFFERENT"),
        "{}",
        text(&differs)
    );
    assert!(wire.status.success(), "{}\n{wire:?}", text(&wire));
    assert!(
        text(&wire).contains("reply on the wire 2"),
        "{}",
        text(&wire)
    );
}
