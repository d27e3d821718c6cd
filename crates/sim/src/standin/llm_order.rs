//! The message-order rules Mistral enforces on tool traffic (PROTOCOLS.md 6.5), checked on the
//! raw request so the stand-in refuses what Mistral refuses, with Mistral's 400 bodies: call ids
//! of 9 alphanumerics, one `tool` message per call right after it, no `user` message right after
//! a `tool` one. Written apart from the server's own rules on purpose: a test oracle.

use axum::http::StatusCode;
use serde_json::{json, Value};

/// An error answer: status and JSON body.
#[derive(Debug)]
pub struct Refusal {
    /// 400 or 422.
    pub status: StatusCode,
    /// Mistral-shaped error body.
    pub body: Value,
}

/// The first tool rule `messages` breaks, as Mistral's 400.
pub fn check_order(messages: &[Value]) -> Result<(), Refusal> {
    let mut i = 0;
    while i < messages.len() {
        let m = &messages[i];
        let prev = i.checked_sub(1).map(|p| &messages[p]);
        if m["role"] == "user" && prev.is_some_and(|p| p["role"] == "tool") {
            let msg = "Unexpected role 'user' after role 'tool'";
            return Err(refuse(msg, "invalid_request_message_order", "3230"));
        }
        if m["role"] == "tool" {
            return Err(mismatch());
        }
        let calls = m["tool_calls"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for call in calls {
            let id = call["id"].as_str().unwrap_or_default();
            if !(id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric())) {
                let msg =
                    format!("Tool call id was {id} but must be a-z, A-Z, 0-9, with a length of 9.");
                return Err(refuse(&msg, "invalid_function_call", "3280"));
            }
        }
        let results: Vec<&Value> = if calls.is_empty() {
            Vec::new()
        } else {
            messages[i + 1..]
                .iter()
                .take_while(|r| r["role"] == "tool")
                .collect()
        };
        let answered = |call: &Value| {
            results
                .iter()
                .filter(|r| r["tool_call_id"] == call["id"])
                .count()
                == 1
        };
        if results.len() != calls.len() || !calls.iter().all(answered) {
            return Err(mismatch());
        }
        i += 1 + results.len();
    }
    Ok(())
}

fn mismatch() -> Refusal {
    let msg = "Not the same number of function calls and responses";
    refuse(msg, "invalid_request_message_order", "3230")
}

fn refuse(message: &str, kind: &str, code: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        body: json!({"object": "error", "message": message, "type": kind, "param": null,
            "code": code}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}})
    }

    fn message(result: Result<(), Refusal>) -> String {
        result
            .err()
            .map(|r| r.body["message"].to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_good_exchange_passes_and_each_broken_rule_is_refused() {
        let user = json!({"role": "user", "content": "q"});
        let asked = json!({"role": "assistant", "content": "", "tool_calls": [call("abcDEF123")]});
        let answer = json!({"role": "tool", "tool_call_id": "abcDEF123", "content": "r"});
        let said = json!({"role": "assistant", "content": "a"});
        let good = [
            user.clone(),
            asked.clone(),
            answer.clone(),
            said,
            user.clone(),
        ];
        assert!(check_order(&good).is_ok());
        let after_tool = [user.clone(), asked.clone(), answer.clone(), user.clone()];
        assert!(message(check_order(&after_tool)).contains("after role 'tool'"));
        let missing = [user.clone(), asked.clone()];
        assert!(message(check_order(&missing)).contains("Not the same number"));
        let twice = [user.clone(), asked, answer.clone(), answer.clone()];
        assert!(message(check_order(&twice)).contains("Not the same number"));
        let stray = [user.clone(), answer];
        assert!(message(check_order(&stray)).contains("Not the same number"));
        let bad_id = [
            user,
            json!({"role": "assistant", "tool_calls": [call("call_1")]}),
        ];
        let refused = check_order(&bad_id).err().map(|r| r.body);
        assert_eq!(refused.as_ref().map(|b| &b["code"]), Some(&json!("3280")));
    }
}
