//! Twilio's HTTP side of a call: the webhooks it sends (its standard parameters, signed with
//! the account's auth token as Twilio signs them, PROTOCOLS §2) and what it does with the TwiML
//! it gets back — the voice webhook's `<Connect action><Stream>`, and after the server closes
//! the Media Stream, the `<Connect action>` and any `<Dial action>` (PROTOCOLS §8.1).

use std::time::Duration;

use ivr_bridge::twilio::signature::Validator;
use ivr_bridge::Secret;
use reqwest::Url;

use crate::twilio::ACCOUNT_SID;
use crate::twiml::{self, Instruction};

/// The caller's number (`From`) of every simulated call.
pub const CALLER_NUMBER: &str = "+15550100001";
/// The number that was called (`To`): the deployment's Twilio number.
pub const OUR_NUMBER: &str = "+15550100002";
/// Documents followed after one stream at most; more means the TwiML loops.
const MAX_DOCUMENTS: usize = 10;
/// How long one webhook may take to answer (Twilio's own limit is 15 s).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// A webhook that could not be made or whose answer is not TwiML.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request failed (connection, timeout).
    #[error("POST {url} failed: {reason}")]
    Request {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer is not what Twilio can run.
    #[error("POST {url} answered {status}: {problem}")]
    Answer {
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What is wrong with it.
        problem: String,
    },
}

/// How the dialled party of a `<Dial>` behaves; sent as `DialCallStatus` to the dial's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DialOutcome {
    /// Rings until the dial times out.
    #[default]
    NoAnswer,
    /// The line is busy.
    Busy,
    /// The number cannot be reached.
    Failed,
    /// Someone answers, talks, and hangs up.
    Answered,
}

impl DialOutcome {
    /// The `DialCallStatus` Twilio reports for it.
    pub fn status(self) -> &'static str {
        match self {
            DialOutcome::NoAnswer => "no-answer",
            DialOutcome::Busy => "busy",
            DialOutcome::Failed => "failed",
            DialOutcome::Answered => "completed",
        }
    }
}

/// The voice webhook's answer: where the Media Stream goes and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `<Stream url>`.
    pub stream_url: String,
    /// `<Connect action>`, resolved against the webhook's URL.
    pub action: Option<String>,
    /// The verbs after `<Connect>`, run when the stream ends if there is no action.
    pub then: Vec<Instruction>,
}

/// What Twilio did with the call once its Media Stream was over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AfterStream {
    /// Every request made, in order: the URL requested and the HTTP status.
    pub requests: Vec<(String, u16)>,
    /// What Twilio ran, in order (e.g. `Dial`, `Say`, `Hangup`).
    pub instructions: Vec<Instruction>,
    /// Why it stopped early (Twilio would play its "application error" and hang up).
    pub error: Option<String>,
    /// A `<Connect>` Twilio runs next (a new ConversationRelay session, or stream): the
    /// document is on hold while it lasts, and whoever models that socket carries on.
    pub connect: Option<twiml::Verb>,
}

/// Twilio's HTTP side for one account: signs as Twilio does when given the auth token.
#[derive(Debug, Clone)]
pub struct TwilioHttp {
    /// One client for every webhook.
    http: reqwest::Client,
    /// Signs requests; `None` sends them unsigned (a server without `TWILIO_AUTH_TOKEN`).
    signer: Option<Validator>,
    /// Where requests really go (a tunnel or load balancer in front of the servers): its
    /// scheme and authority replace the URL's; the signature stays over the URL as written.
    via: Option<Url>,
}

