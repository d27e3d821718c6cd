use serde_json::json;

use super::*;
use crate::llm::tools::Tool;
use crate::llm::{Role, ToolCall};

#[test]
fn request_has_only_documented_fields() {
    let messages = [ChatMessage::new(super::super::Role::User, "Hi")];
    let body = serde_json::to_value(Request::new("m", &messages, false, None)).unwrap();
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

#[test]
fn a_request_with_tools_has_only_documented_fields() {
    let call = ToolCall {
        id: "D681PevKs".into(),
        name: "transfer_call".into(),
        arguments: r#"{"reason": "billing"}"#.into(),
    };
    let messages = [
        ChatMessage::new(Role::User, "A person please"),
        ChatMessage::assistant_tool_calls("", vec![call.clone()]),
        ChatMessage::tool_result(&call, r#"{"ok": true}"#),
    ];
    let offer = ToolOffer {
        tools: vec![Tool {
            name: "transfer_call".into(),
            description: "Transfer the caller to a human.".into(),
            parameters: json!({"type":"object","properties":{"reason":{"type":"string"}},
                "required":["reason"]}),
        }],
        choice: ToolChoice::Auto,
        parallel: false,
    };
    let body = serde_json::to_value(Request::new("m", &messages, true, Some(&offer))).unwrap();
    let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "max_tokens",
            "messages",
            "model",
            "parallel_tool_calls",
            "stream",
            "temperature",
            "tool_choice",
            "tools"
        ]
    );
    assert_eq!(
        body["tools"],
        json!([{"type":"function","function":{"name":"transfer_call",
            "description":"Transfer the caller to a human.",
            "parameters":{"type":"object","properties":{"reason":{"type":"string"}},
                "required":["reason"]}}}])
    );
    assert_eq!(body["tool_choice"], json!("auto"));
    assert_eq!(body["parallel_tool_calls"], json!(false));
    assert_eq!(
        body["messages"],
        json!([
            {"role":"user","content":"A person please"},
            {"role":"assistant","content":"","tool_calls":[{"id":"D681PevKs","type":"function",
                "function":{"name":"transfer_call","arguments":"{\"reason\": \"billing\"}"}}]},
            {"role":"tool","content":"{\"ok\": true}","tool_call_id":"D681PevKs",
                "name":"transfer_call"}
        ])
    );
}
