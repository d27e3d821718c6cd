//! The assistant acts on a streaming call (issue 13): `end_call` after its goodbye was heard,
//! `transfer_call` through `<Connect action>` and `/stream_ended`, the caller who speaks over
//! the farewell keeps the call, and an operator's tool answered within the same reply.

use crate::support;

use std::time::Duration;

use ivr_bridge::tools::HOLDING_PHRASE;
use ivr_sim::standin::faq;
use support::tool_endpoint::{endpoint, write_temp, Record, APPOINTMENT, SECRET};
use support::{DialOutcome, DialTarget, Instruction, PlayOptions, TestEnv};

const TRANSFER_TO: &str = "+15557654321";

/// The calls counter's value for `outcome`, from `/metrics`.
async fn calls_ended(env: &TestEnv, outcome: &str) -> bool {
    let metrics = reqwest::get(format!("{}/metrics", env.http_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    metrics.contains(&format!(
        "ivr_bridge_calls_total{{outcome=\"{outcome}\"}} 1\n"
    ))
}

/// A server whose operator has one tool, `lookup_appointment`, at `path` of the tests' tool
/// endpoint (which records what it is sent in `seen`).
async fn env_with_lookup(seen: &Record, path: &str, timeout_ms: Option<u64>, tag: &str) -> TestEnv {
    let base = endpoint(seen.clone()).await;
    let mut tool = serde_json::json!({
        "name": "lookup_appointment",
        "description": "Finds the caller's next appointment.",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                       "required": ["name"]},
        "url": format!("{base}{path}")
    });
    if let Some(ms) = timeout_ms {
        tool["timeout_ms"] = serde_json::json!(ms);
    }
    let file = write_temp(tag, "tools.json", &serde_json::json!([tool]).to_string());
    TestEnv::start_with(|config| {
        config.tools = ivr_bridge::Config::builder()
            .set("DEEPGRAM_API_KEY", "unused")
            .set("MISTRAL_API_KEY", "unused")
            .set("TOOLS_FILE", file.to_string_lossy())
            .set("TOOLS_SECRET", SECRET)
            .build()
            .expect("tools settings")
            .tools;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_ends_the_call_once_its_goodbye_was_heard() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("three_turns");
    let log = env
        .call_through_twilio("three_turns", DialOutcome::NoAnswer, PlayOptions::default())
        .await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The model was offered end_call and called it on "Goodbye"; its closing words were
    // heard to the end (the last mark came back) before the server closed the stream.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 3);
    let last = requests.last().expect("a request");
    assert!(
        last.body["tools"].to_string().contains("end_call"),
        "{}",
        last.body
    );
    let closed = log.server_closed_at.expect("the server closed the stream");
    assert!(closed < log.started + Duration::from_millis(fixture.sidecar.duration_ms));
    let mark = log.marks.last().expect("marks");
    assert!(
        !mark.discarded && mark.echoed_at.is_some_and(|at| at <= closed),
        "{mark:?}"
    );
    assert!(support::expect::requested(&env.tts)
        .iter()
        .any(|t| faq::GOODBYE.starts_with(t.as_str())));

    // Twilio then asked /stream_ended, which hung up.
    let after = log.after_stream.expect("Twilio followed <Connect action>");
    assert_eq!(after.instructions, [Instruction::Hangup], "{after:?}");
    assert!(calls_ended(&env, "assistant_ended").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_asks_for_a_person_is_put_through() {
    let env = TestEnv::start_with(|config| {
        config.tools.transfer_to = ivr_bridge::twilio::next_step::Target::parse(TRANSFER_TO).ok();
    })
    .await;
    let log = env
        .call_through_twilio("transfer", DialOutcome::NoAnswer, PlayOptions::default())
        .await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    // The model gave no words with its call: the caller heard TRANSFER_PHRASE first.
    let texts = support::expect::requested(&env.tts);
    let phrase = &env.config.tools.transfer_phrase;
    assert!(
        texts.iter().any(|t| phrase.starts_with(t.as_str())),
        "{texts:?}"
    );
    let after = log.after_stream.expect("Twilio followed <Connect action>");
    match after.instructions.as_slice() {
        [Instruction::Dial { target, .. }, Instruction::Say(_), Instruction::Hangup] => {
            assert_eq!(*target, DialTarget::Number(TRANSFER_TO.into()));
        }
        other => panic!("{other:?}"),
    }
    assert!(calls_ended(&env, "transferred").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_over_the_farewell_keeps_the_call() {
    let env = TestEnv::start().await;
    // As in the early interruption: the caller's "Wait…" lands while the farewell plays.
    env.llm.set_first_token_delay(Duration::from_millis(500));
    env.llm.set_total_delay(Duration::from_millis(500));
    let log = env
        .call_through_twilio(
            "goodbye_then_wait",
            DialOutcome::NoAnswer,
            PlayOptions::default(),
        )
        .await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert_eq!(log.clears.len(), 1, "the farewell was cut");
    // The call went on: the new question was answered, and the caller hung up, not the server.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let dialogue = support::expect::dialogue(&requests[1].messages);
    assert_eq!(
        dialogue.last().map(|(_, text)| *text),
        Some("Wait, one more thing. What is your address?")
    );
    // The history obeys Mistral's rules: the end_call round, then what was heard of the
    // farewell, then the new question.
    let roles: Vec<&str> = requests[1].messages.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    assert!(
        log.after_stream.is_none(),
        "the server did not end the call"
    );
    assert!(calls_ended(&env, "caller_hung_up").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_tool_answers_within_the_reply_with_a_holding_phrase_when_slow() {
    let seen = Record::default();
    let env = env_with_lookup(&seen, "/sluggish", Some(4000), "streaming").await;
    let log = env.replay("appointment").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The endpoint got one signed request for this call.
    let seen = seen.lock().expect("record").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].signature_ok);
    assert_eq!(seen[0].body["name"], "lookup_appointment");
    assert_eq!(
        seen[0].body["call_sid"],
        support::fixture::load("appointment").sidecar.call_sid
    );

    // The tool took 1.5 s: the caller heard the holding phrase, then the answer built on the
    // tool's result, in one reply.
    let texts = support::expect::requested(&env.tts);
    assert!(texts.iter().any(|t| t == HOLDING_PHRASE), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("Monday at 9:00")),
        "{texts:?} (the tool said {APPOINTMENT:?})"
    );
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2, "the turn, then the tool's result");
    let roles: Vec<&str> = requests[1].messages.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert!(log.clears.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_on_one_instance_and_another_dials() {
    let redis = support::redis_server::RedisServer::start().await;
    let shared = |config: &mut ivr_bridge::Config| {
        config.store.redis_url = Some(ivr_bridge::RedisUrl::parse(&redis.url()).expect("url"));
        config.tools.transfer_to = ivr_bridge::twilio::next_step::Target::parse(TRANSFER_TO).ok();
    };
    let (a, b) = (
        TestEnv::start_with(shared).await,
        TestEnv::start_with(shared).await,
    );
    // Behind a balancer: the voice webhook reached B (its <Connect action> names B), the
    // Media Stream went to A.
    let fixture = support::fixture::load("transfer");
    let call_sid = fixture.sidecar.call_sid.clone();
    let connect = b
        .twilio()
        .incoming_call(&format!("{}/", b.http_url()), &call_sid)
        .await
        .expect("the voice webhook answers");
    let action = connect.action.expect("<Connect action>");
    assert!(action.starts_with(&b.http_url()), "{action}");
    let options = PlayOptions {
        connect_action: Some(support::ConnectAction {
            url: action,
            twilio: b.twilio(),
            dial: DialOutcome::NoAnswer,
        }),
        ..PlayOptions::default()
    };
    let log = support::replay_with(&a.media_url(), &fixture, options).await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // A recorded the transfer in Redis before closing; B found it and dialled.
    let after = log.after_stream.expect("Twilio followed <Connect action>");
    match after.instructions.as_slice() {
        [Instruction::Dial { target, .. }, Instruction::Say(_), Instruction::Hangup] => {
            assert_eq!(*target, DialTarget::Number(TRANSFER_TO.into()));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_stuck_calling_tools_gets_three_rounds_then_the_fallback() {
    let seen = Record::default();
    let env = env_with_lookup(&seen, "/lookup", None, "rounds").await;
    env.llm.keep_calling_tools(true);
    let log = env.replay("appointment").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert_eq!(
        seen.lock().expect("record").len(),
        3,
        "three rounds of tools"
    );
    assert_eq!(
        env.llm.requests().len(),
        4,
        "the turn and one request per round"
    );
    // The caller heard the fallback phrase (its audio was cached at the call's start).
    let fallback = ivr_bridge::tts::text::speakable(&env.config.assistant.fallback_phrase);
    let audio = support::framed(&support::tones(&fallback));
    let heard = log.heard();
    assert!(
        heard.windows(audio.len()).any(|w| w == audio.as_slice()),
        "the caller heard the fallback phrase"
    );
}
