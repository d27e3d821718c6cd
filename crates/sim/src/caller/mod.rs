//! Plays a recorded call into the server over a real WebSocket, in real time, as Twilio would:
//! inbound messages at their recorded offsets (renumbered, with optional injections and an
//! early hang-up), everything the server sends checked against Twilio's rules and played
//! through a [`Line`](ivr_bridge::twilio::playback::Line) (marks echoed when played, `clear`
//! applied), and what happens told to a [`Listener`] as it happens: the caller's script, the
//! line, and the server's typed [`CallEvent`]s when it runs in this process. When the server
//! closes the stream while the caller is still on the line, Twilio goes on with the call's
//! `<Connect action>` ([`PlayOptions::connect_action`], [`crate::webhooks`]). The demo, `replay`
//! and the behaviour tests all call through here; the result is a [`Recording`].

mod call;
pub mod recording;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::fixture::CallFixture;
use crate::webhooks::{AfterStream, DialOutcome, TwilioHttp};
use call::Call;
use ivr_bridge::events::{CallEvent, CallEvents, ObservedEvent};
pub use recording::{ClearRecord, MarkRecord, MediaFrame, Played, Recording};

/// How long the caller keeps reading after it closed the socket, for the server's last words.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long the server gets to tell the end of the call after the socket closed.
const EVENTS_WAIT: Duration = Duration::from_secs(2);

/// The call could not be played.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    /// The media stream socket did not open.
    #[error("cannot open the media stream at {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Something extra to send, for malformed-input and edge-case tests.
#[derive(Clone, Debug)]
pub enum Inject {
    /// A raw text frame, sent as is.
    Text(String),
    /// A binary frame (Twilio never sends these).
    Binary(Vec<u8>),
    /// A Twilio message; its `sequenceNumber`, if present, is renumbered like the others.
    Message(Value),
}

/// How to play a recording.
#[derive(Clone, Debug)]
pub struct PlayOptions {
    /// Extra frames at given offsets (ms since connect); sent after recorded lines of equal time.
    pub inject: Vec<(u64, Inject)>,
    /// How long to keep listening after the last line before closing the socket.
    pub linger: Duration,
    /// Hang up early: skip recorded lines after this offset and send `stop` there instead.
    pub hang_up_at_ms: Option<u64>,
    /// The call's `<Connect action>`, followed as Twilio does when the server closes the stream
    /// before the caller hangs up; `None`: the call just ends there.
    pub connect_action: Option<ConnectAction>,
}

/// A `<Connect action>` to follow after the stream, and how.
#[derive(Clone, Debug)]
pub struct ConnectAction {
    /// The action URL, as the voice webhook's TwiML gave it ([`TwilioHttp::incoming_call`]).
    pub url: String,
    /// Twilio's HTTP side: the account that signs, the tunnel or balancer it goes through.
    pub twilio: TwilioHttp,
    /// What the dialled party does if the TwiML transfers the call.
    pub dial: DialOutcome,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            inject: Vec::new(),
            linger: Duration::from_millis(1500),
            hang_up_at_ms: None,
            connect_action: None,
        }
    }
}

/// Who hears about the call as it is played. Every method has a default that ignores it.
pub trait Listener {
    /// The recording's caller starts an utterance.
    fn caller_starts(&mut self, _at: Duration, _text: &str) {}
    /// The recording's caller stops speaking.
    fn caller_stops(&mut self, _at: Duration) {}
    /// The server published an event (only when it runs in this process).
    fn server(&mut self, _at: Duration, _event: &CallEvent) {}
    /// Assistant audio reached the line while it was quiet.
    fn audio_starts(&mut self, _at: Duration) {}
    /// The assistant's audio finished playing.
    fn audio_ends(&mut self, _at: Duration) {}
    /// Twilio applied a `clear`, dropping this much unplayed audio.
    fn cleared(&mut self, _at: Duration, _dropped: Duration) {}
    /// The recording's caller hangs up (Twilio's `stop`).
    fn hang_up(&mut self, _at: Duration) {}
    /// The server sent something Twilio would reject (31950/31951), and why.
    fn rejected(&mut self, _at: Duration, _why: &str) {}
    /// The server closed the stream and Twilio followed the `<Connect action>`: what it ran.
    fn after_stream(&mut self, _at: Duration, _after: &AfterStream) {}
}

