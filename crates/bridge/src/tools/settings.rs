//! The tools' settings: the operator's tools file and its signing secret, and where
//! `transfer_call` dials.

use crate::secret::Secret;
use crate::settings;
use crate::twilio::twiml::Element;

use super::file::ToolsFile;

/// Said before the transfer when the model gave no words of its own.
pub const DEFAULT_TRANSFER_PHRASE: &str =
    "Let me put you through to someone who can help. Please hold.";

/// Said when the dialled party did not take the call, before hanging up.
pub const TRANSFER_APOLOGY: &str =
    "Sorry, nobody could take your call right now. Please call again later. Goodbye.";

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
    #[arg(long, env = "TRANSFER_TO", value_parser = TransferTarget::parse_setting)]
    pub transfer_to: Option<TransferTarget>,

    /// Caller ID shown to the transfer's target (E.164): your Twilio number or the caller's.
    /// Unset: Twilio's default.
    #[arg(long, env = "TRANSFER_CALLER_ID", value_parser = caller_id)]
    pub transfer_caller_id: Option<String>,

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

/// Where a transfer dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// An E.164 phone number (`<Number>`).
    Number(String),
    /// A SIP URI (`<Sip>`).
    Sip(String),
}

impl TransferTarget {
    /// An E.164 number or a `sip:` URI, or why not.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if is_e164(raw) {
            return Some(Self::Number(raw.to_owned()));
        }
        let rest = raw.strip_prefix("sip:")?;
        let ok = !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"'));
        ok.then(|| Self::Sip(raw.to_owned()))
    }

    fn parse_setting(raw: &str) -> Result<Self, String> {
        Self::parse(raw).ok_or_else(|| {
            "TRANSFER_TO must be an E.164 number (+ and 8 to 15 digits) or a sip: URI".to_owned()
        })
    }

    /// The `<Dial>` noun that reaches it.
    fn noun(&self) -> Element {
        match self {
            Self::Number(number) => Element::new("Number").text(number.as_str()),
            Self::Sip(uri) => Element::new("Sip").text(uri.as_str()),
        }
    }
}

/// `+` and 8 to 15 digits.
fn is_e164(raw: &str) -> bool {
    raw.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn caller_id(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    match is_e164(raw) {
        true => Ok(raw.to_owned()),
        false => Err("TRANSFER_CALLER_ID must be an E.164 number (+ and 8 to 15 digits)".into()),
    }
}

/// What `transfer_call` does: whom it dials, as whom, and what the caller hears first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// `TRANSFER_TO`.
    pub target: TransferTarget,
    /// `TRANSFER_CALLER_ID`.
    pub caller_id: Option<String>,
    /// `TRANSFER_PHRASE`.
    pub phrase: String,
}

impl Transfer {
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
    fn targets_are_e164_numbers_or_sip_uris() {
        assert_eq!(
            TransferTarget::parse(" +15557654321 "),
            Some(TransferTarget::Number("+15557654321".into()))
        );
        assert_eq!(
            TransferTarget::parse("sip:desk@pbx.example.com"),
            Some(TransferTarget::Sip("sip:desk@pbx.example.com".into()))
        );
        for bad in [
            "15557654321",
            "+1234567",
            "+1234567890123456",
            "+1555-765",
            "sip:",
            "sip:a b",
            "tel:+15557654321",
            "",
        ] {
            assert_eq!(TransferTarget::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_dial_uses_the_right_noun_and_caller_id() {
        let transfer = Transfer {
            target: TransferTarget::Number("+15557654321".into()),
            caller_id: Some("+15551230000".into()),
            phrase: DEFAULT_TRANSFER_PHRASE.into(),
        };
        assert_eq!(
            twiml::response([transfer.dial()]),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+15551230000"><Number>+15557654321</Number></Dial></Response>"#
        );
        let sip = Transfer {
            target: TransferTarget::Sip("sip:desk@pbx.example.com".into()),
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
