//! A deployment past one machine, end to end: a real nginx running the shipped
//! `deploy/nginx/ivr-bridge.conf` in front of three `ivr-bridge` processes sharing one real
//! `redis-server`, with the providers' fakes.
//!
//! One rolling-restart story: 30 streaming calls go through nginx; one instance gets SIGTERM
//! while its calls are mid-conversation; every call still hears its answer, the drained instance
//! exits 0 after its last call, and new calls land on the others. Meanwhile a Gather
//! conversation hops between instances (the drained one included) and keeps its whole history,
//! including a slow answer started on one instance and spoken by another after a wait longer
//! than the Redis client's own timeouts. Then Redis stops: streaming calls go on, Gather turns
//! get an apology and a new Gather; Redis comes back and so does the normal flow.

use crate::support;

use std::time::Duration;

use ivr_bridge::gather::for_say;
use ivr_bridge::store::Exchange;
use ivr_sim::standin::faq::{self, ADDRESS, HOURS, VISITING};
use support::expect::{heard, reply_phrases};
use support::gather_phone::{answer, Phone};
use support::instance::Instance;
use support::nginx::Nginx;
use support::redis_server::RedisServer;
use support::{spoken, Fixture, LlmStandIn, Recording};
use tokio::time::Instant;

/// Streaming calls started before the SIGTERM.
const CALLS: usize = 30;
/// Streaming calls started after it.
const LATE_CALLS: usize = 3;
/// The Gather question the model is slow to answer.
const SLOW_QUESTION: &str = "Where is the hospital?";
/// How slow: past `LLM_TIMEOUT_MS` by more than 5 s, so `/speak_response` on another instance
/// waits longer than any Redis client default would allow.
const SLOW_REPLY: Duration = Duration::from_millis(8_500);
/// Added to each call's closing silence: the recorded calls leave 6 s for the answer, which a
/// machine busy with other builds can take longer than to deliver.
const EXTRA_SILENCE: Duration = Duration::from_secs(6);
/// Between two call starts, so 30 greetings are not all synthesized in the same instant.
const STAGGER: Duration = Duration::from_millis(50);
/// Generous bound for anything that should happen soon on a loaded machine.
const SOON: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_nginx_survive_a_rolling_restart_and_a_redis_outage() {
    let started = Instant::now();
    let mut redis = RedisServer::start().await;
    let stt = support::start_stt().await;
    let tts = support::start_tts().await;
    let llm = support::start_llm().await;
    llm.slow_when_asked(SLOW_QUESTION, SLOW_REPLY);
    let settings = [
        ("REDIS_URL", redis.url()),
        ("SILENCE_TIMEOUT_MS", "800".to_owned()),
        ("LLM_TIMEOUT_MS", "2000".to_owned()),
        ("SPEAK_RESPONSE_WAIT_MS", "12000".to_owned()),
        ("DRAIN_TIMEOUT_S", "60".to_owned()),
    ];
    let binary = env!("CARGO_BIN_EXE_ivr-bridge");
    let fakes = (&stt, &tts, &llm);
    let (a, b, c) = tokio::join!(
        Instance::start(binary, fakes, &settings),
        Instance::start(binary, fakes, &settings),
        Instance::start(binary, fakes, &settings),
    );
    let mut a = a;
    let nginx = Nginx::start(&[a.port, b.port, c.port]).await;
    let front = nginx.http_url();

    // 30 calls through nginx, each with its own CallSid.
    let mut calls = Vec::new();
    for n in 0..CALLS {
        calls.push(tokio::spawn(streaming_call(front.clone(), n)));
        tokio::time::sleep(STAGGER).await;
    }
    let all_up = eventually_async(SOON, || async {
        let counts = [
            active_calls(&a.http_url()).await,
            active_calls(&b.http_url()).await,
            active_calls(&c.http_url()).await,
        ];
        counts.iter().sum::<u64>() == CALLS as u64 && counts[0] > 0
    })
    .await;
    assert!(
        all_up,
        "the calls did not all start, or none reached the first instance"
    );

    // A rolling restart takes the first instance out while its calls are mid-conversation.
    a.terminate();
    let refusing = eventually_async(SOON, || async {
        status(reqwest::Client::new().get(format!("{}/healthz", a.http_url()))).await == 503
    })
    .await;
    assert!(refusing, "the drained instance's /healthz did not turn 503");
    assert_eq!(
        status(
            reqwest::Client::new()
                .post(format!("{}/call", a.http_url()))
                .form(&[("CallSid", "CAnew")])
        )
        .await,
        503,
        "a new Gather call on the drained instance"
    );
    assert!(a.exited().is_none(), "exited with its calls in progress");

    // New calls through nginx reach the other instances: nginx's round robin offers one of
    // three in a row to the drained instance, whose 503 nginx retries on the next one (these
    // are POSTs: `non_idempotent`).
    for n in 0..3 {
        let greeting = Phone::at(&front, &format!("CAnewgather{n}"))
            .post("/call", &[])
            .await;
        assert!(!greeting.says().is_empty());
    }
    let retried = format!("POST /call HTTP/1.1 200 upstream=127.0.0.1:{}, ", a.port);
    assert!(
        nginx.access_log().contains(&retried),
        "nginx did not retry the drained instance's 503 elsewhere:\n{}",
        nginx.access_log()
    );
    // Streaming calls too.
    let late: Vec<_> = (CALLS..CALLS + LATE_CALLS)
        .map(|n| tokio::spawn(streaming_call(front.clone(), n)))
        .collect();
    // A Gather conversation hops between instances, the drained one included.
    let gather = gather_across(&a, &b, &c, &llm).await;

    let mut logs = Vec::new();
    for call in calls.into_iter().chain(late) {
        logs.push(call.await.expect("call task"));
    }
    for (sid, question, log) in &logs {
        assert_heard_its_answer(sid, question, log, &[&a, &b, &c]);
    }
    assert_eq!(
        a.exit_code(SOON).await,
        Some(0),
        "the drained instance did not exit 0 after its last call; its log:\n{}",
        a.log()
    );
    let a_log = a.log();
    assert!(
        logs[..CALLS]
            .iter()
            .any(|(sid, _, _)| a_log.contains(sid.as_str())),
        "the drained instance served none of the first calls"
    );
    for (sid, _, _) in &logs[CALLS..] {
        assert!(
            !a_log.contains(sid.as_str()),
            "{sid} reached the draining instance"
        );
        assert!(
            b.log().contains(sid.as_str()) || c.log().contains(sid.as_str()),
            "{sid} reached no instance; nginx:\n{}",
            nginx.access_log()
        );
    }
    gather.await.expect("the Gather conversation");

    // Each streaming call's conversation is in Redis, whichever instance served it (the drained
    // one included), and the status callback on any instance frees it.
    let mut redis_con = redis.connection().await;
    for (sid, question, _) in &logs {
        let stored: Vec<String> = ::redis::cmd("LRANGE")
            .arg(history_key(sid))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis_con)
            .await
            .unwrap();
        let stored: Vec<Exchange> = stored
            .iter()
            .map(|s| Exchange::decode(s).unwrap())
            .collect();
        let answer = heard(faq::answer(question));
        assert_eq!(
            stored,
            [Exchange::new(question.as_str(), answer)],
            "{sid}: {}",
            story(sid, &[&a, &b, &c])
        );
    }
    let (first, _, _) = &logs[0];
    let freed = Phone::at(&front, first)
        .post("/call_status", &[("CallStatus", "completed")])
        .await;
    assert_eq!(freed.status, 204);
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(history_key(first))
        .query_async(&mut redis_con)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the status callback did not free {first}");

    eprintln!("rolling restart checked after {:?}", started.elapsed());
    redis_outage(&mut redis, &front, &llm).await;
    let access = nginx.access_log();
    let failed: Vec<&str> = access
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(3)
                .is_some_and(|status| status.starts_with('5'))
        })
        .collect();
    assert!(failed.is_empty(), "nginx answered 5xx: {failed:?}");
    eprintln!("scale-out test took {:?}", started.elapsed());
}

