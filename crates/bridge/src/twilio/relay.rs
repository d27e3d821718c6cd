//! Twilio ConversationRelay messages, in and out (PROTOCOLS §9.2–9.3).
//!
//! With `<Connect><ConversationRelay>` Twilio does the listening and the speaking and the
//! socket carries text JSON only, tagged by `type`. [`Inbound::parse`] turns one message into a
//! typed value (unknown fields ignored, an unknown `type` is [`Inbound::Unknown`]);
//! [`Outbound`] renders the two messages we send: `text` tokens and `end`.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A message Twilio sends on a ConversationRelay socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Inbound {
    /// The first message: who the call is (boxed: it is the largest, and comes once).
    Setup(Box<Setup>),
    /// What the caller said (Twilio's transcript).
    Prompt(Prompt),
    /// The caller pressed a key (with `dtmfDetection`).
    Dtmf(Dtmf),
    /// The caller spoke (or pressed a key) over our speech: Twilio stopped speaking.
    Interrupt(Interrupt),
    /// Twilio reports a problem (e.g. a message of ours it dropped, error 64107).
    Error(ErrorReport),
    /// A `type` this version does not know; skipped, never fatal.
    #[serde(other)]
    Unknown,
}

impl Inbound {
    /// Parses one text message.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The message's `type`, for the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Inbound::Setup(_) => "setup",
            Inbound::Prompt(_) => "prompt",
            Inbound::Dtmf(_) => "dtmf",
            Inbound::Interrupt(_) => "interrupt",
            Inbound::Error(_) => "error",
            Inbound::Unknown => "unknown",
        }
    }
}

/// Body of `setup`. Only `callSid` is required here: the rest is kept for the log and for
/// whoever records sessions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Setup {
    /// Twilio's session id (`VX…`).
    #[serde(default)]
    pub session_id: String,
    /// The call: history and the next step are keyed by it.
    pub call_sid: String,
    /// The account.
    #[serde(default)]
    pub account_sid: String,
    /// The parent call, when this one was dialled from another (may be empty).
    #[serde(default)]
    pub parent_call_sid: String,
    /// The caller's number.
    #[serde(default)]
    pub from: String,
    /// The number called.
    #[serde(default)]
    pub to: String,
    /// The number that forwarded the call, if any.
    #[serde(default)]
    pub forwarded_from: String,
    /// `PSTN`, `SIP`, …
    #[serde(default)]
    pub call_type: String,
    /// Caller ID name, when known.
    #[serde(default)]
    pub caller_name: String,
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub direction: String,
    /// Upper case, e.g. `RINGING` or `IN-PROGRESS`.
    #[serde(default)]
    pub call_status: String,
    /// The TwiML's `<Parameter>`s.
    #[serde(default)]
    pub custom_parameters: HashMap<String, String>,
}

/// Body of `prompt`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    /// The caller's words.
    pub voice_prompt: String,
    /// Their language, when Twilio says.
    #[serde(default)]
    pub lang: Option<String>,
    /// `false` only for partial prompts (`partialPrompts`); absent counts as a whole one.
    #[serde(default = "whole")]
    pub last: bool,
}

fn whole() -> bool {
    true
}

/// Body of `dtmf`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Dtmf {
    /// The key, e.g. `"1"` or `"#"`.
    pub digit: String,
}

/// Body of `interrupt`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interrupt {
    /// The words the caller heard before speaking: what the history keeps of the reply.
    #[serde(default)]
    pub utterance_until_interrupt: String,
    /// How long our speech played, in ms: a number in the current documentation, a string in
    /// an older copy; both are read.
    #[serde(default, deserialize_with = "number_or_string")]
    pub duration_until_interrupt_ms: Option<u64>,
}

/// Body of `error`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorReport {
    /// What went wrong, in Twilio's words.
    #[serde(default)]
    pub description: String,
}

/// `123`, `"123"`, or anything else as `None`.
fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A message we send on a ConversationRelay socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Outbound {
    /// Text for Twilio to speak: model tokens as they come, `last` on the reply's end.
    Text {
        /// The words.
        token: String,
        /// True on the last token of the reply.
        last: bool,
    },
    /// Ends the session; Twilio then requests the `<Connect action>` with `HandoffData`.
    End {
        /// What happens next, as a JSON string (Twilio passes it on as is).
        #[serde(rename = "handoffData")]
        handoff_data: String,
    },
}

impl Outbound {
    /// The message as the socket's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_is_read_with_every_documented_field() {
        let text = r#"{"type":"setup","sessionId":"VX1","accountSid":"AC1","parentCallSid":"",
            "callSid":"CA1","from":"+15550100001","to":"+15550100002","forwardedFrom":"+15550100003",
            "callerName":"","direction":"inbound","callType":"PSTN","callStatus":"RINGING",
            "customParameters":{"k":"v"},"somethingNew":1}"#;
        let Inbound::Setup(setup) = Inbound::parse(text).unwrap() else {
            panic!("not a setup")
        };
        assert_eq!(
            (setup.call_sid.as_str(), setup.session_id.as_str()),
            ("CA1", "VX1")
        );
        assert_eq!(setup.call_status, "RINGING");
        assert_eq!(setup.custom_parameters["k"], "v");
    }

    #[test]
    fn interrupt_duration_is_a_number_or_a_string() {
        for (duration, expected) in [("460", Some(460)), ("\"460\"", Some(460)), ("null", None)] {
            let text = format!(
                r#"{{"type":"interrupt","utteranceUntilInterrupt":"We are open","durationUntilInterruptMs":{duration}}}"#
            );
            let parsed = Inbound::parse(&text).unwrap();
            assert_eq!(
                parsed,
                Inbound::Interrupt(Interrupt {
                    utterance_until_interrupt: "We are open".into(),
                    duration_until_interrupt_ms: expected,
                })
            );
        }
    }

    #[test]
    fn prompts_dtmf_errors_and_unknown_types() {
        let prompt =
            Inbound::parse(r#"{"type":"prompt","voicePrompt":"Hi","lang":"en-US","last":true}"#);
        assert!(matches!(
            prompt,
            Ok(Inbound::Prompt(Prompt { last: true, .. }))
        ));
        let partial = Inbound::parse(r#"{"type":"prompt","voicePrompt":"Hi","last":false}"#);
        assert!(matches!(
            partial,
            Ok(Inbound::Prompt(Prompt { last: false, .. }))
        ));
        let dtmf = Inbound::parse(r#"{"type":"dtmf","digit":"5"}"#).unwrap();
        assert_eq!(dtmf, Inbound::Dtmf(Dtmf { digit: "5".into() }));
        let error = Inbound::parse(r#"{"type":"error","description":"Invalid message"}"#);
        assert!(matches!(error, Ok(Inbound::Error(_))));
        assert_eq!(
            Inbound::parse(r#"{"type":"info"}"#).unwrap(),
            Inbound::Unknown
        );
        assert!(Inbound::parse(r#"{"type":"prompt"}"#).is_err());
        assert!(Inbound::parse("not json").is_err());
    }

    #[test]
    fn outbound_messages_have_the_documented_shape() {
        let text = Outbound::Text {
            token: "Hello ".into(),
            last: false,
        };
        assert_eq!(
            text.to_json(),
            r#"{"type":"text","token":"Hello ","last":false}"#
        );
        let end = Outbound::End {
            handoff_data: r#"{"reason":"ended"}"#.into(),
        };
        assert_eq!(
            end.to_json(),
            r#"{"type":"end","handoffData":"{\"reason\":\"ended\"}"}"#
        );
    }
}
