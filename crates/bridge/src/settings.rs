//! Value parsers shared by every module's settings (each module declares its own flags and
//! environment variables as a clap `Args` group; `config.rs` gathers the groups).
//!
//! A parser turns one value into its type or into a message that names the environment variable
//! and never repeats a value that may carry a credential; the binary prints that message as the
//! one line of a bad start-up.

use std::ops::RangeInclusive;
use std::time::Duration;

use reqwest::Url;

use crate::secret::Secret;

/// A clap value parser: what every settings group's `value_parser = …` takes.
pub trait Parser<T>: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {}
impl<T, F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static> Parser<T> for F {}

/// Most settings in milliseconds accept 1 ms to 10 minutes.
pub const MILLIS: RangeInclusive<u64> = 1..=600_000;

/// A whole number of milliseconds within `range`.
pub fn millis(var: &'static str, range: RangeInclusive<u64>) -> impl Parser<Duration> {
    move |raw| whole(var, raw, &range, "milliseconds ").map(Duration::from_millis)
}

/// A whole number of seconds within `range`.
pub fn seconds(var: &'static str, range: RangeInclusive<u64>) -> impl Parser<Duration> {
    move |raw| whole(var, raw, &range, "seconds ").map(Duration::from_secs)
}

/// A count within `range`.
pub fn count(var: &'static str, range: RangeInclusive<u64>) -> impl Parser<usize> {
    move |raw| {
        whole(var, raw, &range, "").and_then(|n| {
            usize::try_from(n).map_err(|_| format!("{var} is too large for this machine"))
        })
    }
}

/// `raw` as a whole number within `range`, or a message naming `var` and the range.
fn whole(var: &str, raw: &str, range: &RangeInclusive<u64>, unit: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{var} must be a whole number of {unit}from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// Text that is not blank, trimmed.
pub fn text(var: &'static str) -> impl Parser<String> {
    move |raw| match raw.trim() {
        "" => Err(format!("{var} must not be empty")),
        text => Ok(text.to_owned()),
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
pub fn boolean(var: &'static str) -> impl Parser<bool> {
    move |raw| match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{var} must be true or false")),
    }
}

/// A credential, trimmed; blank counts as not given (the configuration says which are needed).
pub fn secret(raw: &str) -> Result<Secret, String> {
    Ok(Secret::new(raw.trim()))
}

/// The schemes a URL setting accepts.
#[derive(Clone, Copy, Debug)]
pub enum Schemes {
    /// `ws://` or `wss://`: a WebSocket endpoint.
    WebSocket,
    /// `http://` or `https://`.
    Http,
}

impl Schemes {
    fn allows(self, scheme: &str) -> bool {
        match self {
            Self::WebSocket => matches!(scheme, "ws" | "wss"),
            Self::Http => matches!(scheme, "http" | "https"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::WebSocket => "ws:// or wss://",
            Self::Http => "http:// or https://",
        }
    }
}

/// A URL with a host and one of `schemes`; the error repeats the value (endpoints carry no
/// credentials; see [`private_url`] for those that may).
pub fn url(var: &'static str, schemes: Schemes) -> impl Parser<Url> {
    move |raw| {
        parse_url(raw, schemes)
            .ok_or_else(|| format!("{var}={raw:?} is not a valid {} URL", schemes.describe()))
    }
}

/// Like [`url`] for a URL that may carry a token: the error does not repeat it.
pub fn private_url(var: &'static str, schemes: Schemes) -> impl Parser<Url> {
    move |raw| {
        parse_url(raw, schemes)
            .ok_or_else(|| format!("{var} must be an {} URL", schemes.describe()))
    }
}

fn parse_url(raw: &str, schemes: Schemes) -> Option<Url> {
    Url::parse(raw.trim())
        .ok()
        .filter(|url| schemes.allows(url.scheme()) && url.host_str().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_are_bounded_and_named() {
        let parse = millis("SILENCE_TIMEOUT_MS", MILLIS);
        assert_eq!(parse(" 2000 "), Ok(Duration::from_millis(2000)));
        for bad in ["0", "soon", "-5", "600001"] {
            let err = parse(bad).unwrap_err();
            assert!(err.starts_with("SILENCE_TIMEOUT_MS must be"), "{err}");
        }
    }

    #[test]
    fn urls_need_their_scheme_and_a_host() {
        let ws = url("DEEPGRAM_STT_URL", Schemes::WebSocket);
        assert!(ws("wss://api.deepgram.com/v1/listen").is_ok());
        let err = ws("https://api.deepgram.com/v1/listen").unwrap_err();
        assert!(err.starts_with("DEEPGRAM_STT_URL="), "{err}");
        assert!(url("X", Schemes::Http)("http://").is_err());
        assert!(url("X", Schemes::Http)("mailto:someone@example.com").is_err());
    }

    #[test]
    fn a_private_url_is_never_repeated() {
        let err = private_url("TRANSCRIPT_WEBHOOK_URL", Schemes::Http)("ftp://x/?token=s3cret")
            .unwrap_err();
        assert_eq!(
            err,
            "TRANSCRIPT_WEBHOOK_URL must be an http:// or https:// URL"
        );
    }

    #[test]
    fn booleans_are_words_or_digits() {
        let parse = boolean("PREEMPTIVE_GENERATION");
        assert_eq!(
            (parse(" TRUE"), parse("0"), parse("off")),
            (Ok(true), Ok(false), Ok(false))
        );
        assert_eq!(
            parse("maybe"),
            Err("PREEMPTIVE_GENERATION must be true or false".to_owned())
        );
    }

    #[test]
    fn text_is_trimmed_and_never_blank() {
        assert_eq!(text("GREETING")("  Hi "), Ok("Hi".to_owned()));
        assert_eq!(
            text("GREETING")("  "),
            Err("GREETING must not be empty".to_owned())
        );
    }
}
