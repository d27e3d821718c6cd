//! Flags and environment → [`Config`], checked once at start-up.
//!
//! Every setting is a clap flag with an environment fallback; `main` reads `.env` first so the
//! fallback sees it. Tests never touch the process environment: they build a [`Config`] directly.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use crate::call::turns::TurnDetection;
use reqwest::Url;

/// The instructions the assistant follows when `SYSTEM_PROMPT_FILE` is not set. Written for the
/// ear: whatever the model writes is spoken on a phone line.
pub const BUILT_IN_SYSTEM_PROMPT: &str = "\
You are the front desk assistant of City General Hospital, answering the phone. \
Everything you write is read aloud to a caller, so speak naturally: one to three short sentences, \
no lists, no headings, no bold text, no links, no emoji, and write times and numbers the way a \
person would say them. \
Facts you may give: the hospital is at 100 Main Street, Springfield, next to the central bus station. \
Its front desk and outpatient clinics are open Monday to Friday from 8 AM to 6 PM, and closed on \
Saturdays and Sundays. Visiting hours for patients are every day from 10 AM to 8 PM. Appointments are \
booked through the front desk during opening hours. \
If the caller describes a medical emergency, tell them to hang up and dial 911 at once. \
If you do not know something, say so and offer to take a message for the front desk; never invent \
phone numbers, prices or medical advice. \
After answering, ask if there is anything else you can help with. When the caller says goodbye or \
has nothing else, thank them warmly and say goodbye.";

/// The greeting spoken when a stream starts, unless `GREETING` says otherwise.
pub const DEFAULT_GREETING: &str =
    "Welcome to the automated assistant. What can I help you with today?";

/// Deepgram sends interim results about once a second, so a shorter `utterance_end_ms` cannot be
/// detected (PROTOCOLS.md §4.2).
pub const MIN_UTTERANCE_END_MS: u64 = 1000;

/// What the server does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The voice assistant: speech recognition, the model and the voice.
    #[default]
    Converse,
    /// Transcription only: each call's audio goes to Deepgram and the transcript is logged and
    /// sent to `TRANSCRIPT_WEBHOOK_URL`; no model, no voice.
    Transcribe,
}

impl Mode {
    /// The value as written in `MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converse => "converse",
            Self::Transcribe => "transcribe",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential that never prints: `Debug` and `Display` show `***`, so a key cannot reach a log
/// line, an error or a panic message by accident. Read it with [`Secret::expose`] at the one
/// place it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the request header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The Redis URL, which may carry a password (`redis://:pass@host/0`): `Debug` and `Display` show
/// it with the password (and user name) replaced by `***`, so it is safe in logs and errors. Read
/// it with [`RedisUrl::expose`] only to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

impl RedisUrl {
    /// Parses `redis://[user[:password]@]host[:port][/db]`; the error names `REDIS_URL` and never
    /// repeats a password.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        if raw.trim().starts_with("rediss://") {
            return Err(ConfigError::Invalid {
                var: "REDIS_URL",
                problem: "uses rediss:// (TLS), which this build does not support: use redis://",
            });
        }
        let url = Url::parse(raw.trim()).ok().filter(|url| {
            url.scheme() == "redis" && url.host_str().is_some_and(|host| !host.is_empty())
        });
        match url {
            Some(url) => Ok(Self(url)),
            None => Err(ConfigError::BadUrl {
                var: "REDIS_URL",
                value: redact_userinfo(raw.trim()),
                expected: "redis://",
            }),
        }
    }

    /// The URL itself, password included, for the Redis client.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with any credentials replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_userinfo(self.0.as_str())
    }
}

