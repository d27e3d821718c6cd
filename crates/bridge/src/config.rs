//! Flags and environment → [`Config`], checked once at start-up.
//!
//! Each module declares its own settings beside its code, as a clap `Args` group whose fields
//! parse and validate themselves (the module's `…Settings`); the [`Config`] gathers the groups,
//! and clap fills it from flags with environment fallbacks: the struct clap fills *is* the
//! configuration, one field per setting. What no single setting can decide (which keys the mode
//! needs) is checked by [`Config::validated`].
//!
//! The binary reads `.env` first so the fallbacks see it. Tests and tools never touch the
//! process environment: they build a configuration from explicit pairs with [`ConfigBuilder`].

use std::collections::HashMap;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, FromArgMatches, Parser};

pub use crate::call::settings::{
    AssistantSettings, IdleSettings, TurnSettings, BUILT_IN_SYSTEM_PROMPT, DEFAULT_FALLBACK_PHRASE,
    DEFAULT_GREETING, DEFAULT_IDLE_GOODBYE, DEFAULT_IDLE_PROMPT,
};
pub use crate::call::turns::TurnDetection;
pub use crate::gather::GatherSettings;
pub use crate::llm::mistral::MistralSettings;
pub use crate::record::RecordSettings;
pub use crate::relay::settings::{Interruptible, TranscriptionProvider, TtsProvider};
pub use crate::relay::RelaySettings;
use crate::secret::Secret;
use crate::settings;
pub use crate::store::{RedisUrl, StoreSettings};
pub use crate::stt::deepgram::{SttSettings, MIN_UTTERANCE_END_MS};
pub use crate::stt::flux::FluxSettings;
pub use crate::telemetry::{LogFormat, LogSettings};
pub use crate::tools::ToolSettings;
pub use crate::transcribe::TranscribeSettings;
pub use crate::tts::deepgram::TtsSettings;
pub use crate::twilio::TwilioSettings;

/// A setting that could not be used, named by its environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting has no value.
    #[error("{var} is not set: put it in the environment or in .env (see .env.example)")]
    Missing {
        /// The environment variable.
        var: &'static str,
    },
    /// A value that its setting's parser refused, or a flag clap refused: one line naming the
    /// variable, never repeating a value that may be a credential.
    #[error("{0}")]
    Invalid(String),
    /// A [`ConfigBuilder`] was given a variable that is no setting.
    #[error("{0} is not a setting of ivr-bridge")]
    Unknown(String),
}

/// What the server does with a call (`MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// The voice assistant: speech recognition, the model and the voice.
    #[default]
    Converse,
    /// Transcription only: each call's audio goes to Deepgram and the transcript is logged and
    /// sent to `TRANSCRIPT_WEBHOOK_URL`; no model, no voice.
    Transcribe,
    /// The assistant on Twilio ConversationRelay: Twilio listens and speaks (`RELAY_*`
    /// settings), the model answers over a text socket; no Deepgram key needed.
    Relay,
}

/// The server's own settings: where it listens, what it does with calls, how many it takes and
/// how it stops.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerSettings {
    /// Port to listen on (all interfaces).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// What the server does with calls: `converse` (the voice assistant), `transcribe`
    /// (transcription only: no model, no voice, MISTRAL_API_KEY not needed) or `relay` (the
    /// assistant on Twilio ConversationRelay: Twilio's speech recognition and voices,
    /// DEEPGRAM_API_KEY not needed).
    #[arg(long, env = "MODE", value_enum, ignore_case = true, default_value_t = Mode::Converse)]
    pub mode: Mode,

    /// Same as MODE=transcribe.
    #[arg(long, conflicts_with = "relay")]
    pub transcribe: bool,

    /// Same as MODE=relay.
    #[arg(long)]
    pub relay: bool,

    /// Most calls served at once; further calls are refused politely (503).
    #[arg(long, env = "MAX_CALLS", default_value = "1000",
          value_parser = settings::count("MAX_CALLS", 1..=100_000))]
    pub max_calls: usize,

    /// Seconds calls in progress may continue after SIGTERM before the process exits.
    #[arg(long = "drain-timeout-s", env = "DRAIN_TIMEOUT_S", value_name = "DRAIN_TIMEOUT_S", default_value = "60",
          value_parser = settings::seconds("DRAIN_TIMEOUT_S", 0..=3600))]
    pub drain_timeout: Duration,
}