impl TwilioHttp {
    /// Twilio for an account with `auth_token` (`None`: requests are not signed).
    pub fn new(auth_token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            signer: auth_token.map(|t| Validator::new(Secret::new(t))),
            via: None,
        }
    }

    /// The same, reaching every URL through `base` (`http://127.0.0.1:PORT`) as a tunnel or
    /// balancer would: the URL's path and query are kept, and so is the signed URL.
    pub fn via(mut self, base: &str) -> Self {
        self.via = Url::parse(base).ok();
        self
    }

    /// Twilio's standard request parameters for call `call_sid` in `call_status` (§3.4).
    pub fn standard_params(call_sid: &str, call_status: &str) -> Vec<(String, String)> {
        [
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call_sid),
            ("CallStatus", call_status),
            ("Called", OUR_NUMBER),
            ("Caller", CALLER_NUMBER),
            ("Direction", "inbound"),
            ("From", CALLER_NUMBER),
            ("To", OUR_NUMBER),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// POSTs `params` to `url` as Twilio does; returns the status and the body.
    pub async fn post(
        &self,
        url: &str,
        params: &[(String, String)],
    ) -> Result<(u16, String), WebhookError> {
        let failed = |e: &dyn std::fmt::Display| WebhookError::Request {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let mut request = self
            .http
            .post(self.reach(url).map_err(|e| failed(&e))?)
            .timeout(WEBHOOK_TIMEOUT)
            .form(params);
        if let Some(signer) = &self.signer {
            request = request.header("X-Twilio-Signature", signer.sign(url, params));
        }
        let response = request.send().await.map_err(|e| failed(&e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| failed(&e))?;
        Ok((status, body))
    }

    /// A call comes in: POSTs the voice webhook at `url` and reads its `<Connect><Stream>`.
    pub async fn incoming_call(&self, url: &str, call_sid: &str) -> Result<Connect, WebhookError> {
        let params = Self::standard_params(call_sid, "ringing");
        let verbs = self.twiml(url, &params).await?;
        let refused = |problem: String| WebhookError::Answer {
            url: url.to_owned(),
            status: 200,
            problem,
        };
        let at = verbs.iter().position(|v| v.name == "Connect");
        let connect = at
            .map(|i| &verbs[i])
            .ok_or_else(|| refused("no <Connect>".into()))?;
        let stream = connect.children.iter().find(|v| v.name == "Stream");
        let stream_url = stream
            .and_then(|s| s.attrs.get("url"))
            .ok_or_else(|| refused("no <Connect><Stream url>".into()))?;
        let action = match connect.attrs.get("action") {
            Some(action) => Some(resolve(url, action).map_err(refused)?),
            None => None,
        };
        let rest = at.map_or(&verbs[..0], |i| &verbs[i + 1..]);
        Ok(Connect {
            stream_url: stream_url.clone(),
            action,
            then: rest.iter().map(Instruction::of).collect(),
        })
    }

    /// The server closed call `call_sid`'s Media Stream: requests the `<Connect action>` and
    /// runs its TwiML as Twilio does — verbs in order until `<Hangup/>` or the end of the
    /// document; a `<Dial action>` is requested with `dial`'s `DialCallStatus` and its TwiML
    /// runs next; a `<Dial>` without action goes on with the following verbs.
    pub async fn follow_connect_action(
        &self,
        action: &str,
        call_sid: &str,
        dial: DialOutcome,
    ) -> AfterStream {
        self.follow_action(action, call_sid, dial, &[]).await
    }

    /// [`TwilioHttp::follow_connect_action`] with `extra` parameters on the first request
    /// (replacing standard ones of the same name): what a ConversationRelay session adds
    /// (`SessionId`, `SessionStatus`, `HandoffData`…, PROTOCOLS §9.4).
    pub async fn follow_action(
        &self,
        action: &str,
        call_sid: &str,
        dial: DialOutcome,
        extra: &[(String, String)],
    ) -> AfterStream {
        let mut after = AfterStream::default();
        let mut next = Some((action.to_owned(), None::<&str>));
        while let Some((url, dial_status)) = next.take() {
            if after.requests.len() >= MAX_DOCUMENTS {
                after.error = Some(format!("more than {MAX_DOCUMENTS} documents: a loop"));
                break;
            }
            let mut params = Self::standard_params(call_sid, "in-progress");
            if after.requests.is_empty() {
                for (name, value) in extra {
                    params.retain(|(n, _)| n != name);
                    params.push((name.clone(), value.clone()));
                }
            }
            if let Some(status) = dial_status {
                params.push(("DialCallStatus".into(), status.into()));
                params.push(("DialCallSid".into(), format!("{call_sid}d")));
            }
            let verbs = match self.twiml(&url, &params).await {
                Ok(verbs) => verbs,
                Err(err) => {
                    let status = match &err {
                        WebhookError::Answer { status, .. } => *status,
                        WebhookError::Request { .. } => 0,
                    };
                    after.requests.push((url, status));
                    after.error = Some(err.to_string());
                    break;
                }
            };
            after.requests.push((url.clone(), 200));
            for verb in &verbs {
                let instruction = Instruction::of(verb);
                after.instructions.push(instruction.clone());
                match instruction {
                    Instruction::Hangup => return after,
                    Instruction::Other(name) if name == "Connect" => {
                        after.connect = Some(verb.clone());
                        return after;
                    }
                    Instruction::Dial {
                        action: Some(dial_action),
                        ..
                    } => match resolve(&url, &dial_action) {
                        Ok(resolved) => {
                            next = Some((resolved, Some(dial.status())));
                            break;
                        }
                        Err(problem) => {
                            after.error = Some(problem);
                            return after;
                        }
                    },
                    _ => {}
                }
            }
        }
        after
    }

    /// POSTs and parses the TwiML answer; anything but a 200 `text/xml` TwiML is an error.
    async fn twiml(
        &self,
        url: &str,
        params: &[(String, String)],
    ) -> Result<Vec<twiml::Verb>, WebhookError> {
        let (status, body) = self.post(url, params).await?;
        let refused = |problem: String| WebhookError::Answer {
            url: url.to_owned(),
            status,
            problem,
        };
        if status != 200 {
            return Err(refused(format!("{body:.200}")));
        }
        twiml::parse(&body).map_err(refused)
    }

    /// `X-Twilio-Signature` for `url` and `params`, as Twilio signs them; `None` without an
    /// auth token. A WebSocket handshake signs its `wss://` URL with no params (PROTOCOLS §2.4).
    pub fn signature(&self, url: &str, params: &[(String, String)]) -> Option<String> {
        self.signer.as_ref().map(|signer| signer.sign(url, params))
    }

    /// Where a WebSocket to `url` (`wss://…`, as the TwiML names it) really goes: through the
    /// tunnel, when there is one (`ws://` to its authority).
    pub fn reach_socket(&self, url: &str) -> Result<String, String> {
        let Some(via) = &self.via else {
            return Ok(url.to_owned());
        };
        let target = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let scheme = if via.scheme() == "https" { "wss" } else { "ws" };
        let authority = via.host_str().unwrap_or_default();
        let port = via.port().map(|p| format!(":{p}")).unwrap_or_default();
        Ok(format!("{scheme}://{authority}{port}{}", target.path()))
    }

    /// Where a request for `url` really goes.
    fn reach(&self, url: &str) -> Result<Url, String> {
        let mut target = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        if let Some(via) = &self.via {
            let path = target.path().to_owned();
            let query = target.query().map(str::to_owned);
            target = via.clone();
            target.set_path(&path);
            target.set_query(query.as_deref());
        }
        Ok(target)
    }
}

/// `link` (absolute, or relative as TwiML allows) resolved against the document's `base` URL.
fn resolve(base: &str, link: &str) -> Result<String, String> {
    let base = Url::parse(base).map_err(|e| format!("{base:?}: {e}"))?;
    let url = base.join(link).map_err(|e| format!("{link:?}: {e}"))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_against_the_document_url() {
        let base = "https://a.example/stream_ended";
        assert_eq!(
            resolve(base, "/stream_ended?after=dial").unwrap(),
            "https://a.example/stream_ended?after=dial"
        );
        assert_eq!(
            resolve(base, "https://b.example/x").unwrap(),
            "https://b.example/x"
        );
    }

    #[test]
    fn a_tunnel_keeps_the_path_and_query() {
        let twilio = TwilioHttp::new(None).via("http://127.0.0.1:9");
        let reached = twilio.reach("https://voice.example.com/stream_ended?after=dial");
        assert_eq!(
            reached.unwrap().as_str(),
            "http://127.0.0.1:9/stream_ended?after=dial"
        );
    }

    #[test]
    fn standard_params_carry_the_call() {
        let params = TwilioHttp::standard_params("CA1", "in-progress");
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("CallSid"), Some("CA1"));
        assert_eq!(get("AccountSid"), Some(ACCOUNT_SID));
        assert_eq!(get("CallStatus"), Some("in-progress"));
        assert_eq!(DialOutcome::default().status(), "no-answer");
    }
}
