//! Deepgram Flux, the conversational recogniser that detects turns itself (`/v2/listen`,
//! PROTOCOLS.md §10), used when `TURN_DETECTION=flux`.
//!
//! Twilio's μ-law goes out as it arrives (`encoding=mulaw&sample_rate=8000`, no decoding), in
//! 80 ms chunks as Deepgram recommends. Each `TurnInfo` message becomes an [`SttEvent::Turn`];
//! `Error` ends the connection, which is then reconnected like any drop (the socket handling,
//! the audio queue and `CloseStream` are shared with v1 in [`super::session`]); the new
//! connection first hears the turn in progress again, from its start ([`super::replay`]). Flux has no
//! documented `KeepAlive`: Twilio's inbound audio never stops, so none is needed.

use reqwest::Url;
use serde::Deserialize;
use tokio::time::Instant;

use super::replay::TurnEdge;
use super::session::{self, finite_or_zero, Clock, Dialect, Incoming};
use super::{SttEvent, SttStream};
use crate::secret::Secret;
use crate::settings::{self, Schemes};

/// μ-law bytes in one second at 8 kHz.
const MULAW_BYTES_PER_SECOND: f64 = 8_000.0;
/// 80 ms of 8 kHz μ-law, the chunk Deepgram recommends for Flux: four Twilio frames.
const CHUNK_BYTES: usize = 640;
/// `eot_threshold`'s range (PROTOCOLS.md §10.1); Deepgram's own default is 0.7.
const EOT_RANGE: (f64, f64) = (0.5, 0.9);
/// `eager_eot_threshold`'s range.
const EAGER_EOT_RANGE: (f64, f64) = (0.3, 0.9);
/// Deepgram's `eot_threshold` when none is sent.
pub const DEFAULT_EOT_THRESHOLD: f64 = 0.7;

/// Deepgram Flux settings (the key, shared with the other Deepgram services, is handed over
/// separately). Used only when `TURN_DETECTION=flux`.
#[derive(Debug, Clone, clap::Args)]
pub struct FluxSettings {
    /// Deepgram Flux WebSocket URL (used when TURN_DETECTION=flux).
    #[arg(long, env = "DEEPGRAM_FLUX_URL", default_value = "wss://api.deepgram.com/v2/listen",
          value_parser = settings::url("DEEPGRAM_FLUX_URL", Schemes::WebSocket))]
    pub deepgram_flux_url: Url,

    /// Deepgram Flux model (`flux-general-en`, `flux-general-multi`).
    #[arg(long, env = "FLUX_MODEL", default_value = "flux-general-en", value_parser = parse_model)]
    pub flux_model: String,

    /// Confidence, 0.5 to 0.9, Flux needs before it ends the caller's turn (its
    /// `eot_threshold`; Deepgram's default 0.7 when unset). Higher waits longer.
    #[arg(long, env = "FLUX_EOT_THRESHOLD",
          value_parser = threshold("FLUX_EOT_THRESHOLD", EOT_RANGE))]
    pub flux_eot_threshold: Option<f64>,

    /// Confidence, 0.3 to 0.9, at which Flux says the turn is probably over
    /// (`EagerEndOfTurn`), so a reply can be prepared early; sent only while
    /// PREEMPTIVE_GENERATION is on.
    #[arg(long, env = "FLUX_EAGER_EOT_THRESHOLD", default_value = "0.5",
          value_parser = threshold("FLUX_EAGER_EOT_THRESHOLD", EAGER_EOT_RANGE))]
    pub flux_eager_eot_threshold: f64,
}

impl FluxSettings {
    /// Checks what one value alone cannot: an eager threshold above the end-of-turn one would
    /// make every turn end "eagerly" first. Only matters when the eager threshold is sent.
    pub fn check(&self, preemptive: bool) -> Result<(), String> {
        let eot = self.flux_eot_threshold.unwrap_or(DEFAULT_EOT_THRESHOLD);
        if preemptive && self.flux_eager_eot_threshold > eot {
            return Err(format!(
                "FLUX_EAGER_EOT_THRESHOLD ({}) must not be above FLUX_EOT_THRESHOLD ({eot})",
                self.flux_eager_eot_threshold
            ));
        }
        Ok(())
    }
}