/// `scheme://user:pass@rest` → `scheme://***@rest`; URLs without credentials are unchanged.
fn redact_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return if raw.contains('@') {
            "***".to_owned()
        } else {
            raw.to_owned()
        };
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => raw.to_owned(),
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A setting that could not be used, named by its environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting has no value.
    #[error("{var} is not set: put it in the environment or in .env (see .env.example)")]
    Missing {
        /// The environment variable.
        var: &'static str,
    },
    /// A URL setting is not a URL of the kind it must be.
    #[error("{var}={value:?} is not a valid {expected} URL")]
    BadUrl {
        /// The environment variable.
        var: &'static str,
        /// What was given.
        value: String,
        /// The schemes it must use.
        expected: &'static str,
    },
    /// A setting is out of range or empty.
    #[error("{var} {problem}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `RECORD_DIR` is not a writable directory.
    #[error(transparent)]
    RecordDir(#[from] crate::record::RecordDirError),
    /// The system prompt file could not be read.
    #[error("SYSTEM_PROMPT_FILE={path:?} cannot be read: {source}")]
    PromptFile {
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
}

/// The server's settings as flags with environment fallbacks. Names are part of the public
/// interface: deployments and test rigs set these variables.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on (all interfaces).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Public base URL Twilio reaches this server at, e.g. https://abc.ngrok-free.app.
    /// Unset: taken from each request's Host and X-Forwarded-Proto headers.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Deepgram API key (speech-to-text and text-to-speech).
    #[arg(long, env = "DEEPGRAM_API_KEY", hide_env_values = true)]
    pub deepgram_api_key: Option<String>,

    /// Mistral API key.
    #[arg(long, env = "MISTRAL_API_KEY", hide_env_values = true)]
    pub mistral_api_key: Option<String>,

    /// Deepgram live speech-to-text WebSocket URL.
    #[arg(
        long,
        env = "DEEPGRAM_STT_URL",
        default_value = "wss://api.deepgram.com/v1/listen"
    )]
    pub deepgram_stt_url: String,

    /// Deepgram text-to-speech REST URL.
    #[arg(
        long,
        env = "DEEPGRAM_TTS_URL",
        default_value = "https://api.deepgram.com/v1/speak"
    )]
    pub deepgram_tts_url: String,

    /// Mistral chat completions URL.
    #[arg(
        long,
        env = "MISTRAL_API_URL",
        default_value = "https://api.mistral.ai/v1/chat/completions"
    )]
    pub mistral_api_url: String,

    /// Mistral model that writes the replies.
    #[arg(long, env = "MISTRAL_MODEL", default_value = "mistral-small-latest")]
    pub mistral_model: String,

    /// Deepgram live model.
    #[arg(long, env = "STT_MODEL", default_value = "nova-2")]
    pub stt_model: String,

    /// Deepgram TTS model (voice).
    #[arg(long, env = "TTS_VOICE", default_value = "aura-asteria-en")]
    pub tts_voice: String,

    /// Silence, in milliseconds, that ends the caller's turn.
    #[arg(long, env = "SILENCE_TIMEOUT_MS", default_value_t = 2000,
          value_parser = parse_millis("SILENCE_TIMEOUT_MS"))]
    pub silence_timeout_ms: u64,

    /// What ends the caller's turn: `timer` (the silence timer alone) or `deepgram` (Deepgram's
    /// end of speech, with the silence timer as a fallback).
    #[arg(long, env = "TURN_DETECTION", default_value_t = TurnDetection::Timer,
          value_parser = parse_turn_detection)]
    pub turn_detection: TurnDetection,

    /// Silence, in milliseconds, after which Deepgram finalizes speech with `speech_final`
    /// (its `endpointing` parameter).
    #[arg(long, env = "STT_ENDPOINTING_MS", default_value_t = 300,
          value_parser = parse_millis("STT_ENDPOINTING_MS"))]
    pub stt_endpointing_ms: u64,

    /// Gap, in milliseconds, after the last word before Deepgram sends `UtteranceEnd` (its
    /// `utterance_end_ms` parameter; at least 1000).
    #[arg(long, env = "STT_UTTERANCE_END_MS", default_value_t = 1000,
          value_parser = parse_millis("STT_UTTERANCE_END_MS"))]
    pub stt_utterance_end_ms: u64,

    /// Spoken when the stream starts.
    #[arg(long, env = "GREETING", default_value = DEFAULT_GREETING)]
    pub greeting: String,

    /// File with the assistant's instructions (default: a built-in hospital front desk prompt).
    #[arg(long, env = "SYSTEM_PROMPT_FILE")]
    pub system_prompt_file: Option<PathBuf>,

    /// Twilio `<Say>` voice of the Gather flow (`/call`), e.g. Polly.Stephen-Neural.
    #[arg(long, env = "TWILIO_VOICE", default_value = "Polly.Stephen-Neural")]
    pub twilio_voice: String,

    /// Twilio `<Gather speechModel>` that recognises the caller in the Gather flow.
    #[arg(long, env = "GATHER_SPEECH_MODEL", default_value = "deepgram_nova-2")]
    pub gather_speech_model: String,

    /// Language of the caller's speech in the Gather flow (BCP-47, passed to Twilio unchanged).
    #[arg(long, env = "LANGUAGE", default_value = "en-US")]
    pub language: String,

    /// Milliseconds the Gather flow waits for Mistral before answering with a holding phrase and
    /// a redirect to /speak_response (Twilio gives up on a webhook after 15 s).
    #[arg(long, env = "LLM_TIMEOUT_MS", default_value_t = 8000,
          value_parser = parse_millis("LLM_TIMEOUT_MS"))]
    pub llm_timeout_ms: u64,

    /// Milliseconds /speak_response waits for a reply still being written before apologising.
    #[arg(long, env = "SPEAK_RESPONSE_WAIT_MS", default_value_t = 10000,
          value_parser = parse_millis("SPEAK_RESPONSE_WAIT_MS"))]
    pub speak_response_wait_ms: u64,

    /// Log lines as human-readable text (`text`) or one JSON object a line (`json`) for log
    /// collectors; every line of a call carries its call_sid either way.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Redis holding the Gather flow's conversations, so several instances share calls
    /// (redis://[:password@]host[:port][/db]). Unset: kept in this process's memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Twilio auth token: when set, every webhook and Media Stream handshake must carry a valid
    /// X-Twilio-Signature (403 otherwise). Unset: signatures are not checked (a warning says so).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// Most calls served at once; further calls are refused politely (503).
    #[arg(long, env = "MAX_CALLS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_calls: u32,

    /// Largest WebSocket message accepted from Twilio, in bytes; a larger one closes that
    /// socket only (a 20 ms media message is about 300 bytes).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1_024..=16_777_216))]
    pub max_message_bytes: u32,

    /// Seconds calls in progress may continue after SIGTERM before the process exits.
    #[arg(long, env = "DRAIN_TIMEOUT_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_timeout_s: u64,

    /// Said when a streaming reply cannot be produced (model or voice failure); the call then
    /// listens again.
    #[arg(long, env = "FALLBACK_PHRASE", default_value = DEFAULT_FALLBACK_PHRASE)]
    pub fallback_phrase: String,

    /// What the server does with calls: `converse` (the voice assistant) or `transcribe`
    /// (transcription only: no model, no voice, MISTRAL_API_KEY not needed).
    #[arg(long, env = "MODE", default_value_t = Mode::Converse, value_parser = parse_mode)]
    pub mode: Mode,

    /// Same as MODE=transcribe.
    #[arg(long)]
    pub transcribe: bool,

    /// In transcription mode, where each call's final transcript segments are POSTed as JSON
    /// (http:// or https://). Unset: transcripts are only logged.
    #[arg(long, env = "TRANSCRIPT_WEBHOOK_URL")]
    pub transcript_webhook_url: Option<String>,
    /// Directory where every Media Stream call is saved when it ends (Twilio messages both ways
    /// as a replayable fixture, a sidecar with transcripts and replies, a two-channel WAV).
    /// Unset: nothing is recorded.
    #[arg(long, env = "RECORD_DIR")]
    pub record_dir: Option<PathBuf>,
}

