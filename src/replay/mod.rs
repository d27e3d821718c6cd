//! `ivr-bridge replay FILE [--url ws://…]`: plays a recorded call against a server and says
//! whether it still goes the same way.
//!
//! By default the server is this program's own, started in-process on `127.0.0.1` (with the
//! local stand-ins unless both provider keys are set), so the replay reads the call's typed
//! events: the caller's turns as heard, each reply's words, barge-ins. With `--url` the server
//! runs elsewhere and only its wire can be compared: replies told apart by their marks, their
//! audio, and `clear`s.

pub mod compare;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::demo::{DemoError, LocalServer, Providers};
use compare::{same_reply, same_wire_reply, Conversation, SaidReply, Wire, WireReply};
use ivr_bridge::config::Mode;
use ivr_bridge::config::{Config, TurnDetection};
use ivr_bridge::events::CallEvents;
use ivr_bridge::record::format::Transport;
use ivr_sim::caller::{self as player, Listener, PlayError, Quiet};
use ivr_sim::fixture::{CallFixture, FixtureError};
use ivr_sim::relay::{self as relay_fake, RelayError, RelayFake, RelayOptions};
use ivr_sim::webhooks::TwilioHttp;

/// The rules, for `--help` and the README.
pub const RULES: &str = "\
The replay differs (exit 1) when, after normalising text (case, punctuation and spacing \
ignored): the caller's turns heard are not the same in number and words; the replies are not the \
same in number, or a reply's words differ (for a reply the caller cut short, one's words must \
be the start of the other's); or the number of barge-ins differs. With --url only the wire is \
seen: the number of replies (told apart by their marks) and of clears must match, and each reply \
not cut by a clear must have the same number of marks and its audio within 25% of the \
recording's. Exit 0: the same; 1: different; 3: the replay could not run.";

/// What to replay, and against what.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The recording (`.jsonl` with its `.json` sidecar beside it).
    pub file: PathBuf,
    /// A running server's Media Stream URL; `None` starts one in this process.
    pub url: Option<String>,
    /// The in-process server's configuration.
    pub config: Config,
    /// Stand-ins or the real providers, for the in-process server.
    pub providers: Providers,
    /// Settings the user set explicitly; the others come from the recording when it has them.
    pub user_set: UserSet,
}

/// Which turn-taking settings the user chose on the command line or in the environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserSet {
    /// `SILENCE_TIMEOUT_MS`.
    pub silence_timeout: bool,
    /// `TURN_DETECTION`.
    pub turn_detection: bool,
    /// `GREETING`.
    pub greeting: bool,
}

/// How the replay went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Checks made.
    pub checks: usize,
    /// Checks that failed.
    pub differences: usize,
}

/// The replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording is unusable.
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    /// The local server could not run.
    #[error(transparent)]
    Local(#[from] DemoError),
    /// The call could not be played.
    #[error(transparent)]
    Play(#[from] PlayError),
    /// A relay session could not be played.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// A relay session is replayed against this program's own server only.
    #[error(
        "{0} is a ConversationRelay session: it is replayed against a local server (no --url)"
    )]
    RelayWithUrl(PathBuf),
    /// `--url` needs the server's side of the recording, which this file does not have.
    #[error("{0} has no server messages (\"dir\":\"out\" lines) to compare the wire with")]
    NoWire(PathBuf),
}

/// Replays, printing both conversations to `out`.
pub async fn run(
    mut options: ReplayOptions,
    out: &mut (dyn Write + Send),
) -> Result<Verdict, ReplayError> {
    let fixture = CallFixture::load(&options.file)?;
    let mut report = Report::new(out);
    report.note(&format!("replay of {}", fixture.path.display()));
    report.note(&format!("  recorded  {}", fixture.sidecar.description));
    let relay = fixture.sidecar.transport == Transport::Relay;
    match options.url.clone() {
        Some(_) if relay => return Err(ReplayError::RelayWithUrl(fixture.path)),
        Some(url) => {
            if fixture.outbound.is_empty() {
                return Err(ReplayError::NoWire(fixture.path));
            }
            report.note(&format!("  against   {url} (only the wire is compared)"));
            let played = player::play(&url, &fixture, None, &mut Quiet).await?;
            let recorded = Wire::from_messages(fixture.outbound.iter().map(|(_, m)| m));
            let replayed = Wire::from_messages(played.outbound.iter().map(|(_, m)| m));
            report.wire(&recorded, &replayed);
        }
        None => {
            apply_recorded_settings(&fixture, &mut options.config, options.user_set);
            let against = match options.providers {
                Providers::StandIns => {
                    "a local ivr-bridge with the local stand-ins for Deepgram \
                    and Mistral (set both API keys to use the real services)"
                }
                Providers::Real => "a local ivr-bridge with the real Deepgram and Mistral",
            };
            report.note(&format!("  against   {against}"));
            let fresh = if relay {
                report.note("  as        Twilio ConversationRelay (MODE=relay), the caller's moments as recorded");
                play_relay_locally(&fixture, &options).await?
            } else {
                play_locally(&fixture, &options).await?
            };
            report.conversation(&fixture, &fresh);
        }
    }
    Ok(report.finish())
}