/// `FLUX_MODEL`: Flux only takes Flux models (Nova ones are refused).
fn parse_model(raw: &str) -> Result<String, String> {
    let model = settings::text("FLUX_MODEL")(raw)?;
    if !model.starts_with("flux-") {
        return Err(format!(
            "FLUX_MODEL must be a Flux model such as flux-general-en, not {model:?}"
        ));
    }
    Ok(model)
}

/// A confidence threshold within `range`, named by `var` when it is not.
fn threshold(var: &'static str, range: (f64, f64)) -> impl settings::Parser<f64> {
    move |raw: &str| match raw.trim().parse::<f64>() {
        Ok(x) if (range.0..=range.1).contains(&x) => Ok(x),
        _ => Err(format!(
            "{var} must be a number from {} to {}",
            range.0, range.1
        )),
    }
}

/// Deepgram Flux settings shared by all calls.
#[derive(Debug, Clone)]
pub struct FluxStt {
    /// Endpoint with every query parameter.
    url: Url,
    /// `Authorization: Token …`.
    key: Secret,
}

impl FluxStt {
    /// The endpoint for Twilio's μ-law at 8 kHz with the model and thresholds of `settings`;
    /// `eager_eot_threshold` only when `preemptive` (PREEMPTIVE_GENERATION), since it is what
    /// enables `EagerEndOfTurn` and `TurnResumed`.
    pub fn new(settings: &FluxSettings, key: Secret, preemptive: bool) -> Self {
        let mut url = settings.deepgram_flux_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("model", &settings.flux_model)
                .append_pair("encoding", "mulaw")
                .append_pair("sample_rate", "8000");
            if let Some(eot) = settings.flux_eot_threshold {
                query.append_pair("eot_threshold", &eot.to_string());
            }
            if preemptive {
                let eager = settings.flux_eager_eot_threshold.to_string();
                query.append_pair("eager_eot_threshold", &eager);
            }
        }
        Self { url, key }
    }

    /// The full URL calls connect to (no credentials in it).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Opens a Flux stream for one call: hand it Twilio's μ-law frames as they are. Returns at
    /// once; polling [`SttStream::next`] gives its [`SttEvent::Turn`]s.
    pub fn start(&self) -> SttStream {
        session::start::<Flux>(self.url.clone(), self.key.clone())
    }
}

/// What Flux says about the caller's turn (`TurnInfo.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TurnEvent {
    /// The caller started speaking, before any words: the barge-in signal.
    StartOfTurn,
    /// The turn's transcript so far (about every 0.25 s of audio).
    Update,
    /// The turn is probably over (eager mode only): a reply may be prepared.
    EagerEndOfTurn,
    /// The caller went on after `EagerEndOfTurn`: the prepared reply is not wanted.
    TurnResumed,
    /// The turn is over; its transcript is final.
    EndOfTurn,
    /// An event this client does not know (skipped).
    #[serde(other)]
    Unknown,
}

/// One `TurnInfo` message, for the call.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnInfo {
    /// What happened.
    pub event: TurnEvent,
    /// The turn's transcript so far (the whole turn on `EndOfTurn`).
    pub transcript: String,
    /// Flux's turn counter on this connection (restarts on a reconnection).
    pub turn_index: u64,
    /// Where the turn's audio starts, on our clock.
    pub audio_start: Option<Instant>,
    /// Where the caller's last word ends (the end of the audio window when Flux gave no word
    /// times), on our clock: the reference for the turn's latency.
    pub speech_end: Option<Instant>,
    /// Flux's confidence that the turn is over, 0 to 1.
    pub end_of_turn_confidence: f64,
}

/// Flux's server messages, discriminated by `type`.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum ServerMessage {
    Connected {},
    TurnInfo {
        event: TurnEvent,
        #[serde(default)]
        turn_index: u64,
        #[serde(default)]
        audio_window_start: f64,
        #[serde(default)]
        audio_window_end: f64,
        #[serde(default)]
        transcript: String,
        #[serde(default)]
        words: Vec<Word>,
        #[serde(default)]
        end_of_turn_confidence: f64,
    },
    Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        description: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Word {
    #[serde(default)]
    end: Option<f64>,
}

/// Flux v2 as a [`Dialect`]: μ-law in 80 ms chunks, no keep-alive.
struct Flux;

impl Dialect for Flux {
    const SERVICE: &'static str = "Deepgram Flux";
    const KEEPALIVE: Option<&'static str> = None;
    const BYTES_PER_SECOND: f64 = MULAW_BYTES_PER_SECOND;
    const CHUNK_BYTES: usize = CHUNK_BYTES;
    const REPLAY_TURN: bool = true;

