//! Why the model gave no reply.

use std::time::Duration;

use super::sse::SseError;

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
    /// The kind of failure, as the `kind` label of the provider errors counter.
    pub fn kind(&self) -> String {
        match self {
            LlmError::Status { status, .. } => format!("http_{}", status.as_u16()),
            LlmError::Timeout(_) => "timeout".into(),
            LlmError::Http(_) => "connection".into(),
            _ => "bad_response".into(),
        }
    }

    /// Worth one more try: rate limited, a server-side failure, or the connection failed.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => status.as_u16() == 429 || status.is_server_error(),
            LlmError::Http(err) => err.is_connect() || err.is_request(),
            _ => false,
        }
    }
}
