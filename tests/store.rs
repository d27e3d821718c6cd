//! The conversation store's contract, run against both backends: the in-memory store and a real
//! `redis-server` started for each test on a free loopback port.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use ivr_bridge::store::{CallSid, Exchange, NextStep, ReplyId, ReplyState, Store, StoreOptions};
use ivr_bridge::twilio::next_step::Target;
use support::redis_server::RedisServer;
use tokio::time::{sleep, Instant};

/// Which store a suite test runs against.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

/// A store under test and the Redis server behind it, kept alive as long as the store.
struct Subject {
    store: Store,
    redis: Option<RedisServer>,
}

impl Backend {
    async fn open(self, options: StoreOptions) -> Subject {
        match self {
            Backend::Memory => Subject {
                store: Store::memory(options),
                redis: None,
            },
            Backend::Redis => {
                let redis = RedisServer::start().await;
                let store = Store::redis(&redis.url(), options).expect("a Redis store");
                Subject {
                    store,
                    redis: Some(redis),
                }
            }
        }
    }
}

impl Subject {
    /// Calls the backend holds, expired ones excluded once the backend has freed them.
    async fn calls_held(&self) -> usize {
        match (&self.store, &self.redis) {
            (Store::Memory(memory), _) => memory.calls(),
            (Store::Redis(_), Some(redis)) => {
                let mut con = redis.connection().await;
                let keys: Vec<String> = ::redis::cmd("KEYS")
                    .arg("ivr-bridge:call:*")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                let calls: BTreeSet<String> = keys
                    .iter()
                    .filter_map(|k| k.split(['{', '}']).nth(1).map(str::to_owned))
                    .collect();
                calls.len()
            }
            (Store::Redis(_), None) => unreachable!("a Redis store always has its server"),
        }
    }
}

fn sid(name: &str) -> CallSid {
    CallSid::parse(name).expect("test CallSid")
}

fn exchange(n: usize) -> Exchange {
    Exchange::new(format!("question {n}"), format!("answer {n}"))
}

/// Runs each listed `async fn(Backend)` as one test per backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Redis).await })*
        }
    };
}

suite!(
    histories_are_per_call,
    history_is_bounded_in_exchanges,
    history_is_bounded_in_bytes_keeping_the_newest,
    delete_frees_the_call,
    ttl_frees_an_abandoned_call,
    every_write_refreshes_the_ttl,
    a_pending_reply_becomes_the_latest_when_finished,
    a_failed_reply_is_reported_and_never_stored,
    a_superseded_or_deleted_reply_is_not_stored,
    a_pending_mark_lapses_by_itself,
    concurrent_appends_are_all_kept,
    a_next_step_is_taken_once,
    a_next_step_lapses_and_is_freed_with_the_call,
    resumptions_are_counted_per_call_lapse_and_are_freed,
);

async fn histories_are_per_call(backend: Backend) {
    let s = backend.open(StoreOptions::default()).await;
    let (a, b) = (sid("CAaaa"), sid("CAbbb"));
    assert!(s.store.history(&a).await.unwrap().is_empty());
    assert_eq!(
        s.store.reply_state(&a).await.unwrap(),
        ReplyState::Latest(None)
    );
    s.store.append(&a, &exchange(1)).await.unwrap();
    s.store.append(&a, &exchange(2)).await.unwrap();
    s.store.append(&b, &exchange(9)).await.unwrap();
    assert_eq!(
        s.store.history(&a).await.unwrap(),
        [exchange(1), exchange(2)]
    );
    assert_eq!(s.store.history(&b).await.unwrap(), [exchange(9)]);
    assert_eq!(
        s.store.reply_state(&a).await.unwrap(),
        ReplyState::Latest(Some("answer 2".into()))
    );
}