/// The recording's turn-taking settings, unless the user chose their own.
fn apply_recorded_settings(fixture: &CallFixture, config: &mut Config, user: UserSet) {
    let Some(settings) = &fixture.sidecar.settings else {
        return;
    };
    if !user.silence_timeout {
        config.turns.silence_timeout = Duration::from_millis(settings.silence_timeout_ms.max(1));
    }
    if !user.turn_detection {
        config.turns.turn_detection = match settings.turn_detection.as_str() {
            "deepgram" => TurnDetection::Deepgram,
            "flux" => TurnDetection::Flux,
            _ => TurnDetection::Timer,
        };
    }
    if !user.greeting && !settings.greeting.trim().is_empty() {
        config.assistant.greeting = settings.greeting.clone();
    }
}

async fn play_locally(
    fixture: &CallFixture,
    options: &ReplayOptions,
) -> Result<Conversation, ReplayError> {
    let mut config = options.config.clone();
    config.record.record_dir = None;
    let mut local = LocalServer::start(fixture, options.providers, &mut config).await?;
    let url = format!("ws://{}/media", local.addr);
    let mut collector = Collector::default();
    let played = player::play(&url, fixture, Some(&mut local.events), &mut collector).await;
    local.stop().await?;
    played?;
    Ok(collector.conversation)
}

/// Plays a recorded ConversationRelay session through the relay fake into a relay-mode server
/// in this process; the conversation is read from the server's events.
async fn play_relay_locally(
    fixture: &CallFixture,
    options: &ReplayOptions,
) -> Result<Conversation, ReplayError> {
    let mut config = options.config.clone();
    config.record.record_dir = None;
    config.server.mode = Mode::Relay;
    let mut local = LocalServer::start(fixture, options.providers, &mut config).await?;
    let twilio = RelayFake {
        twilio: TwilioHttp::new(config.twilio.auth_token().map(|t| t.expose())),
        webhook: format!("http://{}/", local.addr),
        options: RelayOptions {
            speaking_rate: relay_fake::speaking_rate_of(fixture)
                .unwrap_or(relay_fake::SPEAKING_RATE),
            ..RelayOptions::default()
        },
    };
    let script = relay_fake::script_of(fixture);
    let call = twilio.call(&fixture.sidecar.call_sid, &script);
    let mut collector = Collector::default();
    let played = collect_while(&mut local.events, &mut collector, call).await;
    local.stop().await?;
    played?;
    Ok(collector.conversation)
}

/// Runs `work` while handing the server's events to `collector`, then takes the rest.
async fn collect_while<T>(
    events: &mut CallEvents,
    collector: &mut Collector,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let done = loop {
        tokio::select! {
            done = &mut work => break done,
            Some(observed) = events.recv() => collector.server(Duration::ZERO, &observed.event),
        }
    };
    // The session's last events (its end) follow the socket's close closely.
    while let Ok(Some(observed)) =
        tokio::time::timeout(Duration::from_millis(500), events.recv()).await
    {
        collector.server(Duration::ZERO, &observed.event);
    }
    done
}

/// Builds the conversation from the server's events.
#[derive(Default)]
struct Collector {
    conversation: Conversation,
    /// Reply numbers in the order their first phrase came.
    ids: Vec<u64>,
}

impl Listener for Collector {
    fn server(&mut self, _at: Duration, event: &ivr_bridge::events::CallEvent) {
        self.conversation.on_event(&mut self.ids, event);
    }
}

