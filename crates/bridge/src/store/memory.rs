//! The in-memory conversation store: one process, nothing to install.
//!
//! Calls are spread over a few shards, each a plain `Mutex<HashMap>` locked only for the few
//! microseconds an operation takes and never across an `.await` (no operation awaits). Expired
//! calls are dropped when touched, and every write sweeps all shards once the sweep interval has
//! passed, so calls whose status callback never came are freed; the number of calls is capped too.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{CallSid, Exchange, NextStep, ReplyId, ReplyState, StoreOptions};

/// Independent locks; calls on different shards never wait for each other.
const SHARDS: usize = 16;
/// Longest time between two sweeps, whatever the TTL.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The in-memory store. Cheap to clone; clones share the calls.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Bounds and time-to-live.
    options: StoreOptions,
    /// The calls, by hash of their `CallSid`.
    shards: Box<[Mutex<Shard>]>,
    /// Picks a call's shard.
    hasher: RandomState,
    /// When the next write sweeps out expired calls.
    next_sweep: Mutex<Instant>,
}

#[derive(Default)]
struct Shard {
    calls: HashMap<CallSid, Entry>,
}

/// One call's state.
struct Entry {
    /// Exchanges, oldest first, each with its stored size in bytes.
    exchanges: VecDeque<(Exchange, usize)>,
    /// Sum of the stored sizes.
    bytes: usize,
    /// The reply being written, if any.
    pending: Option<Pending>,
    /// What Twilio does after the stream, and when that lapses.
    next_step: Option<(NextStep, Instant)>,
    /// Relay sessions resumed so far, and when the count lapses.
    resumptions: Option<(u32, Instant)>,
    /// When the call is forgotten unless written again.
    expires_at: Instant,
}

/// A pending-reply mark.
struct Pending {
    /// Which request to the model it waits for.
    id: ReplyId,
    /// That request failed.
    failed: bool,
    /// When the mark lapses by itself.
    expires_at: Instant,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store with these bounds.
    pub fn new(options: StoreOptions) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::default()).collect();
        Self {
            inner: Arc::new(Inner {
                options,
                shards,
                hasher: RandomState::new(),
                next_sweep: Mutex::new(Instant::now() + sweep_interval(&options)),
            }),
        }
    }

    /// Calls held right now, expired or not (expired ones go at the next sweep).
    pub fn calls(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).calls.len()).sum()
    }

    /// See [`super::Store::history`].
    pub fn history(&self, call: &CallSid) -> Vec<Exchange> {
        self.read(call, |entry, _| {
            entry.exchanges.iter().map(|(e, _)| e.clone()).collect()
        })
        .unwrap_or_default()
    }

    /// See [`super::Store::append`].
    pub fn append(&self, call: &CallSid, exchange: &Exchange) {
        self.write(call, |entry, options, _| entry.push(exchange, options));
    }

    /// See [`super::Store::begin_reply`].
    pub fn begin_reply(&self, call: &CallSid, id: &ReplyId) -> Vec<Exchange> {
        self.write(call, |entry, options, now| {
            entry.pending = Some(Pending {
                id: id.clone(),
                failed: false,
                expires_at: now + options.pending_ttl,
            });
            entry.exchanges.iter().map(|(e, _)| e.clone()).collect()
        })
    }

    /// See [`super::Store::finish_reply`].
    pub fn finish_reply(&self, call: &CallSid, id: &ReplyId, exchange: &Exchange) -> bool {
        let now = Instant::now();
        let options = &self.inner.options;
        let done = {
            let mut shard = self.shard(call);
            match shard.live_entry(call, now) {
                Some(entry) if entry.waiting_for(id, now) => {
                    entry.pending = None;
                    entry.push(exchange, options);
                    entry.expires_at = now + options.history_ttl;
                    true
                }
                _ => false,
            }
        };
        self.maybe_sweep(now);
        done
    }

    /// See [`super::Store::fail_reply`].
    pub fn fail_reply(&self, call: &CallSid, id: &ReplyId) {
        let now = Instant::now();
        let mut shard = self.shard(call);
        if let Some(entry) = shard.live_entry(call, now) {
            if let Some(pending) = entry.pending.as_mut().filter(|p| &p.id == id) {
                pending.failed = true;
            }
        }
    }

    /// See [`super::Store::reply_state`].
    pub fn reply_state(&self, call: &CallSid) -> ReplyState {
        self.read(call, |entry, now| match &entry.pending {
            Some(p) if p.expires_at > now && p.failed => ReplyState::Failed,
            Some(p) if p.expires_at > now => ReplyState::Pending,
            _ => ReplyState::Latest(entry.exchanges.back().map(|(e, _)| e.assistant.clone())),
        })
        .unwrap_or(ReplyState::Latest(None))
    }

    /// See [`super::Store::set_next_step`].
    pub fn set_next_step(&self, call: &CallSid, step: &NextStep) {
        self.write(call, |entry, options, now| {
            entry.next_step = Some((step.clone(), now + options.next_step_ttl));
        });
    }

    /// See [`super::Store::take_next_step`].
    pub fn take_next_step(&self, call: &CallSid) -> Option<NextStep> {
        let now = Instant::now();
        let mut shard = self.shard(call);
        let entry = shard.live_entry(call, now)?;
        let (step, expires_at) = entry.next_step.take()?;
        (expires_at > now).then_some(step)
    }

    /// See [`super::Store::count_resumption`].
    pub fn count_resumption(&self, call: &CallSid) -> u32 {
        self.write(call, |entry, options, now| {
            let before = match entry.resumptions {
                Some((count, lapses)) if lapses > now => count,
                _ => 0,
            };
            let count = before.saturating_add(1);
            entry.resumptions = Some((count, now + options.next_step_ttl));
            count
        })
    }

    /// See [`super::Store::delete`].
    pub fn delete(&self, call: &CallSid) {
        self.shard(call).calls.remove(call);
    }

    fn shard(&self, call: &CallSid) -> MutexGuard<'_, Shard> {
        let index = self.inner.hasher.hash_one(call) as usize % SHARDS;
        lock(&self.inner.shards[index])
    }

    /// Runs `f` on the call's live entry, if it has one.
    fn read<T>(&self, call: &CallSid, f: impl FnOnce(&Entry, Instant) -> T) -> Option<T> {
        let now = Instant::now();
        let mut shard = self.shard(call);
        shard.live_entry(call, now).map(|entry| f(entry, now))
    }

    /// Runs `f` on the call's entry (created if needed) and refreshes its time-to-live.
    fn write<T>(
        &self,
        call: &CallSid,
        f: impl FnOnce(&mut Entry, &StoreOptions, Instant) -> T,
    ) -> T {
        let now = Instant::now();
        let options = &self.inner.options;
        let out = {
            let mut shard = self.shard(call);
            let per_shard = options.max_calls.div_ceil(SHARDS).max(1);
            let entry = shard.entry_for_write(call, now, per_shard);
            let out = f(entry, options, now);
            entry.expires_at = now + options.history_ttl;
            out
        };
        self.maybe_sweep(now);
        out
    }

    /// Drops every expired call if the sweep interval has passed. One sweeper at a time; the
    /// shards are locked one after another, never two at once.
    fn maybe_sweep(&self, now: Instant) {
        {
            let Ok(mut next) = self.inner.next_sweep.try_lock() else {
                return;
            };
            if now < *next {
                return;
            }
            *next = now + sweep_interval(&self.inner.options);
        }
        for shard in self.inner.shards.iter() {
            lock(shard).calls.retain(|_, entry| entry.expires_at > now);
        }
    }
}