/// The providers' credentials: which are needed depends on the mode, so they are checked once
/// everything is parsed, and the binary may ask for a missing one at the terminal first.
#[derive(Debug, Clone, Args)]
pub struct ProviderKeys {
    /// Deepgram API key (speech-to-text and text-to-speech).
    #[arg(long, env = "DEEPGRAM_API_KEY", hide_env_values = true, value_parser = settings::secret)]
    pub deepgram_api_key: Option<Secret>,

    /// Mistral API key.
    #[arg(long, env = "MISTRAL_API_KEY", hide_env_values = true, value_parser = settings::secret)]
    pub mistral_api_key: Option<Secret>,
}

impl ProviderKeys {
    /// The Deepgram key (empty until [`Config::validated`] has proven it set).
    pub fn deepgram(&self) -> Secret {
        self.deepgram_api_key.clone().unwrap_or_default()
    }

    /// The Mistral key (empty in transcription mode, where no route reaches the model).
    pub fn mistral(&self) -> Secret {
        self.mistral_api_key.clone().unwrap_or_default()
    }
}

/// Everything the server needs: every module's settings group, filled by clap.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Port, mode, call limit and drain.
    #[command(flatten)]
    pub server: ServerSettings,
    /// How Twilio reaches us and signs its requests.
    #[command(flatten)]
    pub twilio: TwilioSettings,
    /// The providers' credentials.
    #[command(flatten)]
    pub keys: ProviderKeys,
    /// Deepgram live speech-to-text.
    #[command(flatten)]
    pub stt: SttSettings,
    /// Deepgram Flux, the recogniser of `TURN_DETECTION=flux`.
    #[command(flatten)]
    pub flux: FluxSettings,
    /// Deepgram text-to-speech.
    #[command(flatten)]
    pub tts: TtsSettings,
    /// Mistral.
    #[command(flatten)]
    pub llm: MistralSettings,
    /// What the assistant is told and says.
    #[command(flatten)]
    pub assistant: AssistantSettings,
    /// How the streaming call's turns end.
    #[command(flatten)]
    pub turns: TurnSettings,
    /// What the streaming call does about a silent caller.
    #[command(flatten)]
    pub idle: IdleSettings,
    /// The Gather flow's TwiML and waits.
    #[command(flatten)]
    pub gather: GatherSettings,
    /// Where conversations are kept.
    #[command(flatten)]
    pub store: StoreSettings,
    /// Where transcripts go in transcription mode.
    #[command(flatten)]
    pub transcribe: TranscribeSettings,
    /// What Twilio listens and speaks with in relay mode.
    #[command(flatten)]
    pub relay: RelaySettings,
    /// Whether calls are recorded.
    #[command(flatten)]
    pub record: RecordSettings,
    /// The assistant's tools: the operator's, and where a transfer dials.
    #[command(flatten)]
    pub tools: ToolSettings,
    /// How the binary logs.
    #[command(flatten)]
    pub log: LogSettings,
}

impl Config {
    /// Checks what no single setting can: the keys the mode needs (Deepgram unless relaying,
    /// Mistral unless transcribing), and `TOOLS_SECRET` when there is a `TOOLS_FILE` (tool
    /// requests are always signed). `--transcribe` becomes `MODE=transcribe`, `--relay`
    /// `MODE=relay`.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        if self.server.transcribe {
            self.server.mode = Mode::Transcribe;
        }
        if self.server.relay {
            self.server.mode = Mode::Relay;
        }
        let missing = |key: &Option<Secret>| key.as_ref().is_none_or(Secret::is_empty);
        if self.server.mode != Mode::Relay && missing(&self.keys.deepgram_api_key) {
            return Err(ConfigError::Missing {
                var: "DEEPGRAM_API_KEY",
            });
        }
        if self.server.mode != Mode::Transcribe && missing(&self.keys.mistral_api_key) {
            return Err(ConfigError::Missing {
                var: "MISTRAL_API_KEY",
            });
        }
        if self.tools.tools_file.is_some() && missing(&self.tools.tools_secret) {
            return Err(ConfigError::Missing {
                var: "TOOLS_SECRET",
            });
        }
        if self.turns.turn_detection == TurnDetection::Flux {
            let preemptive = self.turns.preemptive_generation;
            self.flux.check(preemptive).map_err(ConfigError::Invalid)?;
        }
        Ok(self)
    }

    /// A builder from explicit `(VARIABLE, value)` pairs, the process environment left out.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The environment variable of every setting (`PORT`, `DEEPGRAM_API_KEY`, …).
    pub fn variables() -> Vec<String> {
        Standalone::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env()?.to_str().map(str::to_owned))
            .collect()
    }
}

