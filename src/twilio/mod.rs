//! Everything that speaks Twilio: Media Stream messages and TwiML.

pub mod media;
pub mod twiml;
