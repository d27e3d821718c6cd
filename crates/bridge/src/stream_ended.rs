//! `POST /stream_ended`: Twilio's `<Connect action>`, requested when a call's Media Stream or
//! ConversationRelay session is over (the latter with `SessionId`, `SessionStatus`,
//! `HandoffData`…, which are logged; PROTOCOLS §9.4).
//!
//! To end or hand over a call, the instance serving its stream records a [`NextStep`] in the
//! store ([`Store::set_next_step`]) and then closes the socket; Twilio requests this route, on
//! whichever instance, and runs the TwiML it gets (PROTOCOLS §8.1):
//! - a transfer → `<Dial action="…/stream_ended?after=dial">` with `<Number>` or `<Sip>`;
//! - a hang-up, no recorded step (the stream ended any other way), or a store that does not
//!   answer → `<Hangup/>`;
//! - relay mode: a session moved off a draining instance ([`NextStep::Resume`]), or one that
//!   failed with the call still up (`SessionStatus=failed`, no step recorded, `CallStatus` not
//!   terminal) → a new `<Connect><ConversationRelay>` that goes on with the call's history, at
//!   most [`MAX_RESUMPTIONS`] times in a row, then an apology and `<Hangup/>`
//!   ([`crate::relay::resume`]).
//!
//! The dial's outcome comes back here with `?after=dial` and `DialCallStatus`: `<Hangup/>` when
//! the dialled party answered, else the transfer's apology and `<Hangup/>`. (Without a dial
//! action Twilio would run the verbs after `<Dial>` also when the person who answered hangs up
//! first, and the caller would hear "nobody could take your call" after talking to someone.)
//!
//! Every answer is TwiML that ends in a hang-up or a dial, never an error: the request is
//! signature-checked before it gets here, so it is Twilio with a caller on the line, and a 4xx
//! would have Twilio play its "application error" message instead of a clean goodbye. A form
//! without a usable `CallSid` is logged and hung up.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use reqwest::Url;
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::relay::resume::{give_up, Cause, Resumer, MAX_RESUMPTIONS};
use crate::relay::RELAY_PATH;
use crate::store::{CallSid, NextStep, Store};
use crate::twilio::next_step::{after_dial, hangup, DEFAULT_APOLOGY};
use crate::twilio::url::{public_base, websocket_url};

/// The route Twilio requests when a stream is over; the `action` of `<Connect>`.
pub const STREAM_ENDED_PATH: &str = "/stream_ended";
/// The query that marks the request Twilio makes when a transfer's dial is over.
const AFTER_DIAL_QUERY: &str = "after=dial";
/// Largest form accepted; Twilio's are a few kilobytes.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Call statuses after which the call is over ([PROTOCOLS §3.5]).
const TERMINAL_STATUSES: [&str; 5] = ["completed", "failed", "busy", "no-answer", "canceled"];

/// What `/stream_ended` needs.
#[derive(Debug)]
pub struct StreamEndServices {
    /// Where next steps are recorded: the same store the calls write to (Redis when several
    /// instances share calls).
    pub store: Store,
    /// `<Say voice>` of the transfer apology (`TWILIO_VOICE`): Twilio speaks it, not our TTS.
    pub voice: String,
    /// `PUBLIC_URL`, when set: the base of the dial's action URL.
    pub public_url: Option<Url>,
    /// Relay mode: writes a new session for a call whose session failed or was moved; `None`
    /// in the other modes (a stream that fails hangs up).
    pub resumer: Option<Resumer>,
    /// Counts resumptions.
    pub metrics: Arc<Metrics>,
}

/// The route, with its body limit.
pub fn routes() -> Router<Arc<StreamEndServices>> {
    Router::new()
        .route(STREAM_ENDED_PATH, post(stream_ended))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
}

/// The `<Connect action>` URL for a call answered with base URL `base` (see
/// [`crate::twilio::url::public_base`]).
pub fn action_url(base: &str) -> String {
    format!("{base}{STREAM_ENDED_PATH}")
}

/// The parameters we read; Twilio sends many more.
#[derive(Debug, Deserialize)]
struct EndForm {
    #[serde(rename = "CallSid")]
    call_sid: Option<String>,
    #[serde(rename = "CallStatus")]
    call_status: Option<String>,
    #[serde(rename = "DialCallStatus")]
    dial_call_status: Option<String>,
    /// A ConversationRelay session's id (relay mode; PROTOCOLS §9.4).
    #[serde(rename = "SessionId")]
    session_id: Option<String>,
    /// `completed`, `ended` (our `end`), `failed` or `in-progress`.
    #[serde(rename = "SessionStatus")]
    session_status: Option<String>,
    /// Our `end` message's `handoffData`, as sent.
    #[serde(rename = "HandoffData")]
    handoff_data: Option<String>,
    /// Why a session failed.
    #[serde(rename = "ErrorCode")]
    error_code: Option<String>,
    /// Why a session failed, in words.
    #[serde(rename = "ErrorMessage")]
    error_message: Option<String>,
}

impl EndForm {
    /// A ConversationRelay session that failed: the call itself is still up unless its
    /// `CallStatus` says otherwise (checked first).
    fn session_failed(&self) -> bool {
        self.session_id.is_some() && self.session_status.as_deref() == Some("failed")
    }