/// One streaming call through `front`: the incoming-call webhook, then the Media Stream at the
/// URL its TwiML names. Returns the CallSid, the question asked and the replay's log.
async fn streaming_call(front: String, n: usize) -> (String, String, Recording) {
    let sid = format!("CAscale{n:02}");
    let page = answer(
        reqwest::Client::new()
            .post(format!("{front}/"))
            .form(&[("CallSid", sid.as_str())]),
    )
    .await
    .twiml();
    assert_eq!(page[0].name, "Connect", "{page:?}");
    let url = page[0].children[0].attr("url").to_owned();
    let public = front.replace("http://", "ws://");
    assert_eq!(
        url,
        format!("{public}/media"),
        "Host was not forwarded by nginx"
    );
    let mut fixture = longer(support::fixture::load(
        ["one_question", "visiting_hours"][n % 2],
    ));
    for line in &mut fixture.inbound {
        if line.msg["event"] == "start" {
            line.msg["start"]["callSid"] = sid.clone().into();
        }
    }
    let question = fixture.sidecar.utterances[0].text.clone();
    let log = support::replay(&url, &fixture).await;
    (sid, question, log)
}

/// The fixture with [`EXTRA_SILENCE`] more of its closing line noise before the hang-up, so an
/// answer slowed by a starved machine still fits in the call.
fn longer(mut fixture: Fixture) -> Fixture {
    let spoken_until = fixture
        .sidecar
        .utterances
        .iter()
        .map(|u| u.end_ms)
        .max()
        .unwrap_or(0);
    let stop = fixture
        .inbound
        .iter()
        .position(|l| l.msg["event"] == "stop")
        .expect("the fixture hangs up");
    let stop_at = fixture.inbound[stop].at_ms;
    let noise: Vec<_> = fixture.inbound[..stop]
        .iter()
        .filter(|l| l.msg["event"] == "media" && l.at_ms > spoken_until + 500)
        .cloned()
        .collect();
    let extra = EXTRA_SILENCE.as_millis() as u64;
    let mut more = Vec::new();
    for (i, at) in (stop_at..stop_at + extra).step_by(20).enumerate() {
        let mut line = noise[i % noise.len()].clone();
        line.at_ms = at;
        more.push(line);
    }
    fixture.inbound[stop].at_ms += extra;
    fixture.inbound.splice(stop..stop, more);
    fixture
}

