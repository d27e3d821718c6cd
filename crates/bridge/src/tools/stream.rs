//! Streamed tool rounds, for every mode whose replies stream (the Media Stream call, which
//! speaks phrases with its own voice, and ConversationRelay, which sends text to Twilio): the
//! model's words go out as they arrive; when it calls tools they run (the caller hears
//! [`HOLDING_PHRASE`] once if they take over [`HOLD_AFTER`]) and the model is asked again with
//! their results, for up to [`MAX_TOOL_ROUNDS`] rounds (then the fallback); an end or a
//! transfer comes after the model's closing words, or default ones.
//!
//! Where the words go is the mode's business: a [`Words`].

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use tokio::time::Instant;

use super::rounds::MAX_TOOL_ROUNDS;
use super::{Step, Toolbox, CLOSING, HOLDING_PHRASE, HOLD_AFTER};
use crate::llm::mistral::{LlmError, Mistral, Piece};
use crate::llm::ChatMessage;
use crate::metrics::Metrics;

/// What a call's replies may do besides talking: its tools, and the words they need.
#[derive(Debug, Clone)]
pub struct CallTools {
    /// The tools offered to the model, and how to run them.
    pub toolbox: Arc<Toolbox>,
    /// The call they act for (sent to the operator's tools).
    pub call_sid: String,
    /// Said before a transfer when the model gave no words (`TRANSFER_PHRASE`).
    pub transfer_phrase: String,
    /// Said when the rounds run out.
    pub fallback: String,
}

/// Where a streamed reply's words, tool rounds and steps go.
pub trait Words: Send {
    /// A piece of the model's text, as it streams in.
    fn text(&mut self, delta: String) -> impl Future<Output = ()> + Send;
    /// The model's text of one round is over (a phrase splitter lets go of its rest here).
    fn text_done(&mut self) -> impl Future<Output = ()> + Send;
    /// Fixed words: the holding phrase, closing words, the fallback.
    fn say(&mut self, phrase: &str) -> impl Future<Output = ()> + Send;
    /// A tool round ran: the assistant's calls, then one result per call (Mistral's shape).
    fn round(&mut self, messages: Vec<ChatMessage>) -> impl Future<Output = ()> + Send;
    /// The model ended the call or asked for a transfer, after the words said so far.
    fn step(&mut self, step: Step) -> impl Future<Output = ()> + Send;
    /// Resolves `true` once tools may run: a reply prepared before the turn ended runs none
    /// until it is released (`false`: it never will be).
    fn may_run_tools(&mut self) -> impl Future<Output = bool> + Send;
}

/// The model's answer to `conversation` (which ends on the caller's words) with `tools`, its
/// words and rounds handed to `words` as they come. The latencies of each model request go to
/// `metrics`.
pub async fn rounds<W: Words>(
    llm: &Mistral,
    tools: &CallTools,
    mut conversation: Vec<ChatMessage>,
    words: &mut W,
    metrics: &Metrics,
) -> Result<(), LlmError> {
    let mut held = false;
    for round in 0..=MAX_TOOL_ROUNDS {
        let asked = Instant::now();
        let mut pieces = llm
            .stream_with_tools(&conversation, tools.toolbox.offer())
            .await?;
        metrics
            .llm_first_token
            .observe(asked.elapsed().as_secs_f64());
        let (mut text, mut calls) = (String::new(), Vec::new());
        while let Some(piece) = pieces.next().await {
            match piece? {
                Piece::Text(delta) => {
                    text.push_str(&delta);
                    words.text(delta).await;
                }
                Piece::ToolCalls(requests) => calls = requests,
            }
        }
        metrics.llm_total.observe(asked.elapsed().as_secs_f64());
        words.text_done().await;
        if calls.is_empty() {
            return Ok(());
        }
        if round == MAX_TOOL_ROUNDS {
            tracing::warn!(
                rounds = MAX_TOOL_ROUNDS,
                "the model still asks for tools after the last round; the caller hears the fallback"
            );
            words.say(&tools.fallback).await;
            return Ok(());
        }
        // A reply prepared before the turn ended calls no tool until it is released: a
        // dropped one must leave no trace, at the operator's end neither.
        if !words.may_run_tools().await {
            return Ok(());
        }
        let work = tools.toolbox.round(&tools.call_sid, &text, &calls);
        tokio::pin!(work);
        let done = if held {
            work.await
        } else {
            tokio::select! {
                done = &mut work => done,
                () = tokio::time::sleep(HOLD_AFTER) => {
                    held = true;
                    words.say(HOLDING_PHRASE).await;
                    work.await
                }
            }
        };
        words.round(done.messages.clone()).await;
        let closing = match &done.step {
            Step::Continue => {
                conversation.extend(done.messages);
                continue;
            }
            Step::End => CLOSING,
            Step::Transfer { .. } => tools.transfer_phrase.as_str(),
        };
        if text.trim().is_empty() {
            words.say(closing).await;
        }
        words.step(done.step).await;
        return Ok(());
    }
    Ok(())
}

/// The calls of a tool round and their results: (name, arguments, result) per call, in order.
pub fn tool_calls_of(messages: &[ChatMessage]) -> Vec<(String, String, String)> {
    let results = |id: &str| {
        messages
            .iter()
            .find(|m| m.tool_call_id.as_deref() == Some(id))
            .map(|m| m.content.clone())
            .unwrap_or_default()
    };
    messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|call| (call.name.clone(), call.arguments.clone(), results(&call.id)))
        .collect()
}
