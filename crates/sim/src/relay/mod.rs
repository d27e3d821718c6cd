//! Twilio's side of a ConversationRelay call (PROTOCOLS §9), written from Twilio's documented
//! message shapes, not from the server's types: the voice webhook (signed as Twilio signs), the
//! `<Connect><ConversationRelay>` read from its TwiML, the socket opened with the signature
//! header, `setup` with every documented field, the greeting and each reply "spoken" at a
//! speaking rate (so an interruption at a given moment reports the words really heard so far,
//! in `utteranceUntilInterrupt`, and how long they took), a scripted caller (prompts, barge-in,
//! keys, silence, raw messages), and on `end` the `<Connect action>` requested with the
//! session's parameters and its TwiML followed (`<Hangup/>`, `<Dial>`).
//!
//! Everything sent and received is kept with its time ([`RelayCall::transcript`]), for the
//! tests, the demo and replay. Here: the call (webhook, sessions, `<Connect action>`); one
//! session's socket in `session.rs`; Twilio's voice in `line.rs`; the caller's script, and a
//! recorded session read as one, in `script.rs`.

mod line;
mod script;
mod session;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::twilio::ACCOUNT_SID;
use crate::twiml;
use crate::webhooks::{
    AfterStream, DialOutcome, TwilioHttp, WebhookError, CALLER_NUMBER, OUR_NUMBER,
};
pub use script::{script_of, speaking_rate_of, CallerStep};
use session::Session;

/// Twilio's voice speaks about 15 characters a second.
pub const SPEAKING_RATE: f64 = 15.0;
/// Sessions of one call at most: past this the fake stops following the server's
/// `<Connect><ConversationRelay>` answers (a loop).
pub const MAX_SESSIONS: usize = 10;
/// How often the caller looks at the clock while waiting for its moment.
const TICK: Duration = Duration::from_millis(10);

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Characters Twilio's voice speaks per second.
    pub speaking_rate: f64,
    /// How long to wait for the server's `end` once the script is over (then: hang up).
    pub linger: Duration,
    /// How the dialled party of a transfer behaves.
    pub dial: DialOutcome,
    /// `lang` of every prompt.
    pub lang: String,
    /// Told every socket message as it goes, both ways (the demo narrates them); a full
    /// queue drops the copy, never the message.
    pub watch: Option<mpsc::Sender<Entry>>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            speaking_rate: SPEAKING_RATE,
            // As long as the server may wait for its farewell to be spoken, and a little more.
            linger: ivr_bridge::relay::session::FAREWELL_LIMIT + Duration::from_secs(2),
            dial: DialOutcome::default(),
            lang: "en-US".into(),
            watch: None,
        }
    }
}

/// Who sent a message of the transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Twilio → server, on the socket.
    ToServer,
    /// Server → Twilio, on the socket.
    FromServer,
}

/// One socket message, with when it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Since the socket opened.
    pub at: Duration,
    /// Which way.
    pub direction: Direction,
    /// The message as sent.
    pub text: String,
}

/// What happened in one relay call.
#[derive(Debug, Clone, Default)]
pub struct RelayCall {
    /// The `<ConversationRelay>` attributes of the webhook's TwiML.
    pub relay: BTreeMap<String, String>,
    /// The `<Connect action>`, resolved.
    pub action: Option<String>,
    /// Every socket message, both ways, in order.
    pub transcript: Vec<Entry>,
    /// The server's replies, each its `text` tokens joined (an interrupted one as far as it
    /// came).
    pub replies: Vec<String>,
    /// What each `interrupt` said was heard (`utteranceUntilInterrupt`).
    pub heard: Vec<String>,
    /// Server messages Twilio would refuse (error 64107), with why.
    pub refused: Vec<String>,
    /// The `end` message's `handoffData`, if the server ended the last session.
    pub handoff: Option<String>,
    /// Every `end` message's `handoffData`, in order, of all the sessions.
    pub handoffs: Vec<String>,
    /// What Twilio did after the last session: the `<Connect action>` and its TwiML.
    pub after: Option<AfterStream>,
    /// What Twilio did after each session, in order.
    pub afters: Vec<AfterStream>,
    /// Each session's `sessionId`, in order: more than one when the call was resumed.
    pub session_ids: Vec<String>,
    /// The `welcomeGreeting` each session opened with.
    pub greetings: Vec<String>,
    /// Where each session's messages begin in the transcript.
    pub session_starts: Vec<usize>,
}

