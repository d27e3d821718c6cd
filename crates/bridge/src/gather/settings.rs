//! The Gather flow's settings: how Twilio listens and speaks for us, and how long a webhook
//! waits.

use std::time::Duration;

use crate::settings;

/// Twilio abandons a webhook after 15 s; a wait inside one must leave room to answer.
const WEBHOOK_BUDGET_MS: u64 = 14_000;

/// What the TwiML pages ask Twilio for.
#[derive(Debug, Clone, clap::Args)]
pub struct GatherSettings {
    /// Twilio `<Say>` voice of the Gather flow (`/call`), e.g. Polly.Stephen-Neural.
    #[arg(long, env = "TWILIO_VOICE", default_value = "Polly.Stephen-Neural",
          value_parser = settings::text("TWILIO_VOICE"))]
    pub twilio_voice: String,

    /// Twilio `<Gather speechModel>` that recognises the caller in the Gather flow.
    #[arg(long, env = "GATHER_SPEECH_MODEL", default_value = "deepgram_nova-2",
          value_parser = settings::text("GATHER_SPEECH_MODEL"))]
    pub gather_speech_model: String,

    /// Language of the caller's speech in the Gather flow and relay mode (BCP-47, passed to
    /// Twilio unchanged: `<Gather language>`, `<ConversationRelay language>`).
    #[arg(long, env = "LANGUAGE", default_value = "en-US", value_parser = settings::text("LANGUAGE"))]
    pub language: String,

    /// Milliseconds /speak_response waits for a reply still being written before apologising
    /// (at most 14000: Twilio gives up on a webhook after 15 s).
    #[arg(long = "speak-response-wait-ms", env = "SPEAK_RESPONSE_WAIT_MS", value_name = "SPEAK_RESPONSE_WAIT_MS", default_value = "10000",
          value_parser = settings::millis("SPEAK_RESPONSE_WAIT_MS", 1..=WEBHOOK_BUDGET_MS))]
    pub speak_response_wait: Duration,
}
