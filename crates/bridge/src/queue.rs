//! A bounded first-in, first-out queue between the tasks of one call that holds only what is
//! in it.
//!
//! tokio's `mpsc` allocates its slots 32 at a time whatever the bound, and a queue that has
//! carried traffic keeps two such blocks for good: with five queues in every call, that was
//! the largest fixed part of an active call's memory (≈ 8 KB). Here the items live in a
//! `VecDeque` that grows with what is queued and gives its room back once it drains after
//! holding more than a few; the one receiver waits on an [`AtomicWaker`] (it is polled on every
//! turn of its task's loop, so registering must cost an atomic, not a lock), senders waiting
//! for room on a [`Notify`]. The contract is the part of `mpsc` the calls use: bounded,
//! [`Sender::send`] waits for room, [`Sender::reserve`] holds a slot, [`Receiver::recv`] is
//! cancel-safe, and each side sees the other's end.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::Notify;

/// Items a drained queue keeps room for; room beyond it is given back.
const KEPT_ROOM: usize = 4;

/// A queue of at most `bound` items (at least one).
pub fn bounded<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            reserved: 0,
            bound: bound.max(1),
            senders: 1,
            receiving: true,
        }),
        readable: AtomicWaker::new(),
        writable: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver: an item came, or the last sender went.
    readable: AtomicWaker,
    /// Wakes senders: room was made, or the receiver went.
    writable: Notify,
}

struct State<T> {
    items: VecDeque<T>,
    /// Slots held by [`Permit`]s.
    reserved: usize,
    bound: usize,
    senders: usize,
    /// The receiver is still there.
    receiving: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding it; were it poisoned, the queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the first item, giving back the room of a queue it drains.
    fn pop(&self) -> Result<T, TryRecvError> {
        let mut state = self.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > KEPT_ROOM {
                    state.items.shrink_to(KEPT_ROOM);
                }
                drop(state);
                self.writable.notify_one();
                Ok(item)
            }
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

/// The receiver is gone; the item comes back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the queue's receiver is gone")]
pub struct Closed<T>(pub T);

/// Why [`Sender::try_send`] could not queue an item; it comes back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// The queue holds its bound.
    #[error("the queue is full")]
    Full(T),
    /// The receiver is gone.
    #[error("the queue's receiver is gone")]
    Closed(T),
}

/// Why [`Receiver::try_recv`] returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing queued now.
    #[error("the queue is empty")]
    Empty,
    /// Nothing queued, and every sender is gone.
    #[error("the queue's senders are gone")]
    Disconnected,
}

/// The sending side; clone it for more senders.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiving {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() + state.reserved >= state.bound {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.shared.readable.wake();
        Ok(())
    }

    /// Waits for room and holds a slot for one item. Cancel-safe: a wait dropped holds nothing.
    pub async fn reserve(&self) -> Result<Permit<'_, T>, Closed<()>> {
        loop {
            // Made before looking, so that the receiver's end is not missed in between
            // (`notify_waiters` reaches every `Notified` already made); room made in between
            // leaves a `notify_one` permit.
            let room = self.shared.writable.notified();
            {
                let mut state = self.shared.lock();
                if !state.receiving {
                    return Err(Closed(()));
                }
                if state.items.len() + state.reserved < state.bound {
                    state.reserved += 1;
                    return Ok(Permit {
                        shared: &self.shared,
                    });
                }
            }
            room.await;
        }
    }

    /// Waits for room and queues `item`; gives it back if the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), Closed<T>> {
        match self.reserve().await {
            Ok(permit) => {
                permit.send(item);
                Ok(())
            }
            Err(Closed(())) => Err(Closed(item)),
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiving
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.shared.readable.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// A slot held for one item: [`Permit::send`] fills it, dropping the permit frees it.
pub struct Permit<'a, T> {
    shared: &'a Shared<T>,
}

