//! The Mistral stand-in's function calling (PROTOCOLS.md 6.5): which tools the caller's words
//! call, and the answer once a tool's result came back. Off unless a request offers `tools`,
//! so the demo and the load generator hear the FAQ as before.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

use super::faq;
use super::wire::content_text;

/// How the stand-in sends a tool call (a hook; Mistral itself sends each call whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolCallShape {
    /// Each call whole, all of them in one chunk, as Mistral does.
    #[default]
    Whole,
    /// Each call's id and name first, then its arguments a few characters per chunk, as
    /// OpenAI-style servers do.
    Split,
    /// Whole, with arguments that are not valid JSON (a fault a client must survive).
    Malformed,
}

/// Characters of `arguments` per chunk in [`ToolCallShape::Split`].
pub const SPLIT_CHARS: usize = 4;

/// Caller's words (lowercase) → the tool they call, when offered, and the words said with it.
const RULES: &[(&[&str], &str, Option<&str>)] = &[
    (
        &["goodbye", "that is all", "bye"],
        "end_call",
        Some(faq::GOODBYE),
    ),
    (
        &[
            "a person", "a human", "someone", "an agent", "operator", "transfer",
        ],
        "transfer_call",
        None,
    ),
];

/// What the model answers: words, tool calls (Mistral's wire items), or both.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The text, spoken before any call.
    pub text: String,
    /// `{"id","type","function":{"name","arguments"}}` items, in order.
    pub calls: Vec<Value>,
}

impl Answer {
    /// Words only.
    pub fn words(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            calls: Vec::new(),
        }
    }
}

/// The answer to `request`: after a tool result, words that use it; when tools are offered,
/// the calls the caller's words (or `tool_choice`) ask for; otherwise the FAQ's answer.
pub fn answer(request: &Value, last_user: &str) -> Answer {
    let messages = request["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(last) = messages.last().filter(|m| m["role"] == "tool") {
        return Answer::words(&after_tool(messages, last));
    }
    let offered = offered_tools(request);
    let calls = if offered.is_empty() {
        Vec::new()
    } else {
        chosen(request, &offered, last_user)
    };
    if calls.is_empty() {
        return Answer::words(faq::answer(last_user));
    }
    let text = RULES
        .iter()
        .find(|(_, name, _)| calls[0].0 == *name)
        .and_then(|(_, _, words)| *words)
        .unwrap_or_default();
    let calls = calls
        .into_iter()
        .map(|(name, schema)| wire_call(name, &arguments(schema, last_user)))
        .collect();
    Answer {
        text: text.to_owned(),
        calls,
    }
}

/// The answer to a tool result when the stand-in is told to keep calling tools (a model stuck
/// in a loop): the last call again, same name and arguments, with a fresh id. `None` unless
/// the conversation ends on a tool result.
pub fn call_again(request: &Value) -> Option<Answer> {
    let messages = request["messages"].as_array()?;
    messages.last().filter(|m| m["role"] == "tool")?;
    let asked = messages
        .iter()
        .rev()
        .find_map(|m| m["tool_calls"].as_array().and_then(|calls| calls.first()))?;
    let name = asked["function"]["name"].as_str()?;
    let arguments = asked["function"]["arguments"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| json!({}));
    Some(Answer {
        text: String::new(),
        calls: vec![wire_call(name, &arguments)],
    })
}

/// The offered functions: (name, parameters schema).
fn offered_tools(request: &Value) -> Vec<(&str, &Value)> {
    let tools = request["tools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    tools
        .iter()
        .filter_map(|t| {
            Some((
                t["function"]["name"].as_str()?,
                &t["function"]["parameters"],
            ))
        })
        .collect()
}

/// The tools this request calls, honouring `tool_choice` and `parallel_tool_calls`.
fn chosen<'a>(
    request: &Value,
    offered: &[(&'a str, &'a Value)],
    last_user: &str,
) -> Vec<(&'a str, &'a Value)> {
    let choice = &request["tool_choice"];
    if choice == "none" {
        return Vec::new();
    }
    if let Some(name) = choice["function"]["name"].as_str() {
        return offered
            .iter()
            .filter(|(n, _)| *n == name)
            .take(1)
            .copied()
            .collect();
    }
    let lower = last_user.to_lowercase();
    let asked = |name: &str| {
        let by_rule = RULES
            .iter()
            .any(|(keys, tool, _)| *tool == name && keys.iter().any(|k| lower.contains(k)));
        by_rule || lower.contains(name) || lower.contains(&name.replace('_', " "))
    };
    let mut calls: Vec<_> = offered.iter().filter(|(n, _)| asked(n)).copied().collect();
    if calls.is_empty() && (choice == "any" || choice == "required") {
        calls.extend(offered.first().copied());
    }
    if request["parallel_tool_calls"] == false {
        calls.truncate(1);
    }
    calls
}

/// Arguments for a call: every required string property is the caller's words.
fn arguments(schema: &Value, last_user: &str) -> Value {
    let mut args = Map::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        if schema["properties"][name]["type"] == "string" {
            args.insert(name.to_owned(), Value::from(last_user));
        }
    }
    Value::Object(args)
}

/// One call as Mistral sends it, with a fresh id of 9 alphanumerics.
fn wire_call(name: &str, arguments: &Value) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100_000;
    json!({"id": format!("call{n:05}"), "type": "function",
        "function": {"name": name, "arguments": arguments.to_string()}})
}

