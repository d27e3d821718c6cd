//! Twilio's side of the Gather flow for tests: posts the webhooks' forms as Twilio does and
//! parses the TwiML answers with a real XML parser (never by string matching), the simulated
//! Twilio's own ([`ivr_sim::twiml`]).

use super::TestEnv;

/// The one TwiML reader, shared with the simulated Twilio (`ivr_sim::twiml`).
pub use ivr_sim::twiml::{verbs, Verb};

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// The TwiML verbs of a 200 `text/xml` answer.
    pub fn twiml(&self) -> Vec<Verb> {
        assert_eq!(self.status, 200, "{self:?}");
        assert!(self.content_type.starts_with("text/xml"), "{self:?}");
        verbs(&self.body)
    }

    /// The page is one barge-in speech Gather saying something; returns (Say text, action).
    pub fn listening(&self) -> (String, String) {
        let page = self.twiml();
        assert_eq!(page.len(), 1, "{page:?}");
        let gather = &page[0];
        assert_eq!(gather.name, "Gather");
        assert_eq!(gather.attr("input"), "speech");
        assert_eq!(gather.attr("method"), "POST");
        assert_eq!(gather.attr("speechTimeout"), "auto");
        assert_eq!(gather.attr("enhanced"), "true");
        assert_eq!(gather.attr("actionOnEmptyResult"), "true");
        assert_eq!(gather.attr("bargeIn"), "true");
        assert_eq!(gather.children.len(), 1, "{gather:?}");
        let say = &gather.children[0];
        assert_eq!(say.name, "Say");
        assert_eq!(say.attr("voice"), "Polly.Stephen-Neural");
        (say.text.clone(), gather.attr("action").to_owned())
    }

    /// The text the page says while listening.
    pub fn says(&self) -> String {
        self.listening().0
    }
}

/// Twilio's side of one call: posts forms as Twilio does.
pub struct Phone {
    base: String,
    call: String,
    http: reqwest::Client,
}

impl Phone {
    pub fn new(env: &TestEnv, call: &str) -> Self {
        Self::at(&env.http_url(), call)
    }

    /// Call `call` reaching the server at `base` (`http://host:port`): a separate process, a
    /// load balancer.
    pub fn at(base: &str, call: &str) -> Self {
        Self {
            base: base.to_owned(),
            call: call.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The same call reaching another instance.
    pub fn on(&self, env: &TestEnv) -> Self {
        Self::new(env, &self.call)
    }

    /// POSTs Twilio's standard parameters plus `extra` to `path` (which may carry a query).
    pub async fn post(&self, path: &str, extra: &[(&str, &str)]) -> Answer {
        let mut form = vec![
            ("CallSid", self.call.as_str()),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", "+15551234567"),
            ("To", "+15557654321"),
            ("CallStatus", "in-progress"),
            ("Direction", "inbound"),
            ("ApiVersion", "2010-04-01"),
        ];
        form.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
        form.extend_from_slice(extra);
        let request = self.http.post(format!("{}{path}", self.base)).form(&form);
        answer(request).await
    }

    /// The caller says `text` at the prompt.
    pub async fn say(&self, text: &str) -> Answer {
        self.post(
            "/process_speech",
            &[("SpeechResult", text), ("Confidence", "0.92")],
        )
        .await
    }
}

/// Sends `request` and collects the answer.
pub async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the server answered");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.expect("a body");
    Answer {
        status,
        content_type,
        body,
    }
}
