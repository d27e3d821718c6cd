//! The TwiML Gather flow through the real server: `/call`, `/process_speech`, `/speak_response`
//! and `/call_status`, posted as Twilio posts them, with the fake Mistral behind, and with the
//! conversation store in memory or in a real `redis-server` shared by two instances.

use crate::support;

use std::time::Duration;

use ivr_bridge::config::{RedisUrl, DEFAULT_GREETING};
use ivr_bridge::gather::{for_say, MAX_SPEECH_CHARS};
use ivr_sim::standin::faq::{ADDRESS, HOURS, SPECIAL, VISITING};
use support::gather_phone::{answer, Phone};
use support::redis_server::RedisServer;
use support::TestEnv;
use tokio::time::Instant;

/// The conversation the fake Mistral received in request `n`, as (role, content).
fn conversation(env: &TestEnv, n: usize) -> Vec<(String, String)> {
    env.llm.requests()[n].messages.clone()
}

fn roles(messages: &[(String, String)]) -> Vec<&str> {
    messages.iter().map(|(role, _)| role.as_str()).collect()
}

fn with_redis(redis: &RedisServer) -> impl FnOnce(&mut ivr_bridge::Config) {
    let url = RedisUrl::parse(&redis.url()).expect("redis URL");
    move |config| config.store.redis_url = Some(url)
}

#[tokio::test]
async fn call_greets_inside_a_speech_gather_with_absolute_urls() {
    let env = TestEnv::start_with(|config| {
        config.twilio.public_url = Some(reqwest::Url::parse("https://voice.example.com").unwrap());
    })
    .await;
    let page = Phone::new(&env, "CA1").post("/call", &[]).await;
    let (say, action) = page.listening();
    assert_eq!(say, DEFAULT_GREETING);
    assert_eq!(action, "https://voice.example.com/process_speech");
    let gather = &page.twiml()[0];
    assert_eq!(gather.attr("speechModel"), "deepgram_nova-2");
    assert_eq!(gather.attr("language"), "en-US");
}

#[tokio::test]
async fn settings_shape_the_pages_and_urls_follow_the_tunnel_host() {
    let env = TestEnv::start_with(|config| {
        config.gather.twilio_voice = "Polly.Amy-Neural".into();
        config.gather.gather_speech_model = "deepgram_nova-3".into();
        config.gather.language = "en-GB".into();
        config.assistant.greeting = "Hello & welcome <caller>!".into();
    })
    .await;
    let request = reqwest::Client::new()
        .post(format!("{}/call", env.http_url()))
        .header("host", "abc.ngrok-free.app")
        .header("x-forwarded-proto", "https")
        .form(&[("CallSid", "CA1")]);
    let page = answer(request).await.twiml();
    let gather = &page[0];
    assert_eq!(
        gather.attr("action"),
        "https://abc.ngrok-free.app/process_speech"
    );
    assert_eq!(gather.attr("speechModel"), "deepgram_nova-3");
    assert_eq!(gather.attr("language"), "en-GB");
    assert_eq!(gather.children[0].attr("voice"), "Polly.Amy-Neural");
    assert_eq!(gather.children[0].text, "Hello & welcome <caller>!");
}

#[tokio::test]
async fn two_turns_carry_the_history_and_speak_plain_words() {
    let env = TestEnv::start().await;
    let phone = Phone::new(&env, "CAtwoturns");
    let first = phone.say("What are your opening hours?").await;
    let (text, action) = first.listening();
    assert_eq!(text, HOURS);
    assert_eq!(action, format!("{}/process_speech", env.http_url()));

    let second = phone.say("Where is the hospital?").await;
    let text = second.says();
    assert_eq!(text, for_say(ADDRESS));
    assert!(text.contains("100 Main Street") && !text.contains("**") && !text.contains("]("));

    let messages = conversation(&env, 1);
    assert_eq!(roles(&messages), ["system", "user", "assistant", "user"]);
    assert_eq!(messages[1].1, "What are your opening hours?");
    assert_eq!(messages[2].1, HOURS);
    assert_eq!(messages[3].1, "Where is the hospital?");
}

