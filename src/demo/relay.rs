//! `ivr-bridge demo --relay`: a whole ConversationRelay call on this machine.
//!
//! Starts the real server in relay mode (`MODE=relay`) on `127.0.0.1:0`, with the local Mistral
//! stand-in unless both keys are set, and plays a recorded relay session
//! (`fixtures/relay/demo.jsonl`) through the ConversationRelay fake as Twilio would: the voice
//! webhook, the signed socket, `setup`, the caller's prompts, interruptions and keys at their
//! recorded moments, Twilio's voice speaking the streamed text at a speaking pace, and the
//! `<Connect action>` once the session ends. Tells the call as it happens, from both ends of
//! the socket. There is no audio on this socket, so no WAV.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use ivr_bridge::config::Mode;
use ivr_bridge::events::CallEvent;
use ivr_sim::fixture::CallFixture;
use ivr_sim::relay::{self as fake, Direction, Entry, RelayFake, RelayOptions};
use ivr_sim::webhooks::TwilioHttp;

use super::story::{ms, Story};
use super::{describe_call, DemoError, DemoOptions, LocalServer, Providers};

/// The relay session played when none is named.
pub const DEFAULT_RELAY_FIXTURE: &str = "fixtures/relay/demo.jsonl";
/// Socket messages buffered between the fake and the story.
const WATCH_QUEUE: usize = 256;
/// How long the story waits for the server's last events once the call is over.
const LAST_EVENTS: Duration = Duration::from_millis(300);

/// Runs the relay demo, printing its story to `out`.
pub async fn run(mut options: DemoOptions, out: &mut (dyn Write + Send)) -> Result<(), DemoError> {
    let fixture = CallFixture::load(&options.fixture)?;
    options.config.server.mode = Mode::Relay;
    let mut local = LocalServer::start(&fixture, options.providers, &mut options.config).await?;
    let mut story = Story::new(out);
    let rate = fake::speaking_rate_of(&fixture).unwrap_or(fake::SPEAKING_RATE);
    header(&mut story, &options, &fixture, local.addr, rate);
    let (watch, mut watched) = mpsc::channel(WATCH_QUEUE);
    let twilio = RelayFake {
        twilio: TwilioHttp::new(options.config.twilio.auth_token().map(|t| t.expose())),
        webhook: format!("http://{}/", local.addr),
        options: RelayOptions {
            speaking_rate: rate,
            watch: Some(watch),
            ..RelayOptions::default()
        },
    };
    let script = fake::script_of(&fixture);
    let origin = Instant::now();
    let mut teller = Teller::new(&options.config.assistant.greeting);
    let call = twilio.call(&fixture.sidecar.call_sid, &script);
    tokio::pin!(call);
    let played = loop {
        // Biased, the socket first: Twilio's message is told before what the server made of it
        // (the fake notes a message before it goes out, so it is always queued first).
        tokio::select! {
            biased;
            Some(entry) = watched.recv() => teller.wire(&mut story, origin.elapsed(), &entry),
            Some(observed) = local.events.recv() => {
                let at = observed.at.saturating_duration_since(origin);
                teller.server(&mut story, at, &observed.event);
            }
            played = &mut call => break played,
        }
    };
    while let Ok(entry) = watched.try_recv() {
        teller.wire(&mut story, origin.elapsed(), &entry);
    }
    while let Ok(Some(observed)) = tokio::time::timeout(LAST_EVENTS, local.events.recv()).await {
        let at = observed.at.saturating_duration_since(origin);
        teller.server(&mut story, at, &observed.event);
    }
    local.stop().await?;
    let call = played?;
    if let Some(after) = &call.after {
        let why = "the session ended: Twilio follows <Connect action>";
        story.connect_action(origin.elapsed(), why, after);
    }
    teller.summary(&mut story);
    Ok(())
}

/// Tells the socket's messages and the server's events, and keeps each turn's latency.
struct Teller {
    /// Twilio's `welcomeGreeting`, spoken once `setup` is sent.
    greeting: String,
    /// When the caller's last prompt went, until its reply's first text.
    asked: Option<Duration>,
    /// The reply being streamed, its tokens joined.
    reply: String,
    /// Prompt → first `text`, per answered turn.
    latencies: Vec<Duration>,
}

impl Teller {
    fn new(greeting: &str) -> Self {
        Self {
            greeting: greeting.to_owned(),
            asked: None,
            reply: String::new(),
            latencies: Vec::new(),
        }
    }

