//! Log filtering that keeps credentials out of the logs whatever `RUST_LOG` asks for.
//!
//! tungstenite logs each WebSocket handshake request whole at trace level — for the Deepgram
//! socket that includes the `Authorization: Token …` header. Those targets are switched off in
//! every filter the binary builds, so even `RUST_LOG=trace` cannot print a key.

use tracing_subscriber::filter::Directive;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// How the server logs.
#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// Log lines as human-readable text (`text`) or one JSON object a line (`json`) for log
    /// collectors; every line of a call carries its call_sid either way.
    #[arg(long, env = "LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,hyper=warn,reqwest=warn,tungstenite=warn";

/// Targets that log credentials; always off.
const CREDENTIAL_TARGETS: [&str; 3] = [
    "tungstenite::handshake=off",
    "tungstenite::handshake::client=off",
    "tokio_tungstenite::handshake=off",
];

/// `RUST_LOG` (or `default` when unset or invalid), with the credential-logging targets off.
pub fn filter(default: &str) -> EnvFilter {
    let base = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    without_credentials(base)
}

/// `filter` with the credential-logging targets switched off.
pub fn without_credentials(mut filter: EnvFilter) -> EnvFilter {
    for target in CREDENTIAL_TARGETS {
        if let Ok(directive) = target.parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_targets_stay_off_under_trace() {
        let filter = without_credentials(EnvFilter::new("trace,tungstenite=trace"));
        let rendered = filter.to_string();
        for target in CREDENTIAL_TARGETS {
            assert!(rendered.contains(target), "{rendered}");
        }
    }
}