/// Prints the comparison and counts the differences.
struct Report<'w> {
    out: &'w mut (dyn Write + Send),
    verdict: Verdict,
}

impl<'w> Report<'w> {
    fn new(out: &'w mut (dyn Write + Send)) -> Self {
        Self {
            out,
            verdict: Verdict {
                checks: 0,
                differences: 0,
            },
        }
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// One check: its name, whether it held, and the two sides.
    fn check(&mut self, what: &str, same: bool, recorded: &str, replayed: &str) {
        self.verdict.checks += 1;
        self.verdict.differences += usize::from(!same);
        let mark = if same { "same" } else { "DIFFERENT" };
        self.note(&format!("{what:<24} {mark}"));
        self.note(&format!("    recorded  {recorded}"));
        self.note(&format!("    replay    {replayed}"));
    }

    fn conversation(&mut self, fixture: &CallFixture, fresh: &Conversation) {
        self.note("");
        let (turns, replies, barge_ins) = Conversation::recorded(&fixture.sidecar);
        self.pairs(
            "caller turn",
            &turns,
            &fresh.turns,
            |a, b| compare::normalise(a) == compare::normalise(b),
            |t| format!("{t:?}"),
        );
        match replies {
            Some(replies) => self.pairs("reply", &replies, &fresh.replies, same_reply, said),
            None => self.note("replies                  not in the recording: not compared"),
        }
        match barge_ins {
            Some(n) => self.check(
                "barge-ins",
                n == fresh.barge_ins,
                &n.to_string(),
                &fresh.barge_ins.to_string(),
            ),
            None => self.note("barge-ins                not in the recording: not compared"),
        }
        match Conversation::recorded_tool_calls(&fixture.sidecar) {
            Some(calls) => self.pairs(
                "tool call",
                &calls,
                &fresh.tool_calls,
                |a, b| a == b,
                Clone::clone,
            ),
            None => self.note("tool calls               not in the recording: not compared"),
        }
    }

    fn wire(&mut self, recorded: &Wire, replayed: &Wire) {
        self.note("");
        self.pairs(
            "reply on the wire",
            &recorded.replies,
            &replayed.replies,
            same_wire_reply,
            wire_reply,
        );
        self.check(
            "clears",
            recorded.clears == replayed.clears,
            &recorded.clears.to_string(),
            &replayed.clears.to_string(),
        );
    }

    /// Compares two lists item by item; a missing item on either side is a difference.
    fn pairs<T>(
        &mut self,
        what: &str,
        recorded: &[T],
        replayed: &[T],
        same: impl Fn(&T, &T) -> bool,
        show: impl Fn(&T) -> String,
    ) {
        for i in 0..recorded.len().max(replayed.len()) {
            let (a, b) = (recorded.get(i), replayed.get(i));
            let held = matches!((a, b), (Some(a), Some(b)) if same(a, b));
            let side = |x: Option<&T>| x.map_or("(none)".to_owned(), &show);
            self.check(&format!("{what} {}", i + 1), held, &side(a), &side(b));
        }
        if recorded.is_empty() && replayed.is_empty() {
            self.check(&format!("{what}s"), true, "(none)", "(none)");
        }
    }

    fn finish(self) -> Verdict {
        let v = self.verdict;
        let _ = writeln!(self.out);
        let _ = if v.differences == 0 {
            writeln!(
                self.out,
                "result: the replay matches the recording ({} checks)",
                v.checks
            )
        } else {
            writeln!(
                self.out,
                "result: the replay DIFFERS from the recording in {} of {} checks",
                v.differences, v.checks
            )
        };
        v
    }
}

fn said(reply: &SaidReply) -> String {
    let cut = match (&reply.heard, reply.interrupted) {
        (Some(heard), _) => format!(" [cut short by the caller, who heard {heard:?}]"),
        (None, true) => " [cut short by the caller]".to_owned(),
        (None, false) => String::new(),
    };
    format!("{:?}{cut}", reply.phrases.join(" "))
}

fn wire_reply(r: &WireReply) -> String {
    let id = r
        .reply
        .map_or("unmarked".to_owned(), |n| format!("reply-{n}"));
    let cut = if r.cut { ", cut by a clear" } else { "" };
    format!(
        "{id}: {} mark(s), {:.2} s of audio{cut}",
        r.marks,
        r.audio_ms as f64 / 1000.0
    )
}
