//! Relay mode (issue 14): Twilio ConversationRelay listens and speaks, the server answers over
//! `/relay`. Every call here is made by the ConversationRelay fake (`ivr_sim::relay`): the voice
//! webhook, the signed socket, a scripted caller, and the `<Connect action>` after `end`.

use crate::support;

use std::time::Duration;

use ivr_bridge::config::{Mode, DEFAULT_GREETING};
use ivr_bridge::store::CUT_OFF;
use ivr_bridge::Secret;
use ivr_sim::relay::{CallerStep, Direction, RelayCall, RelayFake, RelayOptions};
use ivr_sim::standin::faq;
use ivr_sim::standin::llm::LlmRequest;
use support::{DialTarget, Instruction, TestEnv};

const TRANSFER_TO: &str = "+15557654321";
pub(crate) const AUTH_TOKEN: &str = "relay-test-token";

/// A relay-mode server on the stand-ins, signing checked; `adjust` changes the rest.
pub(crate) async fn relay_env(adjust: impl FnOnce(&mut ivr_bridge::Config)) -> TestEnv {
    TestEnv::start_with(|config| {
        config.server.mode = Mode::Relay;
        config.twilio.twilio_auth_token = Some(Secret::new(AUTH_TOKEN));
        adjust(config);
    })
    .await
}

/// Twilio for `env`, its voice four times as fast as a person's (the tests wait less; an
/// interruption still hears words in proportion to time). It waits for `end` as long as the
/// server may wait for a farewell, which it times at a person's pace.
pub(crate) fn twilio(env: &TestEnv) -> RelayFake {
    RelayFake {
        twilio: env.twilio(),
        webhook: format!("{}/", env.http_url()),
        options: RelayOptions {
            speaking_rate: 60.0,
            linger: ivr_bridge::relay::session::FAREWELL_LIMIT + Duration::from_secs(2),
            ..RelayOptions::default()
        },
    }
}

pub(crate) fn say(words: &str) -> CallerStep {
    CallerStep::Say(words.to_owned())
}

pub(crate) async fn call(env: &TestEnv, call_sid: &str, script: &[CallerStep]) -> RelayCall {
    let call = twilio(env).call(call_sid, script).await;
    let call = call.unwrap_or_else(|e| panic!("{e}"));
    assert!(call.refused.is_empty(), "{:?}", call.refused);
    call
}

/// The `(role, content)` pairs of a model request, without the system prompt.
pub(crate) fn conversation(request: &LlmRequest) -> Vec<(String, String)> {
    request.messages[1..].to_vec()
}

pub(crate) fn pair(role: &str, content: &str) -> (String, String) {
    (role.to_owned(), content.to_owned())
}

/// The server's `text` messages, parsed, in order.
fn texts(call: &RelayCall) -> Vec<(String, bool)> {
    call.transcript
        .iter()
        .filter(|e| e.direction == Direction::FromServer)
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.text).ok())
        .filter(|v| v["type"] == "text")
        .map(|v| {
            let token = v["token"].as_str().unwrap_or_default().to_owned();
            (token, v["last"].as_bool().unwrap_or_default())
        })
        .collect()
}

