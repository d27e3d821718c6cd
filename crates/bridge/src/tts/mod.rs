//! Text to speech: the reply made speakable, then synthesized as μ-law audio chunks.

pub mod deepgram;
pub mod text;
