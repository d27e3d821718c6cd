//! Deepgram live speech-to-text: one WebSocket per call.
//!
//! The call hands PCM frames to [`SttStream::send_audio`]; a task owns the socket, forwards each
//! frame at once as a binary message, sends `KeepAlive` while no audio flows, and turns Deepgram's
//! JSON into [`SttEvent`]s. Audio sent while the socket is still connecting waits in a bounded
//! queue, so the first words of a call are not lost. If the socket drops mid-call the task
//! reconnects with backoff while the queue keeps the caller's audio (up to 10 s), so the call
//! goes on without losing speech; only when Deepgram stays unreachable does the call hear
//! [`SttEvent::Lost`].

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{interval, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::SttEvent;
use crate::secret::Secret;
use crate::settings::{self, Schemes, MILLIS};
use crate::socket::SOCKET_READ_BUFFER;

/// Caller audio that may wait for the socket: 10 s of 20 ms frames.
pub const AUDIO_QUEUE_FRAMES: usize = 500;
/// Deepgram closes a socket that hears nothing for about 10 s; speak up well before.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(4);
/// How long the connection handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before each reconnection attempt after a failed one; when they are used up, the
/// recogniser is given up (about 4 s of retrying, within the 10 s the audio queue holds).
const RECONNECT_BACKOFF: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// After `CloseStream`, how long we wait for the last results.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// PCM bytes in one second of the audio we send: 8000 samples of 16 bits.
const PCM_BYTES_PER_SECOND: f64 = 16_000.0;

/// Why the recogniser is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum SttError {
    /// The handshake failed or timed out.
    #[error("cannot connect to Deepgram live STT: {0}")]
    Connect(String),
    /// The socket failed or closed while the call was still talking to it.
    #[error("Deepgram live STT connection lost: {0}")]
    Lost(String),
}

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

    /// Opens a recognition stream for one call. Returns at once; the socket connects in the
    /// background and `events` receives what it hears until the stream is finished or `cancel`
    /// fires.
    pub fn start(&self, events: mpsc::Sender<SttEvent>, cancel: CancellationToken) -> SttStream {
        let (audio, audio_rx) = mpsc::channel(AUDIO_QUEUE_FRAMES);
        let session = Session {
            url: self.url.clone(),
            key: self.key.clone(),
            audio: audio_rx,
            events,
            cancel: cancel.clone(),
            earlier_audio_s: 0.0,
            connection_audio_bytes: 0,
        };
        SttStream {
            audio,
            task: tokio::spawn(session.run()),
            cancel,
            dropped_frames: 0,
        }
    }
}

/// One call's recognition stream, held by the call task.
#[derive(Debug)]
pub struct SttStream {
    /// Caller PCM on its way to the socket.
    audio: mpsc::Sender<Bytes>,
    /// The task that owns the socket.
    task: JoinHandle<()>,
    /// Stops the task outright.
    cancel: CancellationToken,
    /// Frames dropped because the queue was full.
    dropped_frames: u64,
}

impl SttStream {
    /// Queues one frame of PCM; never waits. Returns false when the frame had to be dropped
    /// (the recogniser is more than [`AUDIO_QUEUE_FRAMES`] frames behind, or gone).
    pub fn send_audio(&mut self, pcm: Bytes) -> bool {
        let sent = self.audio.try_send(pcm).is_ok();
        if !sent {
            self.dropped_frames += 1;
        }
        sent
    }

    /// Frames dropped so far.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Ends the stream: sends `CloseStream`, gives Deepgram a moment for the last results, then
    /// stops the task.
    pub async fn finish(self) {
        let Self {
            audio,
            mut task,
            cancel,
            ..
        } = self;
        drop(audio);
        if timeout(CLOSE_GRACE + Duration::from_millis(100), &mut task)
            .await
            .is_err()
        {
            cancel.cancel();
            let _ = task.await;
        }
    }
}