/// What the model says once a tool answered: the result, named by its tool.
fn after_tool(messages: &[Value], result: &Value) -> String {
    let id = &result["tool_call_id"];
    let name = result["name"].as_str().map(str::to_owned).or_else(|| {
        messages
            .iter()
            .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
            .find(|c| &c["id"] == id)
            .and_then(|c| c["function"]["name"].as_str().map(str::to_owned))
    });
    let content = content_text(&result["content"]);
    format!(
        "{} answered: {content}",
        name.unwrap_or_else(|| "The tool".into())
    )
}

/// The `delta`s that carry `calls` in `shape`.
pub fn call_deltas(calls: &[Value], shape: ToolCallShape) -> Vec<Value> {
    let indexed = |i: usize, call: &Value| {
        let mut call = call.clone();
        call["index"] = Value::from(i);
        call
    };
    if calls.is_empty() {
        return Vec::new();
    }
    match shape {
        ToolCallShape::Whole => {
            let items: Vec<_> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| indexed(i, c))
                .collect();
            vec![json!({"tool_calls": items})]
        }
        ToolCallShape::Malformed => {
            let items = calls.iter().enumerate().map(|(i, c)| {
                let mut c = indexed(i, c);
                let args = c["function"]["arguments"].as_str().unwrap_or("{}");
                c["function"]["arguments"] = Value::from(&args[..args.len().saturating_sub(1)]);
                c
            });
            vec![json!({"tool_calls": items.collect::<Vec<_>>()})]
        }
        ToolCallShape::Split => calls
            .iter()
            .enumerate()
            .flat_map(|(i, c)| split_call(i, c))
            .collect(),
    }
}

/// One call as an opening delta (id, name, no arguments) and argument pieces.
fn split_call(index: usize, call: &Value) -> Vec<Value> {
    let args: Vec<char> = call["function"]["arguments"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .collect();
    let mut deltas = vec![json!({"tool_calls": [{"index": index, "id": call["id"],
        "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]})];
    for piece in args.chunks(SPLIT_CHARS) {
        let piece: String = piece.iter().collect();
        deltas.push(json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}));
    }
    deltas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tools: &[&str], user: &str) -> Value {
        let tools: Vec<Value> = tools
            .iter()
            .map(|name| {
                json!({"type": "function", "function": {"name": name, "description": "d",
                    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}},
                        "required": ["reason"]}}})
            })
            .collect();
        json!({"model": "m", "messages": [{"role": "user", "content": user}], "tools": tools})
    }

    #[test]
    fn goodbye_ends_the_call_with_a_farewell_when_offered() {
        let got = answer(&request(&["end_call"], "Goodbye!"), "Goodbye!");
        assert_eq!(got.text, faq::GOODBYE);
        assert_eq!(got.calls.len(), 1);
        assert_eq!(got.calls[0]["function"]["name"], "end_call");
        let id = got.calls[0]["id"].as_str().unwrap_or_default();
        assert!(
            id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{id}"
        );
        let plain = answer(&request(&[], "Goodbye!"), "Goodbye!");
        assert_eq!(plain, Answer::words(faq::GOODBYE));
    }

    #[test]
    fn a_person_is_a_transfer_with_the_reason() {
        let words = "Can I talk to a person about billing?";
        let got = answer(&request(&["end_call", "transfer_call"], words), words);
        assert_eq!(got.text, "");
        let args: Value = serde_json::from_str(
            got.calls[0]["function"]["arguments"]
                .as_str()
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(args, json!({"reason": words}));
    }

    #[test]
    fn a_tool_named_by_the_caller_is_called_and_its_result_answered() {
        let words = "Please check appointment for me";
        let got = answer(&request(&["check_appointment"], words), words);
        assert_eq!(got.calls[0]["function"]["name"], "check_appointment");
        let follow_up = json!({"messages": [
            {"role": "user", "content": words},
            {"role": "assistant", "content": "", "tool_calls": [got.calls[0]]},
            {"role": "tool", "tool_call_id": got.calls[0]["id"], "content": "at 9"}]});
        assert_eq!(
            answer(&follow_up, words).text,
            "check_appointment answered: at 9"
        );
    }

    #[test]
    fn a_model_stuck_in_a_loop_calls_the_same_tool_again() {
        let words = "Please check appointment for me";
        let got = answer(&request(&["check_appointment"], words), words);
        let follow_up = json!({"messages": [
            {"role": "user", "content": words},
            {"role": "assistant", "content": "", "tool_calls": [got.calls[0]]},
            {"role": "tool", "tool_call_id": got.calls[0]["id"], "content": "at 9"}]});
        let again = call_again(&follow_up).expect("a call again");
        assert_eq!(again.calls.len(), 1);
        assert_eq!(again.calls[0]["function"], got.calls[0]["function"]);
        assert_ne!(again.calls[0]["id"], got.calls[0]["id"]);
        assert_eq!(call_again(&request(&["check_appointment"], words)), None);
    }

    #[test]
    fn split_calls_rebuild_their_arguments() {
        let call = wire_call("f", &json!({"reason": "a long enough reason"}));
        let deltas = call_deltas(std::slice::from_ref(&call), ToolCallShape::Split);
        assert!(deltas.len() > 3);
        let joined: String = deltas
            .iter()
            .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(joined, call["function"]["arguments"]);
        let bad = call_deltas(&[call], ToolCallShape::Malformed);
        let args = bad[0]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap_or("");
        assert!(serde_json::from_str::<Value>(args).is_err());
    }
}
