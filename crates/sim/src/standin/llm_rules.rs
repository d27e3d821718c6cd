//! What Mistral's chat completions endpoint refuses, so the stand-in catches request bugs the real
//! API would (PROTOCOLS.md §6.1, §6.4): unknown fields are 422 `extra_forbidden`, missing or
//! mistyped fields 422, tool traffic out of order 400 ([`super::llm_order`]), a conversation not
//! ending on a user (or tool) turn 400.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::llm_order::check_order;
pub use super::llm_order::Refusal;

/// Top-level body fields Mistral documents (the brief's list plus PROTOCOLS.md §6.1's extras).
pub const ALLOWED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "safe_prompt",
    "parallel_tool_calls",
    "prediction",
    "prompt_mode",
    "reasoning_effort",
    "metadata",
    "prompt_cache_key",
    "guardrails",
];

/// Fields each message role may carry.
fn role_fields(role: &str) -> Option<&'static [&'static str]> {
    match role {
        "system" | "user" => Some(&["role", "content"]),
        "assistant" => Some(&["role", "content", "tool_calls", "prefix"]),
        "tool" => Some(&["role", "content", "tool_call_id", "name"]),
        _ => None,
    }
}

/// Checks a parsed body (`Null` when it was not JSON).
pub fn validate(body: &Value) -> Result<(), Refusal> {
    let Some(obj) = body.as_object() else {
        return Err(bad_request("Invalid JSON body"));
    };
    let mut detail = Vec::new();
    for key in obj.keys().filter(|k| !ALLOWED_FIELDS.contains(&k.as_str())) {
        detail.push(extra(json!(["body", key]), &obj[key]));
    }
    if !obj.get("model").is_some_and(Value::is_string) {
        detail.push(problem(
            obj.get("model"),
            json!(["body", "model"]),
            "string_type",
        ));
    }
    match obj.get("messages").and_then(Value::as_array) {
        Some(messages) => check_messages(messages, &mut detail),
        None => detail.push(problem(
            obj.get("messages"),
            json!(["body", "messages"]),
            "list_type",
        )),
    }
    if let Some(tools) = obj.get("tools") {
        check_tools(tools, &mut detail);
    }
    if !detail.is_empty() {
        return Err(Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({"object": "error", "message": {"detail": detail},
                "type": "invalid_request_error", "param": null, "code": null}),
        });
    }
    let messages = obj["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    check_order(messages)?;
    match messages.last() {
        Some(m) if m["role"] == "user" || m["role"] == "tool" || m["prefix"] == true => Ok(()),
        Some(m) => Err(bad_request(&format!(
            "Expected last role User or Tool (or Assistant with prefix True) for serving but got {}",
            m["role"]
        ))),
        None => Err(bad_request("Messages must not be empty")),
    }
}

fn check_messages(messages: &[Value], detail: &mut Vec<Value>) {
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        let Some(allowed) = role_fields(role) else {
            detail.push(problem(
                m.get("role"),
                json!(["body", "messages", i, "role"]),
                "union_tag_invalid",
            ));
            continue;
        };
        let fields = m.as_object().into_iter().flat_map(|o| o.iter());
        for (key, value) in fields.filter(|(k, _)| !allowed.contains(&k.as_str())) {
            detail.push(extra(json!(["body", "messages", i, role, key]), value));
        }
        let content_ok = match &m["content"] {
            Value::String(_) | Value::Array(_) => true,
            Value::Null => role == "assistant" && m.get("tool_calls").is_some(),
            _ => false,
        };
        if !content_ok {
            detail.push(problem(
                m.get("content"),
                json!(["body", "messages", i, role, "content"]),
                "string_type",
            ));
        }
    }
}

/// `tools` must be a list of functions, each with a name.
fn check_tools(tools: &Value, detail: &mut Vec<Value>) {
    let Some(tools) = tools.as_array() else {
        detail.push(problem(Some(tools), json!(["body", "tools"]), "list_type"));
        return;
    };
    for (i, tool) in tools.iter().enumerate() {
        let name = &tool["function"]["name"];
        if !name.is_string() {
            let loc = json!(["body", "tools", i, "function", "name"]);
            detail.push(problem(tool["function"].get("name"), loc, "string_type"));
        }
    }
}

fn extra(loc: Value, input: &Value) -> Value {
    json!({"type": "extra_forbidden", "loc": loc, "msg": "Extra inputs are not permitted", "input": input})
}

fn problem(input: Option<&Value>, loc: Value, kind: &str) -> Value {
    match input {
        None => json!({"type": "missing", "loc": loc, "msg": "Field required", "input": null}),
        Some(v) => {
            json!({"type": kind, "loc": loc, "msg": format!("Invalid value ({kind})"), "input": v})
        }
    }
}

fn bad_request(message: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        body: json!({"object": "error", "message": message, "type": "invalid_request_error",
            "param": null, "code": null}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_without_a_name_is_a_422_and_tool_order_a_400() {
        let user = json!({"role": "user", "content": "q"});
        let nameless = json!({"model": "m", "messages": [user],
            "tools": [{"type": "function", "function": {"parameters": {}}}]});
        let refused = validate(&nameless).err().map(|r| r.status);
        assert_eq!(refused, Some(StatusCode::UNPROCESSABLE_ENTITY));
        let stray = json!({"model": "m", "messages": [user,
            {"role": "tool", "tool_call_id": "abcDEF123", "content": "r"}]});
        let refused = validate(&stray).err().map(|r| r.status);
        assert_eq!(refused, Some(StatusCode::BAD_REQUEST));
    }
}
