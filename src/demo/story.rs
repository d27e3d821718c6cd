//! The call told as it happens: who speaks, what was heard, what is answered, and how long each
//! stage took. Sans-IO apart from the writer it prints to: times are arguments (offsets from the
//! start of the call).

use std::io::Write;
use std::time::Duration;

use ivr_bridge::events::CallEvent;
use ivr_sim::caller::Listener;
use ivr_sim::twiml::Instruction;
use ivr_sim::webhooks::AfterStream;

/// The latencies of one answered turn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnLatency {
    /// End of the caller's speech → the server ends the turn (recognition + silence timeout).
    pub turn_end: Duration,
    /// Turn end → first phrase of the reply written by the model.
    pub first_phrase: Option<Duration>,
    /// End of the caller's speech → first reply audio reaching the line.
    pub first_audio: Option<Duration>,
}

/// A turn waiting for its reply.
#[derive(Debug)]
struct Pending {
    /// When the caller stopped speaking, if the fixture says.
    speech_end: Option<Duration>,
    /// When the server ended the turn.
    turn_end: Duration,
    /// When the first phrase was written.
    first_phrase: Option<Duration>,
}

/// The printer and its memory of the call.
pub struct Story<'w> {
    /// Where the story goes (stdout in the binary).
    out: &'w mut (dyn Write + Send),
    /// When the caller last stopped speaking.
    speech_end: Option<Duration>,
    /// The turn whose reply has not reached the line yet.
    pending: Option<Pending>,
    /// The assistant's audio is on the line.
    speaking: bool,
    /// When reply audio reached the line with no turn waiting for it: a reply prepared before
    /// the turn ended can get there in the same instant as the turn's end is told.
    unclaimed_audio: Option<Duration>,
    /// Every answered turn, for the summary.
    turns: Vec<TurnLatency>,
    /// An interruption not yet resolved: what the caller had heard of the reply they cut off,
    /// and the words they have said since.
    interruption: Option<(String, Vec<String>)>,
}

impl<'w> Story<'w> {
    /// A story printed to `out`.
    pub fn new(out: &'w mut (dyn Write + Send)) -> Self {
        Self {
            out,
            speech_end: None,
            pending: None,
            speaking: false,
            unclaimed_audio: None,
            turns: Vec::new(),
            interruption: None,
        }
    }

    /// What Twilio did after a stream or a relay session ended (`why`): the `<Connect action>`
    /// requested and the TwiML it ran.
    pub fn connect_action(&mut self, at: Duration, why: &str, after: &AfterStream) {
        self.line(at, "line", why);
        for (url, status) in &after.requests {
            let path = url.split_once("://").map_or(url.as_str(), |(_, rest)| {
                rest.find('/').map_or(rest, |i| &rest[i..])
            });
            self.line(at, "twilio", &format!("POST {path} → {status}"));
        }
        let ran: Vec<String> = after
            .instructions
            .iter()
            .map(|i| match i {
                Instruction::Hangup => "<Hangup/>".to_owned(),
                Instruction::Say(text) => format!("<Say>{text}</Say>"),
                Instruction::Dial { target, .. } => format!("<Dial>{target:?}</Dial>"),
                Instruction::Other(name) => format!("<{name}>"),
            })
            .collect();
        self.line(at, "twilio", &format!("runs {}", ran.join(" ")));
        if let Some(error) = &after.error {
            self.line(at, "twilio", &format!("error: {error}"));
        }
    }

    /// Prints a line without a time.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// Prints a line at `at`: who did what.
    pub fn line(&mut self, at: Duration, who: &str, what: &str) {
        let _ = writeln!(self.out, "{:>7.2}s  {who:<10} {what}", at.as_secs_f64());
    }

    fn turn_ended(&mut self, at: Duration, text: &str) {
        let speech_end = self.speech_end.take();
        let after = speech_end.map_or(String::new(), |end| {
            format!(
                "  [{} after the caller stopped: recognition + silence timeout]",
                ms(at.saturating_sub(end))
            )
        });
        self.line(at, "heard", &format!("{text:?}{after}"));
        if let Some((heard, _)) = self.interruption.take() {
            self.line(
                at,
                "server",
                &format!(
                    "the interruption is a turn of its own: the model's history keeps {heard:?} \
                     as what the caller heard of the reply they cut off"
                ),
            );
        }
        if let Some(audio) = self.unclaimed_audio.take() {
            // The answer was prepared while the caller paused, and went out as the turn ended.
            let first_audio = speech_end.map(|end| audio.max(at).saturating_sub(end));
            self.turns.push(TurnLatency {
                turn_end: speech_end.map_or(Duration::ZERO, |end| at.saturating_sub(end)),
                first_phrase: Some(Duration::ZERO),
                first_audio,
            });
            self.line(
                at,
                "server",
                "the answer was prepared while the caller paused (preemptive generation): \
                 its audio went out as the turn ended",
            );
            return;
        }
        self.pending = Some(Pending {
            speech_end,
            turn_end: at,
            first_phrase: None,
        });
    }

