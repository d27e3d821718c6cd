//! Twilio's side of a ConversationRelay call (PROTOCOLS §9), written from Twilio's documented
//! message shapes, not from the server's types: the voice webhook (signed as Twilio signs), the
//! `<Connect><ConversationRelay>` read from its TwiML, the socket opened with the signature
//! header, `setup` with every documented field, the greeting and each reply "spoken" at a
//! speaking rate (so an interruption at a given moment reports the words really heard so far,
//! in `utteranceUntilInterrupt`, and how long they took), a scripted caller (prompts, barge-in,
//! keys, silence, raw messages), and on `end` the `<Connect action>` requested with the
//! session's parameters and its TwiML followed (`<Hangup/>`, `<Dial>`).
//!
//! Everything sent and received is kept with its time ([`RelayCall::transcript`]), for tests
//! now and a demo or replay later.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::fixture::CallFixture;
use crate::twilio::ACCOUNT_SID;
use crate::twiml;
use crate::webhooks::{
    AfterStream, DialOutcome, TwilioHttp, WebhookError, CALLER_NUMBER, OUR_NUMBER,
};

/// Twilio's voice speaks about 15 characters a second.
pub const SPEAKING_RATE: f64 = 15.0;
/// Sessions of one call at most: past this the fake stops following the server's
/// `<Connect><ConversationRelay>` answers (a loop).
pub const MAX_SESSIONS: usize = 10;
/// How often the caller looks at the clock while waiting for its moment.
const TICK: Duration = Duration::from_millis(10);

/// One thing the scripted caller does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerStep {
    /// Once the assistant is silent (its reply received and spoken), say this.
    Say(String),
    /// Once the assistant is silent, press these keys (`dtmf`, one message per key).
    Press(String),
    /// Once the assistant has been speaking its next (or current) reply for `after`, speak
    /// `words` over it: Twilio sends `interrupt` (what was heard so far) then the prompt. If
    /// the reply ends first, or `interruptible` forbids speech, the words wait for silence.
    BargeIn {
        /// Speaking time of the reply before the caller cuts in.
        after: Duration,
        /// What the caller says.
        words: String,
    },
    /// Say nothing for this long.
    Silence(Duration),
    /// Say nothing until this long after the socket opened (a recorded session's moments).
    At(Duration),
    /// Send this text as it is (a malformed or unknown message).
    Raw(String),
    /// Once the assistant is silent, hang up: Twilio closes the socket.
    HangUp,
    /// Once the assistant is silent, the session fails while the call stays up: Twilio closes
    /// the socket and requests the `<Connect action>` with `SessionStatus=failed`.
    SessionFails,
}

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
        Session {
            socket,
            started,
            line: Line::new(self.options.speaking_rate),
            interruptible: relay.attrs.get("interruptible").cloned(),
            call,
            awaiting: false,
            current: String::new(),
            ended: false,
            closed: false,
            failed: false,
            watch: self.options.watch.clone(),
        }
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

