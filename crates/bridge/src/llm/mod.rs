//! The language model that writes the assistant's replies.

pub mod mistral;
pub mod sse;

use serde::Serialize;

/// Who said a message in the conversation sent to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The assistant's instructions.
    System,
    /// What the caller said.
    User,
    /// What the assistant said.
    Assistant,
}

/// One message of the conversation, as the chat completions API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}
