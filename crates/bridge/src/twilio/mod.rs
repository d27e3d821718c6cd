//! Everything that speaks Twilio: Media Stream messages and their reader, ConversationRelay
//! messages ([`relay`]), the caller's keypad, Twilio's playback model, TwiML (and what follows
//! a stream: [`next_step`]), the public URL and request signatures.

pub mod keypad;
pub mod media;
pub mod next_step;
pub mod playback;
pub mod relay;
pub mod signature;
pub mod stream;
pub mod twiml;
pub mod url;

use reqwest::Url;

use crate::secret::Secret;
use crate::settings::{self, Schemes};

/// How Twilio reaches this server and proves it is Twilio.
#[derive(Debug, Clone, clap::Args)]
pub struct TwilioSettings {
    /// Public base URL Twilio reaches this server at, e.g. https://abc.ngrok-free.app.
    /// Unset: taken from each request's Host and X-Forwarded-Proto headers.
    #[arg(long, env = "PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,

    /// Twilio auth token: when set, every webhook and Media Stream handshake must carry a valid
    /// X-Twilio-Signature (403 otherwise). Unset: signatures are not checked (a warning says so).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true, value_parser = settings::secret)]
    pub twilio_auth_token: Option<Secret>,

    /// Largest WebSocket message accepted from Twilio, in bytes; a larger one closes that
    /// socket only (a 20 ms media message is about 300 bytes).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value = "65536",
          value_parser = settings::count("MAX_MESSAGE_BYTES", 1_024..=16_777_216))]
    pub max_message_bytes: usize,
}

impl TwilioSettings {
    /// The auth token, when one is set (blank counts as unset).
    pub fn auth_token(&self) -> Option<&Secret> {
        self.twilio_auth_token.as_ref().filter(|t| !t.is_empty())
    }
}

/// `PUBLIC_URL` is a base: scheme and authority, optionally a path prefix, no query; kept
/// without a trailing slash so paths can be appended.
fn parse_public_url(raw: &str) -> Result<Url, String> {
    let mut url = settings::url("PUBLIC_URL", Schemes::Http)(raw)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "PUBLIC_URL={raw:?} is not a valid http:// or https:// base (no query string)"
        ));
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_is_a_base_that_paths_append_to() {
        let url = parse_public_url("https://abc.ngrok-free.app/voice/").expect("a base");
        assert_eq!(url.path(), "/voice");
        let base = url::public_base(Some(&url), &Default::default());
        assert_eq!(base.as_deref(), Some("https://abc.ngrok-free.app/voice"));
        let root = parse_public_url("https://abc.ngrok-free.app/").expect("a base");
        let base = url::public_base(Some(&root), &Default::default());
        assert_eq!(base.as_deref(), Some("https://abc.ngrok-free.app"));
    }

    #[test]
    fn public_url_with_a_query_is_refused() {
        let err = parse_public_url("https://a.example/?x=1").unwrap_err();
        assert!(err.starts_with("PUBLIC_URL="), "{err}");
        assert!(parse_public_url("ftp://example.com").is_err());
    }
}
