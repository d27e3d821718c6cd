//! Transcription-only mode (`MODE=transcribe`): each call's audio goes to Deepgram and its final
//! transcript segments are logged and, when `TRANSCRIPT_WEBHOOK_URL` is set, POSTed as JSON. No
//! model and no voice: nothing is ever said on the line.
//!
//! The voice webhook answers as in the assistant mode, with `<Connect><Stream>` to `/media` (the
//! caller's own track, for as long as they stay on the line). A stream started by your own TwiML
//! with `<Start><Stream track="both_tracks">` (e.g. before a `<Dial>`) is served too: each track
//! gets its own recogniser and its segments are labelled `inbound` or `outbound`.

mod call;
pub mod webhook;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use call::run;
use webhook::TranscriptWebhook;

use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::stt::deepgram::DeepgramStt;

/// What every transcribed call needs, shared read-only by all of them.
#[derive(Debug)]
pub struct TranscribeServices {
    /// Speech recognition settings; each track of each call opens its own socket.
    pub stt: DeepgramStt,
    /// Where transcripts are POSTed; `None` logs them only.
    pub webhook: Option<TranscriptWebhook>,
    /// Cancelled when the server ends the calls still in progress (end of a drain).
    pub shutdown: CancellationToken,
    /// Calls, provider errors and webhook outcomes.
    pub metrics: Arc<Metrics>,
}

impl TranscribeServices {
    /// The services for `config`, POSTing through the server's pooled `http` client.
    pub fn new(config: &Config, http: &reqwest::Client, metrics: &Arc<Metrics>) -> Self {
        Self {
            stt: DeepgramStt::new(config),
            webhook: config
                .transcript_webhook_url
                .clone()
                .map(|url| TranscriptWebhook::new(http.clone(), url, metrics.clone())),
            shutdown: CancellationToken::new(),
            metrics: metrics.clone(),
        }
    }
}

/// Says at start-up what the mode does with transcripts, or that the webhook URL is unused.
pub fn announce(config: &Config) {
    match (config.mode, &config.transcript_webhook_url) {
        (Mode::Transcribe, Some(_)) => tracing::info!(
            "transcription mode: no assistant; transcripts are logged and sent to TRANSCRIPT_WEBHOOK_URL"
        ),
        (Mode::Transcribe, None) => tracing::info!(
            "transcription mode: no assistant; transcripts are logged (set TRANSCRIPT_WEBHOOK_URL to receive them)"
        ),
        (Mode::Converse, Some(_)) => tracing::warn!(
            "TRANSCRIPT_WEBHOOK_URL is ignored: it is used only with MODE=transcribe"
        ),
        (Mode::Converse, None) => {}
    }
}
