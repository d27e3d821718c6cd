//! Deepgram live speech-to-text (`/v1/listen`, PROTOCOLS.md §4): its settings, its endpoint and
//! how its messages read. The socket itself (reconnects, the audio queue, `CloseStream`) is
//! shared with Flux in [`super::session`].
//!
//! The call hands PCM frames to [`SttStream::send_audio`]; each frame goes out at once as a
//! binary message, `KeepAlive` is sent while no audio flows, and Deepgram's `Results`,
//! `SpeechStarted` and `UtteranceEnd` become [`SttEvent`]s.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::session::{self, finite_or_zero, Clock, Dialect, Incoming};
pub use super::session::{SttError, SttStream, AUDIO_QUEUE_FRAMES};
use super::{SttEvent, Transcript};
use crate::secret::Secret;
use crate::settings::{self, Schemes, MILLIS};

/// PCM bytes in one second of the audio we send: 8000 samples of 16 bits.
const PCM_BYTES_PER_SECOND: f64 = 16_000.0;

/// Deepgram sends interim results about once a second, so a shorter `utterance_end_ms` cannot be
/// detected (PROTOCOLS.md §4.2).
pub const MIN_UTTERANCE_END_MS: u64 = 1000;

/// Deepgram live STT settings (the key, shared with TTS, is handed over separately).
#[derive(Debug, Clone, clap::Args)]
pub struct SttSettings {
    /// Deepgram live speech-to-text WebSocket URL.
    #[arg(long, env = "DEEPGRAM_STT_URL", default_value = "wss://api.deepgram.com/v1/listen",
          value_parser = settings::url("DEEPGRAM_STT_URL", Schemes::WebSocket))]
    pub deepgram_stt_url: Url,

    /// Deepgram live model.
    #[arg(long, env = "STT_MODEL", default_value = "nova-2", value_parser = settings::text("STT_MODEL"))]
    pub stt_model: String,

    /// Silence, in milliseconds, after which Deepgram finalizes speech with `speech_final`
    /// (its `endpointing` parameter).
    #[arg(long = "stt-endpointing-ms", env = "STT_ENDPOINTING_MS", value_name = "STT_ENDPOINTING_MS", default_value = "300",
          value_parser = settings::millis("STT_ENDPOINTING_MS", MILLIS))]
    pub stt_endpointing: Duration,

    /// Gap, in milliseconds, after the last word before Deepgram sends `UtteranceEnd` (its
    /// `utterance_end_ms` parameter; at least 1000).
    #[arg(long = "stt-utterance-end-ms", env = "STT_UTTERANCE_END_MS", value_name = "STT_UTTERANCE_END_MS", default_value = "1000",
          value_parser = parse_utterance_end)]
    pub stt_utterance_end: Duration,
}

/// `STT_UTTERANCE_END_MS`: Deepgram cannot detect a gap shorter than its interim-result pace.
fn parse_utterance_end(raw: &str) -> Result<Duration, String> {
    let gap = settings::millis("STT_UTTERANCE_END_MS", MILLIS)(raw)?;
    if gap < Duration::from_millis(MIN_UTTERANCE_END_MS) {
        return Err(
            "STT_UTTERANCE_END_MS must be at least 1000: Deepgram sends interim results \
                    about once a second, so a shorter gap cannot be detected"
                .to_owned(),
        );
    }
    Ok(gap)
}

/// Deepgram live STT settings shared by all calls.
#[derive(Debug, Clone)]
pub struct DeepgramStt {
    /// Endpoint with every query parameter.
    url: Url,
    /// `Authorization: Token …`.
    key: Secret,
}

impl DeepgramStt {
    /// The endpoint for linear16 8 kHz mono with interim results and voice-activity events;
    /// `endpointing` and `utterance_end_ms` come from the settings (`STT_ENDPOINTING_MS`,
    /// `STT_UTTERANCE_END_MS`), since they decide how soon `TURN_DETECTION=deepgram` ends a turn.
    pub fn new(settings: &SttSettings, key: Secret) -> Self {
        let mut url = settings.deepgram_stt_url.clone();
        url.query_pairs_mut()
            .append_pair("model", &settings.stt_model)
            .append_pair("encoding", "linear16")
            .append_pair("sample_rate", "8000")
            .append_pair("channels", "1")
            .append_pair("interim_results", "true")
            .append_pair("punctuate", "true")
            .append_pair("smart_format", "true")
            .append_pair("vad_events", "true")
            .append_pair(
                "endpointing",
                &settings.stt_endpointing.as_millis().to_string(),
            )
            .append_pair(
                "utterance_end_ms",
                &settings.stt_utterance_end.as_millis().to_string(),
            );
        Self { url, key }
    }

