//! Mistral chat completions: the conversation in, the assistant's reply text out.

use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ChatMessage;
use crate::config::{Config, Secret};

/// Upper bound on one completion; a caller waiting longer hears nothing useful anyway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Replies are spoken: a few sentences at most.
const MAX_TOKENS: u32 = 300;
/// Low randomness: a front desk should answer the same question the same way.
const TEMPERATURE: f32 = 0.3;
/// Longest error body we keep for a log line.
const ERROR_BODY_CHARS: usize = 300;

/// Why no reply came back.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The request could not be sent, timed out or the body could not be read.
    #[error("Mistral request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Mistral answered with an error status.
    #[error("Mistral answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Start of the error body.
        body: String,
    },
    /// The answer was not a chat completion with text in it.
    #[error("Mistral's answer had no reply text: {0}")]
    NoText(String),
}

/// A Mistral client: one pooled HTTP client, one model.
#[derive(Debug, Clone)]
pub struct Mistral {
    /// Shared, keep-alive HTTP client.
    http: reqwest::Client,
    /// Chat completions endpoint.
    url: Url,
    /// `Authorization: Bearer …`.
    key: Secret,
    /// Model name sent with every request.
    model: String,
}

/// The request body: only documented fields (Mistral rejects unknown ones with 422).
#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    max_tokens: u32,
    stream: bool,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: AssistantMessage,
}

#[derive(Deserialize)]
struct AssistantMessage {
    #[serde(default)]
    content: Value,
}

impl Mistral {
    /// A client for the configured endpoint and model.
    pub fn new(http: reqwest::Client, config: &Config) -> Self {
        Self {
            http,
            url: config.mistral_api_url.clone(),
            key: config.mistral_api_key.clone(),
            model: config.mistral_model.clone(),
        }
    }

    /// Asks for the assistant's next message given the whole conversation.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        let response = self
            .http
            .post(self.url.clone())
            .bearer_auth(self.key.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(REQUEST_TIMEOUT)
            .json(&Request {
                model: &self.model,
                messages,
                temperature: TEMPERATURE,
                max_tokens: MAX_TOKENS,
                stream: false,
            })
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(LlmError::Status {
                status,
                body: String::from_utf8_lossy(&body)
                    .chars()
                    .take(ERROR_BODY_CHARS)
                    .collect(),
            });
        }
        reply_text(&body)
    }
}

/// The reply text of a chat completion body. `content` may be a string or an array of content
/// chunks (reasoning models); text chunks are joined, other kinds skipped.
fn reply_text(body: &[u8]) -> Result<String, LlmError> {
    let completion: Completion =
        serde_json::from_slice(body).map_err(|err| LlmError::NoText(err.to_string()))?;
    let content = completion
        .choices
        .into_iter()
        .next()
        .map(|choice| choice.message.content)
        .ok_or_else(|| LlmError::NoText("no choices".into()))?;
    let text = match content {
        Value::String(text) => text,
        Value::Array(chunks) => chunks
            .iter()
            .filter(|chunk| chunk.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|chunk| chunk.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    if text.trim().is_empty() {
        return Err(LlmError::NoText("empty content".into()));
    }
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_string_content() {
        let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","tool_calls":null,"prefix":false},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
        assert_eq!(reply_text(body).unwrap(), "Hello!");
    }

    #[test]
    fn reads_chunked_content_and_skips_thinking() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":[{"type":"thinking","thinking":[]},{"type":"text","text":"Open "},{"type":"text","text":"at eight."}]}}]}"#;
        assert_eq!(reply_text(body).unwrap(), "Open at eight.");
    }

    #[test]
    fn empty_or_missing_content_is_an_error() {
        assert!(reply_text(br#"{"choices":[]}"#).is_err());
        assert!(reply_text(br#"{"choices":[{"message":{"content":"  "}}]}"#).is_err());
        assert!(reply_text(b"not json").is_err());
    }

    #[test]
    fn request_has_only_documented_fields() {
        let messages = [ChatMessage::new(super::super::Role::User, "Hi")];
        let body = serde_json::to_value(Request {
            model: "m",
            messages: &messages,
            temperature: TEMPERATURE,
            max_tokens: MAX_TOKENS,
            stream: false,
        })
        .unwrap();
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["max_tokens", "messages", "model", "stream", "temperature"]
        );
        assert_eq!(
            body["messages"][0],
            serde_json::json!({"role":"user","content":"Hi"})
        );
    }
}