    fn phrase(&mut self, at: Duration, text: &str) {
        let mut timing = String::new();
        if let Some(p) = self.pending.as_mut().filter(|p| p.first_phrase.is_none()) {
            p.first_phrase = Some(at);
            timing = format!(
                "  [model: {} after the turn ended]",
                ms(at.saturating_sub(p.turn_end))
            );
        }
        self.line(at, "assistant", &format!("says {text:?}{timing}"));
    }

    /// The answered turns so far.
    pub fn turns(&self) -> &[TurnLatency] {
        &self.turns
    }
}

impl Listener for Story<'_> {
    fn caller_starts(&mut self, at: Duration, text: &str) {
        self.line(
            at,
            "caller",
            &format!("starts speaking (the recording says {text:?})"),
        );
    }

    fn caller_stops(&mut self, at: Duration) {
        self.speech_end = Some(at);
        self.line(at, "caller", "stops speaking");
    }

    fn server(&mut self, at: Duration, event: &CallEvent) {
        match event {
            CallEvent::TurnEnded { text, .. } => self.turn_ended(at, text),
            CallEvent::Phrase { text, .. } => self.phrase(at, text),
            CallEvent::Transcript { text, .. } => {
                if let Some((_, said)) = &mut self.interruption {
                    said.push(text.clone());
                }
            }
            CallEvent::BargeIn { heard, .. } => {
                let what = match heard {
                    Some(heard) => {
                        self.interruption = Some((heard.clone(), Vec::new()));
                        format!(
                            "barge-in: the caller spoke over the assistant after hearing \
                             {heard:?}; its audio stops at once"
                        )
                    }
                    None => "barge-in: the caller spoke before hearing the answer; their words \
                             continue their turn"
                        .to_owned(),
                };
                self.line(at, "server", &what);
            }
            CallEvent::Resumed { from, .. } => {
                let said = self.interruption.take().map(|(_, said)| said.join(" "));
                let what = match said.filter(|s| !s.is_empty()) {
                    Some(said) => format!("only a backchannel ({said:?})"),
                    None => "no words".to_owned(),
                };
                self.line(
                    at,
                    "server",
                    &format!(
                        "{what}: the reply resumes from phrase {} with the audio it had; \
                         nothing goes to the model",
                        from + 1
                    ),
                );
            }
            CallEvent::ToolCall { name, result, .. } => self.line(
                at,
                "assistant",
                &format!("calls the tool {name} → {result}"),
            ),
            CallEvent::IdlePrompt { n } => self.line(
                at,
                "server",
                &format!("the caller is silent: idle prompt {n}"),
            ),
            CallEvent::IdleGoodbye => self.line(
                at,
                "server",
                "the caller stayed silent: saying goodbye, then ending the call",
            ),
            CallEvent::Problem { what } => self.line(at, "server", &format!("warning: {what}")),
            _ => {}
        }
    }

    fn after_stream(&mut self, at: Duration, after: &AfterStream) {
        self.connect_action(
            at,
            "the server closed the Media Stream: Twilio follows <Connect action>",
            after,
        );
    }

    fn rejected(&mut self, at: Duration, why: &str) {
        self.line(
            at,
            "server",
            &format!("warning: Twilio would reject a message from the server: {why:.160}"),
        );
    }

    /// Assistant audio reached the line while it was quiet.
    fn audio_starts(&mut self, at: Duration) {
        if self.speaking {
            return;
        }
        self.speaking = true;
        let mut timing = String::new();
        if self.pending.is_none() && self.speech_end.is_some() {
            self.unclaimed_audio = Some(at);
        }
        if let Some(p) = self.pending.take() {
            let from_phrase = p.first_phrase.map(|f| at.saturating_sub(f));
            let first_audio = p.speech_end.map(|end| at.saturating_sub(end));
            if let Some(d) = from_phrase {
                timing.push_str(&format!("  [voice: {} after the text", ms(d)));
                if let Some(total) = first_audio {
                    timing.push_str(&format!("; {} after the caller stopped", ms(total)));
                }
                timing.push(']');
            }
            self.turns.push(TurnLatency {
                turn_end: p
                    .speech_end
                    .map_or(Duration::ZERO, |end| p.turn_end.saturating_sub(end)),
                first_phrase: p.first_phrase.map(|f| f.saturating_sub(p.turn_end)),
                first_audio,
            });
        }
        self.line(
            at,
            "line",
            &format!("assistant audio starts playing{timing}"),
        );
    }

    /// The assistant's audio finished playing.
    fn audio_ends(&mut self, at: Duration) {
        if std::mem::take(&mut self.speaking) {
            self.line(at, "line", "assistant audio ends");
        }
    }

    /// Twilio applied a `clear`.
    fn cleared(&mut self, at: Duration, dropped: Duration) {
        self.speaking = false;
        self.line(
            at,
            "line",
            &format!("clear: {} of unplayed assistant audio dropped", ms(dropped)),
        );
    }

    /// The recording's caller hangs up (Twilio's `stop`).
    fn hang_up(&mut self, at: Duration) {
        self.line(at, "caller", "hangs up");
    }
}

/// `1234 ms` or `1.23 s`, whichever reads better.
pub fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}