/// Said when a reply could not be produced, unless `FALLBACK_PHRASE` says otherwise.
pub const DEFAULT_FALLBACK_PHRASE: &str =
    "I'm sorry, I didn't manage to answer that. Could you say it again, please?";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Twilio abandons a webhook after 15 s; a wait budget must leave room to answer.
const WEBHOOK_BUDGET_MS: u64 = 14_000;

/// A clap value parser for milliseconds whose error names the environment variable.
fn parse_millis(var: &'static str) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |raw| match raw.trim().parse::<u64>() {
        Ok(ms) if (1..=600_000).contains(&ms) => Ok(ms),
        _ => Err(format!(
            "{var} must be a whole number of milliseconds from 1 to 600000"
        )),
    }
}

/// A clap value parser for `TURN_DETECTION`; the error names the variable and the choices.
fn parse_turn_detection(raw: &str) -> Result<TurnDetection, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "timer" => Ok(TurnDetection::Timer),
        "deepgram" => Ok(TurnDetection::Deepgram),
        _ => Err("TURN_DETECTION must be timer or deepgram".to_owned()),
    }
}

/// A clap value parser for `MODE`; the error names the variable and the choices.
fn parse_mode(raw: &str) -> Result<Mode, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "converse" => Ok(Mode::Converse),
        "transcribe" => Ok(Mode::Transcribe),
        _ => Err("MODE must be converse or transcribe".to_owned()),
    }
}

