//! One relay reply in its own task: the model streamed with the call's tools (the same round
//! loop as the streaming call, [`crate::tools::stream::rounds`]), its words handed to the
//! session task as text to send — token by token as Mistral writes them — until cancelled.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::session::ReplyId;
use crate::llm::mistral::{LlmError, Mistral};
use crate::llm::ChatMessage;
use crate::metrics::Metrics;
use crate::queue;
use crate::tools::stream::{rounds, CallTools, Words};
use crate::tools::Step;
use crate::tts::text::PhraseSplitter;

/// How the model's words are cut before they go to Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunks {
    /// Each piece as Mistral streams it (Twilio's advice, and the faster first words: see
    /// the relay module's notes).
    #[default]
    Tokens,
    /// Whole phrases, as the streaming call speaks them.
    Phrases,
}

/// What a reply tells the session task.
#[derive(Debug)]
pub enum ReplyEvent {
    /// Words to send.
    Text {
        /// Which reply.
        id: ReplyId,
        /// The words.
        token: String,
    },
    /// A tool round ran.
    Round {
        /// Which reply.
        id: ReplyId,
        /// The assistant's calls and their results.
        messages: Vec<ChatMessage>,
    },
    /// The model ended or transferred the call.
    Step {
        /// Which reply.
        id: ReplyId,
        /// What next.
        step: Step,
    },
    /// No more words.
    Done {
        /// Which reply.
        id: ReplyId,
    },
    /// The model gave no answer.
    Failed {
        /// Which reply.
        id: ReplyId,
        /// Why.
        error: LlmError,
    },
}

/// What every reply of a session uses.
#[derive(Debug, Clone)]
pub struct Replier {
    /// The model.
    pub llm: Mistral,
    /// The call's tools.
    pub tools: Arc<CallTools>,
    /// Model latencies.
    pub metrics: Arc<Metrics>,
    /// How words are cut.
    pub chunks: Chunks,
    /// Where replies report.
    pub events: queue::Sender<ReplyEvent>,
}

impl Replier {
    /// Starts reply `id` to `messages`; cancelling `cancel` stops it at once.
    pub fn spawn(&self, id: ReplyId, messages: Vec<ChatMessage>, cancel: CancellationToken) {
        let replier = self.clone();
        let work = async move {
            let mut words = Sender {
                id,
                events: &replier.events,
                chunks: replier.chunks,
                splitter: PhraseSplitter::new(),
                sent: false,
            };
            let outcome = rounds(
                &replier.llm,
                &replier.tools,
                messages,
                &mut words,
                &replier.metrics,
            )
            .await;
            let event = match outcome {
                Ok(()) => ReplyEvent::Done { id },
                Err(error) => ReplyEvent::Failed { id, error },
            };
            let _ = replier.events.send(event).await;
        };
        tokio::spawn(
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = work => {}
                }
            }
            .in_current_span(),
        );
    }
}

/// A relay reply's [`Words`]: text to the session task.
struct Sender<'a> {
    /// The reply.
    id: ReplyId,
    /// The session task.
    events: &'a queue::Sender<ReplyEvent>,
    /// How words are cut.
    chunks: Chunks,
    /// Cuts phrases, with [`Chunks::Phrases`].
    splitter: PhraseSplitter,
    /// Some text was sent: fixed words after it need a space.
    sent: bool,
}

impl Sender<'_> {
    async fn send(&mut self, token: String) {
        if token.is_empty() {
            return;
        }
        self.sent = true;
        let event = ReplyEvent::Text { id: self.id, token };
        let _ = self.events.send(event).await;
    }
}

impl Words for Sender<'_> {
    async fn text(&mut self, delta: String) {
        match self.chunks {
            Chunks::Tokens => self.send(plain(&delta)).await,
            Chunks::Phrases => {
                for phrase in self.splitter.push(&delta) {
                    self.send(format!("{} ", plain(&phrase))).await;
                }
            }
        }
    }

    async fn text_done(&mut self) {
        if let Some(rest) = self.splitter.finish() {
            self.send(format!("{} ", plain(&rest))).await;
        }
    }

    async fn say(&mut self, phrase: &str) {
        let space = if self.sent { " " } else { "" };
        self.send(format!("{space}{phrase}")).await;
    }

    async fn round(&mut self, messages: Vec<ChatMessage>) {
        let event = ReplyEvent::Round {
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
        true
    }
}

/// A piece of model text without the Markdown marks a voice would read out (`*`, `#`, `` ` ``);
/// whole phrases go through [`crate::tts::text::speakable`] in the streaming call, but a token
/// is too small a piece for that.
fn plain(piece: &str) -> String {
    piece.replace(['*', '#', '`'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_marks_are_not_sent_to_the_voice() {
        assert_eq!(plain("**Eight** to `six` #"), "Eight to six ");
    }
}