#[tokio::test]
async fn special_characters_become_valid_twiml_and_plain_words() {
    let env = TestEnv::start().await;
    let page = Phone::new(&env, "CA1")
        .say("Say something with special characters & <tags>")
        .await;
    assert!(
        page.body.contains("&amp;") && page.body.contains("&lt;"),
        "{}",
        page.body
    );
    let text = page.says();
    assert_eq!(
        text,
        "Fish & chips cost <5 dollars> at the \"Café\" & it's open late. Ask for 'Tom'."
    );
    assert_eq!(text, for_say(SPECIAL));
    assert_eq!(
        conversation(&env, 0)[1].1,
        "Say something with special characters & <tags>"
    );
}

#[tokio::test]
async fn silence_is_asked_about_once_then_the_call_ends() {
    let env = TestEnv::start().await;
    let phone = Phone::new(&env, "CAquiet");
    let reprompt = phone.post("/process_speech", &[]).await;
    let (text, action) = reprompt.listening();
    assert!(text.contains("didn't catch"), "{text}");
    assert_eq!(
        action,
        format!("{}/process_speech?silence=1", env.http_url())
    );

    let goodbye = phone
        .post("/process_speech?silence=1", &[("SpeechResult", "  ")])
        .await
        .twiml();
    let names: Vec<&str> = goodbye.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["Say", "Hangup"], "{goodbye:?}");
    assert!(
        env.llm.requests().is_empty(),
        "silence never reaches the model"
    );

    let spoke = phone
        .post(
            "/process_speech?silence=1",
            &[("SpeechResult", "Visiting hours?")],
        )
        .await;
    let (text, action) = spoke.listening();
    assert_eq!(text, VISITING);
    assert_eq!(
        action,
        format!("{}/process_speech", env.http_url()),
        "count reset"
    );
}

#[tokio::test]
async fn status_callback_frees_the_history() {
    let env = TestEnv::start().await;
    let phone = Phone::new(&env, "CAstatus");
    phone.say("What are your opening hours?").await.says();
    let ringing = phone
        .post("/call_status", &[("CallStatus", "in-progress")])
        .await;
    assert_eq!(ringing.status, 204);
    phone.say("Visiting hours?").await.says();
    assert_eq!(
        conversation(&env, 1).len(),
        4,
        "history kept while the call goes on"
    );

    let ended = phone
        .post("/call_status", &[("CallStatus", "completed")])
        .await;
    assert_eq!(ended.status, 204);
    phone.say("Where is the hospital?").await.says();
    assert_eq!(roles(&conversation(&env, 2)), ["system", "user"]);
}

#[tokio::test]
async fn slow_llm_gets_a_holding_phrase_then_the_reply() {
    let env =
        TestEnv::start_with(|config| config.llm.llm_timeout = Duration::from_millis(300)).await;
    env.llm.set_total_delay(Duration::from_millis(1200));
    let phone = Phone::new(&env, "CAslow");
    let started = Instant::now();
    let holding = phone.say("What are your opening hours?").await.twiml();
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(holding.len(), 2, "{holding:?}");
    assert_eq!(holding[0].name, "Say");
    assert_eq!(holding[1].name, "Redirect");
    assert_eq!(holding[1].attr("method"), "POST");
    assert_eq!(
        holding[1].text,
        format!("{}/speak_response", env.http_url())
    );

    let reply = phone.post("/speak_response", &[]).await;
    assert_eq!(reply.says(), HOURS);
    assert!(started.elapsed() >= Duration::from_millis(1200));

    env.llm.set_total_delay(Duration::from_millis(20));
    phone.say("Visiting hours?").await.says();
    let messages = conversation(&env, 1);
    assert_eq!(roles(&messages), ["system", "user", "assistant", "user"]);
    assert_eq!(
        messages[2].1, HOURS,
        "the slow reply is in the history once"
    );
}

