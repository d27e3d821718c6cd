//! ivr-bridge: an AI voice assistant on a Twilio phone line.
//!
//! Reading the modules top to bottom is reading a call: a Twilio frame enters in
//! [`twilio::media`], becomes PCM in [`audio`], words in [`stt`], a turn in [`call::turns`], a
//! reply in [`llm`], sound in [`tts`], 20 ms frames in [`audio::frames`], and leaves through
//! [`twilio::media`] again, written by [`call::writer`]. Barge-in is decided in [`call::turns`]
//! and carried out in [`call::writer`].

pub mod audio;
pub mod call;
pub mod config;
pub mod events;
pub mod gather;
pub mod llm;
pub mod metrics;
pub mod record;
pub mod server;
pub mod store;
pub mod stt;
pub mod telemetry;
pub mod transcribe;
pub mod tts;
pub mod twilio;

pub use config::{Config, RedisUrl, Secret};
pub use server::{app, serve, AppState};