/// How a session ended, as Twilio reports it to the `<Connect action>` (`SessionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server sent `end`.
    Ended,
    /// The socket dropped (or could not be opened) with the call still up.
    Failed,
    /// The caller hung up (or the server closed the socket without `end`): the call is over.
    HungUp,
}

impl SessionEnd {
    /// `SessionStatus`.
    pub fn status(self) -> &'static str {
        match self {
            SessionEnd::Ended => "ended",
            SessionEnd::Failed => "failed",
            SessionEnd::HungUp => "completed",
        }
    }
}

/// A `<Connect><ConversationRelay>` read from TwiML.
#[derive(Debug, Clone)]
struct RelayNoun {
    /// Its `url`.
    url: String,
    /// The `<Connect action>`, resolved.
    action: Option<String>,
    /// Every attribute of `<ConversationRelay>`.
    attrs: BTreeMap<String, String>,
}

/// The `<ConversationRelay>` of `connect`, from a document fetched from `base`.
fn relay_of(connect: &twiml::Verb, base: &str) -> Result<RelayNoun, RelayError> {
    let relay = connect
        .children
        .iter()
        .find(|v| v.name == "ConversationRelay")
        .ok_or_else(|| RelayError::Twiml(format!("no <ConversationRelay> in {connect:?}")))?;
    let url = relay
        .attrs
        .get("url")
        .cloned()
        .ok_or_else(|| RelayError::Twiml("no url".into()))?;
    Ok(RelayNoun {
        url,
        action: connect.attrs.get("action").map(|a| resolve(base, a)),
        attrs: relay.attrs.clone(),
    })
}

/// What a session opens with.
struct Opening {
    /// `setup`.
    setup: Value,
    /// The `welcomeGreeting` Twilio speaks.
    greeting: Option<String>,
}

/// Why a relay call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The webhook failed or its TwiML has no `<Connect><ConversationRelay url>`.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// The TwiML is not what a relay call needs.
    #[error("the webhook's TwiML: {0}")]
    Twiml(String),
    /// The socket could not be opened.
    #[error("cannot open {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Twilio, ready to make relay calls to one server.
#[derive(Debug, Clone)]
pub struct RelayFake {
    /// Twilio's HTTP side (signing, tunnel).
    pub twilio: TwilioHttp,
    /// The voice webhook's URL, as configured in Twilio.
    pub webhook: String,
    /// How it behaves.
    pub options: RelayOptions,
}

