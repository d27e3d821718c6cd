//! One transcribed call: its task reads the Media Stream, hands each track's audio to that
//! track's own recogniser, and turns final results into segments that are logged and queued
//! for the webhook. Nothing is ever written to Twilio.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;
use futures::StreamExt;
use tokio::time::{timeout, Instant};
use tracing::Instrument;

use super::webhook::{CallDelivery, TranscriptMessage};
use super::TranscribeServices;
use crate::stt::deepgram::SttStream;
use crate::stt::{SttEvent, Transcript};
use crate::twilio::media::{Start, Track};
use crate::twilio::stream::{call_span, Frame, MediaStream, StreamEnd, StreamEvent, START_TIMEOUT};

/// Longest the call's task waits, after the stream ends, for its transcript to be delivered;
/// delivery then goes on in the background.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);

/// Why a transcribed call ended; the labels match the assistant's calls counter.
#[derive(Debug, Clone, Copy)]
enum EndReason {
    /// The stream stopped, closed or failed.
    Stream(StreamEnd),
    /// The server ended the calls still in progress.
    ServerShutdown,
}

impl EndReason {
    fn label(self) -> &'static str {
        match self {
            EndReason::Stream(end) => end.label(),
            EndReason::ServerShutdown => "server_shutdown",
        }
    }
}

/// Transcribes one Media Stream from its `start` to its end.
pub async fn run(socket: WebSocket, services: Arc<TranscribeServices>) {
    let (_sink, socket) = socket.split();
    let mut stream = MediaStream::new(socket);
    let Some(start) = stream.start(START_TIMEOUT).await else {
        return;
    };
    let span = call_span(&start);
    async move {
        tracing::info!("call connected: transcribing the media stream");
        Transcription::new(start, stream, services).run().await;
    }
    .instrument(span)
    .await;
}

/// One track's recogniser and where its times start.
struct TrackStt {
    /// The recogniser, fed and read from the call's task; `None` once lost.
    stt: Option<SttStream>,
    /// Seconds into the stream of this track's first frame: the recogniser counts from there.
    offset_s: f64,
}

/// One call's state, owned by its task.
struct Transcription {
    services: Arc<TranscribeServices>,
    /// Twilio's messages, as events.
    stream: MediaStream,
    call_sid: String,
    stream_sid: String,
    /// The caller's track, once its first frame arrived.
    inbound: Option<TrackStt>,
    /// The other party's track, once its first frame arrived (`both_tracks` streams only).
    outbound: Option<TrackStt>,
    /// The webhook's queue for this call, when one is configured.
    delivery: Option<CallDelivery>,
    /// When the stream started.
    started: Instant,
    /// Sequence number of the last message queued for the webhook.
    sequence: u64,
    /// Final segments heard.
    segments: u64,
    /// Audio frames the recognisers could not take.
    dropped_audio: u64,
    /// A recogniser was lost for good: part of the call is missing from the transcript.
    stt_lost: bool,
}

impl Transcription {
    fn new(start: Start, stream: MediaStream, services: Arc<TranscribeServices>) -> Self {
        let delivery = services
            .webhook
            .as_ref()
            .map(|webhook| webhook.open(services.shutdown.child_token()));
        Self {
            services,
            stream,
            call_sid: start.call_sid,
            stream_sid: start.stream_sid,
            inbound: None,
            outbound: None,
            delivery,
            started: Instant::now(),
            sequence: 0,
            segments: 0,
            dropped_audio: 0,
            stt_lost: false,
        }
    }

    async fn run(mut self) {
        // The call's own child of the server-wide token, waited on by one pinned future (see
        // `call::run`'s loop).
        let shutdown = self.services.shutdown.child_token().cancelled_owned();
        tokio::pin!(shutdown);
        let reason = loop {
            tokio::select! {
                () = &mut shutdown => break EndReason::ServerShutdown,
                event = self.stream.next() => match event {
                    StreamEvent::Media(frame) => self.on_media(frame),
                    StreamEvent::Mark(_) | StreamEvent::Dtmf(_) => {}
                    StreamEvent::End(end) => break EndReason::Stream(end),
                },
                Some(event) = next_event(&mut self.inbound) => self.on_stt(Track::Inbound, event),
                Some(event) = next_event(&mut self.outbound) => self.on_stt(Track::Outbound, event),
            }
        };
        self.end(reason).await;
    }

    fn on_media(&mut self, frame: Frame) {
        let started = self.started;
        let slot = match frame.track {
            Track::Inbound => &mut self.inbound,
            Track::Outbound => &mut self.outbound,
            Track::Unknown => return self.stream.skip("media of an unknown track"),
        };
        let services = &self.services;
        let track = slot.get_or_insert_with(|| {
            tracing::info!(track = frame.track.as_str(), "transcribing a new track");
            let offset_s = frame
                .timestamp_ms
                .map_or_else(|| started.elapsed().as_secs_f64(), |ms| ms as f64 / 1000.0);
            TrackStt {
                stt: Some(services.stt.start()),
                offset_s,
            }
        });
        let Some(stt) = track.stt.as_mut() else {
            return; // recognition of this track was lost; already reported
        };
        if !stt.send_audio(frame.audio) {
            self.dropped_audio += 1;
            if self.dropped_audio % 50 == 1 {
                tracing::warn!(
                    dropped = self.dropped_audio,
                    "speech recognition is behind: call audio dropped"
                );
            }
        }
    }

