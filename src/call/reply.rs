//! One reply: the model's answer (or fixed text), made speakable, synthesized, cut into 20 ms
//! frames and queued for the writer — cancellable as a unit by its token.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::turns::ReplyId;
use super::writer::Speech;
use crate::audio::frames::{FrameChunker, FRAME_BYTES};
use crate::llm::mistral::{LlmError, Mistral};
use crate::llm::ChatMessage;
use crate::tts::deepgram::{DeepgramTts, TtsError};
use crate::tts::text::{speakable, split_for_tts, TTS_MAX_CHARS};

/// What to say.
#[derive(Debug)]
pub enum Script {
    /// Fixed text (the greeting).
    Say(String),
    /// Ask the model with this conversation and say its answer.
    Answer(Vec<ChatMessage>),
}

/// What a reply reports back to the call task.
#[derive(Debug)]
pub enum ReplyEvent {
    /// The text that is being spoken (the model's answer, before Markdown is stripped).
    Text {
        /// Which reply.
        id: ReplyId,
        /// The answer.
        text: String,
    },
    /// All audio and the closing mark are queued for the writer.
    Queued {
        /// Which reply.
        id: ReplyId,
        /// Frames queued.
        frames: usize,
    },
    /// The reply could not be produced.
    Failed {
        /// Which reply.
        id: ReplyId,
        /// Why.
        error: ReplyError,
    },
}

/// Why a reply failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The model gave no answer.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The answer could not be synthesized.
    #[error(transparent)]
    Tts(#[from] TtsError),
}

/// The providers a reply uses, shared by every call.
#[derive(Debug, Clone)]
pub struct Voice {
    /// Writes answers.
    pub llm: Mistral,
    /// Speaks them.
    pub tts: DeepgramTts,
}

/// Starts reply `id` in its own task. Cancelling `cancel` stops it at once: no request result
/// is used and no further frame is queued after that.
pub fn spawn(
    id: ReplyId,
    script: Script,
    voice: Arc<Voice>,
    speech: mpsc::Sender<Speech>,
    events: mpsc::Sender<ReplyEvent>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let work = produce(id, script, &voice, &speech, &events);
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = work => outcome,
        };
        let event = match outcome {
            Ok(frames) => ReplyEvent::Queued { id, frames },
            Err(error) => ReplyEvent::Failed { id, error },
        };
        let _ = events.send(event).await;
    });
}

async fn produce(
    id: ReplyId,
    script: Script,
    voice: &Voice,
    speech: &mpsc::Sender<Speech>,
    events: &mpsc::Sender<ReplyEvent>,
) -> Result<usize, ReplyError> {
    let text = match script {
        Script::Say(text) => text,
        Script::Answer(messages) => {
            let text = voice.llm.complete(&messages).await?;
            let _ = events
                .send(ReplyEvent::Text {
                    id,
                    text: text.clone(),
                })
                .await;
            text
        }
    };
    let spoken = speakable(&text);
    let mut chunker = FrameChunker::new();
    let mut frames: Vec<[u8; FRAME_BYTES]> = Vec::new();
    let mut queued = 0;
    for piece in split_for_tts(&spoken, TTS_MAX_CHARS) {
        let mut audio = voice.tts.synthesize(piece).await?;
        while let Some(chunk) = audio.next().await {
            chunker.push(&chunk?, |frame| frames.push(*frame));
            queued += queue(id, &mut frames, speech).await;
        }
    }
    frames.extend(chunker.finish());
    queued += queue(id, &mut frames, speech).await;
    let _ = speech.send(Speech::Mark { reply: id }).await;
    Ok(queued)
}

/// Hands completed frames to the writer, waiting while its queue is full.
async fn queue(
    reply: ReplyId,
    frames: &mut Vec<[u8; FRAME_BYTES]>,
    speech: &mpsc::Sender<Speech>,
) -> usize {
    let count = frames.len();
    for audio in frames.drain(..) {
        if speech.send(Speech::Frame { reply, audio }).await.is_err() {
            break;
        }
    }
    count
}
