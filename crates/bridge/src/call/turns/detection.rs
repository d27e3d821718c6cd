//! What the recogniser says about the caller's speech, and which of its signals end a turn.

use std::fmt;

/// What ends the caller's turn on the Media Stream (`TURN_DETECTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TurnDetection {
    /// Only the silence timer: the turn ends `SILENCE_TIMEOUT_MS` after the last words heard.
    #[default]
    Timer,
    /// Deepgram's end of speech (`speech_final`, or `UtteranceEnd` when that never comes) ends
    /// the turn at once; the silence timer stays as a fallback.
    Deepgram,
    /// Deepgram Flux decides: its `EndOfTurn` ends the turn at once, with no silence timer
    /// (Flux ends a turn after its own `eot_timeout_ms` of silence whatever its confidence),
    /// and its `StartOfTurn` interrupts the assistant before any words.
    Flux,
}

impl TurnDetection {
    /// The value as written in `TURN_DETECTION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timer => "timer",
            Self::Deepgram => "deepgram",
            Self::Flux => "flux",
        }
    }
}

impl fmt::Display for TurnDetection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How settled a transcript is, as the recogniser marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A guess that will be revised (`is_final: false`): it only means "the caller is speaking".
    Interim,
    /// A fixed segment; the caller may go on (`is_final: true, speech_final: false`).
    Final,
    /// A fixed segment after which the recogniser heard the caller stop (`speech_final: true`).
    EndOfSpeech,
}

impl Heard {
    /// From Deepgram's two flags (`speech_final` implies `is_final`).
    pub fn from_flags(is_final: bool, speech_final: bool) -> Self {
        match (is_final, speech_final) {
            (_, true) => Self::EndOfSpeech,
            (true, false) => Self::Final,
            (false, false) => Self::Interim,
        }
    }
}
