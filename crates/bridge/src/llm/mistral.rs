//! Mistral chat completions: the conversation in, the assistant's reply text out.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::sse::{SseError, SseParser};
use super::ChatMessage;
use crate::secret::Secret;
use crate::settings::{self, Schemes};

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
    /// The event stream broke its format.
    #[error("Mistral's event stream is unreadable: {0}")]
    Stream(#[from] SseError),
    /// No text within the reply budget (`LLM_TIMEOUT_MS`).
    #[error("Mistral gave no text within {0:?}")]
    Timeout(Duration),
}

impl LlmError {
    /// Worth one more try: rate limited, a server-side failure, or the connection failed.
    fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => status.as_u16() == 429 || status.is_server_error(),
            LlmError::Http(err) => err.is_connect() || err.is_request(),
            _ => false,
        }
    }
}

/// Twilio abandons a webhook after 15 s; the Gather flow waits for the model within one.
const WEBHOOK_BUDGET_MS: u64 = 14_000;

/// Mistral settings (the key is handed over separately: the configuration decides whether this
/// mode needs one).
#[derive(Debug, Clone, clap::Args)]
pub struct MistralSettings {
    /// Mistral chat completions URL.
    #[arg(long, env = "MISTRAL_API_URL", default_value = "https://api.mistral.ai/v1/chat/completions",
          value_parser = settings::url("MISTRAL_API_URL", Schemes::Http))]
    pub mistral_api_url: Url,

    /// Mistral model that writes the replies.
    #[arg(long, env = "MISTRAL_MODEL", default_value = "mistral-small-latest",
          value_parser = settings::text("MISTRAL_MODEL"))]
    pub mistral_model: String,

    /// Milliseconds a reply has to start coming (retry included). The Gather flow answers a
    /// slower model with a holding phrase and a redirect to /speak_response (Twilio gives up on
    /// a webhook after 15 s, so at most 14000).
    #[arg(long = "llm-timeout-ms", env = "LLM_TIMEOUT_MS", default_value = "8000",
          value_parser = settings::millis("LLM_TIMEOUT_MS", 1..=WEBHOOK_BUDGET_MS))]
    pub llm_timeout: Duration,
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
    /// Time a streamed reply has to produce its first text, retry included.
    budget: Duration,
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
    pub fn new(http: reqwest::Client, settings: &MistralSettings, key: Secret) -> Self {
        Self {
            http,
            url: settings.mistral_api_url.clone(),
            key,
            model: settings.mistral_model.clone(),
            budget: settings.llm_timeout,
        }
    }

    /// Asks for the assistant's next message given the whole conversation.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        let response = self.send(messages, false).await?;
        reply_text(&response.bytes().await?)
    }

    /// Asks for the next message as a stream of text pieces, yielded as Mistral writes them.
    ///
    /// The first piece must come within the budget (`LLM_TIMEOUT_MS`). A rate limit, a server
    /// error or a failed connection is retried once after a short random pause, if the budget
    /// leaves room for it.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
    ) -> Result<impl Stream<Item = Result<String, LlmError>> + Send + Unpin + 'static, LlmError>
    {
        let deadline = Instant::now() + self.budget;
        let mut retried = false;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.first_piece(messages)).await;
            match attempt {
                Err(_) => return Err(LlmError::Timeout(self.budget)),
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(err)) if !retried && err.is_retryable() => {
                    let pause = jitter();
                    if Instant::now() + pause >= deadline {
                        return Err(err);
                    }
                    tracing::warn!(error = %err, "the model failed; retrying once");
                    tokio::time::sleep(pause).await;
                    retried = true;
                }
                Ok(Err(err)) => return Err(err),
            }
        }
    }

    /// Sends a streamed request and waits for its first text piece.
    async fn first_piece(
        &self,
        messages: &[ChatMessage],
    ) -> Result<impl Stream<Item = Result<String, LlmError>> + Send + Unpin + 'static, LlmError>
    {
        let response = self.send(messages, true).await?;
        let state = Deltas {
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            ready: VecDeque::new(),
            done: false,
        };
        let mut deltas = Box::pin(futures::stream::unfold(state, Deltas::next));
        let first = match deltas.next().await {
            Some(Ok(text)) => text,
            Some(Err(err)) => return Err(err),
            None => return Err(LlmError::NoText("the stream ended without text".into())),
        };
        Ok(futures::stream::iter([Ok(first)]).chain(deltas))
    }

    /// Sends the request; an error status becomes [`LlmError::Status`].
    async fn send(
        &self,
        messages: &[ChatMessage],
        stream: bool,
    ) -> Result<reqwest::Response, LlmError> {
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let response = self
            .http
            .post(self.url.clone())
            .bearer_auth(self.key.expose())
            .header(reqwest::header::ACCEPT, accept)
            .timeout(REQUEST_TIMEOUT)
            .json(&Request {
                model: &self.model,
                messages,
                temperature: TEMPERATURE,
                max_tokens: MAX_TOKENS,
                stream,
            })
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(LlmError::Status {
            status,
            body: String::from_utf8_lossy(&body)
                .chars()
                .take(ERROR_BODY_CHARS)
                .collect(),
        })
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static>>;

/// A pause of 50–250 ms before a retry, different from call to call so that calls failing
/// together do not retry together.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(50 + u64::from(nanos % 200))
}

