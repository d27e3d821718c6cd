//! Mistral chat completions: the conversation in, the assistant's reply text out.

use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::Url;
use serde::Serialize;
use tokio::time::Instant;

use super::answer::{reply_text, whole_reply, Deltas};
pub use super::answer::{Piece, Reply};
pub use super::error::LlmError;
use super::tools::{Tool, ToolChoice, ToolOffer};
use super::ChatMessage;
use crate::secret::Secret;
use crate::settings::{self, Schemes};

/// Upper bound on one completion by default; a caller waiting longer hears nothing useful
/// anyway. The Gather flow sets its own ([`Mistral::with_request_timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Replies are spoken: a few sentences at most.
const MAX_TOKENS: u32 = 300;
/// Low randomness: a front desk should answer the same question the same way.
const TEMPERATURE: f32 = 0.3;
/// Longest error body we keep for a log line.
const ERROR_BODY_CHARS: usize = 300;

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
    #[arg(long = "llm-timeout-ms", env = "LLM_TIMEOUT_MS", value_name = "LLM_TIMEOUT_MS", default_value = "8000",
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
    /// Upper bound on one request, answer read included.
    request_timeout: Duration,
}

/// The request body: only documented fields (Mistral rejects unknown ones with 422).
#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
}

impl<'a> Request<'a> {
    /// A request for `model`, offering `offer`'s tools when there is one.
    fn new(
        model: &'a str,
        messages: &'a [ChatMessage],
        stream: bool,
        offer: Option<&'a ToolOffer>,
    ) -> Self {
        Self {
            model,
            messages,
            temperature: TEMPERATURE,
            max_tokens: MAX_TOKENS,
            stream,
            tools: offer.map(|o| o.tools.as_slice()),
            tool_choice: offer.map(|o| &o.choice),
            parallel_tool_calls: offer.map(|o| o.parallel),
        }
    }
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
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same client with another upper bound on one request (the Gather flow's budget:
    /// its answer may still be spoken by `/speak_response` after `LLM_TIMEOUT_MS`).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Asks for the assistant's next message given the whole conversation.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        let response = self.send(messages, false, None).await?;
        reply_text(&response.bytes().await?)
    }

    /// Asks for the assistant's next message offering `offer`'s tools: its text, the tools it
    /// called, or both. An answer with neither is [`LlmError::NoText`].
    pub async fn complete_with_tools(
        &self,
        messages: &[ChatMessage],
        offer: &ToolOffer,
    ) -> Result<Reply, LlmError> {
        let response = self.send(messages, false, Some(offer)).await?;
        whole_reply(&response.bytes().await?)
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
        let pieces = self.pieces(messages, None).await?;
        Ok(pieces.filter_map(|piece| {
            futures::future::ready(match piece {
                Ok(Piece::Text(text)) => Some(Ok(text)),
                Ok(Piece::ToolCalls(_)) => None,
                Err(err) => Some(Err(err)),
            })
        }))
    }

    /// Like [`Mistral::stream`], offering `offer`'s tools: text pieces as they come, then the
    /// tools the model called (assembled from the deltas, arguments parsed) when it has ended.
    /// The first piece, text or calls, must come within the budget.
    pub async fn stream_with_tools(
        &self,
        messages: &[ChatMessage],
        offer: &ToolOffer,
    ) -> Result<impl Stream<Item = Result<Piece, LlmError>> + Send + Unpin + 'static, LlmError>
    {
        self.pieces(messages, Some(offer)).await
    }

    /// A streamed reply, retried once if the budget allows.
    async fn pieces(
        &self,
        messages: &[ChatMessage],
        offer: Option<&ToolOffer>,
    ) -> Result<impl Stream<Item = Result<Piece, LlmError>> + Send + Unpin + 'static, LlmError>
    {
        let deadline = Instant::now() + self.budget;
        let mut retried = false;
        loop {
            let first = self.first_piece(messages, offer);
            let attempt = tokio::time::timeout_at(deadline, first).await;
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

    /// Sends a streamed request and waits for its first piece.
    async fn first_piece(
        &self,
        messages: &[ChatMessage],
        offer: Option<&ToolOffer>,
    ) -> Result<impl Stream<Item = Result<Piece, LlmError>> + Send + Unpin + 'static, LlmError>
    {
        let response = self.send(messages, true, offer).await?;
        let state = Deltas::new(Box::pin(response.bytes_stream()));
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
        offer: Option<&ToolOffer>,
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
            .timeout(self.request_timeout)
            .json(&Request::new(&self.model, messages, stream, offer))
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

/// A pause of 50–250 ms before a retry, different from call to call so that calls failing
/// together do not retry together.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(50 + u64::from(nanos % 200))
}

#[cfg(test)]
mod tests;