    /// The full URL calls connect to (no credentials in it).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Opens a recognition stream for one call. Returns at once; the socket connects, and is
    /// fed and read, as the call polls [`SttStream::next`].
    pub fn start(&self) -> SttStream {
        session::start::<V1>(self.url.clone(), self.key.clone())
    }
}

/// Live STT v1 as a [`Dialect`]: PCM frame by frame, `KeepAlive` while silent.
struct V1;

impl Dialect for V1 {
    const SERVICE: &'static str = "Deepgram live STT";
    const KEEPALIVE: Option<&'static str> = Some(r#"{"type":"KeepAlive"}"#);
    const BYTES_PER_SECOND: f64 = PCM_BYTES_PER_SECOND;
    const CHUNK_BYTES: usize = 0;

    fn parse(text: &str, clock: &Clock) -> Incoming {
        match parse_event(text, clock) {
            Some(event) => Incoming::Event(event),
            None => Incoming::Nothing,
        }
    }
}

/// Deepgram's server messages, discriminated by `type`.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum ServerMessage {
    Results {
        #[serde(default)]
        is_final: bool,
        #[serde(default)]
        speech_final: bool,
        #[serde(default)]
        start: f64,
        #[serde(default)]
        duration: f64,
        channel: Channel,
    },
    SpeechStarted {},
    UtteranceEnd {},
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Channel {
    #[serde(default)]
    alternatives: Vec<Alternative>,
}

#[derive(Deserialize)]
struct Alternative {
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    confidence: f64,
}

/// Turns one text message into an event; metadata, warnings and anything unreadable are `None`.
/// `clock` places Deepgram's audio times (counted from this connection's first audio) on our
/// clock and after the audio of earlier connections.
fn parse_event(text: &str, clock: &Clock) -> Option<SttEvent> {
    let message = match serde_json::from_str::<ServerMessage>(text) {
        Ok(message) => message,
        Err(err) => {
            tracing::debug!(%err, "unreadable message from Deepgram skipped");
            return None;
        }
    };
    match message {
        ServerMessage::Results {
            is_final,
            speech_final,
            start,
            duration,
            channel,
        } => {
            let (text, confidence) = channel
                .alternatives
                .into_iter()
                .next()
                .map(|a| (a.transcript, a.confidence))
                .unwrap_or_default();
            Some(SttEvent::Transcript(Box::new(Transcript {
                audio_end: clock.at(start + duration),
                audio_start: clock.at(start),
                text,
                is_final,
                speech_final,
                start: clock.earlier_audio_s + finite_or_zero(start),
                duration: finite_or_zero(duration),
                confidence: finite_or_zero(confidence),
            })))
        }
        ServerMessage::SpeechStarted {} => Some(SttEvent::SpeechStarted),
        ServerMessage::UtteranceEnd {} => Some(SttEvent::UtteranceEnd),
        ServerMessage::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn parse_event_now(text: &str) -> Option<SttEvent> {
        let clock = Clock {
            first_audio: Some(Instant::now()),
            earlier_audio_s: 0.0,
        };
        parse_event(text, &clock)
    }

    #[test]
    fn parses_results() {
        let sent = Instant::now();
        let event = parse_event(
            r#"{"type":"Results","channel_index":[0,1],"duration":1.0,"start":2.5,"is_final":true,"speech_final":false,"from_finalize":false,"channel":{"alternatives":[{"transcript":"Hello there.","confidence":0.9,"words":[]}]},"metadata":{"request_id":"r"}}"#,
            &Clock {
                first_audio: Some(sent),
                earlier_audio_s: 10.0,
            },
        );
        let Some(SttEvent::Transcript(transcript)) = event else {
            panic!("{event:?}")
        };
        let Transcript {
            text,
            is_final,
            speech_final,
            audio_end,
            start,
            duration,
            confidence,
            audio_start,
        } = *transcript;
        assert_eq!(
            (text.as_str(), is_final, speech_final),
            ("Hello there.", true, false)
        );
        assert_eq!(audio_end, Some(sent + Duration::from_millis(3_500)));
        assert_eq!((start, duration, confidence), (12.5, 1.0, 0.9));
        assert_eq!(audio_start, Some(sent + Duration::from_millis(2_500)));
    }

    #[test]
    fn parses_vad_and_utterance_end_and_skips_the_rest() {
        assert!(matches!(
            parse_event_now(r#"{"type":"SpeechStarted","channel":[0,1],"timestamp":1.2}"#),
            Some(SttEvent::SpeechStarted)
        ));
        assert!(matches!(
            parse_event_now(r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.3}"#),
            Some(SttEvent::UtteranceEnd)
        ));
        assert!(
            parse_event_now(r#"{"type":"Metadata","request_id":"x","duration":1.0}"#).is_none()
        );
        assert!(parse_event_now("garbage").is_none());
        assert!(parse_event_now(r#"{"type":"Results"}"#).is_none());
    }
}