/// State of a streamed completion: the body, the SSE parser, text pieces not yet yielded.
struct Deltas {
    body: ByteStream,
    parser: SseParser,
    ready: VecDeque<String>,
    done: bool,
}

impl Deltas {
    async fn next(mut self) -> Option<(Result<String, LlmError>, Self)> {
        loop {
            if let Some(text) = self.ready.pop_front() {
                return Some((Ok(text), self));
            }
            if self.done {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    if let Err(err) = self.read(&bytes) {
                        self.done = true;
                        return Some((Err(err), self));
                    }
                }
                Some(Err(err)) => {
                    self.done = true;
                    return Some((Err(err.into()), self));
                }
                None => {
                    self.done = true;
                }
            }
        }
    }

    /// Parses bytes into text pieces; `[DONE]` ends the stream.
    fn read(&mut self, bytes: &[u8]) -> Result<(), LlmError> {
        let mut events = Vec::new();
        self.parser.push(bytes, &mut events)?;
        for data in events {
            if data.trim() == "[DONE]" {
                self.done = true;
                break;
            }
            if let Some(text) = delta_text(&data)? {
                self.ready.push_back(text);
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Value,
}

/// The text of one streamed chunk, if it carries any.
fn delta_text(data: &str) -> Result<Option<String>, LlmError> {
    let chunk: Chunk =
        serde_json::from_str(data).map_err(|err| LlmError::NoText(err.to_string()))?;
    let Some(choice) = chunk.choices.into_iter().next() else {
        return Ok(None);
    };
    let text = content_text(choice.delta.content);
    Ok((!text.is_empty()).then_some(text))
}

/// Text of a `content` value: a string, or the text chunks of an array (others skipped).
fn content_text(content: Value) -> String {
    match content {
        Value::String(text) => text,
        Value::Array(chunks) => chunks
            .iter()
            .filter(|chunk| chunk.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|chunk| chunk.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
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
    let text = content_text(content);
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
    fn streamed_chunks_yield_their_text() {
        let role = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(delta_text(role).unwrap(), None);
        let piece = r#"{"choices":[{"index":0,"delta":{"content":"Open "},"finish_reason":null}]}"#;
        assert_eq!(delta_text(piece).unwrap().as_deref(), Some("Open "));
        let last = r#"{"choices":[{"index":0,"delta":{"content":"daily."},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        assert_eq!(delta_text(last).unwrap().as_deref(), Some("daily."));
        let chunks = r#"{"choices":[{"delta":{"content":[{"type":"text","text":"Hi"}]}}]}"#;
        assert_eq!(delta_text(chunks).unwrap().as_deref(), Some("Hi"));
        assert!(delta_text("{not json").is_err());
        assert_eq!(delta_text(r#"{"choices":[]}"#).unwrap(), None);
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
