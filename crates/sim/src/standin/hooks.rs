//! Where the stand-ins' hooks keep their state. The record hook is a [`Journal`]: what a
//! stand-in received, kept for a test to read, off unless a stand-in is started with `record`
//! (the demo and the load generator never pay for it), and bounded: past [`JOURNAL_LIMIT`]
//! entries new ones are dropped and counted, so a runaway test cannot eat the machine's memory.
//! Delays a test may change while a stand-in runs are a [`Delay`]: one atomic read per use.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::wire::lock;

/// Entries a journal keeps; later ones are dropped (and counted in [`Journal::dropped`]).
pub const JOURNAL_LIMIT: usize = 100_000;

/// A bounded, append-only list of records that handlers may update in place.
#[derive(Debug)]
pub struct Journal<T> {
    /// The records, in order of arrival.
    entries: Mutex<Vec<T>>,
    /// Records not kept because the journal was full.
    dropped: AtomicUsize,
}

impl<T> Default for Journal<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            dropped: AtomicUsize::new(0),
        }
    }
}

impl<T: Clone> Journal<T> {
    /// Appends `entry`; returns its index, or `None` when the journal is full.
    pub fn push(&self, entry: T) -> Option<usize> {
        let mut entries = lock(&self.entries);
        if entries.len() >= JOURNAL_LIMIT {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        entries.push(entry);
        Some(entries.len() - 1)
    }

    /// Updates entry `index` in place.
    pub fn update(&self, index: usize, f: impl FnOnce(&mut T)) {
        if let Some(entry) = lock(&self.entries).get_mut(index) {
            f(entry);
        }
    }

    /// A copy of every entry, in order.
    pub fn snapshot(&self) -> Vec<T> {
        lock(&self.entries).clone()
    }

    /// How many entries were not kept because the journal was full.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A journal when `record` is on, none otherwise.
    pub fn when(record: bool) -> Option<Self> {
        record.then(Self::default)
    }

    /// A copy of `journal`'s entries (none when not recording).
    pub fn read(journal: &Option<Self>) -> Vec<T> {
        journal.as_ref().map(Self::snapshot).unwrap_or_default()
    }
}

/// Appends `entry` to a record's list unless it already holds [`JOURNAL_LIMIT`] entries: the
/// lists inside one record (an STT connection's messages) are bounded like the journals.
pub fn push_bounded<T>(list: &mut Vec<T>, entry: T) {
    if list.len() < JOURNAL_LIMIT {
        list.push(entry);
    }
}

/// A delay a test can change while the stand-in runs (a fault hook), read once per use.
#[derive(Debug)]
pub struct Delay(AtomicU64);

impl Delay {
    /// A delay of `d`.
    pub fn new(d: Duration) -> Self {
        Self(AtomicU64::new(micros(d)))
    }

    /// The delay now.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    /// Changes it.
    pub fn set(&self, d: Duration) {
        self.0.store(micros(d), Ordering::Relaxed);
    }
}

/// `d` in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