    /// Logs how a ConversationRelay session ended, when this follows one. The next step comes
    /// from the store either way: `HandoffData` only says what the session asked for.
    fn log_session(&self) {
        let Some(session) = &self.session_id else {
            return;
        };
        let status = self.session_status.as_deref().unwrap_or("missing");
        let handoff = self.handoff_data.as_deref().unwrap_or_default();
        if status == "failed" {
            tracing::warn!(
                session,
                error_code = self.error_code.as_deref().unwrap_or_default(),
                error = self.error_message.as_deref().unwrap_or_default(),
                "relay session failed"
            );
        } else {
            tracing::info!(session, status, handoff, "relay session over");
        }
    }
}

/// `POST /stream_ended` (and `?after=dial`): the call's next step as TwiML.
#[tracing::instrument(skip_all, fields(call_sid))]
async fn stream_ended(
    State(services): State<Arc<StreamEndServices>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    form: Result<Form<EndForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            tracing::warn!(%rejection, "stream ended with an unusable form: hanging up");
            return twiml(hangup());
        }
    };
    let Some(call) = form.call_sid.as_deref().and_then(CallSid::parse) else {
        tracing::warn!("stream ended without a valid CallSid: hanging up");
        return twiml(hangup());
    };
    tracing::Span::current().record("call_sid", call.as_str());
    form.log_session();
    let status = form.call_status.as_deref().unwrap_or_default();
    if TERMINAL_STATUSES.contains(&status) {
        tracing::info!(status, "stream ended after the call did: freeing it");
        free(&services.store, &call).await;
        return twiml(hangup());
    }
    if query.as_deref() == Some(AFTER_DIAL_QUERY) {
        return after_transfer(&services, &call, form.dial_call_status.as_deref()).await;
    }
    let step = match services.store.take_next_step(&call).await {
        Ok(step) => step,
        Err(err) => {
            tracing::warn!(%err, "stream ended but the next step cannot be read: hanging up");
            return twiml(hangup());
        }
    };
    match step {
        Some(step @ NextStep::Transfer { .. }) => transfer(&services, &headers, &call, step).await,
        Some(NextStep::Hangup) => {
            tracing::info!("stream ended: hanging up, as the call asked");
            twiml(hangup())
        }
        Some(NextStep::Resume) => resume(&services, &headers, &call, Cause::Moved).await,
        None if form.session_failed() => resume(&services, &headers, &call, Cause::Failed).await,
        None => {
            tracing::info!("stream ended with no next step recorded: hanging up");
            twiml(hangup())
        }
    }
}

/// The call goes on in a new ConversationRelay session, if it is a relay call not resumed
/// too often already; else it ends (with an apology when the limit was reached).
async fn resume(
    services: &StreamEndServices,
    headers: &HeaderMap,
    call: &CallSid,
    cause: Cause,
) -> Response {
    let Some(resumer) = &services.resumer else {
        tracing::info!(
            cause = cause.label(),
            "stream over and not a relay call: hanging up"
        );
        return twiml(hangup());
    };
    let count = match services.store.count_resumption(call).await {
        Ok(count) => count,
        Err(err) => {
            // Without the count a failing relay could loop; without the store the new session
            // would not have the history either.
            tracing::warn!(%err, "relay session over but the store does not answer: hanging up");
            return twiml(give_up(&services.voice));
        }
    };
    if count > MAX_RESUMPTIONS {
        tracing::warn!(
            count,
            cause = cause.label(),
            "relay session over again: resumed too often, apologising and hanging up"
        );
        free(&services.store, call).await;
        return twiml(give_up(&services.voice));
    }
    let base = public_base(services.public_url.as_ref(), headers).unwrap_or_default();
    tracing::info!(
        count,
        cause = cause.label(),
        "relay session over with the call up: it goes on in a new session"
    );
    services.metrics.relay_resumed(cause.label());
    let relay_url = websocket_url(&base, RELAY_PATH);
    twiml(resumer.resume_twiml(action_url(&base), relay_url, cause))
}

/// Dials the transfer target. The step goes back into the store so that the dial's outcome
/// finds its apology; if it cannot, a missed transfer gets [`DEFAULT_APOLOGY`] instead.
async fn transfer(
    services: &StreamEndServices,
    headers: &HeaderMap,
    call: &CallSid,
    step: NextStep,
) -> Response {
    if let NextStep::Transfer { to, .. } = &step {
        tracing::info!(%to, "stream ended: transferring the call");
    }
    if let Err(err) = services.store.set_next_step(call, &step).await {
        tracing::warn!(%err, "transfer's apology not kept: a missed transfer gets the default one");
    }
    let base = public_base(services.public_url.as_ref(), headers).unwrap_or_default();
    let dial_action = format!("{}?{AFTER_DIAL_QUERY}", action_url(&base));
    twiml(step.after_stream(&dial_action))
}

/// The transfer's dial is over: hang up if someone answered, else apologise and hang up. Either
/// way the call ends here, so its stored state is freed.
async fn after_transfer(
    services: &StreamEndServices,
    call: &CallSid,
    dial_status: Option<&str>,
) -> Response {
    let step = services
        .store
        .take_next_step(call)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(%err, "the transfer's apology cannot be read: using the default one");
            None
        });
    let apology = match &step {
        Some(NextStep::Transfer { apology, .. }) => apology.as_str(),
        _ => DEFAULT_APOLOGY,
    };
    tracing::info!(
        dial_status = dial_status.unwrap_or("missing"),
        "transfer's dial ended"
    );
    free(&services.store, call).await;
    twiml(after_dial(dial_status, apology, &services.voice))
}

/// Frees the call's history, pending reply and next step, as `/call_status` does; a failure
/// only costs memory until the TTL.
async fn free(store: &Store, call: &CallSid) {
    if let Err(err) = store.delete(call).await {
        tracing::warn!(%err, "call's stored state not freed now; it expires by itself");
    }
}

fn twiml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}
