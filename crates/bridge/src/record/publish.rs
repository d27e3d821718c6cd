//! Where a call's events go as they happen: its recording and whoever watches calls (the same
//! for a Media Stream call and a ConversationRelay session).

use std::sync::Arc;

use tokio::time::Instant;

use super::Tap;
use crate::events::{CallEvent, CallObserver, ObservedEvent};

/// One call's outlet for [`CallEvent`]s; it never waits for a reader.
#[derive(Debug)]
pub struct Publisher {
    /// Who watches calls as they happen (the demo, `replay`), when anybody does.
    observer: Option<CallObserver>,
    /// The call's recording, when `RECORD_DIR` is set.
    tap: Option<Tap>,
    /// The call's id, on every event observed.
    call_sid: Arc<str>,
}

impl Publisher {
    /// Publishes the events of call `call_sid`.
    pub fn new(observer: Option<CallObserver>, tap: Option<Tap>, call_sid: &str) -> Self {
        Self {
            observer,
            tap,
            call_sid: Arc::from(call_sid),
        }
    }

    /// Hands `event` to the call's recording and to the observer, never waiting for either.
    pub fn publish(&self, event: CallEvent) {
        let Some(observer) = &self.observer else {
            if let Some(tap) = &self.tap {
                tap.event(event);
            }
            return;
        };
        if let Some(tap) = &self.tap {
            tap.event(event.clone());
        }
        observer.publish(ObservedEvent {
            at: Instant::now(),
            call_sid: self.call_sid.clone(),
            event,
        });
    }
}