    /// One message on the socket, either way.
    fn wire(&mut self, story: &mut Story<'_>, at: Duration, entry: &Entry) {
        let Ok(msg) = serde_json::from_str::<Value>(&entry.text) else {
            story.line(
                at,
                "twilio",
                &format!("sent a message that is not JSON: {}", entry.text),
            );
            return;
        };
        let text = |key: &str| msg[key].as_str().unwrap_or_default().to_owned();
        match (entry.direction, msg["type"].as_str().unwrap_or_default()) {
            (Direction::ToServer, "setup") => {
                let what = format!(
                    "setup: session {} of call {} from {}",
                    text("sessionId"),
                    text("callSid"),
                    text("from")
                );
                story.line(at, "twilio", &what);
                let greeting = format!("speaks the welcomeGreeting {:?}", self.greeting);
                story.line(at, "line", &greeting);
            }
            (Direction::ToServer, "prompt") => {
                self.asked = Some(at);
                let said = format!(
                    "says {:?}  [a prompt: Twilio's recognition]",
                    text("voicePrompt")
                );
                story.line(at, "caller", &said);
            }
            (Direction::ToServer, "interrupt") => {
                let heard = text("utteranceUntilInterrupt");
                let what = format!(
                    "speaks over the assistant: Twilio stops its voice and sends interrupt (heard \
                     {heard:?})"
                );
                story.line(at, "caller", &what);
            }
            (Direction::ToServer, "dtmf") => {
                story.line(at, "caller", &format!("presses {}", text("digit")));
            }
            (Direction::ToServer, kind) => story.line(at, "twilio", &format!("sends {kind}")),
            (Direction::FromServer, "text") => {
                if let Some(asked) = self.asked.take() {
                    let latency = at.saturating_sub(asked);
                    self.latencies.push(latency);
                    let what = format!(
                        "first text token {} after the prompt; Twilio's voice starts speaking",
                        ms(latency)
                    );
                    story.line(at, "assistant", &what);
                }
                self.reply
                    .push_str(msg["token"].as_str().unwrap_or_default());
                if msg["last"] == true {
                    let reply = std::mem::take(&mut self.reply);
                    story.line(
                        at,
                        "assistant",
                        &format!("streamed {:?} (last: true)", reply.trim()),
                    );
                }
            }
            (Direction::FromServer, "end") => {
                let what = format!("end, handoffData {}", text("handoffData"));
                story.line(at, "server", &what);
            }
            (Direction::FromServer, kind) => story.line(at, "server", &format!("sends {kind}")),
        }
    }

    /// What the server says happened.
    fn server(&mut self, story: &mut Story<'_>, at: Duration, event: &CallEvent) {
        match event {
            CallEvent::BargeIn {
                heard: Some(heard), ..
            } => {
                let what = format!(
                    "the reply is cancelled; the model's history keeps {heard:?} as what the \
                     caller heard"
                );
                story.line(at, "server", &what);
            }
            CallEvent::ToolCall {
                name,
                arguments,
                result,
                ..
            } => story.line(at, "tool", &format!("{name}({arguments}) → {result}")),
            CallEvent::Dtmf { .. } | CallEvent::Phrase { .. } | CallEvent::TurnEnded { .. } => {}
            CallEvent::Problem { what } => story.line(at, "server", what),
            CallEvent::Ended { reason, .. } => {
                story.line(at, "server", &format!("session over: {reason}"));
            }
            _ => {}
        }
    }

    fn summary(&self, story: &mut Story<'_>) {
        story.note("");
        story.note(&format!("{} answered turn(s):", self.latencies.len()));
        for (i, latency) in self.latencies.iter().enumerate() {
            story.note(&format!(
                "  turn {}: prompt → first text token {}",
                i + 1,
                ms(*latency)
            ));
        }
    }
}

fn header(
    story: &mut Story<'_>,
    options: &DemoOptions,
    fixture: &CallFixture,
    addr: std::net::SocketAddr,
    rate: f64,
) {
    story.note("ivr-bridge demo --relay: a whole ConversationRelay call on this machine");
    describe_call(story, fixture);
    story.note(&format!(
        "  server     ivr-bridge on {addr} in relay mode (MODE=relay); Twilio's side is the \
         ConversationRelay fake: the caller's words arrive as text prompts, and the replies are \
         spoken at {rate:.0} characters a second"
    ));
    let providers = match options.providers {
        Providers::StandIns => {
            "Mistral is a local stand-in that answers from a small hospital FAQ; set \
             MISTRAL_API_KEY (and DEEPGRAM_API_KEY, unused here) to use the real service."
        }
        Providers::Real => "Mistral is the real service (the API keys are set).",
    };
    story.note(&format!("  providers  {providers}"));
    story.note("");
}
