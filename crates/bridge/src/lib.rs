//! ivr-bridge: an AI voice assistant on a Twilio phone line.
//!
//! The modules are listed in the order a call flows through them, and each imports only those
//! listed before it (`cargo test -p ivr-bridge --test layers -- --nocapture` prints the layers):
//! a Twilio frame enters in [`twilio::media`], becomes PCM in [`audio`], words in [`stt`], a
//! turn in [`call::turns`], a reply in [`llm`], sound in [`tts`], 20 ms frames in
//! [`audio::frames`], and leaves through [`twilio::media`] again, written by [`call::writer`].
//! Barge-in is decided in [`call::turns`] and carried out in [`call::writer`]. The Gather flow
//! ([`gather`]), ConversationRelay ([`relay`]) and transcription ([`transcribe`]) use the same
//! lower layers; what Twilio does
//! once a stream is over is answered by [`stream_ended`]; [`server`] wires
//! them to the HTTP surface, and [`config`] gathers every module's settings.

// Shared ground: credentials, setting parsers, socket sizes, counters, log filters, memory,
// the queues between a call's tasks, polling only what woke a task.
pub mod memory;
pub mod metrics;
pub mod queue;
pub mod secret;
pub mod settings;
pub mod socket;
pub mod telemetry;
pub mod woken;

// Wire formats and audio.
pub mod audio;
pub mod twilio;

// Providers.
pub mod llm;
pub mod stt;
pub mod tts;

// What a call leaves behind (its events, its recording, its stored conversation), and what
// it can do besides talk (its tools).
pub mod events;
pub mod record;
pub mod store;
pub mod tools;

// The four ways to serve a call (streaming, Gather, ConversationRelay, transcription), and
// the door they share.
pub mod admission;
pub mod call;
pub mod gather;
pub mod relay;
pub mod stream_ended;
pub mod transcribe;

// The HTTP surface and its configuration.
pub mod config;
pub mod server;

pub use config::Config;
pub use secret::Secret;
pub use server::{app, serve, AppState};
pub use store::RedisUrl;
