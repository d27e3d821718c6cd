//! What follows a Media Stream: the assistant's `<Connect action>` is `/stream_ended`, which
//! answers with the next step the call recorded — `<Hangup/>`, or a transfer's `<Dial>` whose
//! outcome decides between hanging up and apologising — and `<Hangup/>` whenever there is none.
//! Twilio's side is the simulated one (`ivr_sim::webhooks`), following the TwiML as Twilio does.

use crate::support;

use ivr_bridge::store::{CallSid, Exchange, NextStep, Store};
use ivr_bridge::twilio::next_step::{PhoneNumber, Target};
use ivr_bridge::Secret;
use support::redis_server::RedisServer;
use support::{AfterStream, DialOutcome, DialTarget, Instruction, PlayOptions, TestEnv};

const TOKEN: &str = "twilio-auth-token-for-tests";
const PUBLIC: &str = "https://voice.example.com";
const APOLOGY: &str = "Sorry, nobody is free to take your call. Goodbye!";

fn sid(raw: &str) -> CallSid {
    CallSid::parse(raw).expect("test CallSid")
}

fn transfer(to: &str, caller_id: Option<&str>) -> NextStep {
    NextStep::Transfer {
        to: Target::parse(to).expect("test target"),
        caller_id: caller_id.map(|c| PhoneNumber::parse(c).expect("test caller ID")),
        apology: APOLOGY.into(),
    }
}

fn store(env: &TestEnv) -> &Store {
    &env.state.stream_end.store
}

/// The `<Connect action>` the voice webhook gives call `call`.
async fn connect_action(env: &TestEnv, call: &str) -> String {
    let webhook = match &env.config.twilio.public_url {
        Some(_) => format!("{PUBLIC}/"),
        None => format!("{}/", env.http_url()),
    };
    let connect = env.twilio().incoming_call(&webhook, call).await;
    let connect = connect.unwrap_or_else(|e| panic!("{e}"));
    assert!(connect.then.is_empty(), "{connect:?}");
    connect
        .action
        .expect("the assistant's <Connect> has an action")
}

/// The stream of `call` is over: what Twilio does next.
async fn stream_closes(env: &TestEnv, call: &str, dial: DialOutcome) -> AfterStream {
    let action = connect_action(env, call).await;
    env.twilio()
        .follow_connect_action(&action, call, dial)
        .await
}

fn dial(target: DialTarget, caller_id: Option<&str>, action: &str) -> Instruction {
    Instruction::Dial {
        target,
        caller_id: caller_id.map(str::to_owned),
        action: Some(action.to_owned()),
    }
}

#[tokio::test]
async fn a_stream_that_ends_with_no_step_recorded_hangs_up() {
    let env = TestEnv::start().await;
    let after = stream_closes(&env, "CA1", DialOutcome::NoAnswer).await;
    assert_eq!(after.instructions, [Instruction::Hangup], "{after:?}");
    let expected = format!("{}/stream_ended", env.http_url());
    assert_eq!(after.requests, [(expected, 200)]);
}

#[tokio::test]
async fn a_recorded_hangup_hangs_up_and_is_used_once() {
    let env = TestEnv::start().await;
    store(&env)
        .set_next_step(&sid("CA2"), &NextStep::Hangup)
        .await
        .unwrap();
    let after = stream_closes(&env, "CA2", DialOutcome::NoAnswer).await;
    assert_eq!(after.instructions, [Instruction::Hangup]);
    assert_eq!(store(&env).take_next_step(&sid("CA2")).await.unwrap(), None);
}

#[tokio::test]
async fn a_transfer_nobody_answers_dials_the_number_then_apologises_and_hangs_up() {
    let env = TestEnv::start().await;
    let step = transfer("+15551234567", Some("+15557654321"));
    store(&env).set_next_step(&sid("CA3"), &step).await.unwrap();
    let after = stream_closes(&env, "CA3", DialOutcome::NoAnswer).await;
    let dial_action = format!("{}/stream_ended?after=dial", env.http_url());
    assert_eq!(
        after.instructions,
        [
            dial(
                DialTarget::Number("+15551234567".into()),
                Some("+15557654321"),
                &dial_action
            ),
            Instruction::Say(APOLOGY.into()),
            Instruction::Hangup,
        ],
        "{after:?}"
    );
    assert_eq!(after.requests.len(), 2, "{after:?}");
    assert!(after.error.is_none(), "{after:?}");
    // The step was used up: the call's state is freed.
    assert_eq!(store(&env).take_next_step(&sid("CA3")).await.unwrap(), None);
}

#[tokio::test]
async fn a_transfer_to_a_sip_address_dials_sip_and_apologises_when_busy() {
    let env = TestEnv::start().await;
    let step = transfer("sip:desk@pbx.example.com", None);
    store(&env).set_next_step(&sid("CA4"), &step).await.unwrap();
    let after = stream_closes(&env, "CA4", DialOutcome::Busy).await;
    let dial_action = format!("{}/stream_ended?after=dial", env.http_url());
    assert_eq!(
        after.instructions,
        [
            dial(
                DialTarget::Sip("sip:desk@pbx.example.com".into()),
                None,
                &dial_action
            ),
            Instruction::Say(APOLOGY.into()),
            Instruction::Hangup,
        ]
    );
}

#[tokio::test]
async fn a_transfer_someone_answered_ends_without_an_apology() {
    let env = TestEnv::start().await;
    let step = transfer("+15551234567", None);
    store(&env).set_next_step(&sid("CA5"), &step).await.unwrap();
    let after = stream_closes(&env, "CA5", DialOutcome::Answered).await;
    assert_eq!(after.instructions.len(), 2, "{after:?}");
    assert!(matches!(after.instructions[0], Instruction::Dial { .. }));
    assert_eq!(after.instructions[1], Instruction::Hangup);
}

