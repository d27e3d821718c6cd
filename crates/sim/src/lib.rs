//! The simulated world around ivr-bridge, written once and used by the demo, `replay`, the load
//! generator and the behaviour tests: recorded calls ([`fixture`]), a simulated caller that plays
//! one into the server as Twilio would ([`caller`]), and local stand-ins of the providers that
//! speak their real wire formats ([`standin`]).
//!
//! It is built on the server's own wire formats and models (`ivr_bridge::twilio`,
//! `ivr_bridge::record::format`); the server never depends on it.

pub mod caller;
pub mod fixture;
pub mod standin;
pub mod twilio;
