//! The Gather flow with tools, through the real server: `end_call` says goodbye and hangs up,
//! `transfer_call` dials a number or a SIP URI, an operator's tool answers inside the reply and
//! stays in the call's history (shared through Redis), and a slow end is still an end when
//! `/speak_response` speaks it.

use std::path::Path;
use std::time::Duration;

use ivr_bridge::tools::DEFAULT_TRANSFER_PHRASE;
use ivr_sim::standin::faq;

use crate::support::gather_phone::{Phone, Verb};
use crate::support::redis_server::RedisServer;
use crate::support::tool_endpoint::{endpoint, tools_file, Record, APPOINTMENT, SECRET};
use crate::support::TestEnv;

/// A server whose tools come from `path` (when given), with `transfer` as TRANSFER_TO and
/// `vars` for the model's settings (and `REDIS_URL`).
async fn gather_env(path: Option<&Path>, transfer: Option<&str>, vars: &[(&str, &str)]) -> TestEnv {
    let mut builder = ivr_bridge::Config::builder()
        .set("DEEPGRAM_API_KEY", "unused")
        .set("MISTRAL_API_KEY", "unused")
        .set("TRANSFER_CALLER_ID", "+15551230000");
    for (var, value) in vars {
        builder = builder.set(var, *value);
    }
    if let Some(path) = path {
        builder = builder
            .set("TOOLS_FILE", path.to_string_lossy())
            .set("TOOLS_SECRET", SECRET);
    }
    if let Some(target) = transfer {
        builder = builder.set("TRANSFER_TO", target);
    }
    let built = builder.build().expect("tool settings");
    TestEnv::start_with(move |config| {
        config.tools = built.tools;
        config.llm.llm_timeout = built.llm.llm_timeout;
        config.gather.speak_response_wait = built.gather.speak_response_wait;
        config.store.redis_url = built.store.redis_url;
    })
    .await
}

fn names(page: &[Verb]) -> Vec<&str> {
    page.iter().map(|v| v.name.as_str()).collect()
}

#[tokio::test]
async fn gather_end_call_says_goodbye_and_hangs_up() {
    let env = gather_env(None, None, &[]).await;
    let page = Phone::new(&env, "CAgatherend")
        .say("That is all, goodbye!")
        .await
        .twiml();
    assert_eq!(names(&page), ["Say", "Hangup"], "{page:?}");
    assert_eq!(page[0].text, faq::GOODBYE);
    let offered = &env.llm.requests()[0].body["tools"];
    let offered: Vec<&str> = offered
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(
        offered,
        ["end_call"],
        "no transfer_call without TRANSFER_TO"
    );
}

#[tokio::test]
async fn gather_transfer_says_the_phrase_then_dials_the_number_or_sip_uri() {
    for (target, noun) in [
        ("+15557654321", "Number"),
        ("sip:desk@pbx.example.com", "Sip"),
    ] {
        let env = gather_env(None, Some(target), &[]).await;
        let page = Phone::new(&env, "CAgathertransfer")
            .say("Can I talk to a person about my bill?")
            .await
            .twiml();
        // The dial's outcome goes to /stream_ended, which apologises only when nobody took
        // the call (tests/stream_ended.rs).
        assert_eq!(names(&page), ["Say", "Dial"], "{page:?}");
        assert!(
            page[1].attr("action").ends_with("/stream_ended?after=dial"),
            "{page:?}"
        );
        assert_eq!(page[0].text, DEFAULT_TRANSFER_PHRASE);
        assert_eq!(page[1].attr("callerId"), "+15551230000");
        assert_eq!(page[1].children.len(), 1);
        assert_eq!(page[1].children[0].name, noun);
        assert_eq!(page[1].children[0].text, target);
    }
}

#[tokio::test]
async fn gather_operator_tool_answers_and_stays_in_the_history_shared_through_redis() {
    let seen = Record::default();
    let base = endpoint(seen.clone()).await;
    let path = tools_file(&base, "gather");
    let redis = RedisServer::start().await;
    let url = redis.url();
    let shared = [("REDIS_URL", url.as_str())];
    let a = gather_env(Some(&path), None, &shared).await;
    let b = gather_env(Some(&path), None, &shared).await;
    let on_a = Phone::new(&a, "CAgathertool");
    let words = "Could you lookup appointment for Jane?";
    let said = on_a.say(words).await.says();
    assert_eq!(said, format!("lookup_appointment answered: {APPOINTMENT}"));
    assert_eq!(
        seen.lock().expect("record")[0].body["call_sid"],
        "CAgathertool"
    );

    let next = on_a.on(&b).say("What are your opening hours?").await.says();
    assert_eq!(next, faq::HOURS);
    let requests = b.llm.requests();
    let roles: Vec<&str> = requests[0]
        .messages
        .iter()
        .map(|(role, _)| role.as_str())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"],
        "the tool traffic is kept in the history, in Mistral's order, and shared through Redis"
    );
    assert_eq!(requests[0].messages[3].1, APPOINTMENT);
    assert_eq!(requests[0].status, 200, "Mistral's rules hold");
}

#[tokio::test]
async fn a_slow_end_call_is_spoken_and_hung_up_by_speak_response() {
    let env = gather_env(None, None, &[("LLM_TIMEOUT_MS", "50")]).await;
    env.llm
        .slow_when_asked("goodbye", Duration::from_millis(400));
    let phone = Phone::new(&env, "CAgatherslow");
    let holding = phone.say("Thanks, goodbye").await.twiml();
    assert_eq!(names(&holding), ["Say", "Redirect"], "{holding:?}");
    let page = phone.post("/speak_response", &[]).await.twiml();
    assert_eq!(names(&page), ["Say", "Hangup"], "{page:?}");
    assert_eq!(page[0].text, faq::GOODBYE);
}

#[tokio::test]
async fn an_answer_is_abandoned_at_the_gather_budget_not_at_a_fixed_15_s() {
    let vars = [("LLM_TIMEOUT_MS", "50"), ("SPEAK_RESPONSE_WAIT_MS", "100")];
    let env = gather_env(None, None, &vars).await;
    env.llm.hang_next(1);
    let phone = Phone::new(&env, "CAgatherbudget");
    let holding = phone.say("What are your opening hours?").await.twiml();
    assert_eq!(names(&holding), ["Say", "Redirect"], "{holding:?}");
    // Past the budget (150 ms) the answer is given up and marked failed: /speak_response
    // apologises for a failed answer instead of still waiting for a pending one (which it did
    // for Mistral's fixed 15 s request timeout).
    let mut heard = Vec::new();
    for _ in 0..40 {
        let said = phone.post("/speak_response", &[]).await.says();
        let failed = said.starts_with("Sorry, I couldn't find an answer");
        heard.push(said);
        if failed {
            break;
        }
    }
    assert!(
        heard
            .last()
            .is_some_and(|s| s.starts_with("Sorry, I couldn't find an answer")),
        "the hung answer was never given up: {heard:?}"
    );
}
