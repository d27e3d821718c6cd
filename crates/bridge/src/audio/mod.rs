//! Audio on the line: the G.711 μ-law codec and the 20 ms framing Twilio plays.

pub mod frames;
pub mod mulaw;
pub mod pcm;
pub mod wav;
