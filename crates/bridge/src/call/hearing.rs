//! What the recogniser reports, handed to the brain with the metrics and events it makes.

use tokio::time::Instant;

use super::turns::{Action, Heard};
use super::Call;
use crate::events::CallEvent;
use crate::stt::flux::{TurnEvent, TurnInfo};
use crate::stt::{SttEvent, Transcript};

impl Call {
    /// Handles one event of speech recognition.
    pub(super) fn on_stt(&mut self, event: SttEvent) {
        let now = Instant::now();
        let actions = match event {
            SttEvent::Transcript(transcript) => {
                let Transcript {
                    text,
                    is_final,
                    speech_final,
                    audio_end,
                    audio_start,
                    ..
                } = *transcript;
                if is_final && !text.trim().is_empty() {
                    tracing::debug!(%text, speech_final, "caller said");
                    self.publisher.publish(CallEvent::Transcript {
                        text: text.clone(),
                        audio_start,
                        audio_end,
                    });
                    if let Some(end) = audio_end {
                        let latency = now.saturating_duration_since(end).as_secs_f64();
                        self.services.metrics.stt_final_latency.observe(latency);
                        self.turns.on_speech_ended(end, now);
                    }
                }
                let heard = Heard::from_flags(is_final, speech_final);
                let actions = self.turns.on_transcript(&text, heard, now);
                let barge_ins = actions
                    .iter()
                    .filter(|a| matches!(a, Action::Interrupt { .. }))
                    .count();
                self.services.metrics.barge_ins.inc_by(barge_ins as u64);
                actions
            }
            SttEvent::Turn(info) => self.on_flux_turn(*info, now),
            SttEvent::UtteranceEnd => self.turns.on_utterance_end(now),
            SttEvent::SpeechStarted => Vec::new(),
            SttEvent::Dropped => {
                let metrics = &self.services.metrics;
                metrics.provider_error("deepgram_stt", "dropped");
                self.turns.on_stt_dropped(now);
                Vec::new()
            }
            SttEvent::Lost(err) => {
                let metrics = &self.services.metrics;
                metrics.provider_error("deepgram_stt", "unreachable");
                tracing::error!(%err, "speech recognition unavailable: apologising and ending the call");
                let what = format!("speech recognition unavailable: {err}");
                self.publisher.publish(CallEvent::Problem { what });
                self.turns.on_stt_lost(now)
            }
        };
        self.apply(actions);
    }

    /// One Flux `TurnInfo`, handed to the brain's Flux inputs; the end of a turn is reported
    /// like a final transcript (events, recognition latency, the turn's end of speech).
    fn on_flux_turn(&mut self, info: TurnInfo, now: Instant) -> Vec<Action> {
        let TurnInfo {
            event,
            transcript,
            audio_start,
            speech_end,
            ..
        } = info;
        let actions = match event {
            TurnEvent::StartOfTurn => {
                tracing::debug!("caller started a turn");
                self.turns.on_start_of_turn(now)
            }
            TurnEvent::Update => self.turns.on_turn_update(&transcript, now),
            TurnEvent::EagerEndOfTurn => self.turns.on_eager_end_of_turn(&transcript, now),
            TurnEvent::TurnResumed => self.turns.on_turn_resumed(now),
            TurnEvent::EndOfTurn => {
                if !transcript.trim().is_empty() {
                    tracing::debug!(text = %transcript, "caller said (end of turn)");
                    self.publisher.publish(CallEvent::Transcript {
                        text: transcript.clone(),
                        audio_start,
                        audio_end: speech_end,
                    });
                    if let Some(end) = speech_end {
                        let latency = now.saturating_duration_since(end).as_secs_f64();
                        self.services.metrics.stt_final_latency.observe(latency);
                        self.turns.on_speech_ended(end, now);
                    }
                }
                self.turns.on_end_of_turn(&transcript, now)
            }
            TurnEvent::Unknown => Vec::new(),
        };
        let barge_ins = actions
            .iter()
            .filter(|a| matches!(a, Action::Interrupt { .. }))
            .count();
        self.services.metrics.barge_ins.inc_by(barge_ins as u64);
        actions
    }
}