/// Everything the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Port to listen on.
    pub port: u16,
    /// Public base URL (scheme + host, no trailing slash), when configured.
    pub public_url: Option<Url>,
    /// Deepgram credential.
    pub deepgram_api_key: Secret,
    /// Mistral credential. Empty in transcription mode, where no route reaches the model.
    pub mistral_api_key: Secret,
    /// Deepgram live STT endpoint (`ws` or `wss`).
    pub deepgram_stt_url: Url,
    /// Deepgram TTS endpoint (`http` or `https`).
    pub deepgram_tts_url: Url,
    /// Mistral chat completions endpoint.
    pub mistral_api_url: Url,
    /// Mistral model name.
    pub mistral_model: String,
    /// Deepgram live model name.
    pub stt_model: String,
    /// Deepgram TTS voice.
    pub tts_voice: String,
    /// Silence that ends the caller's turn (the only rule with `timer`, the fallback with
    /// `deepgram`).
    pub silence_timeout: Duration,
    /// What ends the caller's turn.
    pub turn_detection: TurnDetection,
    /// Deepgram's `endpointing`: the pause that makes it send `speech_final`.
    pub stt_endpointing: Duration,
    /// Deepgram's `utterance_end_ms`: the gap that makes it send `UtteranceEnd`.
    pub stt_utterance_end: Duration,
    /// Spoken when the stream starts.
    pub greeting: String,
    /// The assistant's instructions.
    pub system_prompt: String,
    /// `<Say voice>` of the Gather flow.
    pub twilio_voice: String,
    /// `<Gather speechModel>` of the Gather flow.
    pub gather_speech_model: String,
    /// `<Gather language>`: what the caller speaks.
    pub language: String,
    /// How long /process_speech waits for Mistral before the holding phrase.
    pub llm_timeout: Duration,
    /// How long /speak_response waits for a pending reply before apologising.
    pub speak_response_wait: Duration,
    /// Shared conversation store; `None` keeps conversations in memory (one instance only).
    pub redis_url: Option<RedisUrl>,
    /// Key for checking Twilio's request signatures; `None` turns checking off.
    pub twilio_auth_token: Option<Secret>,
    /// Most calls served at once.
    pub max_calls: usize,
    /// Largest WebSocket message accepted from Twilio.
    pub max_message_bytes: usize,
    /// How long calls may continue after SIGTERM.
    pub drain_timeout: Duration,
    /// Said when a streaming reply cannot be produced.
    pub fallback_phrase: String,
    /// The voice assistant, or transcription only.
    pub mode: Mode,
    /// Where transcription mode POSTs transcripts; `None` logs them only.
    pub transcript_webhook_url: Option<Url>,
    /// Where calls are recorded; `None` records nothing.
    pub record_dir: Option<PathBuf>,
}

