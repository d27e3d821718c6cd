//! Speech to text: the caller's PCM in, transcript events out.

pub mod deepgram;

/// What speech recognition tells the call.
#[derive(Debug)]
pub enum SttEvent {
    /// Words heard. Interim results (`is_final == false`) will be revised; finals will not.
    Transcript {
        /// The words, possibly empty (silence).
        text: String,
        /// The segment is fixed and will not be revised.
        is_final: bool,
        /// The recogniser detected the end of an utterance.
        speech_final: bool,
        /// When the end of this segment's audio was sent to the recogniser (Deepgram's
        /// `start + duration`, mapped to our clock): the reference for its latency and for the
        /// end of the caller's speech.
        audio_end: Option<tokio::time::Instant>,
        /// Where the segment sits in the stream's audio: seconds from the first frame handed
        /// to [`deepgram::SttStream::send_audio`], across reconnections (Deepgram's own clock
        /// restarts on each connection).
        start: f64,
        /// Seconds of audio the segment covers.
        duration: f64,
        /// Deepgram's confidence in the transcript, 0 to 1.
        confidence: f64,
        /// When the start of this segment's audio was sent (Deepgram's `start`, on our clock):
        /// where the caller's words begin, for recordings.
        audio_start: Option<tokio::time::Instant>,
    },
    /// Voice activity began.
    SpeechStarted,
    /// A gap after the last finalized word.
    UtteranceEnd,
    /// The connection dropped mid-call; the stream is reconnecting (audio is kept meanwhile).
    Dropped,
    /// The recogniser cannot be reached, even after reconnecting: the caller can no longer be
    /// heard.
    Lost(deepgram::SttError),
}
