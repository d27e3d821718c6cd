//! The end of a call: why it ended, stopping what it started, and its summary (log line,
//! metric and event).

use std::time::Duration;

use super::turns::Goodbye;
use super::{Call, CallServices};
use crate::events::{CallEvent, CallSummary};
use crate::twilio::next_step::NextStep;
use crate::twilio::stream::StreamEnd;

/// How long the writer may take to finish when the call ends.
const WRITER_GRACE: Duration = Duration::from_millis(300);

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndReason {
    /// Twilio stopped the stream, or its socket closed or failed.
    Stream(StreamEnd),
    /// The brain ended the call once its goodbye was over.
    Goodbye(Goodbye),
    /// The server ended the calls still in progress.
    ServerShutdown,
}

impl EndReason {
    /// The `outcome` label of the calls counter.
    fn label(self) -> &'static str {
        match self {
            EndReason::Stream(end) => end.label(),
            EndReason::Goodbye(Goodbye::SttLost) => "stt_unavailable",
            EndReason::Goodbye(Goodbye::Idle) => "idle",
            EndReason::Goodbye(Goodbye::Ended) => "assistant_ended",
            EndReason::Goodbye(Goodbye::Transferred) => "transferred",
            EndReason::ServerShutdown => "server_shutdown",
        }
    }

    /// The log's words for it.
    fn describe(self) -> &'static str {
        match self {
            EndReason::Stream(end) => end.describe(),
            EndReason::Goodbye(Goodbye::SttLost) => {
                "speech recognition unavailable: the caller was told, the call ended"
            }
            EndReason::Goodbye(Goodbye::Idle) => {
                "the caller stayed silent through every idle prompt: goodbye said, call ended"
            }
            EndReason::Goodbye(Goodbye::Ended) => {
                "the assistant ended the conversation once its goodbye was heard"
            }
            EndReason::Goodbye(Goodbye::Transferred) => {
                "the caller is put through to a person (the stream closed for Twilio's <Dial>)"
            }
            EndReason::ServerShutdown => "the server is shutting down",
        }
    }
}

/// Before the stream closes, records what Twilio does next for `/stream_ended` (on any
/// instance): the transfer's `<Dial>`, or `<Hangup/>`. A store that cannot take it leaves
/// `/stream_ended` answering `<Hangup/>`: the caller is never left on a silent line. (Given the
/// call's parts, not the call: the call's recogniser is not `Sync`, so no `&Call` may be held
/// across an await.)
async fn record_next_step(services: &CallServices, call_sid: &str, why: Goodbye) {
    let step = match (why, &services.transfer) {
        (Goodbye::Transferred, Some(transfer)) => transfer.next_step(),
        _ => NextStep::Hangup,
    };
    services.store.record_next_step(call_sid, &step).await;
}

impl Call {
    /// Stops the replies, the writer, the recogniser and the copy to the store (each for a
    /// bounded time), then logs and publishes the call's summary. `malformed` counts the
    /// stream's unusable messages.
    pub(super) async fn end(mut self, reason: EndReason, malformed: u64) {
        self.mirror_new_exchanges();
        if let EndReason::Goodbye(why) = reason {
            record_next_step(&self.services, &self.call_sid, why).await;
        }
        let Self {
            services,
            turns,
            stt,
            speaker,
            started,
            publisher,
            mirror,
            ..
        } = self;
        services.metrics.call_ended(reason.label());
        let turn_latencies = turns.turn_latencies().to_vec();
        let latencies_ms: Vec<u128> = turn_latencies.iter().map(Duration::as_millis).collect();
        let writer = speaker.finish(WRITER_GRACE);
        let dropped_audio = stt.dropped_frames();
        let mirrored = async {
            if let Some(mirror) = mirror {
                mirror.finish().await;
            }
        };
        tokio::join!(stt.finish(), writer, mirrored);
        tracing::info!(
            duration_s = format!("{:.1}", started.elapsed().as_secs_f64()),
            turns = turns.turns(),
            barge_ins = turns.barge_ins(),
            turn_latencies_ms = ?latencies_ms,
            keys = turns.keyed(),
            malformed,
            dropped_audio,
            "call ended: {}",
            reason.describe()
        );
        let summary = CallSummary {
            duration: started.elapsed(),
            turns: turns.turns(),
            barge_ins: turns.barge_ins(),
            turn_latencies,
            malformed,
        };
        let reason = reason.label();
        publisher.publish(CallEvent::Ended { reason, summary });
    }
}