impl<T> Permit<'_, T> {
    /// Queues `item` in the held slot (dropped at once if the receiver has gone meanwhile).
    pub fn send(self, item: T) {
        let mut state = self.shared.lock();
        state.reserved -= 1;
        if state.receiving {
            state.items.push_back(item);
        }
        drop(state);
        self.shared.readable.wake();
        // The slot is used: nothing for `Drop` to give back.
        std::mem::forget(self);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        self.shared.lock().reserved -= 1;
        self.shared.writable.notify_one();
    }
}

/// The receiving side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once every sender is gone and the queue is
    /// drained. Cancel-safe: an item is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item, or `Pending` with the task to be woken when one comes (or the last
    /// sender goes).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Registered before looking, so that an item queued in between wakes the task.
        self.shared.readable.register(cx.waker());
        match self.shared.pop() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    /// The next item, if one is queued.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.shared.pop()
    }

    /// Whether every sender is gone (items may still be queued).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().senders == 0
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiving = false;
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
        self.shared.writable.notify_waiters();
        self.shared.writable.notify_one();
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn items_come_out_in_order_up_to_the_bound() {
        let (tx, mut rx) = bounded(3);
        for n in 0..3 {
            assert_eq!(tx.try_send(n), Ok(()));
        }
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Ok(0));
        let permit = tx.reserve().await.expect("room for one");
        assert_eq!(
            tx.try_send(4),
            Err(TrySendError::Full(4)),
            "the permit holds it"
        );
        permit.send(5);
        let out: Vec<i32> = [rx.try_recv(), rx.try_recv(), rx.try_recv()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(out, [1, 2, 5]);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[tokio::test]
    async fn a_dropped_permit_frees_its_slot() {
        let (tx, mut rx) = bounded::<u8>(1);
        let permit = tx.reserve().await.expect("room");
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
        drop(permit);
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_gets_what_another_task_sends_then_the_end() {
        let (tx, mut rx) = bounded(2);
        let sender = tokio::spawn(async move {
            for n in 0..100u32 {
                tx.send(n).await.expect("the receiver is there");
            }
        });
        let mut got = Vec::new();
        while let Some(n) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("no hang")
        {
            got.push(n);
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        sender.await.expect("sender");
        assert!(rx.is_closed() && rx.is_empty());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_waiting_for_room_all_get_through_or_learn_the_receiver_went() {
        let (tx, mut rx) = bounded(1);
        tx.try_send(0u32).expect("room");
        let waiting: Vec<_> = (1..=3)
            .map(|n| {
                let tx = tx.clone();
                tokio::spawn(async move { tx.send(n).await })
            })
            .collect();
        let mut got = vec![rx.recv().await.expect("item")];
        got.push(rx.recv().await.expect("item"));
        got.sort_unstable();
        assert_eq!(got[0], 0);
        drop(rx);
        let mut refused = 0;
        for task in waiting {
            let sent = tokio::time::timeout(WAIT, task).await.expect("no hang");
            if sent.expect("task").is_err() {
                refused += 1;
            }
        }
        assert!(
            refused >= 1,
            "the receiver's end reached the senders still waiting"
        );
        assert_eq!(tx.try_send(9), Err(TrySendError::Closed(9)));
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn a_cancelled_receive_loses_nothing() {
        let (tx, mut rx) = bounded(4);
        let waited = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(waited.is_err(), "nothing to receive yet");
        tx.try_send("frame").expect("room");
        assert_eq!(rx.recv().await, Some("frame"));
    }

    #[test]
    fn a_drained_queue_gives_its_room_back() {
        let (tx, mut rx) = bounded(500);
        for n in 0..400u64 {
            tx.try_send(n).expect("room");
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.shared.lock().items.capacity() <= KEPT_ROOM);
        tx.try_send(1).expect("room");
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(rx.shared.lock().items.capacity() <= KEPT_ROOM);
    }

    #[test]
    fn items_left_when_the_receiver_goes_are_dropped() {
        let item = Arc::new(());
        let (tx, rx) = bounded(2);
        tx.try_send(item.clone()).expect("room");
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1);
    }
}
