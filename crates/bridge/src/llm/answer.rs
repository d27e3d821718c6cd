//! Mistral's answers, parsed apart from the HTTP client: a whole completion body (PROTOCOLS.md
//! 6.2) and a streamed one (6.3) become text and tool calls (6.5).

use std::collections::VecDeque;

use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;

use super::error::LlmError;
use super::sse::SseParser;
use super::tools::{calls_of_message, CallAssembler, ToolRequest};

/// One piece of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text, as Mistral writes it.
    Text(String),
    /// The tools the model called, whole, once the stream has ended (never empty).
    ToolCalls(Vec<ToolRequest>),
}

/// A whole reply: its text and the tools the model called.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// What the assistant said (may be empty next to tool calls).
    pub text: String,
    /// The tools it called, in order.
    pub tool_calls: Vec<ToolRequest>,
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
    #[serde(default)]
    tool_calls: Value,
}

/// A response body as it arrives.
pub(super) type ByteStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static>>;

/// State of a streamed completion: the body, the SSE parser, pieces not yet yielded, and the
/// tool calls being assembled (yielded when the stream ends).
pub(super) struct Deltas {
    /// The response body.
    body: ByteStream,
    /// Bytes → SSE `data` payloads.
    parser: SseParser,
    /// Pieces read and not yet yielded.
    ready: VecDeque<Piece>,
    /// Tool calls being assembled.
    calls: CallAssembler,
    /// `[DONE]` (or the end of the body) was seen.
    done: bool,
}

impl Deltas {
    /// A stream's state at its start.
    pub(super) fn new(body: ByteStream) -> Self {
        Self {
            body,
            parser: SseParser::new(),
            ready: VecDeque::new(),
            calls: CallAssembler::new(),
            done: false,
        }
    }

    /// The next piece and the state after it (for `futures::stream::unfold`).
    pub(super) async fn next(mut self) -> Option<(Result<Piece, LlmError>, Self)> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Some((Ok(piece), self));
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
                None => self.end(),
            }
        }
    }

    /// Parses bytes into text pieces; `[DONE]` ends the stream.
    fn read(&mut self, bytes: &[u8]) -> Result<(), LlmError> {
        let mut events = Vec::new();
        self.parser.push(bytes, &mut events)?;
        for data in events {
            if data.trim() == "[DONE]" {
                self.end();
                break;
            }
            let (text, tool_calls) = delta_parts(&data)?;
            if let Some(text) = text {
                self.ready.push_back(Piece::Text(text));
            }
            self.calls.push(&tool_calls);
        }
        Ok(())
    }

    /// The stream is over: the assembled tool calls, if any, are the last piece.
    fn end(&mut self) {
        self.done = true;
        let calls = std::mem::take(&mut self.calls);
        if !calls.is_empty() {
            self.ready.push_back(Piece::ToolCalls(calls.finish()));
        }
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
    #[serde(default)]
    tool_calls: Value,
}

/// The text of one streamed chunk, if it carries any, and its `tool_calls` (`Null` if none).
fn delta_parts(data: &str) -> Result<(Option<String>, Value), LlmError> {
    let chunk: Chunk =
        serde_json::from_str(data).map_err(|err| LlmError::NoText(err.to_string()))?;
    let Some(choice) = chunk.choices.into_iter().next() else {
        return Ok((None, Value::Null));
    };
    let text = content_text(choice.delta.content);
    Ok(((!text.is_empty()).then_some(text), choice.delta.tool_calls))
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
pub(super) fn reply_text(body: &[u8]) -> Result<String, LlmError> {
    let reply = whole_reply(body)?;
    if reply.text.is_empty() {
        return Err(LlmError::NoText("empty content".into()));
    }
    Ok(reply.text)
}

/// The text and tool calls of a chat completion body; neither is [`LlmError::NoText`].
pub(super) fn whole_reply(body: &[u8]) -> Result<Reply, LlmError> {
    let completion: Completion =
        serde_json::from_slice(body).map_err(|err| LlmError::NoText(err.to_string()))?;
    let message = completion
        .choices
        .into_iter()
        .next()
        .map(|choice| choice.message)
        .ok_or_else(|| LlmError::NoText("no choices".into()))?;
    let reply = Reply {
        text: content_text(message.content).trim().to_owned(),
        tool_calls: calls_of_message(&message.tool_calls),
    };
    if reply.text.is_empty() && reply.tool_calls.is_empty() {
        return Err(LlmError::NoText("empty content".into()));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests;