#[tokio::test]
async fn bad_requests_are_hung_up_never_left_silent() {
    let env = TestEnv::start().await;
    let url = format!("{}/stream_ended", env.http_url());
    let http = reqwest::Client::new();
    let no_sid = http.post(&url).form(&[("CallStatus", "in-progress")]);
    let bad_sid = http.post(&url).form(&[("CallSid", "CA}{")]);
    let not_a_form = http
        .post(&url)
        .body("{}")
        .header("content-type", "application/json");
    for request in [no_sid, bad_sid, not_a_form] {
        let answer = support::gather_phone::answer(request).await;
        let verbs = answer.twiml();
        let names: Vec<&str> = verbs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["Hangup"], "{answer:?}");
    }
}

#[tokio::test]
async fn a_stream_ended_after_the_caller_left_frees_the_call() {
    let env = TestEnv::start().await;
    let call = sid("CA6");
    let store = store(&env);
    store.append(&call, &Exchange::new("q", "a")).await.unwrap();
    store
        .set_next_step(&call, &transfer("+15551234567", None))
        .await
        .unwrap();
    let url = format!("{}/stream_ended", env.http_url());
    let params = support::TwilioHttp::standard_params("CA6", "completed");
    let (status, body) = env.twilio().post(&url, &params).await.unwrap();
    assert_eq!(status, 200);
    let names: Vec<String> = support::gather_phone::verbs(&body)
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["Hangup"]);
    assert!(store.history(&call).await.unwrap().is_empty());
    assert_eq!(store.take_next_step(&call).await.unwrap(), None);
}

#[tokio::test]
async fn stream_ended_needs_twilios_signature() {
    let env = TestEnv::start_with(|config| {
        config.twilio.twilio_auth_token = Some(Secret::new(TOKEN));
        config.twilio.public_url = Some(reqwest::Url::parse(PUBLIC).unwrap());
    })
    .await;
    let url = format!("{}/stream_ended", env.http_url());
    let params = support::TwilioHttp::standard_params("CA7", "in-progress");
    let unsigned = reqwest::Client::new().post(&url).form(&params).send().await;
    assert_eq!(unsigned.unwrap().status(), 403);
    let forged = support::TwilioHttp::new(Some("another-token")).via(&env.http_url());
    let (status, _) = forged
        .post(&format!("{PUBLIC}/stream_ended"), &params)
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Signed over the public URLs, the whole transfer goes through, `?after=dial` included.
    let step = transfer("+15551234567", None);
    store(&env).set_next_step(&sid("CA7"), &step).await.unwrap();
    let after = stream_closes(&env, "CA7", DialOutcome::Failed).await;
    assert_eq!(
        after.requests,
        [
            (format!("{PUBLIC}/stream_ended"), 200),
            (format!("{PUBLIC}/stream_ended?after=dial"), 200)
        ]
    );
    assert_eq!(after.instructions.last(), Some(&Instruction::Hangup));
    assert_eq!(after.instructions.len(), 3, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_recorded_on_one_instance_is_answered_by_another() {
    let redis = RedisServer::start().await;
    let shared = |config: &mut ivr_bridge::Config| {
        config.twilio.twilio_auth_token = Some(Secret::new(TOKEN));
        config.twilio.public_url = Some(reqwest::Url::parse(PUBLIC).unwrap());
        config.store.redis_url = Some(ivr_bridge::RedisUrl::parse(&redis.url()).unwrap());
    };
    let (a, b) = (
        TestEnv::start_with(shared).await,
        TestEnv::start_with(shared).await,
    );
    // Instance A served the stream: it records the transfer, then (in the call) closes.
    let step = transfer("+15551234567", Some("+15557654321"));
    store(&a).set_next_step(&sid("CA8"), &step).await.unwrap();
    // Twilio's request reaches instance B, which dials; the dial's outcome reaches B too.
    let after = stream_closes(&b, "CA8", DialOutcome::NoAnswer).await;
    assert_eq!(
        after.instructions,
        [
            dial(
                DialTarget::Number("+15551234567".into()),
                Some("+15557654321"),
                &format!("{PUBLIC}/stream_ended?after=dial")
            ),
            Instruction::Say(APOLOGY.into()),
            Instruction::Hangup,
        ],
        "{after:?}"
    );
    let mut con = redis.connection().await;
    let left: i64 = ::redis::cmd("EXISTS")
        .arg("ivr-bridge:call:{CA8}:next")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(left, 0, "the step was used up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_server_closes_the_stream_twilio_follows_the_action() {
    // Speech recognition is unreachable: the caller hears the apology and the server closes
    // the stream with no step recorded, so Twilio's next request hangs up.
    let env = TestEnv::start().await;
    env.stt.set_refuse_all(true);
    let log = env
        .call_through_twilio(
            "one_question",
            DialOutcome::NoAnswer,
            PlayOptions::default(),
        )
        .await;
    assert!(
        log.server_closed_at.is_some(),
        "the server closed the stream"
    );
    let after = log.after_stream.expect("Twilio followed <Connect action>");
    assert_eq!(after.instructions, [Instruction::Hangup], "{after:?}");
    assert_eq!(
        log.call_sid.as_deref(),
        Some(
            support::fixture::load("one_question")
                .sidecar
                .call_sid
                .as_str()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_first_is_not_followed() {
    let env = TestEnv::start().await;
    let log = env
        .call_through_twilio(
            "one_question",
            DialOutcome::NoAnswer,
            PlayOptions::default(),
        )
        .await;
    assert!(log.stop_sent_at.is_some(), "{:?}", log.server_closed_at);
    assert!(log.after_stream.is_none(), "{:?}", log.after_stream);
}
