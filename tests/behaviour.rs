//! The behaviour tests, as one test binary: most of them replay recorded calls in real time and
//! spend their time waiting, so running them side by side (RUST_TEST_THREADS, .cargo/config.toml)
//! instead of one binary after another keeps the whole suite short. Each module is one area;
//! `cargo test --test behaviour barge_in` runs one of them.
//!
//! `secrets` stays a binary of its own: it installs a process-wide trace-level log capture.

mod support;

mod backchannel;
mod barge_in;
mod call_control;
mod cli;
mod concurrency;
mod conversation;
mod demo;
mod drain;
mod fakes;
mod flux;
mod gather;
mod gather_tools;
mod greeting_cache;
mod http_surface;
mod idle_caller;
mod lifecycle;
mod limits;
mod loadtest;
mod malformed_input;
mod metrics;
mod operator_tools;
mod preemptive;
mod properties;
mod provider_faults;
mod record_replay;
mod relay;
mod relay_resume;
mod scale_out;
mod security;
mod standins;
mod store;
mod stream_ended;
mod tools;
mod transcribe;
mod turn_detection;
