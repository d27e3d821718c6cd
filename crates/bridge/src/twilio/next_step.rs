//! What Twilio does with a call once its Media Stream is over, and the TwiML that says it.
//!
//! The streaming webhook answers `<Connect action="…/stream_ended"><Stream …/></Connect>`: when
//! our side closes the socket, Twilio requests the action and runs the TwiML it gets
//! (PROTOCOLS §8.1). The instance that served the stream records a [`NextStep`] in the store
//! before it closes; whichever instance gets `/stream_ended` renders it with
//! [`NextStep::after_stream`]. A transfer dials with an action of its own, so that the apology
//! plays only when the dialled party never answered ([`after_dial`]): without a `<Dial action>`
//! Twilio would run the verbs after `<Dial>` also when the person who answered hangs up.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::twiml::{self, Element};

/// Most digits an E.164 number has (ITU-T E.164 §6).
const E164_MAX_DIGITS: usize = 15;
/// Longest SIP URI accepted: Twilio refuses longer ones in `<Sip>`.
const SIP_MAX_CHARS: usize = 255;
/// `DialCallStatus` values meaning the dialled party answered: the transfer happened.
const CONNECTED_STATUSES: [&str; 2] = ["completed", "answered"];
/// Said when a transfer failed and the stored apology is not at hand (expired, store down).
pub const DEFAULT_APOLOGY: &str =
    "Sorry, nobody could take your call right now. Please try again later. Goodbye.";

/// A phone number in E.164 form: `+`, then up to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// `raw` (surrounding blanks ignored) if it is an E.164 number.
    pub fn parse(raw: &str) -> Result<Self, BadTarget> {
        let raw = raw.trim();
        let digits = raw.strip_prefix('+').unwrap_or_default();
        let ok = (2..=E164_MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        match ok {
            true => Ok(Self(raw.to_owned())),
            false => Err(BadTarget(raw.to_owned())),
        }
    }

    /// The number as written, e.g. `+15551234567`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a transfer dials: a phone number (`<Number>`) or a SIP address (`<Sip>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Target {
    /// An E.164 number on the phone network.
    Number(PhoneNumber),
    /// A `sip:` (or `sips:`) URI, e.g. `sip:desk@pbx.example.com`.
    Sip(String),
}

impl Target {
    /// An E.164 number, or a `sip:`/`sips:` URI without blanks or control characters.
    pub fn parse(raw: &str) -> Result<Self, BadTarget> {
        let raw = raw.trim();
        let scheme = raw.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        if matches!(scheme.as_deref(), Some("sip" | "sips")) {
            let rest = raw.split_once(':').map_or("", |(_, rest)| rest);
            let ok = !rest.is_empty()
                && raw.len() <= SIP_MAX_CHARS
                && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
            return match ok {
                true => Ok(Self::Sip(raw.to_owned())),
                false => Err(BadTarget(raw.to_owned())),
            };
        }
        PhoneNumber::parse(raw).map(Self::Number)
    }

