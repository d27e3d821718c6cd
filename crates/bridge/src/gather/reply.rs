//! One answer of the Gather flow: ask the model in a task of its own, so that the webhook can
//! stop waiting at the budget while the answer still gets stored for `/speak_response`.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::GatherServices;
use crate::store::{conversation, CallSid, Exchange, ReplyId};

/// What the task reports to the webhook that started it, if it is still listening.
pub type Outcome = Result<String, NoReply>;

/// The model gave no usable answer (already logged by the task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReply;

/// Asks the model for the answer to `user` after `history`, in a spawned task. The task stores
/// the exchange (or marks the reply failed) whether or not anyone still waits, then reports on
/// the returned channel. It ends by itself: the model request has its own time limit. The task
/// is tracked in [`GatherServices::replies`], so a drain waits for it.
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
        let outcome = match services.llm.complete(&messages).await {
            Ok(reply) => {
                tracing::info!(ms = started.elapsed().as_millis() as u64, %reply, "assistant replies");
                store(&services, &call, &id, Exchange::new(user, reply.as_str())).await;
                Ok(reply)
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
