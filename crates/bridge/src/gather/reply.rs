//! One answer of the Gather flow: ask the model in a task of its own, so that the webhook can
//! stop waiting at `LLM_TIMEOUT_MS` while the answer still gets stored for `/speak_response`.
//! The model is offered the tools; an operator's tool is run and its result fed back (up to
//! three rounds), and the whole answer is bounded by the Gather budget (`LLM_TIMEOUT_MS` +
//! `SPEAK_RESPONSE_WAIT_MS`: as long as anyone may still be waiting to speak it).

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::GatherServices;
use crate::store::{conversation, CallSid, Exchange, ReplyId};
use crate::tools::{rounds, Step, ToolAnswer};

pub use crate::tools::CLOSING;

/// What the task reports to the webhook that started it, if it is still listening.
pub type Outcome = Result<Spoken, NoReply>;

/// An answer as the caller hears it, and what happens after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoken {
    /// The words (never empty: an end or a transfer without words gets a phrase of ours).
    pub text: String,
    /// Whether the call goes on, ends or is put through.
    pub step: Step,
}

/// The model gave no usable answer (already logged by the task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReply;

/// Asks the model for the answer to `user` after `history`, in a spawned task. The task stores
/// the exchange (or marks the reply failed) whether or not anyone still waits, then reports on
/// the returned channel. It ends by itself: the whole answer is bounded by the Gather budget.
/// The task is tracked in [`GatherServices::replies`], so a drain waits for it.
pub fn spawn(
    services: Arc<GatherServices>,
    call: CallSid,
    id: ReplyId,
    history: &[Exchange],
    user: String,
) -> oneshot::Receiver<Outcome> {
    let messages = conversation(&services.system_prompt, history, &user);
    let (tx, rx) = oneshot::channel();
    let replies = services.replies.clone();
    let task = async move {
        let started = tokio::time::Instant::now();
        let asked = rounds::answer(
            &services.llm,
            &services.toolbox,
            call.as_str(),
            messages,
            &services.fallback_phrase,
        );
        let budget = services.budget();
        let answer = match tokio::time::timeout(budget, asked).await {
            Ok(answer) => answer.map_err(|err| err.to_string()),
            Err(_) => Err(format!("no answer within the Gather budget of {budget:?}")),
        };
        let outcome = match answer {
            Ok(answer) => {
                let spoken = spoken(&services, &answer);
                tracing::info!(ms = started.elapsed().as_millis() as u64, reply = %spoken.text,
                    step = ?spoken.step, "assistant replies");
                let exchange =
                    Exchange::new(user, spoken.text.as_str()).with_tools(answer.tool_messages);
                store(&services, &call, &id, exchange).await;
                Ok(spoken)
            }
            Err(err) => {
                tracing::error!(%err, "no reply from Mistral; the caller hears an apology");
                if let Err(err) = services.store.fail_reply(&call, &id).await {
                    tracing::warn!(%err, "could not mark the reply failed in the store");
                }
                Err(NoReply)
            }
        };
        let _ = tx.send(outcome);
    };
    replies.spawn(task.in_current_span());
    rx
}

/// What the caller hears: the model's words, or for an end or a transfer without words, our
/// closing phrase or `TRANSFER_PHRASE`.
fn spoken(services: &GatherServices, answer: &ToolAnswer) -> Spoken {
    let words = answer.text.trim();
    let text = match (&answer.step, &services.transfer) {
        (Step::End, _) if words.is_empty() => CLOSING,
        (Step::Transfer { .. }, Some(transfer)) => transfer.announcement(words),
        _ => words,
    };
    Spoken {
        text: text.to_owned(),
        step: answer.step.clone(),
    }
}

/// Stores the exchange if the call still waits for this reply.
async fn store(services: &GatherServices, call: &CallSid, id: &ReplyId, exchange: Exchange) {
    match services.store.finish_reply(call, id, &exchange).await {
        Ok(true) => tracing::debug!("exchange added to the call's history"),
        Ok(false) => tracing::info!(
            "reply not kept: the call ended or moved on to a newer question meanwhile"
        ),
        Err(err) => {
            tracing::warn!(%err, "reply not saved in the store; the call's history misses it")
        }
    }
}
