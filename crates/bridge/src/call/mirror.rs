//! A copy of a streaming call's conversation in the shared store (Redis), so the call's record
//! outlives the instance that served it and `/call_status` on any instance can free it.
//!
//! The call itself never reads it back: a Media Stream is one WebSocket, pinned to one instance
//! for the whole call, and its task owns the live history. The copy is written off the call's
//! path — exchanges go through a small queue to a task of their own — so a slow or absent Redis
//! never delays or ends a call; it only costs the copy (and a log line).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::Instrument;

use crate::llm::{ChatMessage, Role};
use crate::store::{CallSid, Exchange, Store, StoreError};

/// Exchanges waiting to be written; a call makes one every few seconds at most.
const QUEUE: usize = 8;
/// How long the end of a call waits for the last exchanges to be written (each store
/// operation has its own deadline too).
const FINISH_GRACE: Duration = Duration::from_secs(3);
/// Tries per exchange: nobody waits for the copy, so a slow first connection or a Redis
/// failover gets another chance.
const ATTEMPTS: u32 = 2;
/// Pause before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The writer of one call's copy.
#[derive(Debug)]
pub struct Mirror {
    /// Exchanges to write, in order.
    tx: mpsc::Sender<Exchange>,
    /// The task writing them.
    task: JoinHandle<()>,
    /// Exchanges of the call's history already queued (see [`Mirror::copy_new`]).
    copied: u64,
}

impl Mirror {
    /// Starts copying the exchanges of `call` into `store`.
    pub fn start(store: Store, call: CallSid) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_all(store, call, rx).in_current_span());
        Self {
            tx,
            task,
            copied: 0,
        }
    }

    /// Queues the exchanges added to `history` since last time, where `remembered` counts every
    /// exchange ever added to it (trimmed ones too, see `Turns::remembered`). One comparison
    /// when nothing is new, so it can run after every event.
    pub fn copy_new(&mut self, history: &[ChatMessage], remembered: u64) {
        if remembered == self.copied {
            return;
        }
        let new = usize::try_from(remembered.saturating_sub(self.copied)).unwrap_or(usize::MAX);
        self.copied = remembered;
        self.record_newest(history, new);
    }

    /// Queues `exchange` for the copy; never waits. A full queue (the store stalls) loses it.
    pub fn record(&self, exchange: Exchange) {
        if self.tx.try_send(exchange).is_err() {
            tracing::warn!("conversation store is behind: an exchange was not copied to it");
        }
    }

    /// Queues the newest `count` exchanges of `history` (user/assistant pairs, oldest first).
    pub fn record_newest(&self, history: &[ChatMessage], count: usize) {
        let from = history.len().saturating_sub(count * 2);
        for pair in history[from..].chunks_exact(2) {
            if let [user, assistant] = pair {
                if user.role == Role::User && assistant.role == Role::Assistant {
                    self.record(Exchange::new(
                        user.content.as_str(),
                        assistant.content.as_str(),
                    ));
                }
            }
        }
    }

    /// The call ended: writes what is queued, for a bounded time.
    pub async fn finish(self) {
        let Self { tx, task, .. } = self;
        drop(tx);
        if timeout(FINISH_GRACE, task).await.is_err() {
            tracing::warn!("the call's last exchanges could not be copied to the store in time");
        }
    }
}

/// Writes each exchange as it comes; a failure is logged once per call and the rest go on.
async fn write_all(store: Store, call: CallSid, mut rx: mpsc::Receiver<Exchange>) {
    let mut failures = 0u32;
    while let Some(exchange) = rx.recv().await {
        match append(&store, &call, &exchange).await {
            Ok(()) => tracing::debug!("exchange copied to the conversation store"),
            Err(err) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%err, "conversation store unavailable: the call goes on, its record there misses this exchange");
                } else {
                    tracing::debug!(%err, failures, "exchange not copied to the store");
                }
            }
        }
    }
}

/// One exchange, tried [`ATTEMPTS`] times.
async fn append(store: &Store, call: &CallSid, exchange: &Exchange) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match store.append(call, exchange).await {
            Err(err) if attempt < ATTEMPTS => {
                tracing::debug!(%err, attempt, "copying an exchange to the store failed; trying again");
                attempt += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[tokio::test]
    async fn the_newest_exchanges_are_copied_in_order() {
        let store = Store::memory(StoreOptions::default());
        let call = CallSid::parse("CA1").unwrap();
        let history = [
            ChatMessage::new(Role::User, "q1"),
            ChatMessage::new(Role::Assistant, "a1"),
            ChatMessage::new(Role::User, "q2"),
            ChatMessage::new(Role::Assistant, "a2"),
            ChatMessage::new(Role::User, "q3"),
            ChatMessage::new(Role::Assistant, "a3"),
        ];
        let mirror = Mirror::start(store.clone(), call.clone());
        mirror.record_newest(&history[..2], 1);
        mirror.record_newest(&history, 2);
        mirror.finish().await;
        assert_eq!(
            store.history(&call).await.unwrap(),
            [
                Exchange::new("q1", "a1"),
                Exchange::new("q2", "a2"),
                Exchange::new("q3", "a3")
            ]
        );
    }
}
