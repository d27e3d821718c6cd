//! The model's words as phrases to speak: its streamed text cut into phrases, and, with tools,
//! the tool rounds (the holding phrase when one is slow, the closing words of an end or a
//! transfer, the fallback when the rounds run out).

use std::collections::VecDeque;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::watch;

use super::{ReplyError, ReplyEvent, Voice};
use crate::call::turns::ReplyId;
use crate::llm::mistral::LlmError;
use crate::llm::ChatMessage;
use crate::queue;
pub use crate::tools::stream::CallTools;
use crate::tools::stream::{rounds, Words};
use crate::tools::Step;
use crate::tts::text::PhraseSplitter;

pub(super) type TextStream = Pin<Box<dyn Stream<Item = Result<String, ReplyError>> + Send>>;

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
/// `events` (the round loop is [`crate::tools::stream::rounds`], shared with ConversationRelay).
pub(super) async fn rounds_of(
    id: ReplyId,
    voice: &Voice,
    tools: &CallTools,
    conversation: Vec<ChatMessage>,
    (tx, events): (
        &queue::Sender<Result<String, ReplyError>>,
        &queue::Sender<ReplyEvent>,
    ),
    released: watch::Receiver<bool>,
) -> Result<(), ReplyError> {
    let mut phrases = Phrases {
        id,
        splitter: PhraseSplitter::new(),
        tx,
        events,
        released,
    };
    rounds(
        &voice.llm,
        tools,
        conversation,
        &mut phrases,
        &voice.metrics,
    )
    .await?;
    Ok(())
}

/// A streaming call's [`Words`]: the model's text cut into phrases for the voice.
struct Phrases<'a> {
    /// The reply they belong to.
    id: ReplyId,
    /// Cuts the model's text into phrases.
    splitter: PhraseSplitter,
    /// Where phrases go, to be spoken.
    tx: &'a queue::Sender<Result<String, ReplyError>>,
    /// Where rounds and steps go, to the call.
    events: &'a queue::Sender<ReplyEvent>,
    /// Whether the reply was played: a held one runs no tool before.
    released: watch::Receiver<bool>,
}

impl Words for Phrases<'_> {
    async fn text(&mut self, delta: String) {
        for phrase in self.splitter.push(&delta) {
            let _ = self.tx.send(Ok(phrase)).await;
        }
    }

    async fn text_done(&mut self) {
        if let Some(rest) = self.splitter.finish() {
            let _ = self.tx.send(Ok(rest)).await;
        }
    }

    async fn say(&mut self, phrase: &str) {
        let _ = self.tx.send(Ok(phrase.to_owned())).await;
    }

    async fn round(&mut self, messages: Vec<ChatMessage>) {
        let event = ReplyEvent::ToolRound {
            id: self.id,
            messages,
        };
        let _ = self.events.send(event).await;
    }

    async fn step(&mut self, step: Step) {
        let _ = self
            .events
            .send(ReplyEvent::Step { id: self.id, step })
            .await;
    }

    async fn may_run_tools(&mut self) -> bool {
        self.released.wait_for(|r| *r).await.is_ok()
    }
}