/// The task that owns one Deepgram socket.
struct Session {
    url: Url,
    key: Secret,
    audio: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<SttEvent>,
    cancel: CancellationToken,
    /// Seconds of audio sent on earlier connections: Deepgram's times restart at zero on each
    /// connection, so this maps them back onto the stream's audio.
    earlier_audio_s: f64,
    /// Bytes of audio sent on the current connection.
    connection_audio_bytes: u64,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Session {
    /// Connects, pumps, and reconnects after a drop, until the stream is finished, cancelled,
    /// or Deepgram stays unreachable through every backoff step.
    async fn run(mut self) {
        let mut failures = 0;
        let mut connections = 0u32;
        loop {
            let connected = tokio::select! {
                () = self.cancel.cancelled() => return,
                result = connect(&self.url, &self.key) => result,
            };
            match connected {
                Ok(socket) => {
                    failures = 0;
                    connections += 1;
                    if connections > 1 {
                        tracing::info!("speech recognition reconnected; buffered audio follows");
                    }
                    let result = self.pump(socket).await;
                    self.earlier_audio_s +=
                        self.connection_audio_bytes as f64 / PCM_BYTES_PER_SECOND;
                    self.connection_audio_bytes = 0;
                    match result {
                        Ok(()) => return,
                        Err(err) => {
                            tracing::warn!(
                                %err,
                                "speech recognition dropped mid-call; reconnecting, caller audio is kept meanwhile"
                            );
                            let _ = self.events.send(SttEvent::Dropped).await;
                        }
                    }
                }
                Err(err) => {
                    let Some(&delay) = RECONNECT_BACKOFF.get(failures) else {
                        let _ = self.events.send(SttEvent::Lost(err)).await;
                        return;
                    };
                    failures += 1;
                    tracing::warn!(%err, attempt = failures, "cannot reach speech recognition; retrying");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
            if self.audio.is_closed() && self.audio.is_empty() {
                return;
            }
        }
    }

    /// Moves audio out and events in until the stream is finished, cancelled or broken.
    async fn pump(&mut self, socket: Socket) -> Result<(), SttError> {
        let (mut sink, mut stream) = socket.split();
        let lost = |err: tokio_tungstenite::tungstenite::Error| SttError::Lost(err.to_string());
        let mut keepalive = interval(KEEPALIVE_EVERY);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        keepalive.reset();
        let mut closing: Option<Instant> = None;
        let mut first_audio: Option<Instant> = None;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return Ok(()),
                pcm = self.audio.recv(), if closing.is_none() => match pcm {
                    Some(pcm) => {
                        first_audio.get_or_insert_with(Instant::now);
                        let len = pcm.len() as u64;
                        sink.send(Message::Binary(pcm)).await.map_err(lost)?;
                        self.connection_audio_bytes += len;
                        keepalive.reset();
                    }
                    None => {
                        let close = Message::text(r#"{"type":"CloseStream"}"#);
                        sink.send(close).await.map_err(lost)?;
                        closing = Some(Instant::now() + CLOSE_GRACE);
                    }
                },
                _ = keepalive.tick(), if closing.is_none() => {
                    sink.send(Message::text(r#"{"type":"KeepAlive"}"#)).await.map_err(lost)?;
                }
                () = sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => {
                    return Ok(());
                }
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(event) = parse_event(&text, first_audio, self.earlier_audio_s) {
                            if self.events.send(event).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return match closing {
                            Some(_) => Ok(()),
                            None => Err(SttError::Lost(match frame {
                                Some(f) => format!("closed by Deepgram: {} {}", f.code, f.reason),
                                None => "closed by Deepgram".into(),
                            })),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(lost(err)),
                    None if closing.is_some() => return Ok(()),
                    None => return Err(SttError::Lost("socket ended".into())),
                },
            }
        }
    }
}

async fn connect(url: &Url, key: &Secret) -> Result<Socket, SttError> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|err| SttError::Connect(err.to_string()))?;
    let token = HeaderValue::from_str(&format!("Token {}", key.expose()))
        .map_err(|_| SttError::Connect("the API key is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", token);
    let config = WebSocketConfig::default().read_buffer_size(SOCKET_READ_BUFFER);
    // `true`: TCP_NODELAY, so a frame never waits for the previous one's ACK (Nagle).
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err(SttError::Connect(format!(
            "no answer within {CONNECT_TIMEOUT:?}"
        ))),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let reason = response
                .headers()
                .get("dg-error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Err(SttError::Connect(format!(
                "handshake refused with HTTP {} {reason}",
                response.status()
            )))
        }
        Ok(Err(err)) => Err(SttError::Connect(err.to_string())),
        Ok(Ok((socket, _))) => Ok(socket),
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
/// `first_audio` is when this connection's first audio was sent: Deepgram's audio times count
/// from there (Twilio's audio arrives in real time, so audio time tracks our clock).
/// `earlier_audio_s` is the audio sent on earlier connections, added to Deepgram's times.
fn parse_event(text: &str, first_audio: Option<Instant>, earlier_audio_s: f64) -> Option<SttEvent> {
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
            Some(SttEvent::Transcript {
                audio_end: audio_time(first_audio, start + duration),
                audio_start: audio_time(first_audio, start),
                text,
                is_final,
                speech_final,
                start: earlier_audio_s + finite_or_zero(start),
                duration: finite_or_zero(duration),
                confidence: finite_or_zero(confidence),
            })
        }
        ServerMessage::SpeechStarted {} => Some(SttEvent::SpeechStarted),
        ServerMessage::UtteranceEnd {} => Some(SttEvent::UtteranceEnd),
        ServerMessage::Other => None,
    }
}

/// Deepgram's number, or 0 when it sent NaN or infinity (never passed on).
fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Deepgram's audio time `secs` (counted from the connection's first audio, sent at
/// `first_audio`) on our clock; `None` when unknown or absurd.
fn audio_time(first_audio: Option<Instant>, secs: f64) -> Option<Instant> {
    let sent = first_audio?;
    (secs.is_finite() && (0.0..86_400.0).contains(&secs))
        .then(|| sent + Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the rustls connector for real (the crypto provider must resolve without a panic)
    /// and fails cleanly against a peer that speaks no TLS.
    #[tokio::test]
    async fn a_wss_peer_without_tls_is_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let url = Url::parse(&format!("wss://{address}/v1/listen")).unwrap();
        let err = connect(&url, &Secret::new("k")).await.err().unwrap();
        assert!(matches!(err, SttError::Connect(_)), "{err}");
    }

    #[tokio::test]
    async fn a_refused_handshake_names_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ndg-error: Invalid credentials\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = Url::parse(&format!("ws://{address}/v1/listen")).unwrap();
        let err = connect(&url, &Secret::new("k"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("401") && err.contains("Invalid credentials"),
            "{err}"
        );
    }

    fn parse_event_now(text: &str) -> Option<SttEvent> {
        parse_event(text, Some(Instant::now()), 0.0)
    }

    #[test]
    fn parses_results() {
        let sent = Instant::now();
        let event = parse_event(
            r#"{"type":"Results","channel_index":[0,1],"duration":1.0,"start":2.5,"is_final":true,"speech_final":false,"from_finalize":false,"channel":{"alternatives":[{"transcript":"Hello there.","confidence":0.9,"words":[]}]},"metadata":{"request_id":"r"}}"#,
            Some(sent),
            10.0,
        );
        let Some(SttEvent::Transcript {
            text,
            is_final,
            speech_final,
            audio_end,
            start,
            duration,
            confidence,
            audio_start,
        }) = event
        else {
            panic!("{event:?}")
        };
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