pub(crate) async fn metrics(env: &TestEnv) -> String {
    let url = format!("{}/metrics", env.http_url());
    let response = reqwest::get(url).await.expect("scrape");
    response.text().await.expect("metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_conversation_through_conversation_relay() {
    let env = relay_env(|_| {}).await;
    let script = [
        say("What are your opening hours?"),
        say("Are you open on weekends?"),
        CallerStep::HangUp,
    ];
    let call = call(&env, "CArelay0001", &script).await;

    // The TwiML: <Connect action="…/stream_ended"><ConversationRelay …/>, every attribute set.
    let relay = &call.relay;
    let attr = |name: &str| relay.get(name).map(String::as_str);
    assert_eq!(
        attr("url"),
        Some(format!("ws://{}/relay", env.server).as_str())
    );
    assert_eq!(attr("welcomeGreeting"), Some(DEFAULT_GREETING));
    assert_eq!(attr("interruptible"), Some("any"));
    assert_eq!(attr("welcomeGreetingInterruptible"), Some("any"));
    assert_eq!(attr("dtmfDetection"), Some("true"));
    assert_eq!(attr("language"), Some("en-US"));
    assert_eq!(attr("ttsProvider"), Some("ElevenLabs"));
    assert_eq!(attr("transcriptionProvider"), Some("Deepgram"));
    assert_eq!(attr("speechModel"), Some("nova-3-general"));
    let action = call.action.as_deref().expect("a <Connect action>");
    assert!(action.ends_with("/stream_ended"), "{action}");

    // Each answer streamed back as text, `last` only at its end.
    assert_eq!(call.replies, [faq::HOURS, faq::WEEKEND]);
    let texts = texts(&call);
    let lasts: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].1).collect();
    assert_eq!(lasts.len(), 2, "{texts:?}");
    assert_eq!(lasts[1], texts.len() - 1);
    assert!(texts.len() > 4, "tokens, not whole replies: {texts:?}");

    // The second question was asked with the first exchange, and the tools.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].body["tools"].to_string().contains("end_call"));
    assert_eq!(
        conversation(&requests[1]),
        [
            pair("user", "What are your opening hours?"),
            pair("assistant", faq::HOURS),
            pair("user", "Are you open on weekends?"),
        ]
    );
    assert!(requests[0].messages[0].1.contains(DEFAULT_GREETING));

    // The caller hung up: Twilio's <Connect action> hangs up; the session was a call.
    let after = call.after.expect("the <Connect action> was requested");
    assert_eq!(after.instructions, [Instruction::Hangup]);
    assert!(
        support::eventually(Duration::from_secs(5), || env.state.live_calls() == 0).await,
        "the session ended"
    );
    let metrics = metrics(&env).await;
    assert!(metrics.contains("ivr_bridge_turns_total 2\n"), "{metrics}");
    assert!(
        metrics.contains("ivr_bridge_turn_latency_seconds_count 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ivr_bridge_calls_total{outcome=\"socket_closed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interruption_keeps_what_the_caller_heard() {
    let env = relay_env(|_| {}).await;
    let script = [
        say("How do I get to the hospital?"),
        CallerStep::BargeIn {
            after: Duration::from_millis(1500),
            words: "What are your opening hours?".into(),
        },
        CallerStep::HangUp,
    ];
    let call = call(&env, "CArelay0002", &script).await;
    let heard = call.heard.first().expect("the caller interrupted");
    assert!(
        heard.split_whitespace().count() >= 3 && faq::DIRECTIONS.starts_with(heard.as_str()),
        "heard {heard:?}"
    );
    assert!(heard.len() < faq::DIRECTIONS.len());
    assert_eq!(call.replies.last().map(String::as_str), Some(faq::HOURS));

    // The next question carries what Twilio said was heard, cut off, as the assistant's turn.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        conversation(&requests[1]),
        [
            pair("user", "How do I get to the hospital?"),
            pair("assistant", &format!("{heard}{CUT_OFF}")),
            pair("user", "What are your opening hours?"),
        ]
    );
    let metrics = metrics(&env).await;
    assert!(
        metrics.contains("ivr_bridge_barge_ins_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keypad_digits_go_to_the_model_at_the_hash() {
    let env = relay_env(|_| {}).await;
    let script = [CallerStep::Press("4*12#".into()), CallerStep::HangUp];
    let call = call(&env, "CArelay0003", &script).await;
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1);
    let (role, content) = requests[0].messages.last().expect("a message").clone();
    assert_eq!(
        (role.as_str(), content.as_str()),
        ("user", "The caller pressed: 1 2")
    );
    assert_eq!(call.replies.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_ends_the_call_through_stream_ended() {
    let env = relay_env(|_| {}).await;
    let call = call(
        &env,
        "CArelay0004",
        &[say("Thank you, that is all. Goodbye.")],
    )
    .await;
    assert_eq!(call.replies, [faq::GOODBYE]);
    let handoff = call.handoff.as_deref().expect("the server sent end");
    let handoff: serde_json::Value = serde_json::from_str(handoff).expect("handoffData is JSON");
    assert_eq!(handoff["reason"], "ended");
    // `end` came after the farewell's last text.
    let from_server: Vec<&str> = call
        .transcript
        .iter()
        .filter(|e| e.direction == Direction::FromServer)
        .map(|e| e.text.as_str())
        .collect();
    assert!(
        from_server.last().is_some_and(|m| m.contains("\"end\"")),
        "{from_server:?}"
    );
    let after = call.after.expect("the <Connect action> was requested");
    assert!(after.requests[0].0.ends_with("/stream_ended"), "{after:?}");
    assert_eq!(after.instructions, [Instruction::Hangup]);
    assert!(support::eventually(Duration::from_secs(5), || env.state.live_calls() == 0).await);
    let metrics = metrics(&env).await;
    assert!(
        metrics.contains("ivr_bridge_calls_total{outcome=\"assistant_ended\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_dials_through_stream_ended() {
    let env = relay_env(|config| {
        config.tools = ivr_bridge::Config::builder()
            .set("DEEPGRAM_API_KEY", "unused")
            .set("MISTRAL_API_KEY", "unused")
            .set("TRANSFER_TO", TRANSFER_TO)
            .build()
            .expect("tools settings")
            .tools;
    })
    .await;
    let call = call(
        &env,
        "CArelay0005",
        &[say("Can I talk to a person, please?")],
    )
    .await;
    assert_eq!(
        call.replies,
        [ivr_bridge::tools::DEFAULT_TRANSFER_PHRASE],
        "the transfer phrase, as the model said nothing"
    );
    let handoff = call.handoff.as_deref().expect("the server sent end");
    let handoff: serde_json::Value = serde_json::from_str(handoff).expect("handoffData is JSON");
    assert_eq!(handoff["reason"], "transferred");
    let after = call.after.expect("the <Connect action> was requested");
    let Instruction::Dial { target, .. } = &after.instructions[0] else {
        panic!("no dial: {after:?}")
    };
    assert_eq!(target, &DialTarget::Number(TRANSFER_TO.into()));
    assert_eq!(after.instructions.last(), Some(&Instruction::Hangup));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_spoils_nothing_beside_a_good_call() {
    let env = relay_env(|_| {}).await;
    let good = [say("What are your opening hours?"), CallerStep::HangUp];
    let bad = [
        CallerStep::Raw("not json at all".into()),
        CallerStep::Raw(r#"{"type":"prompt"}"#.into()),
        CallerStep::Raw(r#"{"type":"mystery","x":1}"#.into()),
        CallerStep::Raw("{\"type\":\"interrupt\",\"durationUntilInterruptMs\":[1]}".into()),
        say("When can I visit my mother?"),
        CallerStep::HangUp,
    ];
    let (good, bad) = tokio::join!(
        call(&env, "CArelay0006", &good),
        call(&env, "CArelay0007", &bad)
    );
    assert_eq!(good.replies, [faq::HOURS]);
    assert_eq!(bad.replies, [faq::VISITING], "the bad session went on");
    assert_eq!(env.llm.requests().len(), 2);

    // Without a valid signature the handshake is refused before any session starts.
    let url = format!("ws://{}/relay", env.server);
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(refused.is_err(), "an unsigned handshake was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failure_says_the_fallback_and_the_call_goes_on() {
    let env = relay_env(|_| {}).await;
    // The request and its one retry fail; the next turn is answered.
    env.llm
        .fail_next(2, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let script = [
        say("What are your opening hours?"),
        say("What are your opening hours?"),
        CallerStep::HangUp,
    ];
    let call = call(&env, "CArelay0011", &script).await;
    assert_eq!(
        call.replies,
        [ivr_bridge::config::DEFAULT_FALLBACK_PHRASE, faq::HOURS]
    );
    let metrics = metrics(&env).await;
    assert!(
        metrics
            .contains("ivr_bridge_provider_errors_total{provider=\"mistral\",kind=\"http_500\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_refuses_new_sessions_and_ends_the_last_ones_at_its_timeout() {
    let env = relay_env(|config| config.server.drain_timeout = Duration::from_millis(500)).await;
    let state = env.state.clone();
    let fake = twilio(&env);
    // The store is this instance's memory: nobody else could go on with the conversation,
    // so the session is not moved (relay_resume.rs moves them) but held until the timeout.
    let script = [
        say("What are your opening hours?"),
        CallerStep::Silence(Duration::from_secs(30)),
    ];
    let session = tokio::spawn(async move { fake.call("CArelay0009", &script).await });
    let answered = support::eventually(Duration::from_secs(10), || {
        env.llm.requests().len() == 1 && state.live_calls() == 1
    })
    .await;
    assert!(answered, "the session is on");
    let late = twilio(&env);
    let stopped = tokio::spawn(env.shutdown(Duration::from_secs(10)));
    assert!(support::eventually(Duration::from_secs(5), || state.is_draining()).await);
    let refused = late.call("CArelay0010", &[CallerStep::HangUp]).await;
    assert!(refused.is_err(), "a new call was taken while draining");

    let call = session.await.expect("the session task").expect("the call");
    assert_eq!(call.replies, [faq::HOURS]);
    let handoff = call
        .handoff
        .as_deref()
        .expect("the server ended the session");
    assert!(handoff.contains("server_shutdown"), "{handoff}");
    assert!(
        stopped.await.expect("the drain"),
        "the server stopped in time"
    );
    assert_eq!(state.live_calls(), 0);
}

/// Token by token or phrase by phrase: the time from a turn to its first `text`, with the
/// Mistral stand-in at its default pace (first piece at 250 ms, the last at 600 ms). A
/// measurement, not a check of speed: run it with
/// `cargo test --test behaviour relay::first_text -- --ignored --nocapture`. It fails only if
/// the two ways send different words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; prints the numbers the relay module's notes quote"]
async fn first_text_tokens_against_phrases() {
    use ivr_bridge::relay::reply::{Chunks, Replier, ReplyEvent};
    use ivr_bridge::relay::session::ReplyId;
    use ivr_sim::standin::{Delays, LlmStandIn, Setup};
    use std::sync::Arc;
    use tokio::time::Instant;

    let delays = Delays::default();
    let setup = Setup::recording(support::MISTRAL_KEY);
    let cancel = tokio_util::sync::CancellationToken::new();
    let (llm, _) = LlmStandIn::start(&setup, (delays.llm_first_token, delays.llm_total), &cancel)
        .await
        .expect("the LLM stand-in starts");
    let config = ivr_bridge::Config::builder()
        .set("MISTRAL_API_KEY", support::MISTRAL_KEY)
        .set("MODE", "relay")
        .set("MISTRAL_API_URL", llm.url())
        .build()
        .expect("config");
    let http = reqwest::Client::new();
    let metrics = Arc::new(ivr_bridge::metrics::Metrics::new());
    let mistral = ivr_bridge::llm::mistral::Mistral::new(
        http.clone(),
        &config.llm,
        Secret::new(support::MISTRAL_KEY),
    );
    let toolbox = Arc::new(ivr_bridge::tools::Toolbox::new(
        &config.tools,
        http,
        metrics.clone(),
    ));
    let tools = Arc::new(ivr_bridge::tools::stream::CallTools {
        toolbox,
        call_sid: "CAmeasure".into(),
        transfer_phrase: String::new(),
        fallback: "Sorry?".into(),
    });
    let messages = |question: &str| {
        vec![
            ivr_bridge::llm::ChatMessage::new(ivr_bridge::llm::Role::System, "Be brief."),
            ivr_bridge::llm::ChatMessage::new(ivr_bridge::llm::Role::User, question),
        ]
    };
    for question in [
        "What are your opening hours?",
        "How do I get to the hospital?",
    ] {
        let mut words = Vec::new();
        for chunks in [Chunks::Tokens, Chunks::Phrases] {
            let (events, mut rx) = ivr_bridge::queue::bounded(64);
            let replier = Replier {
                llm: mistral.clone(),
                tools: tools.clone(),
                metrics: metrics.clone(),
                chunks,
                events,
            };
            let mut firsts = Vec::new();
            let mut text = String::new();
            for n in 0..20 {
                text.clear();
                let asked = Instant::now();
                replier.spawn(ReplyId(n), messages(question), cancel.child_token());
                let mut first = None;
                while let Some(event) = rx.recv().await {
                    match event {
                        ReplyEvent::Text { token, .. } => {
                            first.get_or_insert_with(|| asked.elapsed());
                            text.push_str(&token);
                        }
                        ReplyEvent::Done { .. } => break,
                        other => panic!("{other:?}"),
                    }
                }
                firsts.push(first.expect("some text"));
            }
            firsts.sort();
            println!(
                "{question:32} {chunks:?}: first text p50 {:?}, p90 {:?}",
                firsts[firsts.len() / 2],
                firsts[firsts.len() * 9 / 10]
            );
            words.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        assert_eq!(words[0], words[1], "both ways send the same words");
    }
}

/// The files of `dir` ending in `ext`.
fn files(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let paths = entries.filter_map(|e| e.ok().map(|e| e.path()));
    paths
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect()
}

fn replay(file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .env_clear()
        .arg("replay")
        .arg(file)
        .current_dir(file.parent().expect("a directory"))
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_relay_session_replays_the_same_and_a_changed_one_differs() {
    let dir = std::env::temp_dir().join(format!("ivr-bridge-relay-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ivr_bridge::record::check_dir(&dir).expect("a writable RECORD_DIR");
    let record_dir = dir.clone();
    let env = relay_env(|config| config.record.record_dir = Some(record_dir)).await;
    let script = [
        say("How do I get to the hospital?"),
        CallerStep::BargeIn {
            after: Duration::from_millis(1500),
            words: "What are your opening hours?".into(),
        },
        CallerStep::Press("7#".into()),
        CallerStep::HangUp,
    ];
    call(&env, "CArelayrec01", &script).await;
    assert!(
        support::eventually(Duration::from_secs(5), || !files(&dir, "json").is_empty()).await,
        "no recording in {}",
        dir.display()
    );

    // The session's text both ways and a sidecar; no WAV, there is no audio.
    let [jsonl] = files(&dir, "jsonl").try_into().expect("one recording");
    assert!(files(&dir, "wav").is_empty());
    let fixture = ivr_sim::fixture::CallFixture::load(&jsonl).expect("it loads as a fixture");
    let kinds: Vec<&str> = fixture
        .inbound
        .iter()
        .filter_map(|s| s.msg["type"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["setup", "prompt", "interrupt", "prompt", "dtmf", "dtmf"]
    );
    assert!(fixture.outbound.iter().any(|(_, m)| m["type"] == "text"));
    let s = &fixture.sidecar;
    assert_eq!(s.transport, ivr_bridge::record::format::Transport::Relay);
    assert_eq!(s.call_sid, "CArelayrec01");
    let turns: Vec<&str> = s.turns.iter().flatten().map(|t| t.text.as_str()).collect();
    assert_eq!(
        turns,
        [
            "How do I get to the hospital?",
            "What are your opening hours?",
            "The caller pressed: 7"
        ]
    );
    assert_eq!(s.barge_ins.as_ref().map(Vec::len), Some(1));
    assert_eq!(s.end_reason.as_deref(), Some("socket_closed"));

    // Replayed as Twilio would play it: the same conversation. With another answer in its
    // sidecar: different, exit 1.
    let changed = dir.join("changed.jsonl");
    std::fs::copy(&jsonl, &changed).expect("copy");
    let mut sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(jsonl.with_extension("json")).expect("sidecar"))
            .expect("json");
    let replies = sidecar["replies"].as_array().map_or(0, Vec::len);
    assert!(replies >= 2, "{sidecar}");
    sidecar["replies"][replies - 1]["phrases"] = serde_json::json!(["We are closed on Mondays."]);
    std::fs::write(changed.with_extension("json"), sidecar.to_string()).expect("write");
    let (same, differs) = tokio::join!(
        tokio::task::spawn_blocking({
            let jsonl = jsonl.clone();
            move || replay(&jsonl)
        }),
        tokio::task::spawn_blocking(move || replay(&changed)),
    );
    let (same, differs) = (same.expect("replay"), differs.expect("replay"));
    let _ = std::fs::remove_dir_all(&dir);
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(same.status.success(), "{}\n{same:?}", text(&same));
    assert!(text(&same).contains("ConversationRelay"), "{}", text(&same));
    assert!(text(&same).contains("caller turn 3"), "{}", text(&same));
    assert_eq!(differs.status.code(), Some(1), "{}", text(&differs));
    assert!(text(&differs).contains("DIFFERENT"), "{}", text(&differs));
}
