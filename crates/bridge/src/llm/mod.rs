//! The language model that writes the assistant's replies.

mod answer;
mod error;
pub mod history;
pub mod mistral;
pub mod sse;
pub mod tools;

use serde::{Deserialize, Serialize};

pub use tools::ToolCall;

/// Who said a message in the conversation sent to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The assistant's instructions.
    System,
    /// What the caller said.
    User,
    /// What the assistant said.
    Assistant,
    /// The result of a tool the assistant called (PROTOCOLS.md 6.5).
    Tool,
}

/// One message of the conversation, as the chat completions API takes it.
///
/// A plain text message serializes as `{"role","content"}` only; the tool fields appear on the
/// wire only when set, so Mistral (which refuses unknown fields) sees each role's own shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// The tools an assistant message asked for, echoed back to the model as it sent them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the id of the call it answers (Mistral pairs them by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On a `tool` message: the tool's name (optional for Mistral, sent as its example does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// The assistant's turn that asked for `calls` (with whatever text came with them), to be
    /// echoed in the next request before the results.
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The result of `call`, as the `tool` message that answers it.
    pub fn tool_result(call: &ToolCall, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call.id.clone()),
            name: Some(call.name.clone()),
            ..Self::new(Role::Tool, content)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_messages_serialize_as_before() {
        let m = ChatMessage::new(Role::User, "Hi");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"role":"user","content":"Hi"}"#
        );
        let m = ChatMessage::new(Role::Assistant, "Hello");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"role":"assistant","content":"Hello"}"#
        );
    }

    #[test]
    fn tool_traffic_serializes_as_mistral_documents_it() {
        let call = ToolCall {
            id: "D681PevKs".into(),
            name: "transfer_call".into(),
            arguments: r#"{"reason": "billing"}"#.into(),
        };
        let asked = ChatMessage::assistant_tool_calls("", vec![call.clone()]);
        assert_eq!(
            serde_json::to_value(&asked).unwrap(),
            json!({"role":"assistant","content":"","tool_calls":[{"id":"D681PevKs","type":"function",
                "function":{"name":"transfer_call","arguments":"{\"reason\": \"billing\"}"}}]})
        );
        let answered = ChatMessage::tool_result(&call, r#"{"ok": true}"#);
        assert_eq!(
            serde_json::to_value(&answered).unwrap(),
            json!({"role":"tool","content":"{\"ok\": true}","tool_call_id":"D681PevKs",
                "name":"transfer_call"})
        );
    }

    #[test]
    fn messages_round_trip_through_json() {
        let call = ToolCall {
            id: "abcDEF123".into(),
            name: "end_call".into(),
            arguments: "{}".into(),
        };
        let history = vec![
            ChatMessage::new(Role::User, "Bye"),
            ChatMessage::assistant_tool_calls("Goodbye!", vec![call.clone()]),
            ChatMessage::tool_result(&call, "ok"),
        ];
        let text = serde_json::to_string(&history).unwrap();
        let back: Vec<ChatMessage> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, history);
    }
}
