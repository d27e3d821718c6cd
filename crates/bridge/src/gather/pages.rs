//! The TwiML documents of the Gather flow, built with [`crate::twilio::twiml`] so that any text —
//! a model's reply included — is escaped, stripped of Markdown and short enough for Polly.

use crate::tools::{Step, Transfer};
use crate::tts::text::{speakable, split_for_tts};
use crate::twilio::twiml::{self, Element};

/// Longest `<Say>` text Twilio accepts for Polly voices (error 13521).
pub const POLLY_MAX_CHARS: usize = 3000;
/// Times the caller is asked again after saying nothing, before the goodbye.
pub const MAX_REPROMPTS: u32 = 1;

/// Asked when the caller said nothing (or nothing recognisable).
const REPROMPT: &str = "Sorry, I didn't catch that. What can I help you with?";
/// Said before hanging up on a silent caller.
const GOODBYE: &str = "I still can't hear anything, so I'll hang up now. Goodbye!";
/// Said while the model is still writing, before the redirect to `/speak_response`.
const HOLDING: &str = "One moment please, let me check that for you.";
/// Said instead of a reply whose text turned out to be empty once made speakable.
const EMPTY_REPLY: &str = "Sorry, I don't have an answer to that. Could you ask another way?";

/// How this deployment's Gather pages sound and listen.
#[derive(Debug, Clone)]
pub struct PageStyle {
    /// `<Say voice>`, e.g. `Polly.Stephen-Neural`.
    pub voice: String,
    /// `<Gather speechModel>`, e.g. `deepgram_nova-2`.
    pub speech_model: String,
    /// `<Gather language>`, e.g. `en-US`.
    pub language: String,
}

/// The pages for one request: the style and where the action URLs point.
#[derive(Debug)]
pub struct Pages<'a> {
    /// Voice and recognition settings.
    style: &'a PageStyle,
    /// Public base URL (`scheme://host[/prefix]`); `None` keeps action URLs relative.
    base: Option<String>,
}

impl<'a> Pages<'a> {
    /// Pages whose URLs resolve against `base` (or stay relative without one).
    pub fn new(style: &'a PageStyle, base: Option<String>) -> Self {
        Self { style, base }
    }

    /// Says `text` while listening for the caller's next words (barge-in): the usual page.
    /// `silences` counts the caller's consecutive silent turns so far.
    pub fn listen(&self, text: &str, silences: u32) -> String {
        twiml::response([self.gather(text, silences)])
    }

    /// The page for an answer: said while listening, or said before the call ends, or said
    /// before the caller is put through to `transfer`. The `<Dial>`'s outcome goes to
    /// `/stream_ended?after=dial`, as a streaming call's does: the apology and the end when
    /// nobody took the call, only the end after a call that was answered.
    pub fn answer(&self, text: &str, step: &Step, transfer: Option<&Transfer>) -> String {
        match (step, transfer) {
            (Step::End, _) => twiml::response([self.say(text), Element::new("Hangup")]),
            (Step::Transfer { .. }, Some(transfer)) => twiml::response([
                self.say(text),
                transfer
                    .dial()
                    .attr("action", self.url("/stream_ended?after=dial")),
            ]),
            _ => self.listen(text, 0),
        }
    }

    /// Asks again after a silent turn, or says goodbye and hangs up once the caller has been
    /// asked [`MAX_REPROMPTS`] times already: a silent line never loops.
    pub fn after_silence(&self, silences: u32) -> String {
        if silences >= MAX_REPROMPTS {
            return twiml::response([self.say(GOODBYE), Element::new("Hangup")]);
        }
        self.listen(REPROMPT, silences + 1)
    }

    /// A holding phrase, then a redirect to `/speak_response` to fetch the pending reply.
    pub fn holding(&self) -> String {
        twiml::response([
            self.say(HOLDING),
            Element::new("Redirect")
                .attr("method", "POST")
                .text(self.url("/speak_response")),
        ])
    }

