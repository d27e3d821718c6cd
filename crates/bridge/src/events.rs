//! What a call tells the world as it happens, as typed values: tools that watch calls (the demo,
//! `replay`, the recorder) read these instead of the log.
//!
//! The call task publishes with [`CallObserver::publish`], which never waits: when the watcher
//! falls behind, events are dropped and counted, never the call's audio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Something that happened in one call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// Twilio's `start` arrived: the call is on.
    Started {
        /// Twilio's call id.
        call_sid: String,
        /// Twilio's stream id.
        stream_sid: String,
    },
    /// The recogniser finalised a segment of the caller's speech (non-empty).
    Transcript {
        /// The words.
        text: String,
        /// When the segment's audio began, on our clock (from the recogniser's timing).
        audio_start: Option<Instant>,
        /// When the segment's audio ended, on our clock.
        audio_end: Option<Instant>,
    },
    /// The caller's turn ended with these words: what the model is asked to answer.
    TurnEnded {
        /// 1-based turn number.
        turn: u32,
        /// The turn's text as the model gets it.
        text: String,
    },
    /// The assistant is saying this phrase (as spoken: Markdown stripped).
    Phrase {
        /// Which reply (the greeting is the first).
        reply: u64,
        /// The phrase.
        text: String,
    },
    /// A reply's first audio was handed to the socket writer.
    FirstAudio {
        /// Which reply.
        reply: u64,
        /// End of the caller's speech → this audio, when the reply answers a turn.
        turn_latency: Option<Duration>,
    },
    /// The caller spoke over the assistant: the reply stopped and Twilio was told to clear.
    BargeIn {
        /// The interrupted reply.
        reply: u64,
        /// What the caller heard of it, to the word and ending in "…"; `None` when nothing of
        /// it was audible yet (the caller's words then continue their turn).
        heard: Option<String>,
    },
    /// The interruption of `reply` was only a backchannel or a noise: the reply plays again
    /// from the start of phrase `from`, and the history is as if nothing happened.
    Resumed {
        /// The interrupted reply.
        reply: u64,
        /// The phrase it resumes from (0-based).
        from: usize,
    },
    /// The caller said nothing for `IDLE_TIMEOUT_S`: the assistant asks if they are still
    /// there (the `n`th time in a row).
    IdlePrompt {
        /// How many prompts in a row, this one included.
        n: u32,
    },
    /// The caller answered no idle prompt: the assistant says goodbye and ends the call.
    IdleGoodbye,
    /// The model called a tool while writing `reply`, and this was its result.
    ToolCall {
        /// The reply whose words called it.
        reply: u64,
        /// The tool.
        name: String,
        /// Its arguments, as the model wrote them (JSON).
        arguments: String,
        /// What the model was given back.
        result: String,
    },
    /// The caller pressed a key.
    Dtmf {
        /// The key, e.g. `"1"` or `"#"`.
        digit: String,
    },
    /// Something went wrong that the caller noticed (a failed reply, lost recognition).
    Problem {
        /// What, in operator words.
        what: String,
    },
    /// The call is over.
    Ended {
        /// Why, as the `outcome` label of the calls counter (e.g. `caller_hung_up`).
        reason: &'static str,
        /// The call's figures.
        summary: CallSummary,
    },
}

/// The figures of a finished call (the same as its summary log line).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallSummary {
    /// From `start` to the end.
    pub duration: Duration,
    /// Caller turns answered.
    pub turns: u32,
    /// Times the caller spoke over the assistant.
    pub barge_ins: u32,
    /// End of the caller's speech → first reply audio, per answered turn.
    pub turn_latencies: Vec<Duration>,
    /// Inbound messages that could not be used.
    pub malformed: u64,
}

/// One event with its call and time.
#[derive(Debug, Clone)]
pub struct ObservedEvent {
    /// When it happened.
    pub at: Instant,
    /// The call it belongs to.
    pub call_sid: Arc<str>,
    /// What happened.
    pub event: CallEvent,
}

/// The receiving end, read by whoever watches.
pub type CallEvents = mpsc::Receiver<ObservedEvent>;

/// Where calls publish their events; held by [`crate::call::CallServices`] when someone watches.
#[derive(Debug, Clone)]
pub struct CallObserver {
    /// Bounded, written with `try_send`.
    tx: mpsc::Sender<ObservedEvent>,
    /// Events dropped because the watcher was behind.
    dropped: Arc<AtomicU64>,
}

impl CallObserver {
    /// An observer buffering up to `capacity` events, and the receiver to read them from.
    pub fn channel(capacity: usize) -> (Self, CallEvents) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let observer = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (observer, rx)
    }

    /// Hands `event` over without waiting; drops it (and counts it) when the queue is full or
    /// nobody reads any more.
    pub fn publish(&self, event: ObservedEvent) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> ObservedEvent {
        ObservedEvent {
            at: Instant::now(),
            call_sid: Arc::from("CA1"),
            event: CallEvent::TurnEnded {
                turn: n,
                text: String::new(),
            },
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (observer, mut rx) = CallObserver::channel(2);
        for n in 0..5 {
            observer.publish(event(n));
        }
        assert_eq!(observer.dropped(), 3);
        assert!(matches!(
            rx.try_recv().map(|e| e.event),
            Ok(CallEvent::TurnEnded { turn: 0, .. })
        ));
        drop(rx);
        observer.publish(event(9));
        assert_eq!(observer.dropped(), 4);
    }
}