impl Config {
    /// Validates the parsed flags. Reads `SYSTEM_PROMPT_FILE` if one is named.
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let system_prompt = match &args.system_prompt_file {
            None => BUILT_IN_SYSTEM_PROMPT.to_owned(),
            Some(path) => read_prompt(path)?,
        };
        if args.stt_utterance_end_ms < MIN_UTTERANCE_END_MS {
            return Err(ConfigError::Invalid {
                var: "STT_UTTERANCE_END_MS",
                problem: "must be at least 1000: Deepgram sends interim results about once a \
                          second, so a shorter gap cannot be detected",
            });
        }
        if args.greeting.trim().is_empty() {
            return Err(ConfigError::Invalid {
                var: "GREETING",
                problem: "must not be empty",
            });
        }
        let mode = if args.transcribe {
            Mode::Transcribe
        } else {
            args.mode
        };
        let deepgram_api_key = required_secret("DEEPGRAM_API_KEY", args.deepgram_api_key)?;
        let mistral_api_key = match mode {
            Mode::Converse => required_secret("MISTRAL_API_KEY", args.mistral_api_key)?,
            Mode::Transcribe => args
                .mistral_api_key
                .map(|key| Secret::new(key.trim()))
                .unwrap_or_else(|| Secret::new("")),
        };
        Ok(Self {
            port: args.port,
            public_url: args
                .public_url
                .as_deref()
                .filter(|raw| !raw.trim().is_empty())
                .map(parse_public_url)
                .transpose()?,
            deepgram_api_key,
            mistral_api_key,
            deepgram_stt_url: parse_url("DEEPGRAM_STT_URL", &args.deepgram_stt_url, WS)?,
            deepgram_tts_url: parse_url("DEEPGRAM_TTS_URL", &args.deepgram_tts_url, HTTP)?,
            mistral_api_url: parse_url("MISTRAL_API_URL", &args.mistral_api_url, HTTP)?,
            mistral_model: required_text("MISTRAL_MODEL", args.mistral_model)?,
            stt_model: required_text("STT_MODEL", args.stt_model)?,
            tts_voice: required_text("TTS_VOICE", args.tts_voice)?,
            silence_timeout: Duration::from_millis(args.silence_timeout_ms),
            turn_detection: args.turn_detection,
            stt_endpointing: Duration::from_millis(args.stt_endpointing_ms),
            stt_utterance_end: Duration::from_millis(args.stt_utterance_end_ms),
            greeting: args.greeting,
            system_prompt,
            twilio_voice: required_text("TWILIO_VOICE", args.twilio_voice)?,
            gather_speech_model: required_text("GATHER_SPEECH_MODEL", args.gather_speech_model)?,
            language: required_text("LANGUAGE", args.language)?,
            llm_timeout: webhook_budget("LLM_TIMEOUT_MS", args.llm_timeout_ms)?,
            speak_response_wait: webhook_budget(
                "SPEAK_RESPONSE_WAIT_MS",
                args.speak_response_wait_ms,
            )?,
            redis_url: args
                .redis_url
                .as_deref()
                .filter(|raw| !raw.trim().is_empty())
                .map(RedisUrl::parse)
                .transpose()?,
            twilio_auth_token: args
                .twilio_auth_token
                .filter(|token| !token.trim().is_empty())
                .map(|token| Secret::new(token.trim())),
            max_calls: args.max_calls as usize,
            max_message_bytes: args.max_message_bytes as usize,
            drain_timeout: Duration::from_secs(args.drain_timeout_s),
            fallback_phrase: required_text("FALLBACK_PHRASE", args.fallback_phrase)?,
            mode,
            transcript_webhook_url: args
                .transcript_webhook_url
                .as_deref()
                .filter(|raw| !raw.trim().is_empty())
                .map(|raw| {
                    // Not echoed: a webhook URL often carries a token.
                    parse_url("TRANSCRIPT_WEBHOOK_URL", raw, HTTP).map_err(|_| {
                        ConfigError::Invalid {
                            var: "TRANSCRIPT_WEBHOOK_URL",
                            problem: "must be an http:// or https:// URL",
                        }
                    })
                })
                .transpose()?,
            record_dir: record_dir(args.record_dir)?,
        })
    }
}

/// Schemes of a WebSocket endpoint.
const WS: (&[&str], &str) = (&["ws", "wss"], "ws:// or wss://");
/// Schemes of an HTTP endpoint.
const HTTP: (&[&str], &str) = (&["http", "https"], "http:// or https://");

