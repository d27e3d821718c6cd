//! What Twilio uses to listen and speak in relay mode (`MODE=relay`): written into the
//! `<ConversationRelay>` of the webhook's TwiML. The caller's language is `LANGUAGE`, shared
//! with the Gather flow (one setting, one variable).
//!
//! Defaults: Twilio's `<ConversationRelay>` reference lists ElevenLabs as the default
//! `ttsProvider`, Google and Deepgram as `transcriptionProvider`s, and `any` as the default of
//! `interruptible` (PROTOCOLS §9.1 marks the defaults unconfirmed from the stored pages; Telnyx's
//! clone of the noun documents `any` too). We write every attribute out rather than rely on
//! Twilio's defaults, so the call sounds the same if those change.

use crate::settings;

/// The ElevenLabs voice Twilio's `<ConversationRelay>` reference gives as the default with
/// ElevenLabs, a natural-sounding English voice (ElevenLabs voices are named by ID, per Twilio's
/// "Picking a voice" guide). Its attribute table was not readable in the stored pages: check it
/// against the live documentation.
pub const DEFAULT_VOICE: &str = "UgBBYS2sOqTuMpoF3BR0";
/// Deepgram's general Nova-3 model, the `speechModel` of Twilio's samples for Deepgram
/// (PROTOCOLS §9.1); the seed prototype's Gather used Deepgram too.
pub const DEFAULT_SPEECH_MODEL: &str = "nova-3-general";

/// Who speaks our words (`ttsProvider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TtsProvider {
    /// ElevenLabs voices (by voice ID): Twilio's default, the most natural.
    #[value(name = "ElevenLabs")]
    ElevenLabs,
    /// Google voices (e.g. `en-US-Journey-O`).
    #[value(name = "Google")]
    Google,
    /// Amazon Polly voices (e.g. `Joanna-Neural`).
    #[value(name = "Amazon")]
    Amazon,
    /// Deepgram Aura voices.
    #[value(name = "Deepgram")]
    Deepgram,
}

/// Who recognises the caller (`transcriptionProvider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TranscriptionProvider {
    /// Deepgram (Nova, Flux models).
    #[value(name = "Deepgram")]
    Deepgram,
    /// Google (e.g. `telephony`).
    #[value(name = "Google")]
    Google,
}

/// What may interrupt our speech (`interruptible`, and `welcomeGreetingInterruptible`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Interruptible {
    /// Nothing: the caller hears every reply to its end.
    None,
    /// Key presses only.
    Dtmf,
    /// Speech only.
    Speech,
    /// Speech or key presses.
    Any,
}

impl Interruptible {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Interruptible::None => "none",
            Interruptible::Dtmf => "dtmf",
            Interruptible::Speech => "speech",
            Interruptible::Any => "any",
        }
    }
}

impl TtsProvider {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TtsProvider::ElevenLabs => "ElevenLabs",
            TtsProvider::Google => "Google",
            TtsProvider::Amazon => "Amazon",
            TtsProvider::Deepgram => "Deepgram",
        }
    }
}

impl TranscriptionProvider {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptionProvider::Deepgram => "Deepgram",
            TranscriptionProvider::Google => "Google",
        }
    }
}

/// Twilio's voice and ears in relay mode.
#[derive(Debug, Clone, clap::Args)]
pub struct RelaySettings {
    /// Relay mode: who speaks the assistant's words (ElevenLabs, Google, Amazon or Deepgram).
    /// Default ElevenLabs, Twilio's own default for ConversationRelay.
    #[arg(long, env = "RELAY_TTS_PROVIDER", value_enum, ignore_case = true,
          default_value_t = TtsProvider::ElevenLabs)]
    pub relay_tts_provider: TtsProvider,

    /// Relay mode: the voice, as the provider names it (an ElevenLabs voice ID, a Google or
    /// Amazon voice name).
    #[arg(long, env = "RELAY_VOICE", default_value = DEFAULT_VOICE,
          value_parser = settings::text("RELAY_VOICE"))]
    pub relay_voice: String,

    /// Relay mode: who recognises the caller (Deepgram or Google). Default Deepgram, as the
    /// seed prototype used.
    #[arg(long, env = "RELAY_TRANSCRIPTION_PROVIDER", value_enum, ignore_case = true,
          default_value_t = TranscriptionProvider::Deepgram)]
    pub relay_transcription_provider: TranscriptionProvider,

    /// Relay mode: the recognition model (e.g. nova-3-general, nova-2-phonecall, flux for
    /// Deepgram; telephony for Google).
    #[arg(long, env = "RELAY_SPEECH_MODEL", default_value = DEFAULT_SPEECH_MODEL,
          value_parser = settings::text("RELAY_SPEECH_MODEL"))]
    pub relay_speech_model: String,

    /// Relay mode: what may interrupt the assistant, greeting included: none, dtmf, speech or
    /// any (Twilio's default).
    #[arg(long, env = "RELAY_INTERRUPTIBLE", value_enum, ignore_case = true,
          default_value_t = Interruptible::Any)]
    pub relay_interruptible: Interruptible,
}