    /// The `<Dial>` noun that reaches it.
    pub fn noun(&self) -> Element {
        match self {
            Target::Number(number) => Element::new("Number").text(number.as_str()),
            Target::Sip(uri) => Element::new("Sip").text(uri.as_str()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Number(number) => f.write_str(number.as_str()),
            Target::Sip(uri) => f.write_str(uri),
        }
    }
}

/// A transfer target or caller ID that is neither an E.164 number nor a `sip:` URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an E.164 number (+15551234567) nor a sip: URI")]
pub struct BadTarget(String);

impl From<PhoneNumber> for String {
    fn from(number: PhoneNumber) -> Self {
        number.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = BadTarget;
    fn try_from(raw: String) -> Result<Self, BadTarget> {
        Self::parse(&raw)
    }
}

impl From<Target> for String {
    fn from(target: Target) -> Self {
        target.to_string()
    }
}

impl TryFrom<String> for Target {
    type Error = BadTarget;
    fn try_from(raw: String) -> Result<Self, BadTarget> {
        Self::parse(&raw)
    }
}

/// What Twilio does with the call after its Media Stream closes. Stored (as JSON) by the
/// instance that served the stream; read and removed by the one that gets `/stream_ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum NextStep {
    /// The conversation is over: hang up.
    Hangup,
    /// Hand the caller to a person; if nobody answers, apologise and hang up.
    Transfer {
        /// Who is dialled.
        to: Target,
        /// The number the dialled party sees (`TRANSFER_CALLER_ID`); Twilio's default (the
        /// caller's number) when `None`. Must be one Twilio accepts (error 13214).
        caller_id: Option<PhoneNumber>,
        /// Said when the dialled party does not answer, is busy or cannot be reached.
        apology: String,
    },
    /// A ConversationRelay session was moved off a draining instance at a quiet moment: the
    /// call goes on in a new session (on another instance), with its history from the store.
    Resume,
}

impl NextStep {
    /// The TwiML `/stream_ended` answers: `<Hangup/>`, or the `<Dial>` of a transfer whose
    /// outcome Twilio reports to `dial_action`. A resumption is a new `<ConversationRelay>`,
    /// which `/stream_ended` writes itself; here (no relay at hand) it hangs up.
    pub fn after_stream(&self, dial_action: &str) -> String {
        match self {
            NextStep::Hangup | NextStep::Resume => hangup(),
            NextStep::Transfer { to, caller_id, .. } => {
                let mut dial = Element::new("Dial").attr("action", dial_action);
                if let Some(caller_id) = caller_id {
                    dial = dial.attr("callerId", caller_id.as_str());
                }
                twiml::response([dial.child(to.noun())])
            }
        }
    }
}

/// `<Hangup/>`: what a stream that ended without a recorded step, or any request we cannot
/// use, gets — the caller is never left on a silent line.
pub fn hangup() -> String {
    twiml::response([Element::new("Hangup")])
}

/// The TwiML the `<Dial action>` answers once the dialled call is over: `<Hangup/>` when the
/// dialled party answered (`DialCallStatus` `completed` or `answered`: the conversation took
/// place), else `<Say>` of the apology (in `voice`) and `<Hangup/>` — nobody answered, the line
/// was busy, the dial failed, or the status is missing or unknown.
pub fn after_dial(dial_status: Option<&str>, apology: &str, voice: &str) -> String {
    if dial_status.is_some_and(|s| CONNECTED_STATUSES.contains(&s)) {
        return hangup();
    }
    let apology = match apology.trim() {
        "" => DEFAULT_APOLOGY,
        text => text,
    };
    let say = Element::new("Say").attr("voice", voice).text(apology);
    twiml::response([say, Element::new("Hangup")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(to: &str, caller_id: Option<&str>) -> NextStep {
        NextStep::Transfer {
            to: Target::parse(to).unwrap(),
            caller_id: caller_id.map(|c| PhoneNumber::parse(c).unwrap()),
            apology: "Sorry & goodbye.".into(),
        }
    }

    #[test]
    fn targets_are_e164_numbers_or_sip_uris() {
        assert_eq!(
            Target::parse(" +15551234567 ").unwrap(),
            Target::Number(PhoneNumber("+15551234567".into()))
        );
        assert_eq!(
            Target::parse("sip:desk@pbx.example.com;transport=tls").unwrap(),
            Target::Sip("sip:desk@pbx.example.com;transport=tls".into())
        );
        assert!(matches!(Target::parse("SIPS:a@b"), Ok(Target::Sip(_))));
        for bad in [
            "",
            "+",
            "+0123",
            "15551234567",
            "+1555123456789012",
            "+1555 1234",
            "sip:",
            "sip:a b@c",
            "tel:+15551234567",
            "http://example.com",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        let err = Target::parse("555").unwrap_err().to_string();
        assert!(err.contains("\"555\"") && err.contains("E.164"), "{err}");
    }

    #[test]
    fn steps_round_trip_as_tagged_json() {
        let step = transfer("sip:desk@pbx.example.com", Some("+15557654321"));
        let json = serde_json::to_value(&step).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"step": "transfer", "to": "sip:desk@pbx.example.com",
                               "caller_id": "+15557654321", "apology": "Sorry & goodbye."})
        );
        assert_eq!(serde_json::from_value::<NextStep>(json).unwrap(), step);
        let hangup = serde_json::to_string(&NextStep::Hangup).unwrap();
        assert_eq!(hangup, r#"{"step":"hangup"}"#);
        let resume = serde_json::to_string(&NextStep::Resume).unwrap();
        assert_eq!(resume, r#"{"step":"resume"}"#);
        let forged = r#"{"step":"transfer","to":"+1 evil","caller_id":null,"apology":""}"#;
        assert!(serde_json::from_str::<NextStep>(forged).is_err());
    }

    #[test]
    fn hangup_step_hangs_up() {
        let doc = NextStep::Hangup.after_stream("https://a.example/stream_ended?after=dial");
        assert_eq!(
            doc,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#
        );
        assert_eq!(doc, hangup());
    }

    #[test]
    fn a_transfer_dials_a_number_with_its_caller_id_and_an_action() {
        let doc = transfer("+15551234567", Some("+15557654321"))
            .after_stream("https://a.example/stream_ended?after=dial&x=1");
        assert_eq!(
            doc,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://a.example/stream_ended?after=dial&amp;x=1" callerId="+15557654321"><Number>+15551234567</Number></Dial></Response>"#
        );
    }

    #[test]
    fn a_sip_transfer_dials_sip_without_caller_id() {
        let doc = transfer("sip:desk@pbx.example.com", None).after_stream("/a");
        assert!(
            doc.ends_with(
                r#"<Response><Dial action="/a"><Sip>sip:desk@pbx.example.com</Sip></Dial></Response>"#
            ),
            "{doc}"
        );
    }

    #[test]
    fn after_the_dial_only_a_missed_transfer_apologises() {
        for connected in ["completed", "answered"] {
            assert_eq!(
                after_dial(Some(connected), "Sorry.", "Polly.Joanna"),
                hangup()
            );
        }
        for missed in [
            Some("no-answer"),
            Some("busy"),
            Some("failed"),
            Some("canceled"),
            None,
        ] {
            assert_eq!(
                after_dial(missed, "Sorry & goodbye.", "Polly.Joanna"),
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say voice="Polly.Joanna">Sorry &amp; goodbye.</Say><Hangup/></Response>"#,
                "{missed:?}"
            );
        }
        let fallback = after_dial(Some("busy"), "  ", "v");
        assert!(fallback.contains(DEFAULT_APOLOGY), "{fallback}");
    }
}