/// A Gather call whose turns go to different instances: greeting on B, a question on C, one on
/// the draining A, and a slow one on A whose answer B's `/speak_response` waits for.
async fn gather_across(
    a: &Instance,
    b: &Instance,
    c: &Instance,
    llm: &LlmStandIn,
) -> tokio::task::JoinHandle<()> {
    let sid = "CAgatherscale";
    let (on_a, on_b, on_c) = (
        Phone::at(&a.http_url(), sid),
        Phone::at(&b.http_url(), sid),
        Phone::at(&c.http_url(), sid),
    );
    assert_eq!(
        on_b.post("/call", &[]).await.listening().1,
        format!("{}/process_speech", b.http_url())
    );
    assert_eq!(on_c.say("What are your opening hours?").await.says(), HOURS);
    assert_eq!(
        on_a.say("When are visiting hours?").await.says(),
        VISITING,
        "a follow-up webhook on the draining instance"
    );
    let holding = on_a.say(SLOW_QUESTION).await.twiml();
    assert_eq!(holding[1].name, "Redirect", "{holding:?}");
    assert_eq!(holding[1].text, format!("{}/speak_response", a.http_url()));
    let llm = llm.clone();
    tokio::spawn(async move {
        // Another instance follows the redirect and waits for the answer A's task writes.
        let asked = Instant::now();
        assert_eq!(
            on_b.post("/speak_response", &[]).await.says(),
            for_say(ADDRESS)
        );
        assert!(
            asked.elapsed() > Duration::from_secs(5),
            "the wait was {:?}: too short to show that a wait on Redis outlasts its client's timeouts",
            asked.elapsed()
        );
        let slow = llm
            .requests()
            .into_iter()
            .find(|r| {
                r.messages
                    .last()
                    .is_some_and(|(_, text)| text == SLOW_QUESTION)
            })
            .expect("the slow question reached the model");
        let said: Vec<&str> = slow.messages[1..].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            said,
            [
                "What are your opening hours?",
                HOURS,
                "When are visiting hours?",
                VISITING,
                SLOW_QUESTION
            ],
            "the history across instances"
        );
        assert_eq!(
            on_c.post("/call_status", &[("CallStatus", "completed")])
                .await
                .status,
            204
        );
    })
}

