//! What the assistant says and how it takes turns: the settings of every mode with a model
//! (the streaming call and the Gather flow).

use std::path::PathBuf;
use std::time::Duration;

use super::turns::{IdlePolicy, InterruptionPolicy, TurnDetection, DEFAULT_BACKCHANNEL_WORDS};
use crate::settings::{self, MILLIS};

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

/// The greeting spoken when a call starts, unless `GREETING` says otherwise.
pub const DEFAULT_GREETING: &str =
    "Welcome to the automated assistant. What can I help you with today?";

/// Said when a reply could not be produced, unless `FALLBACK_PHRASE` says otherwise.
pub const DEFAULT_FALLBACK_PHRASE: &str =
    "I'm sorry, I didn't manage to answer that. Could you say it again, please?";

/// What the assistant is told and says, whatever the mode.
#[derive(Debug, Clone, clap::Args)]
pub struct AssistantSettings {
    /// Spoken when the call starts.
    #[arg(long, env = "GREETING", default_value = DEFAULT_GREETING,
          value_parser = settings::text("GREETING"))]
    pub greeting: String,

    /// File with the assistant's instructions (default: a built-in hospital front desk prompt).
    #[arg(long = "system-prompt-file", env = "SYSTEM_PROMPT_FILE", value_name = "FILE",
          default_value = "", hide_default_value = true, value_parser = read_prompt)]
    pub system_prompt: String,

    /// Said when a streaming reply cannot be produced (model or voice failure); the call then
    /// listens again.
    #[arg(long, env = "FALLBACK_PHRASE", default_value = DEFAULT_FALLBACK_PHRASE,
          value_parser = settings::text("FALLBACK_PHRASE"))]
    pub fallback_phrase: String,
}

/// How the streaming call decides that the caller's turn is over.
#[derive(Debug, Clone, clap::Args)]
pub struct TurnSettings {
    /// Silence, in milliseconds, that ends the caller's turn.
    #[arg(long = "silence-timeout-ms", env = "SILENCE_TIMEOUT_MS", default_value = "2000",
          value_parser = settings::millis("SILENCE_TIMEOUT_MS", MILLIS))]
    pub silence_timeout: Duration,

    /// What ends the caller's turn: `timer` (the silence timer alone), `deepgram` (Deepgram's
    /// end of speech, with the silence timer as a fallback) or `flux` (Deepgram Flux's end of
    /// turn; the call's recogniser is then Flux, see DEEPGRAM_FLUX_URL).
    #[arg(long, env = "TURN_DETECTION", value_enum, ignore_case = true,
          default_value_t = TurnDetection::Timer)]
    pub turn_detection: TurnDetection,

    /// Words that alone do not take the floor (comma-separated): an interruption that is only
    /// these resumes the reply.
    #[arg(long, env = "BACKCHANNEL_WORDS", value_name = "WORDS",
          default_value = "uh-huh, mm-hmm, mhm, uh, um, hmm, okay, ok, right, yeah",
          value_parser = backchannel_words)]
    pub backchannel_words: Backchannel,

    /// Milliseconds after an interruption with no words at all by which the reply resumes.
    #[arg(long = "false-interruption-ms", env = "FALSE_INTERRUPTION_MS",
          value_name = "FALSE_INTERRUPTION_MS", default_value = "1500",
          value_parser = settings::millis("FALSE_INTERRUPTION_MS", 100..=10_000))]
    pub false_interruption: Duration,

    /// Fewer words than this, while the assistant speaks, never interrupt it.
    #[arg(long, env = "BARGE_IN_MIN_WORDS", default_value = "1",
          value_parser = settings::count("BARGE_IN_MIN_WORDS", 1..=10))]
    pub barge_in_min_words: usize,

    /// Prepare the reply before the caller's turn is surely over (`true` or `false`): it starts
    /// on a final transcript, its audio held until the turn ends (then it goes out at once; if
    /// the caller says more, it is dropped). With TURN_DETECTION=flux it starts on Flux's
    /// `EagerEndOfTurn` (FLUX_EAGER_EOT_THRESHOLD).
    #[arg(long, env = "PREEMPTIVE_GENERATION", default_value = "true", action = clap::ArgAction::Set,
          value_parser = settings::boolean("PREEMPTIVE_GENERATION"))]
    pub preemptive_generation: bool,
}

/// `BACKCHANNEL_WORDS`, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backchannel(pub Vec<String>);

impl Default for Backchannel {
    fn default() -> Self {
        Self(
            DEFAULT_BACKCHANNEL_WORDS
                .iter()
                .map(|w| (*w).to_owned())
                .collect(),
        )
    }
}

/// `BACKCHANNEL_WORDS`: single words, comma-separated; empty turns resuming off.
fn backchannel_words(raw: &str) -> Result<Backchannel, String> {
    let mut words = Vec::new();
    for word in raw.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if word.contains(char::is_whitespace) || !word.chars().any(char::is_alphanumeric) {
            return Err(format!(
                "BACKCHANNEL_WORDS must be single words separated by commas, not {word:?}"
            ));
        }
        words.push(word.to_lowercase());
    }
    Ok(Backchannel(words))
}

