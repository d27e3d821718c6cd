//! `X-Twilio-Signature`: proof that a webhook or Media Stream handshake really comes from Twilio.
//!
//! Twilio signs the URL it requested plus, for form POSTs, every parameter (sorted by name, name
//! and value appended) with HMAC-SHA1 keyed by the account's auth token, base64-encoded. TLS ends
//! in front of us (ngrok, a load balancer), so the URL is rebuilt from the public base — the same
//! one the TwiML is built from — and checked in the variants Twilio's own SDKs accept: as is,
//! with the port removed, with the default port added, and for WebSocket handshakes with a
//! trailing slash. The comparison is constant-time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use reqwest::Url;

use super::url::{public_base, websocket_url};
use crate::secret::Secret;

/// The header Twilio puts its signature in.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// Largest signed form body read; Twilio's webhook forms are a few kilobytes.
const MAX_SIGNED_BODY_BYTES: usize = 64 * 1024;

type HmacSha1 = Hmac<Sha1>;

/// Checks signatures with one auth token.
#[derive(Clone)]
pub struct Validator {
    /// The account's primary auth token: the HMAC key.
    token: Secret,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator(***)")
    }
}

impl Validator {
    /// A validator for `token`.
    pub fn new(token: Secret) -> Self {
        Self { token }
    }

