//! The tools' settings: the operator's tools file and its signing secret, and where
//! `transfer_call` dials.

use crate::secret::Secret;
use crate::settings;
use crate::twilio::next_step::{NextStep, PhoneNumber, Target, DEFAULT_APOLOGY};
use crate::twilio::twiml::Element;

use super::file::ToolsFile;

/// Said before the transfer when the model gave no words of its own.
pub const DEFAULT_TRANSFER_PHRASE: &str =
    "Let me put you through to someone who can help. Please hold.";

/// The assistant's tools: the operator's own (`TOOLS_FILE`, signed with `TOOLS_SECRET`) and the
/// transfer target of the built-in `transfer_call`.
#[derive(Debug, Clone, clap::Args)]
pub struct ToolSettings {
    /// JSON file of the operator's tools the model may call: an array of {name, description,
    /// parameters (JSON Schema), url, timeout_ms}. Read and checked at start-up.
    #[arg(long, env = "TOOLS_FILE", value_parser = ToolsFile::load_setting)]
    pub tools_file: Option<ToolsFile>,

    /// Key of the HMAC-SHA256 signature (hex, X-Ivr-Bridge-Signature header) of every request
    /// to a tool's URL. Required with TOOLS_FILE.
    #[arg(long, env = "TOOLS_SECRET", hide_env_values = true, value_parser = settings::secret)]
    pub tools_secret: Option<Secret>,

    /// Where transfer_call sends the caller: an E.164 number (+ and 8 to 15 digits) or a sip:
    /// URI. Unset: the model is not offered transfer_call.
    #[arg(long, env = "TRANSFER_TO", value_parser = transfer_to)]
    pub transfer_to: Option<Target>,

    /// Caller ID shown to the transfer's target (E.164): your Twilio number or the caller's.
    /// Unset: Twilio's default.
    #[arg(long, env = "TRANSFER_CALLER_ID", value_parser = caller_id)]
    pub transfer_caller_id: Option<PhoneNumber>,

    /// Said before the transfer when the model gave no words of its own.
    #[arg(long, env = "TRANSFER_PHRASE", default_value = DEFAULT_TRANSFER_PHRASE,
          value_parser = settings::text("TRANSFER_PHRASE"))]
    pub transfer_phrase: String,
}

impl ToolSettings {
    /// The transfer `transfer_call` makes, when `TRANSFER_TO` is set.
    pub fn transfer(&self) -> Option<Transfer> {
        Some(Transfer {
            target: self.transfer_to.clone()?,
            caller_id: self.transfer_caller_id.clone(),
            phrase: self.transfer_phrase.clone(),
        })
    }
}

/// `TRANSFER_TO`: an E.164 number or a `sip:` URI.
fn transfer_to(raw: &str) -> Result<Target, String> {
    Target::parse(raw)
        .map_err(|_| "TRANSFER_TO must be an E.164 number (+15551234567) or a sip: URI".to_owned())
}

/// `TRANSFER_CALLER_ID`: an E.164 number.
fn caller_id(raw: &str) -> Result<PhoneNumber, String> {
    PhoneNumber::parse(raw)
        .map_err(|_| "TRANSFER_CALLER_ID must be an E.164 number (+15551234567)".to_owned())
}

/// What `transfer_call` does: whom it dials, as whom, and what the caller hears first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// `TRANSFER_TO`.
    pub target: Target,
    /// `TRANSFER_CALLER_ID`.
    pub caller_id: Option<PhoneNumber>,
    /// `TRANSFER_PHRASE`.
    pub phrase: String,
}

impl Transfer {
    /// The next step that puts the caller through to this target once the assistant's stream
    /// or session is over, apologising if nobody answers.
    pub fn next_step(&self) -> NextStep {
        NextStep::Transfer {
            to: self.target.clone(),
            caller_id: self.caller_id.clone(),
            apology: DEFAULT_APOLOGY.to_owned(),
        }
    }

    /// The `<Dial>` verb: `callerId` when set, `<Number>` or `<Sip>`. Twilio goes on with the
    /// verbs after it once the dialled call ends or is not answered (PROTOCOLS.md 8.1).
    pub fn dial(&self) -> Element {
        let dial = Element::new("Dial");
        let dial = match &self.caller_id {
            Some(id) => dial.attr("callerId", id.as_str()),
            None => dial,
        };
        dial.child(self.target.noun())
    }

    /// What the caller hears before the transfer: the model's words, or `TRANSFER_PHRASE`.
    pub fn announcement<'a>(&'a self, words: &'a str) -> &'a str {
        match words.trim() {
            "" => &self.phrase,
            words => words,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::twiml;

    #[test]
    fn bad_targets_name_their_setting() {
        assert!(transfer_to("sip:desk@pbx.example.com").is_ok());
        assert!(transfer_to("tel:+15557654321")
            .unwrap_err()
            .starts_with("TRANSFER_TO must"));
        assert!(caller_id("+15551230000").is_ok());
        let err = caller_id("sip:desk@pbx.example.com").unwrap_err();
        assert!(err.starts_with("TRANSFER_CALLER_ID must"), "{err}");
    }

    #[test]
    fn the_dial_uses_the_right_noun_and_caller_id() {
        let transfer = Transfer {
            target: Target::parse("+15557654321").expect("number"),
            caller_id: PhoneNumber::parse("+15551230000").ok(),
            phrase: DEFAULT_TRANSFER_PHRASE.into(),
        };
        assert_eq!(
            twiml::response([transfer.dial()]),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+15551230000"><Number>+15557654321</Number></Dial></Response>"#
        );
        let sip = Transfer {
            target: Target::parse("sip:desk@pbx.example.com").expect("sip"),
            caller_id: None,
            ..transfer
        };
        assert_eq!(
            twiml::response([sip.dial()]),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Sip>sip:desk@pbx.example.com</Sip></Dial></Response>"#
        );
        assert_eq!(sip.announcement("  "), DEFAULT_TRANSFER_PHRASE);
        assert_eq!(sip.announcement("One moment."), "One moment.");
    }
}
