//! Mistral function calling (PROTOCOLS.md 6.5): the tools offered in a request, the calls the
//! model makes, and the assembler that rebuilds calls from streamed deltas.
//!
//! Mistral currently sends each call whole in one chunk; OpenAI-style servers split `arguments`
//! across chunks. [`CallAssembler`] handles both: one slot per `index`, `id` and `name` taken
//! when they appear, `arguments` appended, and parsed only once the stream has ended.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::history::new_tool_call_id;

/// A function the model may call: its name, what it is for, and its arguments' JSON Schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The name the model calls it by.
    pub name: String,
    /// When to call it: the model decides from this text.
    pub description: String,
    /// JSON Schema of the arguments (an `object` schema).
    pub parameters: Value,
}

impl Serialize for Tool {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({"type": "function", "function": {"name": self.name,
            "description": self.description, "parameters": self.parameters}})
        .serialize(serializer)
    }
}

/// Whether and which tool the model must call (`tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call any tool.
    None,
    /// The model must call at least one tool.
    Any,
    /// The model must call this tool.
    Function(String),
}

impl Serialize for ToolChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::Auto => serializer.serialize_str("auto"),
            ToolChoice::None => serializer.serialize_str("none"),
            ToolChoice::Any => serializer.serialize_str("any"),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
                    .serialize(serializer)
            }
        }
    }
}

/// What a request offers the model: the tools, the choice, and whether it may call several at
/// once (`false` when each call ends or redirects the conversation).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOffer {
    /// The functions offered (`tools`).
    pub tools: Vec<Tool>,
    /// `tool_choice`.
    pub choice: ToolChoice,
    /// `parallel_tool_calls`.
    pub parallel: bool,
}

/// One call the model made, as the conversation keeps it and echoes it back to the model.
///
/// Serializes as Mistral's `{"id","type":"function","function":{"name","arguments"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireCall", from = "WireCall")]
pub struct ToolCall {
    /// Mistral's id for the call; the `tool` message answering it carries the same id.
    pub id: String,
    /// The function called.
    pub name: String,
    /// The arguments as the model wrote them (a JSON text, not necessarily valid), echoed
    /// unchanged; see [`ToolCall::parse_arguments`].
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as a JSON object. Empty arguments are `{}`; anything that is not a JSON
    /// object is a [`BadArguments`] for the caller to report back to the model as the result.
    pub fn parse_arguments(&self) -> Result<Map<String, Value>, BadArguments> {
        let bad = |reason: String| BadArguments {
            name: self.name.clone(),
            reason,
        };
        if self.arguments.trim().is_empty() {
            return Ok(Map::new());
        }
        match serde_json::from_str(&self.arguments) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(bad(format!("expected a JSON object, got {other}"))),
            Err(err) => Err(bad(err.to_string())),
        }
    }
}

/// The arguments of a tool call are not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the arguments of {name} are not a JSON object: {reason}")]
pub struct BadArguments {
    /// The tool called.
    pub name: String,
    /// What the parser said.
    pub reason: String,
}

/// A call as the model asked for it: the call to echo, and its arguments parsed (or why not).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    /// The call, for the history.
    pub call: ToolCall,
    /// Its arguments, or why they could not be read (to become the tool's result).
    pub arguments: Result<Map<String, Value>, BadArguments>,
}

impl From<ToolCall> for ToolRequest {
    fn from(call: ToolCall) -> Self {
        let arguments = call.parse_arguments();
        Self { call, arguments }
    }
}

/// Mistral's shape of a tool call.
#[derive(Serialize, Deserialize)]
struct WireCall {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    function: WireFunction,
}

#[derive(Serialize, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl From<ToolCall> for WireCall {
    fn from(call: ToolCall) -> Self {
        Self {
            id: call.id,
            kind: "function".into(),
            function: WireFunction {
                name: call.name,
                arguments: Value::String(call.arguments),
            },
        }
    }
}

impl From<WireCall> for ToolCall {
    fn from(wire: WireCall) -> Self {
        Self {
            id: wire.id,
            name: wire.function.name,
            arguments: arguments_text(wire.function.arguments),
        }
    }
}

/// `arguments` as text: a string as it is, an object (the SDK admits one) as compact JSON.
fn arguments_text(arguments: Value) -> String {
    match arguments {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A call being assembled from deltas.
#[derive(Debug, Default)]
struct Slot {
    /// The delta's `index`, when it had one.
    index: Option<u64>,
    id: String,
    name: String,
    arguments: String,
}

/// Rebuilds tool calls from `tool_calls` arrays, in streamed deltas or in a whole message.
#[derive(Debug, Default)]
pub struct CallAssembler {
    /// Calls in order of first appearance.
    slots: Vec<Slot>,
}

impl CallAssembler {
    /// An assembler that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no call has appeared yet.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Takes in one `tool_calls` array (anything else is ignored).
    pub fn push(&mut self, tool_calls: &Value) {
        for item in tool_calls.as_array().into_iter().flatten() {
            self.push_item(item);
        }
    }

    fn push_item(&mut self, item: &Value) {
        let index = item.get("index").and_then(Value::as_u64);
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
        let function = item.get("function").unwrap_or(&Value::Null);
        let slot = self.slot(index, id);
        if !id.is_empty() {
            id.clone_into(&mut slot.id);
        }
        if let Some(name) = function.get("name").and_then(Value::as_str) {
            if !name.is_empty() {
                name.clone_into(&mut slot.name);
            }
        }
        match function.get("arguments") {
            Some(Value::String(piece)) => slot.arguments.push_str(piece),
            Some(Value::Null) | None => {}
            Some(other) => slot.arguments.push_str(&other.to_string()),
        }
    }

    /// The slot a delta item belongs to: same `index` (unless it brings another id), else same
    /// id, else the last one when the item names neither; a new slot otherwise.
    fn slot(&mut self, index: Option<u64>, id: &str) -> &mut Slot {
        let other_id = |slot: &Slot| !id.is_empty() && !slot.id.is_empty() && slot.id != id;
        let found = match index {
            Some(i) => self
                .slots
                .iter()
                .rposition(|s| s.index == Some(i) && !other_id(s)),
            None if !id.is_empty() => self.slots.iter().position(|s| s.id == id),
            None => self.slots.len().checked_sub(1),
        };
        let at = found.unwrap_or_else(|| {
            self.slots.push(Slot {
                index,
                ..Slot::default()
            });
            self.slots.len() - 1
        });
        &mut self.slots[at]
    }

    /// The calls, once everything was pushed: arguments parsed, an id made for a call that
    /// came without one.
    pub fn finish(self) -> Vec<ToolRequest> {
        self.slots
            .into_iter()
            .map(|slot| {
                let id = if slot.id.is_empty() {
                    new_tool_call_id()
                } else {
                    slot.id
                };
                ToolRequest::from(ToolCall {
                    id,
                    name: slot.name,
                    arguments: slot.arguments,
                })
            })
            .collect()
    }
}

/// The calls of a whole (non-streamed) message's `tool_calls`; each item is its own call
/// (their `index`, optional there, may all be 0).
pub fn calls_of_message(tool_calls: &Value) -> Vec<ToolRequest> {
    let mut assembler = CallAssembler::new();
    for (position, item) in tool_calls.as_array().into_iter().flatten().enumerate() {
        let mut item = item.clone();
        if let Some(obj) = item.as_object_mut() {
            obj.insert("index".into(), Value::from(position));
        }
        assembler.push_item(&item);
    }
    assembler.finish()
}

#[cfg(test)]
mod tests;
