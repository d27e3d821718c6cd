//! Everything that speaks Twilio: Media Stream messages and their reader, TwiML and request
//! signatures.

pub mod media;
pub mod playback;
pub mod signature;
pub mod stream;
pub mod twiml;
