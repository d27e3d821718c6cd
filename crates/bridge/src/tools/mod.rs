//! What the assistant can do besides talk: the built-in `end_call` and `transfer_call`, and the
//! operator's own tools (`TOOLS_FILE`), which the bridge calls with a signed POST.
//!
//! [`Toolbox`] is the one place that knows the tools: the [`ToolOffer`] of every request, and
//! [`Toolbox::run`], which turns one call the model made into a [`ToolOutcome`] — a result for
//! the model (an operator tool's answer, or what went wrong, so the model can tell the caller),
//! or the end or transfer of the call. [`rounds`] drives whole tool rounds (the Gather flow's), [`stream`] streamed ones (the
//! streaming call's and ConversationRelay's).

pub mod file;
pub mod post;
pub mod rounds;
pub mod schema;
pub mod settings;
pub mod stream;

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::time::Instant;

pub use file::{OperatorTool, ToolsFile};
pub use rounds::{Round, Step, ToolAnswer, MAX_TOOL_ROUNDS};
pub use settings::{ToolSettings, Transfer, DEFAULT_TRANSFER_PHRASE};

use crate::llm::tools::{Tool, ToolChoice, ToolOffer, ToolRequest};
use crate::metrics::Metrics;
use crate::secret::Secret;

/// Said when the model ends the call without closing words of its own.
pub const CLOSING: &str = "Thank you for calling. Goodbye!";
/// Said, once per turn, while an operator's tool takes longer than [`HOLD_AFTER`].
pub const HOLDING_PHRASE: &str = "One moment, let me check that.";
/// How long a tool may take before the caller hears [`HOLDING_PHRASE`].
pub const HOLD_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The built-in tool that ends the call.
pub const END_CALL: &str = "end_call";
/// The built-in tool that hands the caller to a person.
pub const TRANSFER_CALL: &str = "transfer_call";
/// The metric label of a tool name the model invented.
const UNKNOWN_LABEL: &str = "unknown";

/// What became of one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolOutcome {
    /// Text for the model, as the `tool` message's content: an operator tool's answer, or a
    /// JSON `{"error": …}` saying what failed.
    Result(String),
    /// The model ended the call.
    EndCall,
    /// The model asked to hand the caller to a person.
    Transfer {
        /// Why, in the model's words.
        reason: String,
    },
}

impl ToolOutcome {
    /// A failure, as the result the model reads.
    fn error(message: impl std::fmt::Display) -> Self {
        Self::Result(json!({ "error": message.to_string() }).to_string())
    }
}

/// The tools of this server, and how to run them.
#[derive(Debug)]
pub struct Toolbox {
    /// The server's shared HTTP client.
    http: reqwest::Client,
    /// `TOOLS_FILE`'s tools.
    tools: Vec<OperatorTool>,
    /// Signs every request to a tool.
    secret: Secret,
    /// Whether `transfer_call` is offered (`TRANSFER_TO` is set).
    transfer: bool,
    /// What every model request offers.
    offer: ToolOffer,
    /// Where outcomes and latencies are counted.
    metrics: Arc<Metrics>,
}

impl Toolbox {
    /// The tools `settings` describe, called through `http`.
    pub fn new(settings: &ToolSettings, http: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        let tools = settings
            .tools_file
            .as_ref()
            .map(|f| f.tools.clone())
            .unwrap_or_default();
        let transfer = settings.transfer_to.is_some();
        let mut offered = vec![end_call()];
        if transfer {
            offered.push(transfer_call());
        }
        offered.extend(tools.iter().map(|t| t.tool.clone()));
        Self {
            http,
            tools,
            secret: settings.tools_secret.clone().unwrap_or_default(),
            transfer,
            offer: ToolOffer {
                tools: offered,
                choice: ToolChoice::Auto,
                parallel: false,
            },
            metrics,
        }
    }

    /// Whether the operator has tools of their own (`TOOLS_FILE`): only theirs can be slow.
    pub fn has_operator_tools(&self) -> bool {
        !self.tools.is_empty()
    }

    /// The tools offered with every request: `end_call`, `transfer_call` when `TRANSFER_TO` is
    /// set, then the operator's.
    pub fn offer(&self) -> &ToolOffer {
        &self.offer
    }

    /// Runs one call the model made, for call `call_sid`, and counts its outcome.
    pub async fn run(&self, call_sid: &str, request: &ToolRequest) -> ToolOutcome {
        let name = request.call.name.as_str();
        let operator = self.tools.iter().find(|t| t.tool.name == name);
        let (outcome, label) = match (name, operator) {
            (END_CALL, _) => (ToolOutcome::EndCall, "end_call"),
            (TRANSFER_CALL, _) if self.transfer => (transfer(request), "transfer"),
            (_, Some(tool)) => self.run_operator_tool(call_sid, tool, request).await,
            (_, None) => (
                ToolOutcome::error(format!("there is no tool named {name:?}")),
                "unknown_tool",
            ),
        };
        // Only names of this toolbox become labels: the model may invent any.
        let tool = if label == "unknown_tool" {
            UNKNOWN_LABEL
        } else {
            name
        };
        self.metrics.tool_call(tool, label);
        tracing::info!(tool, outcome = label, "tool call");
        outcome
    }

    /// Checks the arguments, POSTs them and reads the answer.
    async fn run_operator_tool(
        &self,
        call_sid: &str,
        tool: &OperatorTool,
        request: &ToolRequest,
    ) -> (ToolOutcome, &'static str) {
        let arguments = match &request.arguments {
            Ok(arguments) => arguments,
            Err(bad) => return (ToolOutcome::error(bad), "bad_arguments"),
        };
        if let Err(mismatch) = tool.schema.check_arguments(arguments) {
            let message = format!(
                "the arguments of {} do not match its parameters: {mismatch}",
                tool.tool.name
            );
            return (ToolOutcome::error(message), "bad_arguments");
        }
        let started = Instant::now();
        let answer = post::call(&self.http, &self.secret, tool, call_sid, arguments).await;
        self.metrics
            .tool_took(&tool.tool.name, started.elapsed().as_secs_f64());
        match answer {
            Ok(text) if text.trim().is_empty() => {
                (ToolOutcome::Result(json!({"ok": true}).to_string()), "ok")
            }
            Ok(text) => (ToolOutcome::Result(text), "ok"),
            Err(failure) => {
                tracing::warn!(tool = %tool.tool.name, %failure, "tool failed; the model is told");
                let outcome = failure.outcome();
                (ToolOutcome::error(failure), outcome)
            }
        }
    }
}

/// A transfer with the model's reason; a missing reason does not stop the transfer.
fn transfer(request: &ToolRequest) -> ToolOutcome {
    let reason = request
        .arguments
        .as_ref()
        .ok()
        .and_then(|args| args.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("not given");
    ToolOutcome::Transfer {
        reason: reason.to_owned(),
    }
}

fn end_call() -> Tool {
    Tool {
        name: END_CALL.into(),
        description: "End the phone call. Use it when the conversation is over: the caller \
                      said goodbye or asked to hang up. Say your closing words in the same \
                      message."
            .into(),
        parameters: json!({"type": "object", "properties": {}}),
    }
}

fn transfer_call() -> Tool {
    Tool {
        name: TRANSFER_CALL.into(),
        description: "Transfer the caller to a person on staff. Use it when the caller asks \
                      for a person, or needs help you cannot give. Tell the caller in the same \
                      message that you are putting them through."
            .into(),
        parameters: json!({"type": "object", "properties": {"reason": {"type": "string",
            "description": "Why the caller needs a person, in a few words."}},
            "required": ["reason"]}),
    }
}