impl TurnSettings {
    /// The brain's rules for interruptions.
    pub fn interruptions(&self) -> InterruptionPolicy {
        InterruptionPolicy {
            backchannel: self.backchannel_words.0.as_slice().into(),
            false_after: self.false_interruption,
            min_words: self.barge_in_min_words,
        }
    }
}

/// Asked when the caller has been silent for `IDLE_TIMEOUT_S`, unless `IDLE_PROMPT` says otherwise.
pub const DEFAULT_IDLE_PROMPT: &str = "Are you still there?";

/// Said when no idle prompt was answered, unless `IDLE_GOODBYE` says otherwise; then the call ends.
pub const DEFAULT_IDLE_GOODBYE: &str =
    "I haven't heard anything, so I'll end the call now. Goodbye.";

/// What the streaming call does about a caller who stays silent.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleSettings {
    /// Seconds of silence, after the assistant finished speaking, before it checks on the
    /// caller; 0 never checks.
    #[arg(long = "idle-timeout-s", env = "IDLE_TIMEOUT_S", value_name = "IDLE_TIMEOUT_S",
          default_value = "10", value_parser = settings::seconds("IDLE_TIMEOUT_S", 0..=3600))]
    pub idle_timeout: Duration,

    /// Said to a caller who has been silent for `IDLE_TIMEOUT_S`.
    #[arg(long, env = "IDLE_PROMPT", default_value = DEFAULT_IDLE_PROMPT,
          value_parser = settings::text("IDLE_PROMPT"))]
    pub idle_prompt: String,

    /// Idle prompts in a row before the assistant says `IDLE_GOODBYE` and ends the call.
    #[arg(long, env = "IDLE_PROMPTS", default_value = "2",
          value_parser = settings::count("IDLE_PROMPTS", 0..=10))]
    pub idle_prompts: usize,

    /// Said, after one more silence, to a caller who answered no idle prompt; the call ends
    /// once it was heard.
    #[arg(long, env = "IDLE_GOODBYE", default_value = DEFAULT_IDLE_GOODBYE,
          value_parser = settings::text("IDLE_GOODBYE"))]
    pub idle_goodbye: String,
}

impl IdleSettings {
    /// The brain's idle rules; `None` when `IDLE_TIMEOUT_S` is 0.
    pub fn policy(&self) -> Option<IdlePolicy> {
        (!self.idle_timeout.is_zero()).then(|| IdlePolicy {
            timeout: self.idle_timeout,
            prompt: self.idle_prompt.clone(),
            prompts: u32::try_from(self.idle_prompts).unwrap_or(u32::MAX),
            goodbye: self.idle_goodbye.clone(),
        })
    }
}

/// `SYSTEM_PROMPT_FILE`: the file's text, or the built-in prompt when none is named.
fn read_prompt(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Ok(BUILT_IN_SYSTEM_PROMPT.to_owned());
    }
    let path = PathBuf::from(raw);
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("SYSTEM_PROMPT_FILE={path:?} cannot be read: {err}"))?;
    match text.trim() {
        "" => Err("SYSTEM_PROMPT_FILE names an empty file".to_owned()),
        text => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backchannel_words_are_single_words() {
        assert_eq!(
            backchannel_words(" Uh-huh, OK ,, yeah"),
            Ok(Backchannel(vec![
                "uh-huh".into(),
                "ok".into(),
                "yeah".into()
            ]))
        );
        assert_eq!(backchannel_words(""), Ok(Backchannel(Vec::new())));
        let err = backchannel_words("uh huh, ok").unwrap_err();
        assert!(
            err.starts_with("BACKCHANNEL_WORDS must be single words"),
            "{err}"
        );
        assert_eq!(
            backchannel_words(&DEFAULT_BACKCHANNEL_WORDS.join(", ")),
            Ok(Backchannel::default())
        );
    }

    #[test]
    fn no_prompt_file_means_the_built_in_prompt() {
        assert_eq!(read_prompt("").as_deref(), Ok(BUILT_IN_SYSTEM_PROMPT));
    }

    #[test]
    fn a_prompt_file_is_read_and_an_unreadable_one_named() {
        let dir = std::env::temp_dir().join(format!("ivr-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("prompt.txt");
        std::fs::write(&file, "  Be brief.\n").expect("prompt file");
        assert_eq!(
            read_prompt(&file.to_string_lossy()).as_deref(),
            Ok("Be brief.")
        );
        std::fs::write(&file, " \n").expect("prompt file");
        let empty = read_prompt(&file.to_string_lossy()).unwrap_err();
        assert_eq!(empty, "SYSTEM_PROMPT_FILE names an empty file");
        let missing = read_prompt(&dir.join("nope").to_string_lossy()).unwrap_err();
        assert!(missing.starts_with("SYSTEM_PROMPT_FILE="), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
