//! Tool rounds: the model asks for tools, the bridge runs them, and the model is asked again
//! with the results, until it answers in words, ends or transfers the call, or the rounds run
//! out.
//!
//! [`Toolbox::round`] runs the calls of one reply and shapes its messages as Mistral expects
//! them (PROTOCOLS.md 6.5: the assistant's calls echoed, then one `tool` message per call, same
//! ids); it is what a streamed reply uses once its [`crate::llm::mistral::Piece::ToolCalls`]
//! arrived. [`answer`] drives whole (non-streamed) replies, for the Gather flow.

use crate::llm::mistral::{LlmError, Mistral};
use crate::llm::tools::ToolRequest;
use crate::llm::{ChatMessage, Role};

use super::{ToolOutcome, Toolbox, END_CALL, TRANSFER_CALL};

/// Tool rounds allowed in one turn; a model still asking for tools after them gets no more
/// and the caller hears the fallback phrase.
pub const MAX_TOOL_ROUNDS: usize = 3;

/// The result a built-in tool returns to the model.
const BUILT_IN_DONE: &str = "{\"ok\": true}";

/// What the call does after the assistant's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The conversation goes on.
    Continue,
    /// The call ends once the words were heard.
    End,
    /// The caller is put through to a person once the words were heard.
    Transfer {
        /// Why, in the model's words.
        reason: String,
    },
}

impl Step {
    /// The end or transfer recorded in a turn's tool traffic (as [`ToolAnswer::tool_messages`]
    /// keeps it), for a webhook that finds the answer in the store rather than from the model.
    pub fn of(tool_messages: &[ChatMessage]) -> Self {
        let done = |name: &str| {
            tool_messages.iter().find(|m| {
                m.role == Role::Tool
                    && m.name.as_deref() == Some(name)
                    && m.content == BUILT_IN_DONE
            })
        };
        if done(END_CALL).is_some() {
            return Self::End;
        }
        let Some(result) = done(TRANSFER_CALL) else {
            return Self::Continue;
        };
        let call = tool_messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| Some(c.id.as_str()) == result.tool_call_id.as_deref());
        let reason = call
            .and_then(|c| c.parse_arguments().ok())
            .and_then(|args| {
                args.get("reason")
                    .and_then(|r| r.as_str().map(str::to_owned))
            })
            .unwrap_or_else(|| "not given".into());
        Self::Transfer { reason }
    }
}

/// One reply's tool calls, run.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The assistant message with its calls, then one `tool` message per call, in call order.
    pub messages: Vec<ChatMessage>,
    /// An end or transfer the model asked for (the first, if several).
    pub step: Step,
}

impl Toolbox {
    /// Runs `requests` (the calls of one reply whose words were `text`) one after the other
    /// for call `call_sid`, and shapes the round's messages.
    pub async fn round(&self, call_sid: &str, text: &str, requests: &[ToolRequest]) -> Round {
        let calls = requests.iter().map(|r| r.call.clone()).collect();
        let mut messages = vec![ChatMessage::assistant_tool_calls(text, calls)];
        let mut step = Step::Continue;
        for request in requests {
            let result = match self.run(call_sid, request).await {
                ToolOutcome::Result(text) => text,
                ToolOutcome::EndCall => {
                    if step == Step::Continue {
                        step = Step::End;
                    }
                    BUILT_IN_DONE.to_owned()
                }
                ToolOutcome::Transfer { reason } => {
                    if step == Step::Continue {
                        step = Step::Transfer { reason };
                    }
                    BUILT_IN_DONE.to_owned()
                }
            };
            messages.push(ChatMessage::tool_result(&request.call, result));
        }
        Round { messages, step }
    }
}

/// A whole answer after any tool rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolAnswer {
    /// What the caller hears: the model's final words (or its closing words, for an end or a
    /// transfer; possibly empty then), or the fallback phrase when the rounds ran out.
    pub text: String,
    /// What happens after the words.
    pub step: Step,
    /// The tool traffic between the caller's words and `text`, for the history: each round's
    /// assistant message and its results. With `text` as the assistant's last message after
    /// them, the history obeys Mistral's rules.
    pub tool_messages: Vec<ChatMessage>,
}

/// Asks `llm` for the answer to `conversation` (which ends on the caller's words) offering the
/// toolbox's tools, running the operator's tools for up to [`MAX_TOOL_ROUNDS`] rounds.
pub async fn answer(
    llm: &Mistral,
    toolbox: &Toolbox,
    call_sid: &str,
    mut conversation: Vec<ChatMessage>,
    fallback: &str,
) -> Result<ToolAnswer, LlmError> {
    let start = conversation.len();
    for round in 0..=MAX_TOOL_ROUNDS {
        let reply = llm
            .complete_with_tools(&conversation, toolbox.offer())
            .await?;
        if reply.tool_calls.is_empty() {
            return Ok(ToolAnswer {
                text: reply.text,
                step: Step::Continue,
                tool_messages: conversation.split_off(start),
            });
        }
        if round == MAX_TOOL_ROUNDS {
            break;
        }
        let mut done = toolbox
            .round(call_sid, &reply.text, &reply.tool_calls)
            .await;
        if done.step != Step::Continue {
            // The closing words become the answer after the calls, not part of them.
            done.messages[0].content.clear();
            conversation.extend(done.messages);
            return Ok(ToolAnswer {
                text: reply.text,
                step: done.step,
                tool_messages: conversation.split_off(start),
            });
        }
        conversation.extend(done.messages);
    }
    tracing::warn!(
        rounds = MAX_TOOL_ROUNDS,
        "the model still asks for tools after the last round; the caller hears the fallback"
    );
    Ok(ToolAnswer {
        text: fallback.to_owned(),
        step: Step::Continue,
        tool_messages: conversation.split_off(start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn the_step_is_read_back_from_the_tool_traffic() {
        let lookup = call("abcDEF001", "lookup", "{}");
        let transfer = call("abcDEF002", TRANSFER_CALL, r#"{"reason": "billing"}"#);
        let traffic = vec![
            ChatMessage::assistant_tool_calls("", vec![lookup.clone()]),
            ChatMessage::tool_result(&lookup, "9:00"),
            ChatMessage::assistant_tool_calls("", vec![transfer.clone()]),
            ChatMessage::tool_result(&transfer, BUILT_IN_DONE),
        ];
        assert_eq!(
            Step::of(&traffic),
            Step::Transfer {
                reason: "billing".into()
            }
        );
        assert_eq!(Step::of(&traffic[..2]), Step::Continue);
        let refused = ChatMessage::tool_result(&transfer, r#"{"error": "there is no tool"}"#);
        assert_eq!(Step::of(&[traffic[2].clone(), refused]), Step::Continue);
        let end = call("abcDEF003", END_CALL, "");
        let ended = [
            ChatMessage::assistant_tool_calls("", vec![end.clone()]),
            ChatMessage::tool_result(&end, BUILT_IN_DONE),
        ];
        assert_eq!(Step::of(&ended), Step::End);
    }
}