/// What the caller of a recorded session (`RECORD_DIR`, or a hand-made fixture of the same
/// format) does, as a script: each prompt and key at its recorded moment (a prompt after an
/// `interrupt` becomes a barge-in after the same speaking time of the reply), and a hang-up
/// at the end when the caller hung up (or the socket closed). Server messages in the recording are not replayed.
pub fn script_of(fixture: &CallFixture) -> Vec<CallerStep> {
    let mut script = Vec::new();
    let mut interrupted: Option<Duration> = None;
    for line in &fixture.inbound {
        let at = CallerStep::At(Duration::from_millis(line.at_ms));
        let msg = &line.msg;
        match msg["type"].as_str() {
            Some("prompt") if msg["last"] != false => {
                let words = msg["voicePrompt"].as_str().unwrap_or_default().to_owned();
                match interrupted.take() {
                    Some(after) => script.push(CallerStep::BargeIn { after, words }),
                    None => script.extend([at, CallerStep::Say(words)]),
                }
            }
            Some("interrupt") => {
                let ms = &msg["durationUntilInterruptMs"];
                let ms = ms
                    .as_u64()
                    .or_else(|| ms.as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or_default();
                interrupted = Some(Duration::from_millis(ms));
            }
            Some("dtmf") => {
                let digit = msg["digit"].as_str().unwrap_or_default().to_owned();
                script.extend([at, CallerStep::Press(digit)]);
            }
            _ => {}
        }
    }
    // A relay session cannot tell a hang-up from a closed socket: either ends the call.
    let hung_up = ["caller_hung_up", "socket_closed"];
    if hung_up.contains(&fixture.sidecar.end_reason.as_deref().unwrap_or_default()) {
        script.push(CallerStep::HangUp);
    }
    script
}

/// How fast Twilio's voice spoke in a recorded session, in characters a second, as its
/// interruptions tell (`utteranceUntilInterrupt` over `durationUntilInterruptMs`); `None`
/// without an interruption that heard anything. A replay speaks at the same pace, so the same
/// moment of a reply hears the same words.
pub fn speaking_rate_of(fixture: &CallFixture) -> Option<f64> {
    let (mut chars, mut ms) = (0usize, 0u64);
    for line in &fixture.inbound {
        let msg = &line.msg;
        if msg["type"] != "interrupt" {
            continue;
        }
        let heard = msg["utteranceUntilInterrupt"].as_str().unwrap_or_default();
        let took = &msg["durationUntilInterruptMs"];
        let took = took
            .as_u64()
            .or_else(|| took.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_default();
        if !heard.is_empty() && took > 0 {
            chars += heard.chars().count();
            ms += took;
        }
    }
    (ms > 0).then(|| chars as f64 * 1000.0 / ms as f64)
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

/// One session in progress.
struct Session {
    socket: Socket,
    /// When the call's first socket opened.
    started: Instant,
    /// The session's `interruptible`.
    interruptible: Option<String>,
    /// What Twilio's voice is saying.
    line: Line,
    call: RelayCall,
    /// A prompt was sent and its reply's `last` has not come.
    awaiting: bool,
    /// The reply being received.
    current: String,
    /// The server sent `end`.
    ended: bool,
    /// The socket is closed (by the server, or the caller hung up).
    closed: bool,
    /// The session failed with the call still up.
    failed: bool,
    /// Who is told every message, if anybody.
    watch: Option<mpsc::Sender<Entry>>,
}

impl Session {
    async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    /// Keeps `entry` in the transcript and tells the watcher.
    fn note(&mut self, entry: Entry) {
        if let Some(watch) = &self.watch {
            let _ = watch.try_send(entry.clone());
        }
        self.call.transcript.push(entry);
    }

    async fn send_text(&mut self, text: String) {
        self.note(Entry {
            at: self.started.elapsed(),
            direction: Direction::ToServer,
            text: text.clone(),
        });
        if self.socket.send(Message::text(text)).await.is_err() {
            self.closed = true;
        }
    }

    /// Handles messages until `ready` says the caller's moment has come (or the session ends).
    async fn wait_until(&mut self, mut ready: impl FnMut(&Self, Instant) -> bool) {
        while !self.ended && !self.closed && !ready(self, Instant::now()) {
            tokio::select! {
                message = self.socket.next() => self.on_server(message),
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// One message from the server.
    fn on_server(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let text = match message {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                self.closed = true;
                return;
            }
            Some(Ok(_)) => return,
        };
        self.note(Entry {
            at: self.started.elapsed(),
            direction: Direction::FromServer,
            text: text.clone(),
        });
        let value: Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(e) => {
                self.call
                    .refused
                    .push(format!("not JSON ({e}): {text:.200}"));
                return;
            }
        };
        let now = Instant::now();
        match value["type"].as_str() {
            Some("text") => match (value["token"].as_str(), value["last"].as_bool()) {
                (Some(token), Some(last)) => {
                    self.current.push_str(token);
                    self.line.speak(token, now, true);
                    if last {
                        self.finish_reply();
                        self.awaiting = false;
                    }
                }
                _ => self
                    .call
                    .refused
                    .push(format!("text without token/last: {text}")),
            },
            Some("end") => {
                let handoff = &value["handoffData"];
                if !handoff.is_string() && !handoff.is_null() {
                    self.call
                        .refused
                        .push(format!("handoffData is not a string: {text}"));
                }
                self.call.handoff = handoff.as_str().map(str::to_owned);
                self.call.handoffs.extend(self.call.handoff.clone());
                self.ended = true;
            }
            Some("play" | "sendDigits" | "language") => {}
            _ => self.call.refused.push(format!("unknown message: {text}")),
        }
    }

    /// The reply being received is complete (or cut off).
    fn finish_reply(&mut self) {
        if !self.current.is_empty() {
            self.call.replies.push(std::mem::take(&mut self.current));
        }
    }

    fn allows(&self, what: &str) -> bool {
        let interruptible = self.interruptible.as_deref().unwrap_or("any");
        interruptible == "any" || interruptible == what
    }

    async fn prompt(&mut self, words: &str, lang: &str) {
        self.finish_reply();
        self.line.next_reply();
        self.awaiting = true;
        let prompt = json!({"type": "prompt", "voicePrompt": words, "lang": lang, "last": true});
        self.send(prompt).await;
    }

    /// The session from `setup` to its end: the script from step `*next` on (left at the first
    /// step not done when the session ended), then the wait for `end`. Returns the call so far,
    /// how the session ended and how long it lasted (seconds).
    async fn run(
        mut self,
        opening: Opening,
        script: &[CallerStep],
        next: &mut usize,
        options: &RelayOptions,
    ) -> (RelayCall, SessionEnd, u64) {
        let opened = Instant::now();
        self.send(opening.setup).await;
        if let Some(greeting) = opening.greeting {
            self.line.speak(&greeting, Instant::now(), false);
        }
        while let Some(step) = script.get(*next) {
            if self.over() || !self.run_step(step, options).await {
                break;
            }
            *next += 1;
        }
        self.linger(options.linger).await;
        let end = match (self.ended, self.failed) {
            (true, _) => SessionEnd::Ended,
            (false, true) => SessionEnd::Failed,
            (false, false) => SessionEnd::HungUp,
        };
        let _ = self.socket.close(None).await;
        (self.call, end, opened.elapsed().as_secs())
    }

    /// The session has ended, by the server's `end` or a closed socket.
    fn over(&self) -> bool {
        self.ended || self.closed
    }

    /// One step of the script; `false` when the session ended before the step was done.
    async fn run_step(&mut self, step: &CallerStep, options: &RelayOptions) -> bool {
        let silent = |s: &Self, now: Instant| !s.awaiting && s.line.quiet(now);
        match step {
            CallerStep::Say(words) => {
                self.wait_until(silent).await;
                if self.over() {
                    return false;
                }
                self.prompt(words, &options.lang).await;
            }
            CallerStep::Press(keys) => {
                self.wait_until(silent).await;
                if self.over() {
                    return false;
                }
                for key in keys.chars() {
                    self.send(json!({"type": "dtmf", "digit": key.to_string()}))
                        .await;
                }
                if keys.ends_with('#') {
                    self.finish_reply();
                    self.line.next_reply();
                    self.awaiting = true;
                }
            }
            CallerStep::BargeIn { after, words } => {
                let after = *after;
                self.wait_until(|s, now| {
                    silent(s, now) || s.line.reply_started().is_some_and(|at| now >= at + after)
                })
                .await;
                let now = Instant::now();
                if self.over() {
                    return false;
                } else if self.allows("speech") && !self.line.quiet(now) {
                    let (heard, duration) = self.line.interrupt(now);
                    self.call.heard.push(heard.clone());
                    let interrupt = json!({"type": "interrupt", "utteranceUntilInterrupt": heard,
                        "durationUntilInterruptMs": duration.as_millis() as u64});
                    self.send(interrupt).await;
                } else {
                    self.wait_until(silent).await;
                    if self.over() {
                        return false;
                    }
                }
                self.prompt(words, &options.lang).await;
            }
            CallerStep::Silence(pause) => {
                let until = Instant::now() + *pause;
                self.wait_until(|_, now| now >= until).await;
                return !self.over();
            }
            CallerStep::At(offset) => {
                let until = self.started + *offset;
                self.wait_until(|_, now| now >= until).await;
                return !self.over();
            }
            CallerStep::Raw(text) => self.send_text(text.clone()).await,
            CallerStep::HangUp => {
                self.wait_until(silent).await;
                if self.over() {
                    return false;
                }
                self.closed = true;
            }
            CallerStep::SessionFails => {
                self.wait_until(silent).await;
                if self.over() {
                    return false;
                }
                self.closed = true;
                self.failed = true;
            }
        }
        true
    }

    /// After the script: waits for the last reply and `end`, for up to `linger`.
    async fn linger(&mut self, linger: Duration) {
        let until = Instant::now() + linger;
        self.wait_until(|s, now| now >= until || (!s.awaiting && s.line.quiet(now) && s.ended))
            .await;
        self.finish_reply();
    }
}

/// What Twilio's voice says: pieces of text in order, each spoken from when it arrived or
/// the previous one ended, at the speaking rate.
#[derive(Debug)]
struct Line {
    /// Time per character.
    per_char: Duration,
    /// (start, text, part of a reply) per piece, in order.
    pieces: Vec<(Instant, String, bool)>,
    /// Where the current reply's speech began.
    reply_from: Option<usize>,
}

impl Line {
    fn new(rate: f64) -> Self {
        Self {
            per_char: Duration::from_secs_f64(1.0 / rate.max(1.0)),
            pieces: Vec::new(),
            reply_from: None,
        }
    }

    /// When what was queued has been spoken.
    fn end(&self) -> Option<Instant> {
        self.pieces
            .last()
            .map(|(start, text, _)| *start + self.length(text))
    }

    fn length(&self, text: &str) -> Duration {
        self.per_char * u32::try_from(text.chars().count()).unwrap_or(u32::MAX)
    }

    fn quiet(&self, now: Instant) -> bool {
        self.end().is_none_or(|end| now >= end)
    }

    fn speak(&mut self, text: &str, now: Instant, reply: bool) {
        let start = self.end().map_or(now, |end| end.max(now));
        if reply && self.reply_from.is_none() {
            self.reply_from = Some(self.pieces.len());
        }
        if !reply {
            self.reply_from = None;
        }
        self.pieces.push((start, text.to_owned(), reply));
    }

    /// The caller has spoken: the next reply text starts a new reply.
    fn next_reply(&mut self) {
        self.reply_from = None;
    }

    /// When the current reply began to be spoken.
    fn reply_started(&self) -> Option<Instant> {
        self.reply_from
            .and_then(|i| self.pieces.get(i))
            .map(|(start, _, _)| *start)
    }

    /// The caller speaks at `now`: what they heard of the current reply (whole words) and for
    /// how long it played; the rest is not spoken.
    fn interrupt(&mut self, now: Instant) -> (String, Duration) {
        let from = self.reply_from.take().unwrap_or(self.pieces.len());
        let began = self.pieces.get(from).map_or(now, |(start, _, _)| *start);
        let mut heard = String::new();
        for (start, text, _) in &self.pieces[from..] {
            if *start >= now {
                break;
            }
            let chars = (now - *start).as_secs_f64() / self.per_char.as_secs_f64();
            heard.extend(text.chars().take(chars as usize));
        }
        let total: String = self.pieces[from..]
            .iter()
            .map(|(_, t, _)| t.as_str())
            .collect();
        if total.len() > heard.len() && !total[heard.len()..].starts_with(char::is_whitespace) {
            let cut = heard.rfind(char::is_whitespace).unwrap_or(0);
            heard.truncate(cut);
        }
        self.pieces.truncate(from);
        self.pieces.push((now, String::new(), false));
        (
            heard.trim().to_owned(),
            now.saturating_duration_since(began),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_hears_whole_words_spoken_so_far() {
        let t0 = Instant::now();
        let mut line = Line::new(10.0); // 100 ms a character
        line.speak("Hi!", t0, false);
        line.speak("We are open ", t0, true);
        line.speak("from eight.", t0 + Duration::from_millis(50), true);
        let started = line.reply_started().expect("a reply");
        assert_eq!(started, t0 + Duration::from_millis(300));
        // 9 characters of the reply: "We are op" → whole words "We are".
        let (heard, took) = line.interrupt(started + Duration::from_millis(900));
        assert_eq!(heard, "We are");
        assert_eq!(took, Duration::from_millis(900));
        assert!(line.quiet(started + Duration::from_millis(900)));
    }

    #[test]
    fn speech_queues_after_what_is_being_said() {
        let t0 = Instant::now();
        let mut line = Line::new(10.0);
        line.speak("abc", t0, true);
        line.speak("de", t0, true);
        assert_eq!(line.end(), Some(t0 + Duration::from_millis(500)));
        assert!(!line.quiet(t0 + Duration::from_millis(499)));
        assert!(line.quiet(t0 + Duration::from_millis(500)));
    }
}