async fn history_is_bounded_in_exchanges(backend: Backend) {
    let s = backend
        .open(StoreOptions {
            max_exchanges: 3,
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA1");
    for n in 1..=5 {
        s.store.append(&call, &exchange(n)).await.unwrap();
    }
    assert_eq!(
        s.store.history(&call).await.unwrap(),
        [exchange(3), exchange(4), exchange(5)]
    );
}

async fn history_is_bounded_in_bytes_keeping_the_newest(backend: Backend) {
    let big = |n: usize| Exchange::new(format!("q{n}"), "x".repeat(200));
    let size = big(1).encode().len();
    let s = backend
        .open(StoreOptions {
            max_bytes: size * 2 + size / 2,
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA1");
    for n in 1..=4 {
        s.store.append(&call, &big(n)).await.unwrap();
    }
    assert_eq!(s.store.history(&call).await.unwrap(), [big(3), big(4)]);
    let huge = Exchange::new("q", "y".repeat(size * 3));
    s.store.append(&call, &huge).await.unwrap();
    assert_eq!(s.store.history(&call).await.unwrap(), [huge]);
}

async fn delete_frees_the_call(backend: Backend) {
    let s = backend.open(StoreOptions::default()).await;
    let (call, other) = (sid("CA1"), sid("CA2"));
    s.store.append(&call, &exchange(1)).await.unwrap();
    s.store.begin_reply(&call, &ReplyId::new()).await.unwrap();
    s.store.append(&other, &exchange(2)).await.unwrap();
    s.store.delete(&call).await.unwrap();
    assert!(s.store.history(&call).await.unwrap().is_empty());
    assert_eq!(
        s.store.reply_state(&call).await.unwrap(),
        ReplyState::Latest(None)
    );
    assert_eq!(s.calls_held().await, 1);
    s.store.delete(&call).await.unwrap();
}

async fn ttl_frees_an_abandoned_call(backend: Backend) {
    let ttl = Duration::from_millis(200);
    let s = backend
        .open(StoreOptions {
            history_ttl: ttl,
            ..StoreOptions::default()
        })
        .await;
    let abandoned = sid("CAabandoned");
    s.store.append(&abandoned, &exchange(1)).await.unwrap();
    assert_eq!(s.calls_held().await, 1);
    sleep(ttl * 2).await;
    // Another call's write: the memory store sweeps then; Redis expires keys by itself.
    s.store.append(&sid("CAlive"), &exchange(2)).await.unwrap();
    assert!(s.store.history(&abandoned).await.unwrap().is_empty());
    assert_eq!(s.calls_held().await, 1, "the abandoned call is freed");
}

async fn every_write_refreshes_the_ttl(backend: Backend) {
    let ttl = Duration::from_millis(1000);
    let s = backend
        .open(StoreOptions {
            history_ttl: ttl,
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA1");
    s.store.append(&call, &exchange(1)).await.unwrap();
    sleep(ttl * 2 / 3).await;
    s.store.append(&call, &exchange(2)).await.unwrap();
    sleep(ttl * 2 / 3).await;
    assert_eq!(
        s.store.history(&call).await.unwrap(),
        [exchange(1), exchange(2)],
        "the second write kept the first exchange alive"
    );
}

async fn a_pending_reply_becomes_the_latest_when_finished(backend: Backend) {
    let s = backend.open(StoreOptions::default()).await;
    let call = sid("CA1");
    s.store.append(&call, &exchange(1)).await.unwrap();
    let id = ReplyId::new();
    assert_eq!(
        s.store.begin_reply(&call, &id).await.unwrap(),
        [exchange(1)]
    );
    assert_eq!(
        s.store.reply_state(&call).await.unwrap(),
        ReplyState::Pending
    );
    assert!(s
        .store
        .finish_reply(&call, &id, &exchange(2))
        .await
        .unwrap());
    assert_eq!(
        s.store.reply_state(&call).await.unwrap(),
        ReplyState::Latest(Some("answer 2".into()))
    );
    assert_eq!(
        s.store.history(&call).await.unwrap(),
        [exchange(1), exchange(2)]
    );
}

async fn a_failed_reply_is_reported_and_never_stored(backend: Backend) {
    let s = backend.open(StoreOptions::default()).await;
    let call = sid("CA1");
    let id = ReplyId::new();
    s.store.begin_reply(&call, &id).await.unwrap();
    s.store.fail_reply(&call, &ReplyId::new()).await.unwrap();
    assert_eq!(
        s.store.reply_state(&call).await.unwrap(),
        ReplyState::Pending,
        "another reply's failure changes nothing"
    );
    s.store.fail_reply(&call, &id).await.unwrap();
    assert_eq!(
        s.store.reply_state(&call).await.unwrap(),
        ReplyState::Failed
    );
    assert!(!s
        .store
        .finish_reply(&call, &id, &exchange(1))
        .await
        .unwrap());
    assert!(s.store.history(&call).await.unwrap().is_empty());
}

async fn a_superseded_or_deleted_reply_is_not_stored(backend: Backend) {
    let s = backend.open(StoreOptions::default()).await;
    let call = sid("CA1");
    let (old, new) = (ReplyId::new(), ReplyId::new());
    s.store.begin_reply(&call, &old).await.unwrap();
    s.store.begin_reply(&call, &new).await.unwrap();
    assert!(!s
        .store
        .finish_reply(&call, &old, &exchange(1))
        .await
        .unwrap());
    assert_eq!(
        s.store.reply_state(&call).await.unwrap(),
        ReplyState::Pending
    );
    assert!(s
        .store
        .finish_reply(&call, &new, &exchange(2))
        .await
        .unwrap());
    assert_eq!(s.store.history(&call).await.unwrap(), [exchange(2)]);

    let late = ReplyId::new();
    s.store.begin_reply(&call, &late).await.unwrap();
    s.store.delete(&call).await.unwrap();
    assert!(!s
        .store
        .finish_reply(&call, &late, &exchange(3))
        .await
        .unwrap());
    assert_eq!(s.calls_held().await, 0, "an ended call is not brought back");
}

async fn a_pending_mark_lapses_by_itself(backend: Backend) {
    let pending_ttl = Duration::from_millis(150);
    let s = backend
        .open(StoreOptions {
            pending_ttl,
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA1");
    s.store.append(&call, &exchange(1)).await.unwrap();
    s.store.begin_reply(&call, &ReplyId::new()).await.unwrap();
    sleep(pending_ttl * 2).await;
    assert_eq!(
        s.store.reply_state(&call).await.unwrap(),
        ReplyState::Latest(Some("answer 1".into()))
    );
}

async fn concurrent_appends_are_all_kept(backend: Backend) {
    let s = backend.open(StoreOptions::default()).await;
    let call = sid("CA1");
    let writers = (0..16).map(|n| {
        let (store, call) = (s.store.clone(), call.clone());
        tokio::spawn(async move { store.append(&call, &exchange(n)).await })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap().unwrap();
    }
    let mut got: Vec<String> = s
        .store
        .history(&call)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.user.replace("question", "answer"), e.assistant);
            e.user
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..16).map(|n| exchange(n).user).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn redis_keys_are_namespaced_by_call_and_expire() {
    let ttl = Duration::from_secs(30);
    let s = Backend::Redis
        .open(StoreOptions {
            history_ttl: ttl,
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA0123456789abcdef0123456789abcdef");
    s.store.append(&call, &exchange(1)).await.unwrap();
    s.store.begin_reply(&call, &ReplyId::new()).await.unwrap();
    let mut con = s.redis.as_ref().unwrap().connection().await;
    for (key, most) in [
        (
            "ivr-bridge:call:{CA0123456789abcdef0123456789abcdef}:history",
            ttl,
        ),
        (
            "ivr-bridge:call:{CA0123456789abcdef0123456789abcdef}:pending",
            StoreOptions::default().pending_ttl,
        ),
    ] {
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(
            pttl > 0 && pttl <= most.as_millis() as i64,
            "{key}: PTTL {pttl}"
        );
    }
}

#[tokio::test]
async fn redis_outage_fails_within_our_deadline_then_recovers() {
    let op_timeout = Duration::from_millis(300);
    let mut s = Backend::Redis
        .open(StoreOptions {
            op_timeout,
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA1");
    s.store.append(&call, &exchange(1)).await.unwrap();
    s.redis.as_mut().unwrap().stop();

    let started = Instant::now();
    let err = s.store.history(&call).await.unwrap_err();
    assert!(
        started.elapsed() < op_timeout + Duration::from_millis(500),
        "took {:?}: {err}",
        started.elapsed()
    );

    s.redis.as_mut().unwrap().restart().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.store.append(&call, &exchange(2)).await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                eprintln!("not reconnected yet: {err}");
                sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("the store never reconnected: {err}"),
        }
    }
    assert_eq!(
        s.store.history(&call).await.unwrap(),
        [exchange(2)],
        "the restarted Redis is empty"
    );
}

#[tokio::test]
async fn a_redis_that_hangs_is_cut_off_by_our_deadline() {
    let op_timeout = Duration::from_millis(300);
    let s = Backend::Redis
        .open(StoreOptions {
            op_timeout,
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA1");
    s.store.append(&call, &exchange(1)).await.unwrap();
    let redis = s.redis.as_ref().unwrap();
    redis.pause();

    let started = Instant::now();
    let err = s.store.history(&call).await.unwrap_err();
    let took = started.elapsed();
    redis.resume();
    assert!(
        matches!(err, ivr_bridge::store::StoreError::Timeout(t) if t == op_timeout),
        "{err}"
    );
    assert!(
        took < op_timeout + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(s.store.history(&call).await.unwrap(), [exchange(1)]);
}

#[tokio::test]
async fn a_slow_redis_is_waited_for_up_to_our_deadline_not_the_clients_default() {
    // The redis crate's ConnectionManager gives up on a response after 0.5 s by default; our
    // own deadline is what must count.
    let s = Backend::Redis
        .open(StoreOptions {
            op_timeout: Duration::from_millis(3000),
            ..StoreOptions::default()
        })
        .await;
    let call = sid("CA1");
    s.store.append(&call, &exchange(1)).await.unwrap();
    let redis = s.redis.as_ref().unwrap();
    redis.pause();
    let read = tokio::spawn({
        let store = s.store.clone();
        let call = call.clone();
        async move { store.history(&call).await }
    });
    sleep(Duration::from_millis(1200)).await;
    redis.resume();
    assert_eq!(read.await.unwrap().unwrap(), [exchange(1)]);
}

fn transfer_step() -> NextStep {
    NextStep::Transfer {
        to: Target::parse("sip:desk@pbx.example.com").unwrap(),
        caller_id: None,
        apology: "Sorry \"nobody\" & goodbye.".into(),
    }
}

async fn a_next_step_is_taken_once(backend: Backend) {
    let s = backend.open(StoreOptions::default()).await;
    let (a, b) = (sid("CAaaa"), sid("CAbbb"));
    assert_eq!(s.store.take_next_step(&a).await.unwrap(), None);
    s.store.set_next_step(&a, &NextStep::Hangup).await.unwrap();
    // A later step replaces the earlier one; calls do not see each other's.
    s.store.set_next_step(&a, &transfer_step()).await.unwrap();
    s.store.set_next_step(&b, &NextStep::Hangup).await.unwrap();
    assert_eq!(
        s.store.take_next_step(&a).await.unwrap(),
        Some(transfer_step())
    );
    assert_eq!(s.store.take_next_step(&a).await.unwrap(), None);
    assert_eq!(
        s.store.take_next_step(&b).await.unwrap(),
        Some(NextStep::Hangup)
    );
}

async fn a_next_step_lapses_and_is_freed_with_the_call(backend: Backend) {
    let s = backend
        .open(StoreOptions {
            next_step_ttl: Duration::from_millis(200),
            ..StoreOptions::default()
        })
        .await;
    let (a, b) = (sid("CAaaa"), sid("CAbbb"));
    s.store.set_next_step(&a, &transfer_step()).await.unwrap();
    s.store.append(&b, &exchange(1)).await.unwrap();
    s.store.set_next_step(&b, &NextStep::Hangup).await.unwrap();
    s.store.delete(&b).await.unwrap();
    assert_eq!(s.store.take_next_step(&b).await.unwrap(), None);
    sleep(Duration::from_millis(400)).await;
    assert_eq!(s.store.take_next_step(&a).await.unwrap(), None);
}

async fn resumptions_are_counted_per_call_lapse_and_are_freed(backend: Backend) {
    let s = backend
        .open(StoreOptions {
            next_step_ttl: Duration::from_millis(300),
            ..StoreOptions::default()
        })
        .await;
    let (a, b) = (sid("CAaaa"), sid("CAbbb"));
    assert_eq!(s.store.count_resumption(&a).await.unwrap(), 1);
    assert_eq!(s.store.count_resumption(&a).await.unwrap(), 2);
    assert_eq!(s.store.count_resumption(&b).await.unwrap(), 1);
    s.store.delete(&b).await.unwrap();
    assert_eq!(s.store.count_resumption(&b).await.unwrap(), 1, "freed");
    sleep(Duration::from_millis(600)).await;
    assert_eq!(s.store.count_resumption(&a).await.unwrap(), 1, "lapsed");
}
