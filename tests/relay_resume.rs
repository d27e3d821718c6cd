//! A relay call outlives its ConversationRelay session: Twilio does not reconnect a dropped
//! session, so `/stream_ended` answers a new `<ConversationRelay>` and the call goes on with its
//! history (bounded, and never after the caller hung up); a draining instance moves its quiet
//! sessions to another one. Calls made by the ConversationRelay fake, which follows the new
//! `<Connect>` as Twilio does: a new session, the same `callSid`, the rest of the script.

use crate::relay::{call, conversation, metrics, pair, relay_env, say, twilio, AUTH_TOKEN};
use crate::support;

use std::time::Duration;

use ivr_bridge::config::Mode;
use ivr_bridge::relay::resume::{
    GIVE_UP_APOLOGY, MAX_RESUMPTIONS, RESUME_AFTER_FAILURE, RESUME_AFTER_MOVE,
};
use ivr_sim::relay::{CallerStep, RelayFake};
use ivr_sim::standin::faq;
use ivr_sim::webhooks::TwilioHttp;
use support::nginx::Nginx;
use support::redis_server::RedisServer;
use support::{Instruction, TestEnv};

const HOURS_Q: &str = "What are your opening hours?";
const WEEKEND_Q: &str = "Are you open on weekends?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_session_goes_on_in_a_new_one_with_the_history() {
    let env = relay_env(|_| {}).await;
    let script = [
        say(HOURS_Q),
        CallerStep::SessionFails,
        say(WEEKEND_Q),
        CallerStep::HangUp,
    ];
    let call = call(&env, "CAresume0001", &script).await;

    // Two sessions of one call; the second opened with the resume line, which Twilio spoke.
    assert_eq!(call.session_ids.len(), 2, "{:?}", call.session_ids);
    assert_ne!(call.session_ids[0], call.session_ids[1]);
    assert_eq!(call.greetings[1], RESUME_AFTER_FAILURE);
    let resumed = call.afters[0].connect.as_ref().expect("a new <Connect>");
    assert!(
        resumed.attrs["action"].ends_with("/stream_ended"),
        "{resumed:?}"
    );
    let noun = resumed.children.first().expect("<ConversationRelay>");
    let mut attrs = noun.attrs.clone();
    attrs.insert(
        "welcomeGreeting".into(),
        call.relay["welcomeGreeting"].clone(),
    );
    assert_eq!(
        attrs, call.relay,
        "the webhook's attributes but for the welcome line"
    );
    assert_eq!(call.replies, [faq::HOURS, faq::WEEKEND]);

    // The second session's question was asked with the first session's exchange.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        conversation(&requests[1]),
        [
            pair("user", HOURS_Q),
            pair("assistant", faq::HOURS),
            pair("user", WEEKEND_Q),
        ]
    );
    // The caller hung up in the second session: that one just hangs up.
    let after = call
        .after
        .expect("the <Connect action> after the last session");
    assert_eq!(after.instructions, [Instruction::Hangup]);
    let metrics = metrics(&env).await;
    assert!(
        metrics.contains("ivr_bridge_relay_resumptions_total{cause=\"failed\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_resumed_too_often_ends_with_an_apology() {
    let env = relay_env(|_| {}).await;
    let mut script = vec![say(HOURS_Q)];
    script.extend((0..=MAX_RESUMPTIONS).map(|_| CallerStep::SessionFails));
    let call = call(&env, "CAresume0002", &script).await;

    let sessions = 1 + MAX_RESUMPTIONS as usize;
    assert_eq!(call.session_ids.len(), sessions, "{:?}", call.session_ids);
    assert!(call.greetings[1..]
        .iter()
        .all(|g| g == RESUME_AFTER_FAILURE));
    let after = call
        .after
        .expect("the <Connect action> after the last session");
    assert_eq!(
        after.instructions,
        [
            Instruction::Say(GIVE_UP_APOLOGY.into()),
            Instruction::Hangup
        ]
    );
    let metrics = metrics(&env).await;
    let resumed =
        format!("ivr_bridge_relay_resumptions_total{{cause=\"failed\"}} {MAX_RESUMPTIONS}\n");
    assert!(metrics.contains(&resumed), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_is_not_called_back_into_a_session() {
    let env = relay_env(|_| {}).await;
    let call = call(&env, "CAresume0003", &[say(HOURS_Q), CallerStep::HangUp]).await;
    assert_eq!(call.session_ids.len(), 1);
    let after = call.after.expect("the <Connect action> was requested");
    assert_eq!(after.instructions, [Instruction::Hangup]);

    // Whatever the session's status, a call that is over just hangs up; a session that ended
    // some other way with nothing recorded hangs up too.
    let action = format!("{}/stream_ended", env.http_url());
    let twilio = env.twilio();
    for (session_status, call_status) in [
        ("failed", "completed"),
        ("completed", "completed"),
        ("completed", "in-progress"),
        ("ended", "in-progress"),
    ] {
        let mut params = TwilioHttp::standard_params("CAresume0003", call_status);
        params.push(("SessionId".into(), "VXresume0003".into()));
        params.push(("SessionStatus".into(), session_status.into()));
        let (status, body) = twilio.post(&action, &params).await.expect("posted");
        assert_eq!(status, 200);
        assert!(
            body.contains("<Hangup/>") && !body.contains("ConversationRelay"),
            "{session_status}/{call_status}: {body}"
        );
    }
    let metrics = metrics(&env).await;
    assert!(
        !metrics.contains("ivr_bridge_relay_resumptions_total{"),
        "{metrics}"
    );

    // A streaming call's stream is not resumed, whatever it sends.
    let streaming = TestEnv::start().await;
    let mut params = TwilioHttp::standard_params("CAresume0004", "in-progress");
    params.push(("SessionId".into(), "VXresume0004".into()));
    params.push(("SessionStatus".into(), "failed".into()));
    let url = format!("{}/stream_ended", streaming.http_url());
    let (_, body) = streaming
        .twilio()
        .post(&url, &params)
        .await
        .expect("posted");
    assert!(body.contains("<Hangup/>"), "{body}");
    assert_eq!(streaming.config.server.mode, Mode::Converse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_a_quiet_session_to_the_other_instance_with_its_history() {
    let redis = RedisServer::start().await;
    let shared = |config: &mut ivr_bridge::Config| {
        let built = ivr_bridge::Config::builder()
            .set("DEEPGRAM_API_KEY", "unused")
            .set("MISTRAL_API_KEY", "unused")
            .set("REDIS_URL", redis.url())
            .build()
            .expect("store settings");
        config.store = built.store;
        config.server.drain_timeout = Duration::from_secs(60);
    };
    let a = relay_env(shared).await;
    let b = relay_env(shared).await;
    let nginx = Nginx::start(&[a.server.port(), b.server.port()]).await;
    let fake = RelayFake {
        twilio: TwilioHttp::new(Some(AUTH_TOKEN)),
        webhook: format!("{}/", nginx.http_url()),
        options: twilio(&a).options,
    };
    // The caller is silent after the first answer (longer than the server's estimate of its
    // speaking time), then asks again: a quiet moment, then a turn of the next session.
    let script = [
        say(HOURS_Q),
        CallerStep::Silence(Duration::from_secs(8)),
        say(WEEKEND_Q),
        CallerStep::HangUp,
    ];
    let session = tokio::spawn(async move { fake.call("CAresume0006", &script).await });
    let answered = support::eventually(Duration::from_secs(20), || {
        let asked = a.llm.requests().len() + b.llm.requests().len();
        asked == 1 && a.state.live_calls() + b.state.live_calls() == 1
    })
    .await;
    assert!(
        answered,
        "the first session is on; nginx:\n{}",
        nginx.error_log()
    );
    let (from, to) = match a.state.live_calls() {
        1 => (a, b),
        _ => (b, a),
    };
    assert_eq!(from.llm.requests().len(), 1);
    let from_state = from.state.clone();
    // The drain ends long before its 60 s timeout: the session moved at its quiet moment.
    let stopped = from.shutdown(Duration::from_secs(30)).await;
    assert!(stopped, "the drained instance held its session");
    let call = session.await.expect("the session task");
    let call = call.unwrap_or_else(|e| panic!("{e}; nginx:\n{}", nginx.access_log()));
    assert!(call.refused.is_empty(), "{:?}", call.refused);

    assert_eq!(
        call.handoffs.first().map(String::as_str),
        Some(r#"{"reason":"moved"}"#)
    );
    assert_eq!(call.session_ids.len(), 2, "{:?}", call.session_ids);
    assert_eq!(call.greetings[1], RESUME_AFTER_MOVE);
    assert_eq!(call.replies, [faq::HOURS, faq::WEEKEND]);
    // The other instance answered the second session, with the history the first one wrote.
    let requests = to.llm.requests();
    assert_eq!(
        requests.len(),
        1,
        "the second question went to the other instance"
    );
    assert_eq!(
        conversation(&requests[0]),
        [
            pair("user", HOURS_Q),
            pair("assistant", faq::HOURS),
            pair("user", WEEKEND_Q),
        ],
        "the other instance went on with the conversation the drained one began"
    );
    let after = call
        .after
        .expect("the <Connect action> after the last session");
    assert_eq!(after.instructions, [Instruction::Hangup]);
    let from_metrics = from_state.metrics.render();
    assert!(
        from_metrics.contains("ivr_bridge_calls_total{outcome=\"moved\"} 1\n"),
        "{from_metrics}"
    );
    let moved = "ivr_bridge_relay_resumptions_total{cause=\"moved\"} 1\n";
    let to_metrics = metrics(&to).await;
    assert!(
        from_metrics.contains(moved) || to_metrics.contains(moved),
        "{from_metrics}\n{to_metrics}"
    );
}
