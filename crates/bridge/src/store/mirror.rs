//! A copy of a call's conversation in the store, written as the call goes: a streaming call's
//! (to Redis), so the call's record outlives the instance that served it and `/call_status` on
//! any instance can free it; a ConversationRelay session's, so a session of the same call on
//! another instance continues the conversation.
//!
//! A streaming call never reads it back: a Media Stream is one WebSocket, pinned to one instance
//! for the whole call, and its task owns the live history. The copy is written off the call's
//! path — exchanges go through a small queue to a task of their own — so a slow or absent Redis
//! never delays or ends a call; it only costs the copy (and a log line).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::Instrument;

use crate::queue;
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
    tx: queue::Sender<Exchange>,
    /// The task writing them.
    task: JoinHandle<()>,
    /// Exchanges of the call's history already queued (see [`Mirror::copy_new`]).
    copied: u64,
}

impl Mirror {
    /// Starts copying the exchanges of `call` into `store`.
    pub fn start(store: Store, call: CallSid) -> Self {
        let (tx, rx) = queue::bounded(QUEUE);
        let task = tokio::spawn(write_all(store, call, rx).in_current_span());
        Self {
            tx,
            task,
            copied: 0,
        }
    }

    /// Copies the exchanges of `history` added since last time (`remembered` counts every
    /// exchange ever added, trimmed or not).
    pub fn copy_new(&mut self, history: &[Exchange], remembered: u64) {
        if remembered == self.copied {
            return;
        }
        let new = usize::try_from(remembered.saturating_sub(self.copied)).unwrap_or(usize::MAX);
        self.copied = remembered;
        for exchange in &history[history.len().saturating_sub(new)..] {
            if self.tx.try_send(exchange.clone()).is_err() {
                tracing::warn!("conversation store is behind: an exchange was not copied to it");
            }
        }
    }

    /// Copies one exchange, after those queued before it.
    pub fn copy(&mut self, exchange: Exchange) {
        self.copied += 1;
        if self.tx.try_send(exchange).is_err() {
            tracing::warn!("conversation store is behind: an exchange was not copied to it");
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
async fn write_all(store: Store, call: CallSid, mut rx: queue::Receiver<Exchange>) {
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
            Exchange::new("q1", "a1"),
            Exchange::new("q2", "a2"),
            Exchange::new("q3", "a3"),
        ];
        let mut mirror = Mirror::start(store.clone(), call.clone());
        mirror.copy_new(&history[..1], 1);
        mirror.copy_new(&history[..1], 1);
        mirror.copy_new(&history, 3);
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