    /// `<Gather input="speech" …>` around `<Say>text</Say>`; the action carries the silence count.
    fn gather(&self, text: &str, silences: u32) -> Element {
        let action = match silences {
            0 => self.url("/process_speech"),
            n => self.url(&format!("/process_speech?silence={n}")),
        };
        Element::new("Gather")
            .attr("input", "speech")
            .attr("action", action)
            .attr("method", "POST")
            .attr("speechTimeout", "auto")
            .attr("speechModel", self.style.speech_model.as_str())
            .attr("enhanced", "true")
            .attr("language", self.style.language.as_str())
            .attr("actionOnEmptyResult", "true")
            .attr("bargeIn", "true")
            .child(self.say(text))
    }

    fn say(&self, text: &str) -> Element {
        Element::new("Say")
            .attr("voice", self.style.voice.as_str())
            .text(for_say(text))
    }

    fn url(&self, path: &str) -> String {
        match &self.base {
            Some(base) => format!("{base}{path}"),
            None => path.to_owned(),
        }
    }
}

/// Text fit for `<Say>`: Markdown stripped, cut at a sentence end to Polly's limit, never empty.
pub fn for_say(text: &str) -> String {
    let spoken = speakable(text);
    let first = split_for_tts(&spoken, POLLY_MAX_CHARS)
        .into_iter()
        .next()
        .unwrap_or(EMPTY_REPLY);
    first.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style() -> PageStyle {
        PageStyle {
            voice: "Polly.Stephen-Neural".into(),
            speech_model: "deepgram_nova-2".into(),
            language: "en-US".into(),
        }
    }

    #[test]
    fn long_replies_are_cut_at_a_sentence_end() {
        let sentence = "This sentence is about fifty characters long, ok. ";
        let text = for_say(&sentence.repeat(100));
        assert!(text.chars().count() <= POLLY_MAX_CHARS);
        assert!(text.ends_with("ok."), "{}", &text[text.len() - 20..]);
    }

    #[test]
    fn empty_speech_gets_a_fallback() {
        assert_eq!(for_say("**  **"), EMPTY_REPLY);
    }

    #[test]
    fn silence_is_counted_in_the_action_then_ends_the_call() {
        let style = style();
        let pages = Pages::new(&style, Some("https://x.example".into()));
        let first = pages.after_silence(0);
        assert!(
            first.contains(r#"action="https://x.example/process_speech?silence=1""#),
            "{first}"
        );
        let last = pages.after_silence(1);
        assert!(last.ends_with("<Hangup/></Response>"), "{last}");
        assert!(!last.contains("<Gather"), "{last}");
    }

    #[test]
    fn an_end_hangs_up_and_a_transfer_dials_with_its_outcome_to_stream_ended() {
        use crate::tools::{Step, Transfer};
        use crate::twilio::next_step::Target;
        let style = style();
        let pages = Pages::new(&style, None);
        let end = pages.answer("Goodbye!", &Step::End, None);
        assert!(end.ends_with("Goodbye!</Say><Hangup/></Response>"), "{end}");
        let transfer = Transfer {
            target: Target::parse("+15557654321").expect("number"),
            caller_id: None,
            phrase: "Hold on.".into(),
        };
        let step = Step::Transfer {
            reason: "billing".into(),
        };
        let page = pages.answer("Hold on.", &step, Some(&transfer));
        assert!(
            page.ends_with(
                "Hold on.</Say><Dial action=\"/stream_ended?after=dial\"><Number>+15557654321</Number></Dial></Response>"
            ),
            "{page}"
        );
        let listening = pages.answer("Hi.", &Step::Continue, Some(&transfer));
        assert!(listening.contains("<Gather"), "{listening}");
    }

    #[test]
    fn relative_urls_without_a_base() {
        let style = style();
        let page = Pages::new(&style, None).holding();
        assert!(
            page.contains(r#"<Redirect method="POST">/speak_response</Redirect>"#),
            "{page}"
        );
    }
}