/// Settings from explicit `(VARIABLE, value)` pairs, each parsed and checked exactly as the
/// variable would be, with every other setting at its default whatever the process environment
/// holds: what tests and tools build a [`Config`] with.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    /// The variables given, in order; a later value wins.
    vars: Vec<(String, String)>,
}

impl ConfigBuilder {
    /// Sets `var` (e.g. `"SILENCE_TIMEOUT_MS"`) to `value`; blank means unset, as in `.env`.
    pub fn set(mut self, var: &str, value: impl Into<String>) -> Self {
        self.vars.push((var.to_owned(), value.into()));
        self
    }

    /// The configuration, validated as at start-up.
    pub fn build(&self) -> Result<Config, ConfigError> {
        let command = Standalone::command();
        let flags: HashMap<String, String> = command
            .get_arguments()
            .filter_map(|arg| {
                let var = arg.get_env()?.to_str()?.to_owned();
                Some((var, arg.get_long()?.to_owned()))
            })
            .collect();
        let mut given: Vec<(&String, &String)> = Vec::new();
        for (var, value) in &self.vars {
            let flag = flags
                .get(var)
                .ok_or_else(|| ConfigError::Unknown(var.clone()))?;
            given.retain(|(f, _)| *f != flag);
            given.push((flag, value));
        }
        let mut argv = vec!["ivr-bridge".to_owned()];
        argv.extend(
            given
                .into_iter()
                .filter(|(_, value)| !value.trim().is_empty())
                .map(|(flag, value)| format!("--{flag}={value}")),
        );
        let matches = command
            .mut_args(|arg| arg.env(None::<&str>))
            .args_override_self(true)
            .try_get_matches_from(argv)
            .map_err(|err| ConfigError::Invalid(one_line(&err)))?;
        let parsed = Standalone::from_arg_matches(&matches)
            .map_err(|err| ConfigError::Invalid(one_line(&err)))?;
        parsed.config.validated()
    }
}

/// The configuration alone as a command, for [`ConfigBuilder`] and [`Config::variables`].
#[derive(Parser)]
#[command(name = "ivr-bridge")]
struct Standalone {
    #[command(flatten)]
    config: Config,
}