/// The socket, as this fake uses it.
type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl RelayFake {
    /// A call `call_sid` whose caller follows `script`. When the `<Connect action>` answers
    /// another `<Connect><ConversationRelay>` (the server resumes the call), a new session is
    /// opened as Twilio would — a new `sessionId`, the same `callSid`, its `welcomeGreeting`
    /// spoken — and the caller goes on with the rest of the script (a step the old session's
    /// end cut short is done again), up to [`MAX_SESSIONS`].
    pub async fn call(
        &self,
        call_sid: &str,
        script: &[CallerStep],
    ) -> Result<RelayCall, RelayError> {
        let mut call = RelayCall::default();
        let params = TwilioHttp::standard_params(call_sid, "ringing");
        let (status, body) = self.twilio.post(&self.webhook, &params).await?;
        if status != 200 {
            return Err(RelayError::Twiml(format!("answered {status}: {body:.200}")));
        }
        let verbs = twiml::parse(&body).map_err(RelayError::Twiml)?;
        let connect = verbs
            .iter()
            .find(|v| v.name == "Connect")
            .ok_or_else(|| RelayError::Twiml(format!("no <Connect>: {body:.300}")))?;
        let mut relay = relay_of(connect, &self.webhook)?;
        call.relay = relay.attrs.clone();
        call.action = relay.action.clone();
        let started = Instant::now();
        let mut next = 0;
        loop {
            let n = call.session_ids.len();
            let session_id = match n {
                0 => format!("VX{}", call_sid.trim_start_matches("CA")),
                n => format!("VX{}r{n}", call_sid.trim_start_matches("CA")),
            };
            call.session_ids.push(session_id.clone());
            call.greetings.push(
                relay
                    .attrs
                    .get("welcomeGreeting")
                    .cloned()
                    .unwrap_or_default(),
            );
            call.session_starts.push(call.transcript.len());
            call.handoff = None;
            let (end, duration) = match self.open(&relay.url).await {
                Ok(socket) => {
                    let opening = Opening {
                        setup: setup(call_sid, &session_id),
                        greeting: relay.attrs.get("welcomeGreeting").cloned(),
                    };
                    let ran = self
                        .session(socket, call, started, &relay)
                        .run(opening, script, &mut next, &self.options)
                        .await;
                    call = ran.0;
                    (ran.1, ran.2)
                }
                // Twilio cannot open the first session: the call fails before it starts.
                Err(err) if n == 0 => return Err(err),
                // A later one: the session fails, and Twilio requests the action.
                Err(_) => (SessionEnd::Failed, 0),
            };
            let Some(action) = relay.action.clone() else {
                break;
            };
            let after = self
                .after_session(&action, call_sid, &session_id, end, duration, &call)
                .await;
            call.afters.push(after.clone());
            let resumed = after.connect.clone();
            call.after = Some(after);
            match resumed {
                Some(connect) if call.session_ids.len() < MAX_SESSIONS => {
                    relay = relay_of(&connect, &action)?;
                }
                _ => break,
            }
        }
        Ok(call)
    }

    /// A session of the call on `socket`, opened with `setup`.
    fn session(
        &self,
        socket: Socket,
        call: RelayCall,
        started: Instant,
        relay: &RelayNoun,
    ) -> Session {
        let interruptible = relay.attrs.get("interruptible").cloned();
        Session::new(socket, call, started, interruptible, &self.options)
    }

    /// Requests the `<Connect action>` after a session, with the session's parameters
    /// (PROTOCOLS §9.4), and follows its TwiML.
    async fn after_session(
        &self,
        action: &str,
        call_sid: &str,
        session_id: &str,
        end: SessionEnd,
        duration: u64,
        call: &RelayCall,
    ) -> AfterStream {
        let mut extra = vec![
            ("SessionId".to_owned(), session_id.to_owned()),
            ("SessionStatus".to_owned(), end.status().to_owned()),
            ("SessionDuration".to_owned(), duration.to_string()),
        ];
        if let Some(handoff) = &call.handoff {
            extra.push(("HandoffData".to_owned(), handoff.clone()));
        }
        match end {
            SessionEnd::Failed => {
                extra.push(("ErrorCode".to_owned(), "64105".to_owned()));
                let message = "WebSocket connection closed".to_owned();
                extra.push(("ErrorMessage".to_owned(), message));
            }
            SessionEnd::HungUp => extra.push(("CallStatus".to_owned(), "completed".to_owned())),
            SessionEnd::Ended => {}
        }
        self.twilio
            .follow_action(action, call_sid, self.options.dial, &extra)
            .await
    }

    /// Opens the socket as Twilio does: to the TwiML's URL, signed.
    async fn open(&self, url: &str) -> Result<Socket, RelayError> {
        let failed = |reason: String| RelayError::Connect {
            url: url.to_owned(),
            reason,
        };
        let target = self.twilio.reach_socket(url).map_err(failed)?;
        let mut request = target
            .as_str()
            .into_client_request()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(signature) = self.twilio.signature(url, &[]) {
            let value = signature
                .parse()
                .map_err(|_| failed("bad signature".into()))?;
            request.headers_mut().insert("X-Twilio-Signature", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(socket)
    }
}

/// `setup`, with every field Twilio documents.
fn setup(call_sid: &str, session_id: &str) -> Value {
    json!({
        "type": "setup",
        "sessionId": session_id,
        "accountSid": ACCOUNT_SID,
        "parentCallSid": "",
        "callSid": call_sid,
        "from": CALLER_NUMBER,
        "to": OUR_NUMBER,
        "forwardedFrom": OUR_NUMBER,
        "callerName": "",
        "direction": "inbound",
        "callType": "PSTN",
        "callStatus": "RINGING",
        "customParameters": {}
    })
}

/// `link` resolved against the webhook's URL (TwiML allows relative URLs).
fn resolve(base: &str, link: &str) -> String {
    reqwest::Url::parse(base)
        .and_then(|b| b.join(link))
        .map_or_else(|_| link.to_owned(), |u| u.to_string())
}
