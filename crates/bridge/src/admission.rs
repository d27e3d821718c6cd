//! Whether a new call can be taken: the count of calls in progress against `MAX_CALLS`, and the
//! drain that begins on SIGTERM. The Media Stream upgrade and every webhook that starts a call
//! (`/` and the Gather flow's `/call`) ask here, so a full or draining server refuses politely.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::twilio::twiml::{self, Element};

/// Said to a caller refused because the server is full or shutting down.
const BUSY_APOLOGY: &str =
    "Sorry, all our lines are busy right now. Please call again in a few minutes. Goodbye.";

/// The door: calls in progress, the limit, and whether a drain has begun.
#[derive(Debug)]
pub struct Admission {
    /// Media Streams in progress.
    live: Arc<LiveCalls>,
    /// `MAX_CALLS`.
    max_calls: usize,
    /// Cancelled on SIGTERM: health answers 503 and new calls are refused while calls in
    /// progress finish.
    draining: CancellationToken,
}

impl Admission {
    /// An open door for at most `max_calls` calls at once.
    pub fn new(max_calls: usize) -> Self {
        Self {
            live: Arc::new(LiveCalls::default()),
            max_calls,
            draining: CancellationToken::new(),
        }
    }

    /// `MAX_CALLS`.
    pub fn max_calls(&self) -> usize {
        self.max_calls
    }

    /// A slot for a new Media Stream, unless the server is draining or full.
    pub fn enter(&self) -> Option<CallSlot> {
        if self.is_draining() {
            return None;
        }
        self.live.enter(self.max_calls)
    }

    /// Media Streams in progress.
    pub fn live_calls(&self) -> usize {
        self.live.count()
    }

    /// True once a drain has begun: no new calls are taken.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// A token cancelled when the drain begins, for calls that act on it (a relay session
    /// moves to another instance at its next quiet moment).
    pub fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Closes the door for good.
    pub fn start_draining(&self) {
        self.draining.cancel();
    }

    /// Resolves when no call is in progress.
    pub async fn all_ended(&self) {
        self.live.all_ended().await;
    }

    /// Whether a new call can be taken now; `Some(response)` refuses it politely, in TwiML.
    pub fn refuse_new_call(&self) -> Option<Response> {
        let why = if self.is_draining() {
            "draining"
        } else if self.live_calls() >= self.max_calls {
            "at capacity"
        } else {
            return None;
        };
        tracing::warn!("new call refused: {why}");
        let body = twiml::response([
            Element::new("Say").text(BUSY_APOLOGY),
            Element::new("Hangup"),
        ]);
        Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/xml")],
                body,
            )
                .into_response(),
        )
    }
}

/// Counts the calls in progress, so a limit can refuse new ones and a drain can wait for the
/// last one.
#[derive(Debug, Default)]
struct LiveCalls {
    /// Calls holding a [`CallSlot`].
    count: AtomicUsize,
    /// Woken whenever a call ends.
    ended: Notify,
}

/// A call's place in the count; dropping it (when the call task ends) frees it.
#[derive(Debug)]
pub struct CallSlot(Arc<LiveCalls>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl LiveCalls {
    /// A slot for a new call, unless `max` calls are already in progress.
    fn enter(self: &Arc<Self>, max: usize) -> Option<CallSlot> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| CallSlot(self.clone()))
    }

    /// Calls in progress now.
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves when no call is in progress.
    async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_door_closes_at_the_limit_and_reopens_when_a_call_ends() {
        let door = Admission::new(1);
        let first = door.enter().expect("room for one call");
        assert!(door.enter().is_none());
        assert!(door.refuse_new_call().is_some());
        drop(first);
        assert_eq!(door.live_calls(), 0);
        assert!(door.refuse_new_call().is_none());
        door.start_draining();
        assert!(door.enter().is_none());
        assert!(door.refuse_new_call().is_some());
    }
}