/// A listener that ignores everything: for callers that only want the [`Recording`].
pub struct Quiet;

impl Listener for Quiet {}

/// Plays `fixture` into `url` with default options, telling `story` what happens, with the
/// server's `events` when it runs in this process.
pub async fn play(
    url: &str,
    fixture: &CallFixture,
    events: Option<&mut CallEvents>,
    story: &mut (dyn Listener + Send),
) -> Result<Recording, PlayError> {
    play_with(url, fixture, &PlayOptions::default(), events, story).await
}

/// Plays `fixture` into `url` as `options` say; see [`play`].
pub async fn play_with(
    url: &str,
    fixture: &CallFixture,
    options: &PlayOptions,
    mut events: Option<&mut CallEvents>,
    story: &mut (dyn Listener + Send),
) -> Result<Recording, PlayError> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| PlayError::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let started = Instant::now();
    let (mut sink, mut stream) = ws.split();
    let schedule = schedule(fixture, options);
    let mut call = Call::new(started, fixture);
    let last_at = schedule.last().map_or(0, |(at, _)| *at);
    let give_up = started + Duration::from_millis(last_at) + options.linger;
    let mut next = 0;
    while !call.server_closed() {
        let send_at = schedule
            .get(next)
            .map_or(give_up, |(at, _)| started + Duration::from_millis(*at));
        let wake = call.next_wake();
        let out: Vec<Message> = tokio::select! {
            biased;
            msg = stream.next() => call.on_server(msg, story),
            Some(event) = next_event(&mut events) => {
                story.server(event.at.saturating_duration_since(started), &event.event);
                Vec::new()
            }
            () = sleep_until(wake.unwrap_or(give_up)), if wake.is_some() => call.on_wake(story),
            () = sleep_until(send_at) => match schedule.get(next) {
                Some((_, frame)) => {
                    next += 1;
                    vec![call.outgoing(frame, story)]
                }
                None => break,
            },
        };
        for msg in out {
            if sink.send(msg).await.is_err() {
                call.send_failed();
            }
        }
    }
    if !call.server_closed() {
        let _ = sink.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(msg) = stream.next().await {
                let _ = call.on_server(Some(msg), story);
            }
        })
        .await;
    }
    if let Some(events) = events {
        // The server tells the end of the call after its socket closed.
        let until = Instant::now() + EVENTS_WAIT;
        while let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await {
            story.server(event.at.saturating_duration_since(started), &event.event);
            if matches!(event.event, CallEvent::Ended { .. }) {
                break;
            }
        }
    }
    if let (Some(action), Some(call_sid)) = (&options.connect_action, call.call_sid()) {
        if call.server_ended_stream() {
            let twilio = &action.twilio;
            let after = twilio.follow_connect_action(&action.url, call_sid, action.dial);
            let after = after.await;
            story.after_stream(started.elapsed(), &after);
            call.followed(after);
        }
    }
    Ok(call.finish(fixture))
}

/// Recorded inbound messages (cut at the hang-up) merged with injections, by offset.
fn schedule(fixture: &CallFixture, options: &PlayOptions) -> Vec<(u64, Inject)> {
    let cut = options.hang_up_at_ms.unwrap_or(u64::MAX);
    let mut out: Vec<(u64, Inject)> = fixture
        .inbound
        .iter()
        .filter(|s| s.at_ms <= cut || s.msg["event"] == "stop")
        .map(|s| (s.at_ms.min(cut), Inject::Message(s.msg.clone())))
        .collect();
    out.extend(options.inject.iter().cloned());
    out.sort_by_key(|(at, _)| *at);
    out
}

/// The next server event, or never when there are none to read.
async fn next_event(events: &mut Option<&mut CallEvents>) -> Option<ObservedEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}
