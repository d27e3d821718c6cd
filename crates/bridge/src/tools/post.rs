//! One call of an operator's tool over HTTP: the signed POST, the bounded wait and the bounded
//! body. Every way it can fail is a [`Failure`] the model is told about.

use std::fmt::Write as _;

use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::file::OperatorTool;
use crate::secret::Secret;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Ivr-Bridge-Signature";
/// Largest tool answer fed back to the model.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Characters of a failed answer's body quoted to the model (a 404's "no such patient").
const QUOTED_ERROR_CHARS: usize = 200;

/// The body POSTed to a tool, fields in this order.
#[derive(Serialize)]
struct Body<'a> {
    call_sid: &'a str,
    name: &'a str,
    arguments: &'a Map<String, Value>,
}

/// Why a tool's answer is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer within the tool's `timeout_ms`.
    #[error("{name} did not answer within {ms} ms")]
    Timeout {
        /// The tool.
        name: String,
        /// Its time limit.
        ms: u64,
    },
    /// The request failed, or the answer had a non-2xx status.
    #[error("{name} failed: {reason}")]
    Http {
        /// The tool.
        name: String,
        /// The status (and the start of the body), or that it could not be reached.
        reason: String,
    },
    /// The answer is not UTF-8 text, or claims to be JSON and is not.
    #[error("{name} gave an unreadable answer: {reason}")]
    BadResponse {
        /// The tool.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The answer is larger than [`MAX_ANSWER_BYTES`].
    #[error("{name} gave an answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge {
        /// The tool.
        name: String,
    },
}

impl Failure {
    /// The metric label of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Http { .. } => "http_error",
            Self::BadResponse { .. } => "bad_response",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

/// The hex HMAC-SHA256 of `body` with `secret`: the [`SIGNATURE_HEADER`] value.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes a key of any length, the empty one included.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()),
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// POSTs one call to `tool` and returns its answer text, within the tool's time limit.
pub async fn call(
    http: &reqwest::Client,
    secret: &Secret,
    tool: &OperatorTool,
    call_sid: &str,
    arguments: &Map<String, Value>,
) -> Result<String, Failure> {
    let name = &tool.tool.name;
    let body = serde_json::to_vec(&Body {
        call_sid,
        name,
        arguments,
    })
    .unwrap_or_default();
    let request = http
        .post(tool.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(secret, &body))
        .body(body);
    let exchange = async {
        let response = request.send().await.map_err(|err| Failure::Http {
            name: name.clone(),
            reason: unreachable(&err),
        })?;
        read(name, response).await
    };
    match tokio::time::timeout(tool.timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(Failure::Timeout {
            name: name.clone(),
            ms: tool.timeout.as_millis() as u64,
        }),
    }
}

/// Why a request got no response, without the URL (it may carry a token).
fn unreachable(err: &reqwest::Error) -> String {
    if err.is_connect() {
        "it could not be reached".into()
    } else {
        "the request failed".into()
    }
}

/// The answer's text: a 2xx status, at most [`MAX_ANSWER_BYTES`], UTF-8, JSON if it says so.
async fn read(name: &str, response: reqwest::Response) -> Result<String, Failure> {
    let status = response.status();
    let json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let bytes = bounded_body(name, response).await?;
    if !status.is_success() {
        let quoted: String = String::from_utf8_lossy(&bytes)
            .chars()
            .take(QUOTED_ERROR_CHARS)
            .collect();
        let reason = match quoted.trim() {
            "" => format!("HTTP {}", status.as_u16()),
            quoted => format!("HTTP {}: {quoted}", status.as_u16()),
        };
        return Err(Failure::Http {
            name: name.to_owned(),
            reason,
        });
    }
    let bad = |reason: String| Failure::BadResponse {
        name: name.to_owned(),
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    if json && !text.trim().is_empty() {
        serde_json::from_str::<Value>(&text)
            .map_err(|err| bad(format!("not valid JSON ({err})")))?;
    }
    Ok(text)
}

/// The body, refused as soon as it passes [`MAX_ANSWER_BYTES`].
async fn bounded_body(name: &str, response: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::TooLarge {
        name: name.to_owned(),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| Failure::Http {
            name: name.to_owned(),
            reason: "the answer broke off".into(),
        })?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let got = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            got,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
