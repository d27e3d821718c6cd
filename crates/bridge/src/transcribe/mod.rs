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

use reqwest::Url;

use crate::metrics::Metrics;
use crate::settings::{self, Schemes};
use crate::stt::deepgram::DeepgramStt;

/// Where transcripts go.
#[derive(Debug, Clone, clap::Args)]
pub struct TranscribeSettings {
    /// In transcription mode, where each call's final transcript segments are POSTed as JSON
    /// (http:// or https://). Unset: transcripts are only logged.
    #[arg(long, env = "TRANSCRIPT_WEBHOOK_URL",
          value_parser = settings::private_url("TRANSCRIPT_WEBHOOK_URL", Schemes::Http))]
    pub transcript_webhook_url: Option<Url>,
}

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
    /// The services for `settings`, POSTing through the server's pooled `http` client.
    pub fn new(
        settings: &TranscribeSettings,
        stt: DeepgramStt,
        http: &reqwest::Client,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Self {
            stt,
            webhook: settings
                .transcript_webhook_url
                .clone()
                .map(|url| TranscriptWebhook::new(http.clone(), url, metrics.clone())),
            shutdown: CancellationToken::new(),
            metrics: metrics.clone(),
        }
    }
}