    fn parse(text: &str, clock: &Clock) -> Incoming {
        parse_message(text, clock)
    }

    fn turn_edge(event: &SttEvent) -> Option<TurnEdge> {
        match event {
            SttEvent::Turn(info) => match info.event {
                TurnEvent::StartOfTurn => Some(TurnEdge::Start),
                TurnEvent::EndOfTurn => Some(TurnEdge::End),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Reads one server message: a `TurnInfo` is an event, `Error` is fatal to the connection,
/// the rest (`Connected`, `Configure*`, anything unreadable) is skipped.
fn parse_message(text: &str, clock: &Clock) -> Incoming {
    let message = match serde_json::from_str::<ServerMessage>(text) {
        Ok(message) => message,
        Err(err) => {
            tracing::debug!(%err, "unreadable message from Deepgram Flux skipped");
            return Incoming::Nothing;
        }
    };
    match message {
        ServerMessage::TurnInfo {
            event: TurnEvent::Unknown,
            ..
        } => Incoming::Nothing,
        ServerMessage::TurnInfo {
            event,
            turn_index,
            audio_window_start,
            audio_window_end,
            transcript,
            words,
            end_of_turn_confidence,
        } => {
            let last_word_end = words.iter().rev().find_map(|w| w.end);
            Incoming::Event(SttEvent::Turn(Box::new(TurnInfo {
                event,
                transcript,
                turn_index,
                audio_start: clock.at(audio_window_start),
                speech_end: clock.at(last_word_end.unwrap_or(audio_window_end)),
                end_of_turn_confidence: finite_or_zero(end_of_turn_confidence),
            })))
        }
        ServerMessage::Error { code, description } => {
            Incoming::Fatal(format!("Flux error {code}: {description}"))
        }
        ServerMessage::Connected {} | ServerMessage::Other => Incoming::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn clock(sent: Instant) -> Clock {
        Clock {
            first_audio: Some(sent),
            earlier_audio_s: 0.0,
        }
    }

    fn turn(text: &str, sent: Instant) -> TurnInfo {
        match parse_message(text, &clock(sent)) {
            Incoming::Event(SttEvent::Turn(info)) => *info,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_an_end_of_turn_with_its_transcript_and_times() {
        let sent = Instant::now();
        let info = turn(
            r#"{"type":"TurnInfo","request_id":"r","sequence_id":7,"event":"EndOfTurn","turn_index":2,"audio_window_start":1.5,"audio_window_end":3.9,"transcript":"What are your hours?","words":[{"word":"what","confidence":0.9,"start":1.6,"end":1.8},{"word":"hours","confidence":0.9,"start":2.9,"end":3.25}],"end_of_turn_confidence":0.82,"trigger":"model"}"#,
            sent,
        );
        assert_eq!(info.event, TurnEvent::EndOfTurn);
        assert_eq!(info.transcript, "What are your hours?");
        assert_eq!(info.turn_index, 2);
        assert_eq!(info.audio_start, Some(sent + Duration::from_millis(1_500)));
        assert_eq!(info.speech_end, Some(sent + Duration::from_millis(3_250)));
        assert_eq!(info.end_of_turn_confidence, 0.82);
    }

    #[test]
    fn every_turn_event_parses_and_words_without_times_use_the_window() {
        let sent = Instant::now();
        for (name, event) in [
            ("StartOfTurn", TurnEvent::StartOfTurn),
            ("Update", TurnEvent::Update),
            ("EagerEndOfTurn", TurnEvent::EagerEndOfTurn),
            ("TurnResumed", TurnEvent::TurnResumed),
            ("EndOfTurn", TurnEvent::EndOfTurn),
        ] {
            let text = format!(
                r#"{{"type":"TurnInfo","event":"{name}","turn_index":0,"audio_window_start":0.0,"audio_window_end":0.5,"transcript":"","words":[{{"word":"hi","confidence":0.5}}],"end_of_turn_confidence":0.1}}"#
            );
            let info = turn(&text, sent);
            assert_eq!(info.event, event);
            assert_eq!(info.speech_end, Some(sent + Duration::from_millis(500)));
        }
    }

    #[test]
    fn errors_are_fatal_and_the_rest_is_skipped() {
        let clock = clock(Instant::now());
        let error = r#"{"type":"Error","sequence_id":3,"code":"INTERNAL_SERVER_ERROR","description":"boom"}"#;
        match parse_message(error, &clock) {
            Incoming::Fatal(why) => {
                assert!(why.contains("INTERNAL_SERVER_ERROR") && why.contains("boom"))
            }
            other => panic!("{other:?}"),
        }
        for skipped in [
            r#"{"type":"Connected","request_id":"r","sequence_id":0}"#,
            r#"{"type":"ConfigureSuccess","request_id":"r","sequence_id":4,"thresholds":{}}"#,
            r#"{"type":"TurnInfo","event":"SomethingNew","turn_index":0}"#,
            r#"{"type":"TurnInfo"}"#,
            "not json",
            r#"{"type":"TurnInfo","event":"Update","transcript":5}"#,
        ] {
            assert!(
                matches!(parse_message(skipped, &clock), Incoming::Nothing),
                "{skipped}"
            );
        }
    }

    /// A Flux that accepts every connection and fails it at once with `Error`: the client
    /// retries through its backoff, then gives the recogniser up, instead of reconnecting
    /// forever.
    #[tokio::test]
    async fn a_flux_that_fails_every_connection_is_given_up() {
        use futures::{SinkExt, StreamExt};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio_tungstenite::tungstenite::Message;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let error = r#"{"type":"Error","sequence_id":0,"code":"INTERNAL_SERVER_ERROR","description":"always"}"#;
                    let _ = socket.send(Message::text(error)).await;
                    while socket.next().await.is_some() {}
                });
            }
        });
        let mut settings = settings(None, 0.5);
        settings.deepgram_flux_url = Url::parse(&format!("ws://{address}/v2/listen")).unwrap();
        let flux = FluxStt::new(&settings, Secret::new("k"), false);
        let mut stream = flux.start();
        let mut dropped = 0;
        let lost = loop {
            match stream.next().await {
                Some(SttEvent::Dropped) => dropped += 1,
                Some(SttEvent::Lost(err)) => break err.to_string(),
                Some(other) => panic!("{other:?}"),
                None => panic!("the stream ended without giving up"),
            }
        };
        assert!(
            lost.contains("always") && lost.contains("Deepgram Flux"),
            "{lost}"
        );
        assert_eq!(dropped, 6, "the first try and five retries");
        assert_eq!(accepted.load(Ordering::Relaxed), 6);
    }

    fn settings(eot: Option<f64>, eager: f64) -> FluxSettings {
        FluxSettings {
            deepgram_flux_url: Url::parse("wss://api.deepgram.com/v2/listen").unwrap(),
            flux_model: "flux-general-en".into(),
            flux_eot_threshold: eot,
            flux_eager_eot_threshold: eager,
        }
    }

    #[test]
    fn the_query_carries_mulaw_and_the_eager_threshold_only_when_preemptive() {
        let key = Secret::new("k");
        let eager = FluxStt::new(&settings(Some(0.8), 0.5), key.clone(), true);
        assert_eq!(
            eager.url().query(),
            Some("model=flux-general-en&encoding=mulaw&sample_rate=8000&eot_threshold=0.8&eager_eot_threshold=0.5")
        );
        let plain = FluxStt::new(&settings(None, 0.5), key, false);
        assert_eq!(
            plain.url().query(),
            Some("model=flux-general-en&encoding=mulaw&sample_rate=8000")
        );
    }

    #[test]
    fn thresholds_and_models_are_checked_in_one_line() {
        let eot = threshold("FLUX_EOT_THRESHOLD", EOT_RANGE);
        assert_eq!(eot(" 0.75 "), Ok(0.75));
        for bad in ["0.4", "1", "high", "NaN"] {
            assert_eq!(
                eot(bad),
                Err("FLUX_EOT_THRESHOLD must be a number from 0.5 to 0.9".into())
            );
        }
        assert!(parse_model("nova-3")
            .unwrap_err()
            .starts_with("FLUX_MODEL must be"));
        assert_eq!(
            parse_model(" flux-general-multi "),
            Ok("flux-general-multi".into())
        );
        assert!(settings(Some(0.6), 0.7).check(true).is_err());
        assert!(settings(Some(0.6), 0.7).check(false).is_ok());
        assert!(settings(None, 0.7).check(true).is_ok());
    }
}
