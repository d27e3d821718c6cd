//! Turn latency: from the end of the caller's speech to the first audio of the answer, measured
//! from instants the call task hands in.

use std::time::Duration;

use tokio::time::Instant;

use super::ReplyId;

/// The bookkeeping behind each answered turn's latency.
#[derive(Debug, Default)]
pub(super) struct TurnLatency {
    /// When the caller's latest final words ended (their audio, on our clock). Kept across
    /// turns: a turn ended by keys counts from the last words heard.
    speech_end: Option<Instant>,
    /// The answer being prepared and when the speech it answers ended.
    answering: Option<(ReplyId, Instant)>,
    /// Latencies of this call's answered turns, for its summary.
    measured: Vec<Duration>,
}

impl TurnLatency {
    /// Final words ended at `end`; a recogniser's clock ahead of ours is capped at `now`.
    pub(super) fn speech_ended(&mut self, end: Instant, now: Instant) {
        self.speech_end = Some(end.min(now));
    }

    /// Reply `id` answers a turn that ended at `now`: its latency counts from the end of the
    /// speech, or from `now` when no speech end is known.
    pub(super) fn answering(&mut self, id: ReplyId, now: Instant) {
        self.answering = Some((id, self.speech_end.unwrap_or(now)));
    }

    /// Reply `id` produced its first audio at `now`: the latency, once, if it is the answer
    /// being timed.
    pub(super) fn first_audio(&mut self, id: ReplyId, now: Instant) -> Option<Duration> {
        let (answering, speech_end) = self.answering?;
        if answering != id {
            return None;
        }
        self.answering = None;
        let latency = now.saturating_duration_since(speech_end);
        self.measured.push(latency);
        Some(latency)
    }

    /// Every latency measured so far, in order.
    pub(super) fn measured(&self) -> &[Duration] {
        &self.measured
    }
}
