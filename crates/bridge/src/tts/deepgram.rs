//! Deepgram TTS over REST: text in, a stream of μ-law audio chunks out as they arrive.
//!
//! We ask for `encoding=mulaw&sample_rate=8000&container=none`: exactly what Twilio plays, so the
//! audio goes out byte for byte as Deepgram made it — no resampling, no second lossy encode, no
//! 16-bit samples split across network chunks, half the bytes of linear16 on the wire, and no WAV
//! header (which would play as a click).

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Url;

use crate::secret::Secret;
use crate::settings::{self, Schemes};

/// Longest error body we keep for a log line.
const ERROR_BODY_CHARS: usize = 300;

/// Why synthesis failed.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    /// The request could not be sent or the body stopped mid-way.
    #[error("Deepgram TTS request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Deepgram answered with an error status.
    #[error("Deepgram TTS answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Start of the error body (Deepgram's `err_code` / `err_msg`).
        body: String,
    },
}

/// Deepgram text-to-speech settings (the key, shared with STT, is handed over separately).
#[derive(Debug, Clone, clap::Args)]
pub struct TtsSettings {
    /// Deepgram text-to-speech REST URL.
    #[arg(long, env = "DEEPGRAM_TTS_URL", default_value = "https://api.deepgram.com/v1/speak",
          value_parser = settings::url("DEEPGRAM_TTS_URL", Schemes::Http))]
    pub deepgram_tts_url: Url,

    /// Deepgram TTS model (voice).
    #[arg(long, env = "TTS_VOICE", default_value = "aura-asteria-en", value_parser = settings::text("TTS_VOICE"))]
    pub tts_voice: String,
}

/// A Deepgram TTS client: one pooled HTTP client, one voice.
#[derive(Debug, Clone)]
pub struct DeepgramTts {
    /// Shared, keep-alive HTTP client.
    http: reqwest::Client,
    /// Endpoint with the voice and audio format in its query.
    url: Url,
    /// `Authorization: Token …`.
    key: Secret,
}

impl DeepgramTts {
    /// A client for the configured endpoint and voice.
    pub fn new(http: reqwest::Client, settings: &TtsSettings, key: Secret) -> Self {
        let mut url = settings.deepgram_tts_url.clone();
        url.query_pairs_mut()
            .append_pair("model", &settings.tts_voice)
            .append_pair("encoding", "mulaw")
            .append_pair("sample_rate", "8000")
            .append_pair("container", "none");
        Self { http, url, key }
    }

    /// Starts synthesizing `text`; the stream yields audio chunks of any size as they arrive.
    pub async fn synthesize(
        &self,
        text: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, TtsError>> + Send + Unpin + 'static, TtsError>
    {
        let response = self
            .http
            .post(self.url.clone())
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Token {}", self.key.expose()),
            )
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(TtsError::Status {
                status,
                body: body.chars().take(ERROR_BODY_CHARS).collect(),
            });
        }
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(TtsError::from)))
    }
}