/// Redis stops mid-test: a streaming call is unaffected, Gather turns apologise with a new
/// Gather (never a 5xx); once Redis is back the client reconnects and turns are normal again.
async fn redis_outage(redis: &mut RedisServer, front: &str, llm: &LlmStandIn) {
    redis.stop();
    let call = tokio::spawn(streaming_call(front.to_owned(), 90));
    let phone = Phone::at(front, "CAoutage");
    assert!(!phone.post("/call", &[]).await.says().is_empty());
    let (sorry, action) = phone.say("What are your opening hours?").await.listening();
    assert!(sorry.contains("technical problem"), "{sorry}");
    assert_eq!(action, format!("{front}/process_speech"));
    let sorry = phone.post("/speak_response", &[]).await.says();
    assert!(sorry.contains("technical problem"), "{sorry}");
    let status = phone
        .post("/call_status", &[("CallStatus", "completed")])
        .await
        .status;
    assert_eq!(status, 204);
    let (sid, question, log) = call.await.expect("call during the outage");
    assert_heard_its_answer(&sid, &question, &log, &[]);

    redis.restart().await;
    let back = eventually_async(SOON, || async {
        phone.say("What are your opening hours?").await.says() == HOURS
    })
    .await;
    assert!(back, "still apologising after Redis came back");
    assert_eq!(phone.say("When are visiting hours?").await.says(), VISITING);
    let last = llm.requests().pop().expect("a model request");
    assert_eq!(
        last.messages[1].1, "What are your opening hours?",
        "history kept again"
    );
}

/// The call heard its whole answer, last, and Twilio's rules held. (On a loaded machine the
/// caller may start speaking before the greeting has finished playing, which cuts the
/// greeting short: a barge-in, as designed, so only the answer is checked whole.)
fn assert_heard_its_answer(sid: &str, question: &str, log: &Recording, instances: &[&Instance]) {
    let story = || story(sid, instances);
    assert!(
        log.violations.is_empty(),
        "{sid}: {:?}\n{}",
        log.violations,
        story()
    );
    let answer = spoken(&reply_phrases(faq::answer(question)));
    let got = log.media_bytes();
    assert!(
        got.ends_with(&answer),
        "{sid} did not hear its whole answer last ({} bytes heard, the answer is {}); \
         closed by the server: {:?}; its log lines:\n{}",
        got.len(),
        answer.len(),
        log.server_closed_at.map(|at| log.ms(at)),
        story()
    );
}

/// What the instances logged about call `sid`, for failure messages.
fn story(sid: &str, instances: &[&Instance]) -> String {
    let mut lines = Vec::new();
    for instance in instances {
        let log = instance.log();
        let port = instance.port;
        lines.extend(
            log.lines()
                .filter(|l| l.contains(sid))
                .map(|l| format!("[{port}] {l}")),
        );
    }
    lines.join("\n")
}

fn history_key(sid: &str) -> String {
    format!("ivr-bridge:call:{{{sid}}}:history")
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.map_or(0, |r| r.status().as_u16())
}

/// `ivr_bridge_active_calls` of the instance at `base`, 0 when unreachable.
async fn active_calls(base: &str) -> u64 {
    let Ok(response) = reqwest::get(format!("{base}/metrics")).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("ivr_bridge_active_calls "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls the async `condition` every 50 ms until it holds; `false` if `limit` passed first.
async fn eventually_async<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_shipped_nginx_config_is_only_rewritten_where_sites_differ() {
    let site = support::nginx::site_config(support::nginx::SHIPPED, 18080, &[9001, 9002]);
    assert!(site.contains("listen 127.0.0.1:18080;"));
    assert!(site.contains("server 127.0.0.1:9001 max_fails=1 fail_timeout=10s;"));
    assert!(!site.contains("10.0.0.11"));
    for kept in [
        "proxy_next_upstream error timeout http_503 non_idempotent;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Host $http_host;",
        "proxy_read_timeout 4h;",
    ] {
        assert!(site.contains(kept), "{kept}");
    }
}