fn parse_url(
    var: &'static str,
    raw: &str,
    (schemes, expected): (&[&str], &'static str),
) -> Result<Url, ConfigError> {
    let bad = || ConfigError::BadUrl {
        var,
        value: raw.to_owned(),
        expected,
    };
    let url = Url::parse(raw.trim()).map_err(|_| bad())?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(url)
}

/// `PUBLIC_URL` is a base: scheme and authority, optionally a path prefix, no query.
fn parse_public_url(raw: &str) -> Result<Url, ConfigError> {
    let mut url = parse_url("PUBLIC_URL", raw, HTTP)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::BadUrl {
            var: "PUBLIC_URL",
            value: raw.to_owned(),
            expected: "http:// or https:// base (no query string)",
        });
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn required_secret(var: &'static str, value: Option<String>) -> Result<Secret, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
        _ => Err(ConfigError::Missing { var }),
    }
}

fn required_text(var: &'static str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::Invalid {
            var,
            problem: "must not be empty",
        });
    }
    Ok(value.trim().to_owned())
}

/// A wait inside one Twilio webhook, which must end before Twilio's 15 s limit.
fn webhook_budget(var: &'static str, ms: u64) -> Result<Duration, ConfigError> {
    if ms > WEBHOOK_BUDGET_MS {
        return Err(ConfigError::Invalid {
            var,
            problem: "must be at most 14000: Twilio gives up on a webhook after 15 s",
        });
    }
    Ok(Duration::from_millis(ms))
}

/// `RECORD_DIR`, created if needed and proven writable; empty means unset.
fn record_dir(dir: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(None);
    };
    crate::record::check_dir(&dir)?;
    Ok(Some(dir))
}

