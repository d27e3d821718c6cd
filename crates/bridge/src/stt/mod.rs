//! Speech to text: the caller's audio in, transcript events out. Deepgram live v1
//! ([`deepgram`], PCM) serves `TURN_DETECTION=timer|deepgram` and transcription; Deepgram Flux
//! ([`flux`], μ-law, turns detected by the model) serves `TURN_DETECTION=flux`. Both share one
//! socket handling ([`session`]): reconnects, the audio queue, `CloseStream`, all driven from
//! the call's own task.

mod connect;
pub mod deepgram;
pub mod flux;
mod replay;
mod session;

pub use session::{SttError, SttStream, AUDIO_QUEUE_FRAMES};

/// What speech recognition tells the call.
#[derive(Debug)]
pub enum SttEvent {
    /// Words heard. Interim results (`is_final == false`) will be revised; finals will not.
    /// Boxed: it is the largest event by far, and a call's event queue makes room for events
    /// of the largest kind.
    Transcript(Box<Transcript>),
    /// Voice activity began.
    SpeechStarted,
    /// A gap after the last finalized word.
    UtteranceEnd,
    /// Deepgram Flux's view of the caller's turn (`TURN_DETECTION=flux`); boxed like
    /// [`SttEvent::Transcript`].
    Turn(Box<flux::TurnInfo>),
    /// The connection dropped mid-call; the stream is reconnecting (audio is kept meanwhile).
    Dropped,
    /// The recogniser cannot be reached, even after reconnecting: the caller can no longer be
    /// heard. Boxed like the others: with it inline every event took 48 bytes.
    Lost(Box<SttError>),
}

// A call's event queue makes room for events of the largest kind: keep them two words.
const _: () = assert!(std::mem::size_of::<SttEvent>() <= 16);

/// Words heard, and where they sit in the caller's audio.
#[derive(Debug)]
pub struct Transcript {
    /// The words, possibly empty (silence).
    pub text: String,
    /// The segment is fixed and will not be revised.
    pub is_final: bool,
    /// The recogniser detected the end of an utterance.
    pub speech_final: bool,
    /// When the end of this segment's audio was sent to the recogniser (Deepgram's
    /// `start + duration`, mapped to our clock): the reference for its latency and for the
    /// end of the caller's speech.
    pub audio_end: Option<tokio::time::Instant>,
    /// Where the segment sits in the stream's audio: seconds from the first frame handed
    /// to [`deepgram::SttStream::send_audio`], across reconnections (Deepgram's own clock
    /// restarts on each connection).
    pub start: f64,
    /// Seconds of audio the segment covers.
    pub duration: f64,
    /// Deepgram's confidence in the transcript, 0 to 1.
    pub confidence: f64,
    /// When the start of this segment's audio was sent (Deepgram's `start`, on our clock):
    /// where the caller's words begin, for recordings.
    pub audio_start: Option<tokio::time::Instant>,
}

/// The recogniser a streaming call uses, chosen by `TURN_DETECTION`.
#[derive(Debug, Clone)]
pub enum Recogniser {
    /// Deepgram live v1, fed PCM (`TURN_DETECTION=timer|deepgram`).
    Live(deepgram::DeepgramStt),
    /// Deepgram Flux, fed Twilio's μ-law as is (`TURN_DETECTION=flux`).
    Flux(flux::FluxStt),
}

impl Recogniser {
    /// Opens one call's stream (see [`deepgram::DeepgramStt::start`], [`flux::FluxStt::start`]).
    pub fn start(&self) -> SttStream {
        match self {
            Self::Live(stt) => stt.start(),
            Self::Flux(stt) => stt.start(),
        }
    }

    /// Whether it takes Twilio's μ-law undecoded (else PCM16LE).
    pub fn takes_mulaw(&self) -> bool {
        matches!(self, Self::Flux(_))
    }
}