#[tokio::test]
async fn a_reply_that_never_comes_gets_an_apology_and_no_orphan_turn() {
    let env = TestEnv::start_with(|config| {
        config.llm.llm_timeout = Duration::from_millis(200);
        config.gather.speak_response_wait = Duration::from_millis(400);
    })
    .await;
    env.llm.hang_next(1);
    let phone = Phone::new(&env, "CAhang");
    let holding = phone.say("What are your opening hours?").await.twiml();
    assert_eq!(holding[1].name, "Redirect");
    let started = Instant::now();
    let sorry = phone.post("/speak_response", &[]).await.says();
    assert!(sorry.starts_with("Sorry"), "{sorry}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );

    phone.say("Visiting hours?").await.says();
    assert_eq!(roles(&conversation(&env, 1)), ["system", "user"]);
}

#[tokio::test]
async fn a_model_error_gets_an_apology_and_listens_again() {
    let env = TestEnv::start().await;
    env.llm
        .fail_next(1, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let phone = Phone::new(&env, "CAerr");
    let (sorry, action) = phone.say("What are your opening hours?").await.listening();
    assert!(sorry.starts_with("Sorry"), "{sorry}");
    assert_eq!(action, format!("{}/process_speech", env.http_url()));
    assert!(phone
        .post("/speak_response", &[])
        .await
        .says()
        .starts_with("Sorry"));
    assert_eq!(phone.say("Visiting hours?").await.says(), VISITING);
    assert_eq!(roles(&conversation(&env, 1)), ["system", "user"]);
}

#[tokio::test]
async fn speak_response_speaks_the_latest_reply() {
    let env = TestEnv::start().await;
    let phone = Phone::new(&env, "CAlatest");
    assert_eq!(
        phone.post("/speak_response", &[]).await.says(),
        DEFAULT_GREETING
    );
    phone.say("What are your opening hours?").await.says();
    assert_eq!(phone.post("/speak_response", &[]).await.says(), HOURS);
}

#[tokio::test]
async fn bad_input_is_refused_or_answered_never_a_5xx() {
    let env = TestEnv::start().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", env.http_url());
    let huge = "a".repeat(100 * 1024);
    let requests = [
        (
            "no CallSid",
            http.post(url("/process_speech"))
                .form(&[("SpeechResult", "hi")]),
        ),
        (
            "bad CallSid",
            http.post(url("/process_speech"))
                .form(&[("CallSid", "CA}{x")]),
        ),
        (
            "JSON body",
            http.post(url("/process_speech"))
                .json(&serde_json::json!({"CallSid": "CA1"})),
        ),
        (
            "text body",
            http.post(url("/speak_response")).body("CallSid=CA1"),
        ),
        (
            "junk form",
            http.post(url("/process_speech"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("%%%&&==\u{0}\u{ff}"),
        ),
        (
            "100 KB speech",
            http.post(url("/process_speech"))
                .form(&[("CallSid", "CA1"), ("SpeechResult", huge.as_str())]),
        ),
        ("empty /call", http.post(url("/call"))),
        (
            "status without CallSid",
            http.post(url("/call_status"))
                .form(&[("CallStatus", "completed")]),
        ),
        ("GET", http.get(url("/process_speech"))),
    ];
    for (what, request) in requests {
        let answer = answer(request).await;
        assert!((400..500).contains(&answer.status), "{what}: {answer:?}");
    }
    let no_speech = Phone::new(&env, "CA1").post("/process_speech", &[]).await;
    no_speech.listening();
    assert!(env.llm.requests().is_empty());

    let long = "b".repeat(30 * 1024);
    Phone::new(&env, "CA1").say(&long).await.says();
    let asked = &conversation(&env, 0)[1].1;
    assert_eq!(asked.chars().count(), MAX_SPEECH_CHARS);
}

#[tokio::test]
async fn two_instances_share_one_redis() {
    let redis = RedisServer::start().await;
    let a = TestEnv::start_with(with_redis(&redis)).await;
    let b = TestEnv::start_with(with_redis(&redis)).await;
    let on_a = Phone::new(&a, "CAshared");
    let on_b = on_a.on(&b);

    assert_eq!(on_a.say("What are your opening hours?").await.says(), HOURS);
    assert_eq!(
        on_b.say("Where is the hospital?").await.says(),
        for_say(ADDRESS)
    );
    let messages = conversation(&b, 0);
    assert_eq!(roles(&messages), ["system", "user", "assistant", "user"]);
    assert_eq!(messages[2].1, HOURS);
    assert_eq!(
        on_a.post("/speak_response", &[]).await.says(),
        for_say(ADDRESS)
    );

    let mut con = redis.connection().await;
    let key = "ivr-bridge:call:{CAshared}:history";
    let held: i64 = ::redis::cmd("LLEN")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(held, 2);
    assert_eq!(
        on_b.post("/call_status", &[("CallStatus", "completed")])
            .await
            .status,
        204
    );
    let held: i64 = ::redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(held, 0, "the status callback freed the call in Redis");
}

#[tokio::test]
async fn a_slow_reply_started_on_one_instance_is_spoken_by_the_other() {
    let redis = RedisServer::start().await;
    let a = TestEnv::start_with(|config| {
        with_redis(&redis)(config);
        config.llm.llm_timeout = Duration::from_millis(300);
    })
    .await;
    let b = TestEnv::start_with(with_redis(&redis)).await;
    a.llm.set_total_delay(Duration::from_millis(1000));
    let on_a = Phone::new(&a, "CAhandover");
    let holding = on_a.say("What are your opening hours?").await.twiml();
    assert_eq!(holding[1].name, "Redirect");
    assert_eq!(on_a.on(&b).post("/speak_response", &[]).await.says(), HOURS);
    assert!(b.llm.requests().is_empty(), "B only read the store");
}

#[tokio::test]
async fn a_redis_outage_gets_an_apology_then_the_call_goes_on() {
    let mut redis = RedisServer::start().await;
    let env = TestEnv::start_with(with_redis(&redis)).await;
    let phone = Phone::new(&env, "CAoutage");
    assert_eq!(
        phone.say("What are your opening hours?").await.says(),
        HOURS
    );

    redis.stop();
    let started = Instant::now();
    let (sorry, action) = phone.say("Visiting hours?").await.listening();
    assert!(sorry.contains("technical problem"), "{sorry}");
    assert_eq!(action, format!("{}/process_speech", env.http_url()));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(phone
        .post("/speak_response", &[])
        .await
        .says()
        .contains("technical problem"));
    assert_eq!(
        phone
            .post("/call_status", &[("CallStatus", "completed")])
            .await
            .status,
        204
    );

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = phone.say("Visiting hours?").await.says();
        if text == VISITING {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still apologising after the restart: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_drain_waits_for_a_slow_answer_that_another_instance_will_speak() {
    let redis = RedisServer::start().await;
    let a = TestEnv::start_with(|config| {
        with_redis(&redis)(config);
        config.llm.llm_timeout = Duration::from_millis(300);
    })
    .await;
    a.llm.set_total_delay(Duration::from_millis(1500));
    let holding = Phone::new(&a, "CAdraining")
        .say("What are your opening hours?")
        .await
        .twiml();
    assert_eq!(holding[1].name, "Redirect");

    // SIGTERM now, with no stream in progress: the server still finishes the answer first.
    assert!(
        a.shutdown(Duration::from_secs(10)).await,
        "the drain never ended"
    );
    let mut con = redis.connection().await;
    let pending: i64 = ::redis::cmd("EXISTS")
        .arg("ivr-bridge:call:{CAdraining}:pending")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        pending, 0,
        "the server stopped with the answer still pending"
    );
    let stored: Vec<String> = ::redis::cmd("LRANGE")
        .arg("ivr-bridge:call:{CAdraining}:history")
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].contains("Monday to Friday"), "{stored:?}");
}
