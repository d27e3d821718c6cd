//! Everything that speaks Twilio: Media Stream messages, TwiML and request signatures.

pub mod media;
pub mod playback;
pub mod signature;
pub mod twiml;