fn read_prompt(path: &PathBuf) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::PromptFile {
        path: path.clone(),
        source,
    })?;
    if text.trim().is_empty() {
        return Err(ConfigError::Invalid {
            var: "SYSTEM_PROMPT_FILE",
            problem: "names an empty file",
        });
    }
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// Parses flags only; the fields whose env var is set in the test process are overridden by
    /// flags, so these tests never depend on the environment they run in.
    fn args(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec![
            "ivr-bridge",
            "--deepgram-api-key",
            "dg-secret",
            "--mistral-api-key",
            "mi-secret",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|cli| cli.serve)
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("sk-live-123");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{secret}"), "***");
        let config = Config::from_args(args(&[]).unwrap()).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("dg-secret") && !debug.contains("mi-secret"));
    }

    #[test]
    fn missing_key_names_the_variable() {
        let mut a = args(&[]).unwrap();
        a.mistral_api_key = None;
        let err = Config::from_args(a).unwrap_err().to_string();
        assert!(err.starts_with("MISTRAL_API_KEY is not set"), "{err}");
    }

    #[test]
    fn bad_url_names_the_variable() {
        let err = Config::from_args(args(&["--deepgram-stt-url", "https://x/v1/listen"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("DEEPGRAM_STT_URL="), "{err}");
    }

    #[test]
    fn bad_silence_timeout_names_the_variable() {
        let err = args(&["--silence-timeout-ms", "soon"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("SILENCE_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn public_url_loses_its_trailing_slash() {
        let config =
            Config::from_args(args(&["--public-url", "https://abc.ngrok-free.app/"]).unwrap())
                .unwrap();
        assert_eq!(
            config.public_url.unwrap().as_str(),
            "https://abc.ngrok-free.app/"
        );
    }

    #[test]
    fn gather_settings_have_their_defaults() {
        let config = Config::from_args(args(&[]).unwrap()).unwrap();
        assert_eq!(config.twilio_voice, "Polly.Stephen-Neural");
        assert_eq!(config.gather_speech_model, "deepgram_nova-2");
        assert_eq!(config.language, "en-US");
        assert_eq!(config.llm_timeout, Duration::from_secs(8));
        assert_eq!(config.speak_response_wait, Duration::from_secs(10));
        assert!(config.redis_url.is_none());
    }

    #[test]
    fn llm_timeout_past_twilios_limit_names_the_variable() {
        let err = Config::from_args(args(&["--llm-timeout-ms", "20000"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("LLM_TIMEOUT_MS must be at most 14000"),
            "{err}"
        );
        let err = args(&["--llm-timeout-ms", "soon"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("LLM_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn redis_password_never_prints() {
        let config = Config::from_args(
            args(&["--redis-url", "redis://:hunter2@cache.internal:6380/2"]).unwrap(),
        )
        .unwrap();
        let url = config.redis_url.clone().unwrap();
        assert_eq!(url.expose(), "redis://:hunter2@cache.internal:6380/2");
        assert_eq!(url.to_string(), "redis://***@cache.internal:6380/2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn bad_redis_url_names_the_variable_without_its_password() {
        let err = Config::from_args(args(&["--redis-url", "http://:hunter2@cache"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("REDIS_URL="), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = Config::from_args(args(&["--redis-url", "rediss://:hunter2@cache"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("REDIS_URL uses rediss://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn turn_detection_defaults_to_the_timer_with_deepgrams_settings() {
        let config = Config::from_args(args(&[]).unwrap()).unwrap();
        assert_eq!(config.turn_detection, TurnDetection::Timer);
        assert_eq!(config.stt_endpointing, Duration::from_millis(300));
        assert_eq!(config.stt_utterance_end, Duration::from_millis(1000));
        let config = Config::from_args(
            args(&[
                "--turn-detection",
                "deepgram",
                "--stt-endpointing-ms",
                "450",
                "--stt-utterance-end-ms",
                "1500",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(config.turn_detection, TurnDetection::Deepgram);
        assert_eq!(config.stt_endpointing, Duration::from_millis(450));
        assert_eq!(config.stt_utterance_end, Duration::from_millis(1500));
    }

    #[test]
    fn bad_turn_settings_name_their_variable() {
        let err = args(&["--turn-detection", "vad"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("TURN_DETECTION must be timer or deepgram"),
            "{err}"
        );
        let err = args(&["--stt-endpointing-ms", "soon"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("STT_ENDPOINTING_MS"), "{err}");
        let err = Config::from_args(args(&["--stt-utterance-end-ms", "500"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("STT_UTTERANCE_END_MS must be at least 1000"),
            "{err}"
        );
    }

    #[test]
    fn log_format_is_text_json_or_an_error_naming_the_variable() {
        assert_eq!(args(&[]).unwrap().log_format, LogFormat::Text);
        let json = args(&["--log-format", "json"]).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let err = args(&["--log-format", "xml"]).err().unwrap().to_string();
        assert!(err.contains("LOG_FORMAT"), "{err}");
    }

    #[test]
    fn transcribe_mode_needs_no_mistral_key() {
        let mut a = args(&["--transcribe"]).unwrap();
        a.mistral_api_key = None;
        let config = Config::from_args(a).unwrap();
        assert_eq!(config.mode, Mode::Transcribe);
        assert!(config.transcript_webhook_url.is_none());
        let mut a = args(&["--mode", "transcribe"]).unwrap();
        a.deepgram_api_key = None;
        let err = Config::from_args(a).unwrap_err().to_string();
        assert!(err.starts_with("DEEPGRAM_API_KEY is not set"), "{err}");
        assert_eq!(
            Config::from_args(args(&[]).unwrap()).unwrap().mode,
            Mode::Converse
        );
    }

    #[test]
    fn bad_mode_and_webhook_url_name_their_variable() {
        let err = args(&["--mode", "bogus"]).err().unwrap().to_string();
        assert!(err.contains("MODE must be converse or transcribe"), "{err}");
        let err = Config::from_args(
            args(&[
                "--transcribe",
                "--transcript-webhook-url",
                "ftp://x/hook?token=s3cret",
            ])
            .unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("TRANSCRIPT_WEBHOOK_URL must be"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let config = Config::from_args(
            args(&[
                "--transcribe",
                "--transcript-webhook-url",
                "https://x.example/hook",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            config.transcript_webhook_url.unwrap().as_str(),
            "https://x.example/hook"
        );
    }

    #[test]
    fn public_url_with_a_query_is_refused() {
        let err = Config::from_args(args(&["--public-url", "https://a.example/?x=1"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("PUBLIC_URL="), "{err}");
    }
}