impl Shard {
    /// The call's entry if it has not expired; an expired one is dropped.
    fn live_entry(&mut self, call: &CallSid, now: Instant) -> Option<&mut Entry> {
        if self.calls.get(call).is_some_and(|e| e.expires_at <= now) {
            self.calls.remove(call);
        }
        self.calls.get_mut(call)
    }

    /// The call's live entry, or a new one; a full shard first loses the call closest to expiry.
    fn entry_for_write(&mut self, call: &CallSid, now: Instant, max_calls: usize) -> &mut Entry {
        if self.live_entry(call, now).is_none() && self.calls.len() >= max_calls {
            self.calls.retain(|_, entry| entry.expires_at > now);
            if self.calls.len() >= max_calls {
                let oldest = self
                    .calls
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires_at)
                    .map(|(sid, _)| sid.clone());
                if let Some(oldest) = oldest {
                    self.calls.remove(&oldest);
                }
            }
        }
        self.calls.entry(call.clone()).or_insert_with(|| Entry {
            exchanges: VecDeque::new(),
            bytes: 0,
            pending: None,
            next_step: None,
            resumptions: None,
            expires_at: now,
        })
    }
}

impl Entry {
    /// Appends an exchange and drops the oldest until the bounds hold (keeping the newest).
    fn push(&mut self, exchange: &Exchange, options: &StoreOptions) {
        let size = exchange.encode().len();
        self.exchanges.push_back((exchange.clone(), size));
        self.bytes += size;
        while self.exchanges.len() > 1
            && (self.exchanges.len() > options.max_exchanges || self.bytes > options.max_bytes)
        {
            if let Some((_, dropped)) = self.exchanges.pop_front() {
                self.bytes -= dropped;
            }
        }
    }

    /// Whether reply `id` is this call's live, unfailed pending reply.
    fn waiting_for(&self, id: &ReplyId, now: Instant) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| &p.id == id && !p.failed && p.expires_at > now)
    }
}

/// A quarter of the TTL, so an abandoned call outlives its TTL by at most that much.
fn sweep_interval(options: &StoreOptions) -> Duration {
    (options.history_ttl / 4).min(MAX_SWEEP_INTERVAL)
}

/// Locks a shard. A panic while holding it cannot leave a shard half-written (every update is a
/// single map or deque operation), so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: usize) -> CallSid {
        CallSid::parse(&format!("CA{n}")).unwrap()
    }

    #[test]
    fn a_full_store_drops_the_call_closest_to_expiry() {
        let store = MemoryStore::new(StoreOptions {
            max_calls: 1,
            ..StoreOptions::default()
        });
        // One call per shard at most: fill far past the cap and check it holds.
        for n in 0..200 {
            store.append(&sid(n), &Exchange::new("q", "a"));
        }
        assert!(store.calls() <= SHARDS, "{}", store.calls());
        assert_eq!(store.history(&sid(199)).len(), 1);
    }

    #[test]
    fn max_exchanges_of_zero_still_keeps_the_newest() {
        let store = MemoryStore::new(StoreOptions {
            max_exchanges: 0,
            ..StoreOptions::default()
        });
        store.append(&sid(1), &Exchange::new("q1", "a1"));
        store.append(&sid(1), &Exchange::new("q2", "a2"));
        assert_eq!(store.history(&sid(1)), [Exchange::new("q2", "a2")]);
    }
}
