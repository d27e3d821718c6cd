//! The simulated world around ivr-bridge, written once and used by the demo, `replay`, the load
//! generator and the behaviour tests: recorded calls ([`fixture`]), Twilio's side of a Media
//! Stream ([`twilio`]: its messages and its rules), its webhooks and the TwiML it runs
//! ([`webhooks`], [`twiml`]: `<Connect action>` after the server closes the stream), Twilio's
//! side of a ConversationRelay call with a scripted caller ([`relay`]), a simulated caller that
//! plays a recording into the server as Twilio would ([`caller`]), and local stand-ins of the
//! providers that speak
//! their real wire formats, with optional record, fault and probe hooks ([`standin`]).
//!
//! It is built on the server's own wire formats and models (`ivr_bridge::twilio`, including
//! Twilio's playback [`Line`](ivr_bridge::twilio::playback::Line), and
//! `ivr_bridge::record::format`); the server never depends on it.

pub mod caller;
pub mod fixture;
pub mod relay;
pub mod standin;
pub mod twilio;
pub mod twiml;
pub mod webhooks;