    /// The signature Twilio would send for `url` and form `params` (base64), for tests and tools.
    pub fn sign(&self, url: &str, params: &[(String, String)]) -> String {
        let mac = self.mac(url, params);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` is Twilio's for `url` (in any accepted variant) and `params`.
    pub fn is_valid(&self, url: &str, params: &[(String, String)], signature: &str) -> bool {
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
            return false;
        };
        url_variants(url)
            .iter()
            .any(|candidate| self.mac(candidate, params).verify_slice(&given).is_ok())
    }

    fn mac(&self, url: &str, params: &[(String, String)]) -> HmacSha1 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = match HmacSha1::new_from_slice(self.token.expose().as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable_key(),
        };
        mac.update(url.as_bytes());
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort();
        sorted.dedup();
        for (name, value) in sorted {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        mac
    }
}

#[cold]
fn unreachable_key() -> HmacSha1 {
    // `Hmac::new_from_slice` accepts every key length; an empty key still gives a MAC that
    // matches nothing Twilio sends.
    <HmacSha1 as hmac::digest::KeyInit>::new(&Default::default())
}

/// The URL as given, with its port removed, and with the scheme's default port added; for
/// WebSocket URLs also each of those with a trailing slash.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    if let Ok(parsed) = reqwest::Url::parse(url) {
        let default_port = match parsed.scheme() {
            "https" | "wss" => Some(443),
            "http" | "ws" => Some(80),
            _ => None,
        };
        let mut without = parsed.clone();
        if without.set_port(None).is_ok() {
            variants.push(without.to_string());
        }
        if let Some(port) = default_port {
            let with = with_explicit_port(&parsed, port);
            variants.extend(with);
        }
    }
    if url.starts_with("ws") {
        let slashed: Vec<String> = variants
            .iter()
            .filter(|v| !v.contains('?') && !v.ends_with('/'))
            .map(|v| format!("{v}/"))
            .collect();
        variants.extend(slashed);
    }
    variants.dedup();
    variants
}

/// `url` with `:port` written out (the `url` crate hides a scheme's default port, so it is
/// spliced into the text after the host).
fn with_explicit_port(url: &reqwest::Url, port: u16) -> Option<String> {
    let host = url.host_str()?;
    let text = url.as_str();
    let prefix = format!("{}://{host}", url.scheme());
    let rest = text.strip_prefix(&prefix)?;
    let rest = match url.port() {
        Some(current) => rest.strip_prefix(&format!(":{current}")).unwrap_or(rest),
        None => rest,
    };
    Some(format!("{prefix}:{port}{rest}"))
}

/// What the signature middleware needs: the validator (none when no auth token is set) and the
/// configured public URL the signed URL is rebuilt from.
#[derive(Debug)]
pub struct SignatureCheck {
    /// Checks signatures; `None` lets every request through (a start-up warning says so).
    pub validator: Option<Validator>,
    /// `PUBLIC_URL`, when set; else the request's own headers say where Twilio reached us.
    pub public_url: Option<Url>,
}

/// Middleware for Twilio's routes: with `TWILIO_AUTH_TOKEN` set, a request without a valid
/// signature gets 403 and a log line naming where it came from.
pub async fn require_signature(
    State(check): State<Arc<SignatureCheck>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(validator) = &check.validator else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_else(|| "unknown".into());
    let refuse = |why: &str| {
        tracing::warn!(%remote, path = %parts.uri.path(), "refused a request that Twilio did not sign: {why}");
        (StatusCode::FORBIDDEN, "invalid Twilio signature").into_response()
    };
    let Some(signature) = parts
        .headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return refuse("no X-Twilio-Signature header");
    };
    let Some(base) = public_base(check.public_url.as_ref(), &parts.headers) else {
        return refuse("no public URL to check it against");
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let url = if is_upgrade {
        websocket_url(&base, path_and_query)
    } else {
        format!("{base}{path_and_query}")
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (params, body) = if parts.method == Method::POST && is_form {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_SIGNED_BODY_BYTES).await else {
            return refuse("body too large or unreadable");
        };
        let params = form_urlencoded::parse(&bytes).into_owned().collect();
        (params, Body::from(bytes))
    } else {
        (Vec::new(), body)
    };
    if !validator.is_valid(&url, &params, signature) {
        return refuse("signature does not match");
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// twilio-python's `tests/unit/test_request_validator.py` parameters.
    fn vector_a() -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    fn twilio() -> Validator {
        Validator::new(Secret::new("12345"))
    }

    #[test]
    fn known_answers_from_twilios_sdk_tests() {
        let v = twilio();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(v.sign(url, &vector_a()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            v.sign(
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &vector_a()
            ),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            v.sign("http://mycompany.com:80/myapp.php?foo=1&bar=2", &vector_a()),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        assert_eq!(
            v.sign(
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                &vector_a()
            ),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        );
        let repeated = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(v.sign(url, &repeated), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn known_answer_from_twilios_security_page() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        assert!(twilio().is_valid(url, &params, "L/OH5YylLD5NRKLltdqwSvS0BnU="));
    }

    #[test]
    fn port_variants_are_accepted_as_the_sdks_do() {
        let v = twilio();
        // Signed without a port, received with one (and the reverse).
        assert!(v.is_valid(
            "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
            &vector_a(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(v.is_valid(
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &vector_a(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        assert!(v.is_valid(
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &vector_a(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
    }

    #[test]
    fn websocket_handshakes_sign_the_wss_url() {
        let v = twilio();
        assert!(v.is_valid(
            "wss://example.com/media",
            &[],
            "7PR3qMkpDyEJtMrVOY/LDyNq8J8="
        ));
        assert!(v.is_valid(
            "wss://example.com/media",
            &[],
            "T+WBXwUXC0/CyoZ1DA+p9ilZORs="
        ));
        // The https form of the same URL is a different signature.
        assert!(!v.is_valid(
            "wss://example.com/media",
            &[],
            "6HZQ7Cq/dSYDCAiy3qRA6PZfACI="
        ));
    }

    #[test]
    fn anything_else_is_refused() {
        let v = twilio();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(!v.is_valid(url, &vector_a(), "RSOYDt4T1cUTdK1PDd93/VVr8B8"));
        assert!(!v.is_valid(url, &vector_a(), "not base64 at all!"));
        assert!(!v.is_valid(url, &vector_a(), ""));
        let mut tampered = vector_a();
        tampered[2].1 = "9999".into();
        assert!(!v.is_valid(url, &tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!Validator::new(Secret::new("54321")).is_valid(
            url,
            &vector_a(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn the_token_never_prints() {
        assert_eq!(format!("{:?}", twilio()), "Validator(***)");
    }
}
