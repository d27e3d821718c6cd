//! What the caller of a relay call does, step by step, and a recorded session read as such a
//! script.

use std::time::Duration;

use crate::fixture::CallFixture;

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
