//! A source polled only after it woke the task: a call's task wakes for many reasons (a Twilio
//! frame, a transcript, a reply's event, a timer) and each time its `select!` polls every
//! source, most of which have nothing to say. [`ReadWake`] remembers, per source, whether that
//! source woke the task since it last said `Pending`; [`Woken`] wraps a stream or a future in
//! one. The Media Stream's socket, the recogniser's, the call's shutdown token and its timer go
//! through it, and the load generator's callers' sockets.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use futures::{FutureExt, Stream, StreamExt};

/// Remembers whether a source (a socket's read side, a token, a timer) woke the task since it
/// last said `Pending`, so the task polls it only then.
///
/// Polling a source with nothing to say is not free. A WebSocket's read: tungstenite zero-fills
/// its read buffer's free room before it asks the socket (a kilobyte, mostly out of cache with a
/// thousand calls), registers its wakers and asks tokio for readiness, and a split socket also
/// takes its lock. A cancellation token's future locks the token and its waiter list. The source
/// is polled with a waker that sets this flag and wakes the task; while the flag is down,
/// nothing the source could say has arrived and the poll is skipped.
#[derive(Debug)]
pub struct ReadWake {
    flag: Arc<Flag>,
    waker: Waker,
}

#[derive(Debug, Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Default for ReadWake {
    fn default() -> Self {
        let flag = Arc::new(Flag {
            // Never polled yet: the first poll goes through.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self { flag, waker }
    }
}

impl ReadWake {
    /// Runs `poll_read` (a poll of the source) with this flag's waker, unless the source said
    /// `Pending` last time and has not woken the task since.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll_read: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.flag.task.register(cx.waker());
        // Down before the poll: a wake-up that comes while it runs raises it again.
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let ready = poll_read(&mut Context::from_waker(&self.waker));
        if ready.is_ready() {
            // There may be more already read: the next poll must look.
            self.flag.woken.store(true, Ordering::Release);
        }
        ready
    }
}

/// A stream or a future polled only when it woke the task since it last said `Pending` (see
/// [`ReadWake`]): the Media Stream's read half, the load generator's callers', a call's
/// shutdown token and its timer.
#[derive(Debug)]
pub struct Woken<S> {
    inner: S,
    wake: ReadWake,
}

impl<S> Woken<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            wake: ReadWake::default(),
        }
    }

    /// The source itself, to change it (a timer's deadline): its next poll goes through, since
    /// what it would say may have changed.
    pub fn inner_mut(&mut self) -> &mut S {
        self.wake.flag.woken.store(true, Ordering::Release);
        &mut self.inner
    }
}

impl<S: Stream + Unpin> Stream for Woken<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.wake.poll(cx, |cx| inner.poll_next_unpin(cx))
    }
}

impl<F: Future + Unpin> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.wake.poll(cx, |cx| inner.poll_unpin(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use std::sync::atomic::AtomicUsize;

    /// A stream or a future that counts its polls.
    struct Counting<S>(S, Arc<AtomicUsize>);

    impl<S: Stream + Unpin> Stream for Counting<S> {
        type Item = S::Item;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.poll_next_unpin(cx)
        }
    }

    impl<F: Future + Unpin> Future for Counting<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.poll_unpin(cx)
        }
    }

    /// A task's waker that counts its wake-ups.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Task {
        /// A new task and the waker that counts into it.
        fn new() -> (Arc<Self>, Waker) {
            let task = Arc::new(Task::default());
            let waker = Waker::from(task.clone());
            (task, waker)
        }
    }

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_stream_is_polled_again_only_after_it_woke_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (mut tx, rx) = mpsc::channel::<u32>(4);
        let mut woken = Woken::new(Counting(rx, polls.clone()));
        let (task, waker) = Task::new();
        let mut cx = Context::from_waker(&waker);
        // Nothing yet: polled once, then not again while nothing arrives.
        for _ in 0..3 {
            assert!(woken.poll_next_unpin(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Something arrives: the task is woken and the next poll reads everything there.
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(woken.poll_next_unpin(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(woken.poll_next_unpin(&mut cx), Poll::Ready(Some(2)));
        for _ in 0..3 {
            assert!(woken.poll_next_unpin(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 4);
        // The end of the stream wakes it too.
        drop(tx);
        assert_eq!(woken.poll_next_unpin(&mut cx), Poll::Ready(None));
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_future_is_polled_again_only_after_it_woke_the_task_or_was_changed() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = futures::channel::oneshot::channel::<u32>();
        let mut woken = Woken::new(Counting(rx, polls.clone()));
        let (task, waker) = Task::new();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(woken.poll_unpin(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Touched from outside (a timer moved): looked at once more, then quiet again.
        woken.inner_mut();
        for _ in 0..3 {
            assert!(woken.poll_unpin(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        tx.send(7).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(woken.poll_unpin(&mut cx), Poll::Ready(Ok(7)));
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }
}
