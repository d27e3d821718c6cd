//! Where Twilio reaches us: the public base URL the TwiML's stream and action URLs are built
//! from and request signatures are checked against.

use axum::http::{header, HeaderMap};
use reqwest::Url;

/// The public base URL (`scheme://host[/prefix]`, no trailing slash) Twilio reaches us at:
/// `PUBLIC_URL` when set, else rebuilt from `X-Forwarded-Proto` / `X-Forwarded-Host` / `Host`.
pub fn public_base(public_url: Option<&Url>, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = public_url {
        return Some(url.as_str().trim_end_matches('/').to_owned());
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = first("x-forwarded-host").or_else(|| first(header::HOST.as_str()))?;
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
    {
        return None;
    }
    let scheme = match first("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{host}"))
}

/// `base` with https→wss, http→ws, and `path` appended.
pub fn websocket_url(base: &str, path: &str) -> String {
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_owned());
    format!("{rest}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_swaps_the_scheme() {
        assert_eq!(
            websocket_url("https://a.example", "/media"),
            "wss://a.example/media"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:9", "/media"),
            "ws://127.0.0.1:9/media"
        );
        assert_eq!(
            websocket_url("https://a.example/p", "/media"),
            "wss://a.example/p/media"
        );
    }
}
