//! TwiML as Twilio reads it: parsed with a real XML parser (never by string matching) into
//! [`Verb`]s, and the verbs Twilio runs after a Media Stream read as [`Instruction`]s.

use std::collections::BTreeMap;

/// One TwiML verb (or noun) as parsed from the XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verb {
    /// Tag name, e.g. `Gather`.
    pub name: String,
    /// Attributes, unescaped.
    pub attrs: BTreeMap<String, String>,
    /// Text content, unescaped.
    pub text: String,
    /// Nested verbs.
    pub children: Vec<Verb>,
}

impl Verb {
    /// The attribute's value; panics naming the verb when it is absent (for tests).
    pub fn attr(&self, name: &str) -> &str {
        self.attrs.get(name).map_or_else(
            || panic!("{} has no {name}: {self:?}", self.name),
            String::as_str,
        )
    }
}

/// The verbs under `<Response>`, or why the document is not TwiML.
pub fn parse(twiml: &str) -> Result<Vec<Verb>, String> {
    fn verb(node: roxmltree::Node<'_, '_>) -> Verb {
        Verb {
            name: node.tag_name().name().to_owned(),
            attrs: node
                .attributes()
                .map(|a| (a.name().to_owned(), a.value().to_owned()))
                .collect(),
            text: node
                .children()
                .filter(|n| n.is_text())
                .filter_map(|n| n.text())
                .collect(),
            children: node
                .children()
                .filter(|n| n.is_element())
                .map(verb)
                .collect(),
        }
    }
    let doc = roxmltree::Document::parse(twiml).map_err(|e| format!("{e}: {twiml:.300}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(format!("the root is not <Response>: {twiml:.300}"));
    }
    let elements = root.children().filter(|n| n.is_element());
    Ok(elements.map(verb).collect())
}

/// [`parse`] for tests: panics with the document when it is not TwiML.
pub fn verbs(twiml: &str) -> Vec<Verb> {
    parse(twiml).unwrap_or_else(|e| panic!("{e}"))
}

/// Whom a `<Dial>` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    /// `<Number>` (or bare text): a phone number.
    Number(String),
    /// `<Sip>`: a SIP URI.
    Sip(String),
    /// Any other noun (`<Client>`, `<Conference>`…), by name.
    Other(String),
}

/// One thing Twilio did on the call after its Media Stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `<Hangup/>`: the call ended.
    Hangup,
    /// `<Say>`: Twilio spoke this text.
    Say(String),
    /// `<Dial>`: Twilio dialled the target.
    Dial {
        /// Whom.
        target: DialTarget,
        /// `callerId`, if set.
        caller_id: Option<String>,
        /// `action`, if set: requested when the dialled call is over.
        action: Option<String>,
    },
    /// Any other verb, by name (Twilio would run it; this model does not).
    Other(String),
}

impl Instruction {
    /// The instruction a verb is.
    pub fn of(verb: &Verb) -> Self {
        match verb.name.as_str() {
            "Hangup" => Instruction::Hangup,
            "Say" => Instruction::Say(verb.text.clone()),
            "Dial" => Instruction::Dial {
                target: dial_target(verb),
                caller_id: verb.attrs.get("callerId").cloned(),
                action: verb.attrs.get("action").cloned(),
            },
            other => Instruction::Other(other.to_owned()),
        }
    }
}

fn dial_target(dial: &Verb) -> DialTarget {
    match dial.children.first() {
        Some(noun) if noun.name == "Number" => DialTarget::Number(noun.text.trim().to_owned()),
        Some(noun) if noun.name == "Sip" => DialTarget::Sip(noun.text.trim().to_owned()),
        Some(noun) => DialTarget::Other(noun.name.clone()),
        None => DialTarget::Number(dial.text.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dials_says_and_hangups_are_read_as_twilio_runs_them() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="/a?x=1&amp;y=2" callerId="+1555"><Sip>sip:a@b</Sip></Dial><Say voice="v">Fish &amp; chips</Say><Dial>+1666</Dial><Pause/><Hangup/></Response>"#;
        let steps: Vec<Instruction> = verbs(doc).iter().map(Instruction::of).collect();
        assert_eq!(
            steps,
            [
                Instruction::Dial {
                    target: DialTarget::Sip("sip:a@b".into()),
                    caller_id: Some("+1555".into()),
                    action: Some("/a?x=1&y=2".into()),
                },
                Instruction::Say("Fish & chips".into()),
                Instruction::Dial {
                    target: DialTarget::Number("+1666".into()),
                    caller_id: None,
                    action: None,
                },
                Instruction::Other("Pause".into()),
                Instruction::Hangup,
            ]
        );
    }

    #[test]
    fn anything_but_a_response_is_refused() {
        assert!(parse("<Hangup/>").is_err());
        assert!(parse("not xml").is_err());
        assert_eq!(parse("<Response/>"), Ok(Vec::new()));
    }
}
