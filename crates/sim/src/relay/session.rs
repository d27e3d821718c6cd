//! One ConversationRelay session of a call: the socket Twilio opened, the scripted caller's
//! steps played on it, and what the server sends (text spoken by the voice, `end`).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::line::Line;
use super::{
    CallerStep, Direction, Entry, Opening, RelayCall, RelayOptions, SessionEnd, Socket, TICK,
};

/// One session in progress.
pub(super) struct Session {
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
    /// A session on `socket` that goes on `call` (started at `started`), with Twilio's voice
    /// as `options` say and the TwiML's `interruptible`.
    pub(super) fn new(
        socket: Socket,
        call: RelayCall,
        started: Instant,
        interruptible: Option<String>,
        options: &RelayOptions,
    ) -> Self {
        Self {
            socket,
            started,
            line: Line::new(options.speaking_rate),
            interruptible,
            call,
            awaiting: false,
            current: String::new(),
            ended: false,
            closed: false,
            failed: false,
            watch: options.watch.clone(),
        }
    }

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
    pub(super) async fn run(
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