    fn on_stt(&mut self, track: Track, event: SttEvent) {
        match event {
            SttEvent::Transcript(transcript)
                if transcript.is_final && !transcript.text.trim().is_empty() =>
            {
                let Transcript {
                    text,
                    audio_end,
                    start,
                    duration,
                    confidence,
                    ..
                } = *transcript;
                if let Some(end) = audio_end {
                    let latency = Instant::now().saturating_duration_since(end);
                    let metrics = &self.services.metrics;
                    metrics.stt_final_latency.observe(latency.as_secs_f64());
                }
                let offset = self.offset_of(track);
                self.on_segment(track, &text, offset + start, duration, confidence);
            }
            SttEvent::Dropped => self
                .services
                .metrics
                .provider_error("deepgram_stt", "dropped"),
            SttEvent::Lost(err) => {
                self.services
                    .metrics
                    .provider_error("deepgram_stt", "unreachable");
                tracing::error!(%err, track = track.as_str(), "speech recognition unavailable: this track is no longer transcribed");
                self.stt_lost = true;
                if let Some(lost) = self.slot(track) {
                    lost.stt = None;
                }
            }
            _ => {}
        }
    }

    fn slot(&mut self, track: Track) -> Option<&mut TrackStt> {
        match track {
            Track::Outbound => self.outbound.as_mut(),
            _ => self.inbound.as_mut(),
        }
    }

    fn offset_of(&mut self, track: Track) -> f64 {
        self.slot(track).map_or(0.0, |t| t.offset_s)
    }

    fn on_segment(&mut self, track: Track, text: &str, start: f64, duration: f64, confidence: f64) {
        let (start, end) = (millis(start), millis(start + duration));
        self.segments += 1;
        tracing::info!(
            track = track.as_str(),
            start,
            end,
            confidence,
            text,
            "transcript segment"
        );
        self.sequence += 1;
        let message = TranscriptMessage::Segment {
            call_sid: &self.call_sid,
            stream_sid: &self.stream_sid,
            sequence: self.sequence,
            track: track.as_str(),
            text,
            start,
            end,
            confidence,
        };
        if let Some(delivery) = &mut self.delivery {
            delivery.send(&message);
        }
    }

    /// Closes the recognisers while still taking their last results (Deepgram sends the final
    /// words after `CloseStream`), then sends the closing message and waits for delivery.
    async fn end(mut self, reason: EndReason) {
        self.services.metrics.call_ended(reason.label());
        for track in [&mut self.inbound, &mut self.outbound]
            .into_iter()
            .flatten()
        {
            if let Some(stt) = &mut track.stt {
                stt.close();
            }
        }
        let _ = timeout(SttStream::FINISH_WITHIN, self.last_results()).await;
        let dropped_messages = self.delivery.as_ref().map_or(0, CallDelivery::dropped);
        let complete = !self.stt_lost && self.dropped_audio == 0 && dropped_messages == 0;
        let duration = millis(self.started.elapsed().as_secs_f64());
        tracing::info!(
            duration_s = duration,
            segments = self.segments,
            complete,
            malformed = self.stream.malformed(),
            dropped_audio = self.dropped_audio,
            "transcribed call ended: {}",
            reason.label()
        );
        let Some(mut delivery) = self.delivery.take() else {
            return;
        };
        delivery.send(&TranscriptMessage::CallEnded {
            call_sid: &self.call_sid,
            stream_sid: &self.stream_sid,
            sequence: self.sequence + 1,
            segments: self.segments,
            duration,
            reason: reason.label(),
            complete,
        });
        if !delivery.finish(DELIVERY_WAIT).await {
            tracing::warn!("transcript still being delivered {DELIVERY_WAIT:?} after the call ended; continuing in the background");
        }
    }

    /// Takes recogniser events until every recogniser has closed.
    async fn last_results(&mut self) {
        loop {
            tokio::select! {
                Some(event) = next_event(&mut self.inbound) => self.on_stt(Track::Inbound, event),
                Some(event) = next_event(&mut self.outbound) => self.on_stt(Track::Outbound, event),
                else => return,
            }
        }
    }
}

/// The next event of a track's recogniser; `None` at once when the track has none (yet) or its
/// recogniser has closed, which disables the `select!` branch for that round.
async fn next_event(track: &mut Option<TrackStt>) -> Option<SttEvent> {
    match track.as_mut().and_then(|track| track.stt.as_mut()) {
        Some(stt) => stt.next().await,
        None => None,
    }
}

/// Seconds rounded to the millisecond.
fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
