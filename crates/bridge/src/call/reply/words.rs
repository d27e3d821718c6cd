//! The model's words as phrases to speak: its streamed text cut into phrases, and, with tools,
//! the tool rounds (the holding phrase when one is slow, the closing words of an end or a
//! transfer, the fallback when the rounds run out).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{ReplyError, ReplyEvent, Voice};
use crate::call::turns::ReplyId;
use crate::llm::mistral::{LlmError, Piece};
use crate::llm::ChatMessage;
use crate::tools::rounds::MAX_TOOL_ROUNDS;
use crate::tools::{Step, Toolbox, CLOSING, HOLDING_PHRASE, HOLD_AFTER};
use crate::tts::text::PhraseSplitter;

pub(super) type TextStream = Pin<Box<dyn Stream<Item = Result<String, ReplyError>> + Send>>;

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

/// The model's streamed text cut into phrases as it arrives; the rest becomes the last phrase.
/// `finished` runs once, when the model's last words arrive.
pub(super) fn phrases_of(
    deltas: impl Stream<Item = Result<String, LlmError>> + Send + Unpin + 'static,
    finished: impl FnOnce() + Send + 'static,
) -> TextStream {
    let state = (
        deltas,
        PhraseSplitter::new(),
        VecDeque::new(),
        Some(finished),
    );
    Box::pin(futures::stream::unfold(
        state,
        |(mut deltas, mut splitter, mut ready, mut finished)| async move {
            loop {
                let done = finished.is_none();
                if let Some(phrase) = ready.pop_front() {
                    return Some((Ok(phrase), (deltas, splitter, ready, finished)));
                }
                if done {
                    return None;
                }
                match deltas.next().await {
                    Some(Ok(text)) => ready.extend(splitter.push(&text)),
                    Some(Err(err)) => {
                        finished = None;
                        return Some((Err(err.into()), (deltas, splitter, ready, finished)));
                    }
                    None => {
                        if let Some(finished) = finished.take() {
                            finished();
                        }
                        ready.extend(splitter.finish());
                    }
                }
            }
        },
    ))
}

/// The work behind [`Reply::answer_with_tools`]: phrases go to `tx`, rounds and steps to
/// `events`.
pub(super) async fn rounds_of(
    id: ReplyId,
    voice: &Voice,
    tools: &CallTools,
    mut conversation: Vec<ChatMessage>,
    (tx, events): (
        &mpsc::Sender<Result<String, ReplyError>>,
        &mpsc::Sender<ReplyEvent>,
    ),
    mut released: watch::Receiver<bool>,
) -> Result<(), ReplyError> {
    let say = |text: String| async move {
        let _ = tx.send(Ok(text)).await;
    };
    let mut held = false;
    for round in 0..=MAX_TOOL_ROUNDS {
        let asked = Instant::now();
        let mut pieces = voice
            .llm
            .stream_with_tools(&conversation, tools.toolbox.offer())
            .await?;
        let metrics = &voice.metrics;
        metrics
            .llm_first_token
            .observe(asked.elapsed().as_secs_f64());
        let (mut splitter, mut text, mut calls) =
            (PhraseSplitter::new(), String::new(), Vec::new());
        while let Some(piece) = pieces.next().await {
            match piece? {
                Piece::Text(delta) => {
                    text.push_str(&delta);
                    for phrase in splitter.push(&delta) {
                        say(phrase).await;
                    }
                }
                Piece::ToolCalls(requests) => calls = requests,
            }
        }
        metrics.llm_total.observe(asked.elapsed().as_secs_f64());
        if let Some(rest) = splitter.finish() {
            say(rest).await;
        }
        if calls.is_empty() {
            return Ok(());
        }
        if round == MAX_TOOL_ROUNDS {
            tracing::warn!(
                rounds = MAX_TOOL_ROUNDS,
                "the model still asks for tools after the last round; the caller hears the fallback"
            );
            say(tools.fallback.clone()).await;
            return Ok(());
        }
        // A reply prepared before the turn ended calls no tool until it is released: a
        // dropped one must leave no trace, at the operator's end neither.
        if released.wait_for(|r| *r).await.is_err() {
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
                    say(HOLDING_PHRASE.to_owned()).await;
                    work.await
                }
            }
        };
        let messages = done.messages;
        let _ = events
            .send(ReplyEvent::ToolRound {
                id,
                messages: messages.clone(),
            })
            .await;
        let closing = match &done.step {
            Step::Continue => {
                conversation.extend(messages);
                continue;
            }
            Step::End => CLOSING,
            Step::Transfer { .. } => tools.transfer_phrase.as_str(),
        };
        if text.trim().is_empty() {
            say(closing.to_owned()).await;
        }
        let _ = events
            .send(ReplyEvent::Step {
                id,
                step: done.step,
            })
            .await;
        return Ok(());
    }
    Ok(())
}