/// One line for a command-line or setting error: the setting parser's own message (which names
/// the variable and never repeats a value that may be a credential), or for a choice the
/// variable and its choices; otherwise clap's first line.
pub fn one_line(err: &clap::Error) -> String {
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        _ => String::new(),
    };
    // `--port <PORT>`: the value name is the variable's name.
    let var = arg
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(arg.as_str(), |(name, _)| name);
    if let Some(source) = std::error::Error::source(err) {
        let message = source.to_string();
        return match message.contains(var) {
            true => message,
            false => format!("{var} is not valid: {message}"),
        };
    }
    if err.kind() == ErrorKind::InvalidValue {
        if let Some(ContextValue::Strings(choices)) = err.get(ContextKind::ValidValue) {
            return format!("{var} must be one of: {}", choices.join(", "));
        }
    }
    let rendered = err.to_string();
    let line = rendered.lines().next().unwrap_or("invalid arguments");
    line.trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both keys set, everything else default.
    fn keyed() -> ConfigBuilder {
        Config::builder()
            .set("DEEPGRAM_API_KEY", "dg-secret")
            .set("MISTRAL_API_KEY", "mi-secret")
    }

    fn error(builder: ConfigBuilder) -> String {
        builder.build().expect_err("a bad setting").to_string()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = keyed().build().expect("defaults");
        assert_eq!(config.server.port, 8080);
        assert_eq!(config.server.mode, Mode::Converse);
        assert_eq!(config.server.max_calls, 1000);
        assert_eq!(config.turns.silence_timeout, Duration::from_secs(2));
        assert_eq!(config.turns.turn_detection, TurnDetection::Timer);
        assert_eq!(config.stt.stt_endpointing, Duration::from_millis(300));
        assert_eq!(config.stt.stt_utterance_end, Duration::from_millis(1000));
        assert_eq!(config.gather.twilio_voice, "Polly.Stephen-Neural");
        assert_eq!(config.gather.gather_speech_model, "deepgram_nova-2");
        assert_eq!(config.gather.language, "en-US");
        assert_eq!(config.llm.llm_timeout, Duration::from_secs(8));
        assert_eq!(config.gather.speak_response_wait, Duration::from_secs(10));
        assert_eq!(config.assistant.greeting, DEFAULT_GREETING);
        assert_eq!(config.assistant.system_prompt, BUILT_IN_SYSTEM_PROMPT);
        assert_eq!(config.log.log_format, LogFormat::Text);
        assert!(config.store.redis_url.is_none());
        assert!(config.twilio.public_url.is_none());
        assert!(config.record.record_dir.is_none());
        assert!(config.tools.tools_file.is_none() && config.tools.transfer_to.is_none());
        assert_eq!(
            config.tools.transfer_phrase,
            crate::tools::DEFAULT_TRANSFER_PHRASE
        );
    }

    #[test]
    fn a_tools_file_needs_its_secret() {
        let path =
            std::env::temp_dir().join(format!("ivr-config-tools-{}.json", std::process::id()));
        std::fs::write(&path, "[]").expect("a temp file");
        let with_file = keyed().set("TOOLS_FILE", path.to_string_lossy());
        let err = error(with_file.clone());
        assert!(err.starts_with("TOOLS_SECRET is not set"), "{err}");
        let config = with_file.set("TOOLS_SECRET", "tools-secret").build();
        let _ = std::fs::remove_file(&path);
        let config = config.expect("file and secret");
        assert!(!format!("{config:?}").contains("tools-secret"));
    }

    #[test]
    fn secrets_never_print() {
        let config = keyed()
            .set("TWILIO_AUTH_TOKEN", "tw-secret")
            .build()
            .expect("config");
        let debug = format!("{config:?}");
        for secret in ["dg-secret", "mi-secret", "tw-secret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn a_missing_key_names_the_variable() {
        let err = error(Config::builder().set("DEEPGRAM_API_KEY", "dg"));
        assert!(err.starts_with("MISTRAL_API_KEY is not set"), "{err}");
        let err = error(Config::builder().set("MISTRAL_API_KEY", "mi"));
        assert!(err.starts_with("DEEPGRAM_API_KEY is not set"), "{err}");
        let err = error(keyed().set("DEEPGRAM_API_KEY", "  "));
        assert!(err.starts_with("DEEPGRAM_API_KEY is not set"), "{err}");
    }

    #[test]
    fn transcription_needs_no_mistral_key() {
        let only_deepgram = Config::builder().set("DEEPGRAM_API_KEY", "dg");
        let config = only_deepgram.clone().set("MODE", "transcribe").build();
        assert_eq!(config.expect("transcribe").server.mode, Mode::Transcribe);
        let config = only_deepgram.set("MODE", "TRANSCRIBE").build();
        assert_eq!(config.expect("any case").server.mode, Mode::Transcribe);
    }

    #[test]
    fn relay_needs_no_deepgram_key_and_has_defensible_defaults() {
        let only_mistral = Config::builder().set("MISTRAL_API_KEY", "mi");
        let config = only_mistral.clone().set("MODE", "relay").build();
        let config = config.expect("relay without a Deepgram key");
        assert_eq!(config.server.mode, Mode::Relay);
        let relay = &config.relay;
        assert_eq!(relay.relay_tts_provider, TtsProvider::ElevenLabs);
        assert_eq!(relay.relay_voice, crate::relay::settings::DEFAULT_VOICE);
        assert_eq!(
            relay.relay_transcription_provider,
            TranscriptionProvider::Deepgram
        );
        assert_eq!(relay.relay_speech_model, "nova-3-general");
        assert_eq!(relay.relay_interruptible, Interruptible::Any);
        let err = error(Config::builder().set("MODE", "relay"));
        assert!(err.starts_with("MISTRAL_API_KEY is not set"), "{err}");
        let config = only_mistral
            .set("MODE", "relay")
            .set("RELAY_TTS_PROVIDER", "google")
            .set("RELAY_VOICE", "en-US-Journey-O")
            .set("RELAY_TRANSCRIPTION_PROVIDER", "GOOGLE")
            .set("RELAY_SPEECH_MODEL", "telephony")
            .set("RELAY_INTERRUPTIBLE", "speech")
            .set("LANGUAGE", "en-GB")
            .build()
            .expect("relay settings");
        let relay = &config.relay;
        assert_eq!(relay.relay_tts_provider.as_str(), "Google");
        assert_eq!(relay.relay_voice, "en-US-Journey-O");
        assert_eq!(relay.relay_transcription_provider.as_str(), "Google");
        assert_eq!(relay.relay_speech_model, "telephony");
        assert_eq!(relay.relay_interruptible, Interruptible::Speech);
        assert_eq!(config.gather.language, "en-GB");
    }

    #[test]
    fn a_bad_relay_setting_is_one_line_naming_its_variable() {
        for (var, value, message) in [
            (
                "RELAY_TTS_PROVIDER",
                "polly",
                "RELAY_TTS_PROVIDER must be one of: ElevenLabs, Google, Amazon, Deepgram",
            ),
            (
                "RELAY_TRANSCRIPTION_PROVIDER",
                "whisper",
                "RELAY_TRANSCRIPTION_PROVIDER must be one of: Deepgram, Google",
            ),
            (
                "RELAY_INTERRUPTIBLE",
                "sometimes",
                "RELAY_INTERRUPTIBLE must be one of: none, dtmf, speech, any",
            ),
        ] {
            let err = error(keyed().set("MODE", "relay").set(var, value));
            assert_eq!(err, message, "{var}={value:?}");
        }
    }

    #[test]
    fn the_relay_flag_is_relay_mode() {
        use clap::Parser as _;
        let parsed = Standalone::try_parse_from(["ivr-bridge", "--relay", "--mistral-api-key=mi"])
            .expect("flags");
        let config = parsed.config.validated().expect("relay by flag");
        assert_eq!(config.server.mode, Mode::Relay);
    }

    #[test]
    fn a_bad_value_is_named_without_being_repeated_when_it_may_be_secret() {
        for (var, value, start) in [
            ("SILENCE_TIMEOUT_MS", "soon", "SILENCE_TIMEOUT_MS must be"),
            ("SILENCE_TIMEOUT_MS", "0", "SILENCE_TIMEOUT_MS must be"),
            (
                "DEEPGRAM_STT_URL",
                "https://x/v1/listen",
                "DEEPGRAM_STT_URL=",
            ),
            ("LLM_TIMEOUT_MS", "20000", "LLM_TIMEOUT_MS must be"),
            (
                "SPEAK_RESPONSE_WAIT_MS",
                "15000",
                "SPEAK_RESPONSE_WAIT_MS must be",
            ),
            (
                "STT_UTTERANCE_END_MS",
                "500",
                "STT_UTTERANCE_END_MS must be at least 1000",
            ),
            ("STT_ENDPOINTING_MS", "soon", "STT_ENDPOINTING_MS must be"),
            (
                "TURN_DETECTION",
                "vad",
                "TURN_DETECTION must be one of: timer, deepgram",
            ),
            (
                "MODE",
                "bogus",
                "MODE must be one of: converse, transcribe, relay",
            ),
            ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of: text, json"),
            ("PORT", "eighty", "PORT is not valid"),
            ("MAX_CALLS", "0", "MAX_CALLS must be"),
            ("TRANSFER_TO", "555-1234", "TRANSFER_TO must be"),
            ("TRANSFER_TO", "sip:", "TRANSFER_TO must be"),
            ("TRANSFER_CALLER_ID", "me", "TRANSFER_CALLER_ID must be"),
            (
                "TOOLS_FILE",
                "/nonexistent/tools.json",
                "TOOLS_FILE /nonexistent/tools.json: cannot be read",
            ),
            ("PUBLIC_URL", "https://a.example/?x=1", "PUBLIC_URL="),
            ("REDIS_URL", "http://:hunter2@cache", "REDIS_URL="),
            (
                "REDIS_URL",
                "rediss://:hunter2@cache",
                "REDIS_URL uses rediss://",
            ),
            (
                "TRANSCRIPT_WEBHOOK_URL",
                "ftp://x/hook?token=hunter2",
                "TRANSCRIPT_WEBHOOK_URL must be",
            ),
        ] {
            let err = error(keyed().set(var, value));
            assert!(err.starts_with(start), "{var}={value}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_blank_optional_setting_is_unset() {
        let config = keyed()
            .set("PUBLIC_URL", " ")
            .set("REDIS_URL", "")
            .build()
            .expect("blank is unset");
        assert!(config.twilio.public_url.is_none() && config.store.redis_url.is_none());
    }

    #[test]
    fn settings_reach_their_groups() {
        let config = keyed()
            .set("TURN_DETECTION", "deepgram")
            .set("STT_ENDPOINTING_MS", "450")
            .set("STT_UTTERANCE_END_MS", "1500")
            .set("REDIS_URL", "redis://:pw@cache.internal:6380/2")
            .set("TRANSCRIPT_WEBHOOK_URL", "https://x.example/hook")
            .set("LOG_FORMAT", "json")
            .build()
            .expect("config");
        assert_eq!(config.turns.turn_detection, TurnDetection::Deepgram);
        assert_eq!(config.stt.stt_endpointing, Duration::from_millis(450));
        assert_eq!(config.stt.stt_utterance_end, Duration::from_millis(1500));
        assert_eq!(config.log.log_format, LogFormat::Json);
        let url = config.store.redis_url.expect("a Redis URL");
        assert_eq!(url.to_string(), "redis://***@cache.internal:6380/2");
        let hook = config.transcribe.transcript_webhook_url.expect("a webhook");
        assert_eq!(hook.as_str(), "https://x.example/hook");
    }

    #[test]
    fn flux_settings_are_read_and_checked_in_one_line() {
        let config = keyed().build().expect("defaults");
        assert!(config.turns.preemptive_generation);
        assert_eq!(config.flux.flux_model, "flux-general-en");
        assert_eq!(config.flux.flux_eot_threshold, None);
        assert_eq!(config.flux.flux_eager_eot_threshold, 0.5);
        assert_eq!(
            config.flux.deepgram_flux_url.as_str(),
            "wss://api.deepgram.com/v2/listen"
        );
        let flux = keyed()
            .set("TURN_DETECTION", "FLUX")
            .set("FLUX_EOT_THRESHOLD", "0.8")
            .set("PREEMPTIVE_GENERATION", "false")
            .build()
            .expect("flux settings");
        assert_eq!(flux.turns.turn_detection, TurnDetection::Flux);
        assert_eq!(flux.flux.flux_eot_threshold, Some(0.8));
        assert!(!flux.turns.preemptive_generation);
        for (var, value, message) in [
            ("FLUX_MODEL", "nova-3", "FLUX_MODEL must be a Flux model"),
            (
                "FLUX_EOT_THRESHOLD",
                "0.95",
                "FLUX_EOT_THRESHOLD must be a number from 0.5 to 0.9",
            ),
            (
                "FLUX_EAGER_EOT_THRESHOLD",
                "0.1",
                "FLUX_EAGER_EOT_THRESHOLD must be a number",
            ),
            (
                "PREEMPTIVE_GENERATION",
                "sometimes",
                "PREEMPTIVE_GENERATION must be true or false",
            ),
            (
                "DEEPGRAM_FLUX_URL",
                "https://x/v2/listen",
                "DEEPGRAM_FLUX_URL=",
            ),
        ] {
            let err = error(keyed().set(var, value));
            assert!(
                err.starts_with(message) && !err.contains('\n'),
                "{var}: {err}"
            );
        }
        // An eager threshold above the end-of-turn one, only when it is sent.
        let eager = || {
            keyed()
                .set("TURN_DETECTION", "flux")
                .set("FLUX_EOT_THRESHOLD", "0.6")
                .set("FLUX_EAGER_EOT_THRESHOLD", "0.7")
        };
        assert_eq!(
            error(eager()),
            "FLUX_EAGER_EOT_THRESHOLD (0.7) must not be above FLUX_EOT_THRESHOLD (0.6)"
        );
        assert!(eager()
            .set("PREEMPTIVE_GENERATION", "false")
            .build()
            .is_ok());
    }

    #[test]
    fn an_unknown_variable_is_refused() {
        let err = error(keyed().set("SILENCE_TIMEOUT", "5"));
        assert_eq!(err, "SILENCE_TIMEOUT is not a setting of ivr-bridge");
    }

    #[test]
    fn every_setting_has_its_variable() {
        let vars = Config::variables();
        for var in [
            "PORT",
            "PUBLIC_URL",
            "DEEPGRAM_API_KEY",
            "MISTRAL_API_KEY",
            "SILENCE_TIMEOUT_MS",
            "TURN_DETECTION",
            "PREEMPTIVE_GENERATION",
            "DEEPGRAM_FLUX_URL",
            "FLUX_MODEL",
            "FLUX_EOT_THRESHOLD",
            "FLUX_EAGER_EOT_THRESHOLD",
            "REDIS_URL",
            "RECORD_DIR",
            "LOG_FORMAT",
            "MODE",
            "RELAY_TTS_PROVIDER",
            "RELAY_VOICE",
            "RELAY_TRANSCRIPTION_PROVIDER",
            "RELAY_SPEECH_MODEL",
            "RELAY_INTERRUPTIBLE",
            "LANGUAGE",
        ] {
            assert!(vars.iter().any(|v| v == var), "{var} missing");
        }
    }
}
