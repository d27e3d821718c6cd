//! The TwiML Gather flow: Twilio recognises the caller's speech and speaks our answers with a
//! Polly voice; we answer each turn with TwiML.
//!
//! - `POST /call` greets inside a speech `<Gather>` whose action is `/process_speech`.
//! - `POST /process_speech` asks the model with the call's history and answers with the reply
//!   inside a barge-in `<Gather>`. The model may call tools: the operator's are run and their
//!   results fed back; `end_call` answers `<Say>` + `<Hangup/>`, `transfer_call` `<Say>` +
//!   `<Dial>` (then an apology and `<Hangup/>` if nobody takes the call). A silent turn is
//!   asked again once (the count rides in the action URL, `?silence=1`), then the call ends.
//!   A model slower than `LLM_TIMEOUT_MS` gets a holding phrase and a `<Redirect>` to
//!   `/speak_response` while it keeps writing.
//! - `POST /speak_response` waits (bounded) for a pending reply, else speaks the latest one.
//! - `POST /call_status` frees a finished call's history.
//!
//! Each turn may reach another instance; all call state is in the [`Store`]. A store or model
//! failure is never a 5xx: the caller hears an apology and can speak again.

mod pages;
mod reply;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::task::TaskTracker;

use reqwest::Url;

use crate::admission::Admission;
use crate::call::settings::AssistantSettings;
use crate::llm::mistral::Mistral;
use crate::store::{CallSid, ReplyId, ReplyState, Store, StoreError};
use crate::tools::{Step, Toolbox, Transfer};
use crate::twilio::url::public_base;
use pages::Pages;
pub use pages::{for_say, PageStyle, MAX_REPROMPTS, POLLY_MAX_CHARS};
pub use settings::GatherSettings;

/// Largest webhook body accepted; Twilio's forms are a few kilobytes.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// Characters of the caller's words kept (Twilio recognises at most 60 s of speech).
pub const MAX_SPEECH_CHARS: usize = 2000;
/// How often `/speak_response` looks for the pending reply.
const REPLY_POLL: Duration = Duration::from_millis(100);

/// Said when the conversation store cannot be reached.
const STORE_APOLOGY: &str =
    "Sorry, I'm having a technical problem right now. Please try your question again in a moment.";
/// Said when the model gave no answer.
const LLM_APOLOGY: &str = "Sorry, I couldn't find an answer just now. Could you ask me again?";
/// Said when the pending reply did not come in time.
const SLOW_APOLOGY: &str =
    "Sorry, that is taking longer than it should. Could you ask me again, perhaps more simply?";
/// Statuses after which a call is over ([PROTOCOLS §3.5]).
const TERMINAL_STATUSES: [&str; 5] = ["completed", "failed", "busy", "no-answer", "canceled"];

/// What the Gather webhooks share.
#[derive(Debug)]
pub struct GatherServices {
    /// Per-call histories and pending replies: memory or Redis.
    pub store: Store,
    /// Writes the replies.
    pub llm: Mistral,
    /// The assistant's instructions (shared with the streaming path).
    pub system_prompt: String,
    /// Spoken by `/call`.
    pub greeting: String,
    /// Voice and speech recognition settings of every page.
    pub style: PageStyle,
    /// How long `/process_speech` waits for the model.
    pub llm_timeout: Duration,
    /// How long `/speak_response` waits for a pending reply.
    pub speak_response_wait: Duration,
    /// The tools the model is offered, and runs them.
    pub toolbox: Arc<Toolbox>,
    /// Where `transfer_call` puts the caller through (`TRANSFER_TO`), when set.
    pub transfer: Option<Transfer>,
    /// Said when the model still asks for tools after the last round.
    pub fallback_phrase: String,
    /// Answers still being written. A drain waits for them: once the holding phrase has gone
    /// out, another instance will speak the answer, so it must reach the store before this
    /// process exits.
    pub replies: TaskTracker,
    /// Whether `/call` may start a new call (the same door as the Media Streams').
    pub admission: Arc<Admission>,
    /// `PUBLIC_URL`, when set: the base of every action URL.
    pub public_url: Option<Url>,
}

impl GatherServices {
    /// The Gather flow with these settings, asking `llm` (whose `LLM_TIMEOUT_MS` is
    /// `llm_timeout`) with `tools` and keeping conversations in `store`. A model request may
    /// take the whole Gather budget ([`GatherServices::budget`]).
    pub fn new(
        settings: &GatherSettings,
        assistant: &AssistantSettings,
        store: Store,
        llm: (Mistral, Duration),
        tools: (Arc<Toolbox>, Option<Transfer>),
        admission: Arc<Admission>,
        public_url: Option<Url>,
    ) -> Self {
        let (llm, llm_timeout) = llm;
        let (toolbox, transfer) = tools;
        Self {
            store,
            llm: llm.with_request_timeout(llm_timeout + settings.speak_response_wait),
            toolbox,
            transfer,
            fallback_phrase: assistant.fallback_phrase.clone(),
            system_prompt: assistant.system_prompt.clone(),
            greeting: assistant.greeting.clone(),
            style: PageStyle {
                voice: settings.twilio_voice.clone(),
                speech_model: settings.gather_speech_model.clone(),
                language: settings.language.clone(),
            },
            llm_timeout,
            speak_response_wait: settings.speak_response_wait,
            replies: TaskTracker::new(),
            admission,
            public_url,
        }
    }

    /// How long an answer may take: the webhook waits `LLM_TIMEOUT_MS`, then
    /// `/speak_response` up to `SPEAK_RESPONSE_WAIT_MS` more.
    pub fn budget(&self) -> Duration {
        self.llm_timeout + self.speak_response_wait
    }
}

/// The Gather flow's routes, with the body limit.
pub fn routes() -> Router<Arc<GatherServices>> {
    Router::new()
        .route("/call", post(call))
        .route("/process_speech", post(process_speech))
        .route("/speak_response", post(speak_response))
        .route("/call_status", post(call_status))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
}

/// The parameters we read from Twilio's form; the many others are ignored.
#[derive(Debug, Deserialize)]
struct TwilioForm {
    #[serde(rename = "CallSid")]
    call_sid: Option<String>,
    #[serde(rename = "SpeechResult")]
    speech_result: Option<String>,
    #[serde(rename = "CallStatus")]
    call_status: Option<String>,
}

type FormResult = Result<Form<TwilioForm>, FormRejection>;

/// `POST /call`: the greeting inside a speech Gather.
#[tracing::instrument(skip_all, fields(call_sid))]
async fn call(
    State(services): State<Arc<GatherServices>>,
    headers: HeaderMap,
    form: FormResult,
) -> Response {
    if let Some(refusal) = services.admission.refuse_new_call() {
        return refusal;
    }
    let call = match call_sid(form) {
        Ok((call, _)) => call,
        Err(refused) => return refused.into_response(),
    };
    tracing::info!(%call, "call answered: greeting inside a speech Gather");
    twiml(pages(&services, &headers).listen(&services.greeting, 0))
}

/// `POST /process_speech`: the caller's words in, the reply (or a holding phrase) out.
#[tracing::instrument(skip_all, fields(call_sid))]
async fn process_speech(
    State(services): State<Arc<GatherServices>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    form: FormResult,
) -> Response {
    let (call, form) = match call_sid(form) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    let pages = pages(&services, &headers);
    let speech = form.speech_result.as_deref().unwrap_or_default().trim();
    if speech.is_empty() {
        let silences = silence_count(query.as_deref());
        tracing::info!(silences, "caller said nothing");
        return twiml(pages.after_silence(silences));
    }
    let speech: String = speech.chars().take(MAX_SPEECH_CHARS).collect();
    tracing::info!(text = %speech, "caller said");
    let id = ReplyId::new();
    let history = match services.store.begin_reply(&call, &id).await {
        Ok(history) => history,
        Err(err) => return store_failed(&pages, &err),
    };
    let answer = reply::spawn(services.clone(), call, id, &history, speech);
    match timeout(services.llm_timeout, answer).await {
        Ok(Ok(Ok(reply))) => {
            twiml(pages.answer(&reply.text, &reply.step, services.transfer.as_ref()))
        }
        Ok(_) => twiml(pages.listen(LLM_APOLOGY, 0)),
        Err(_) => {
            tracing::warn!(
                budget_ms = services.llm_timeout.as_millis() as u64,
                "Mistral is slower than LLM_TIMEOUT_MS: holding phrase, then /speak_response"
            );
            twiml(pages.holding())
        }
    }
}

/// `POST /speak_response`: the pending reply once it is ready (bounded wait), else the latest.
#[tracing::instrument(skip_all, fields(call_sid))]
async fn speak_response(
    State(services): State<Arc<GatherServices>>,
    headers: HeaderMap,
    form: FormResult,
) -> Response {
    let call = match call_sid(form) {
        Ok((call, _)) => call,
        Err(refused) => return refused.into_response(),
    };
    let pages = pages(&services, &headers);
    let deadline = Instant::now() + services.speak_response_wait;
    loop {
        match services.store.reply_state(&call).await {
            Err(err) => return store_failed(&pages, &err),
            Ok(ReplyState::Latest(Some(reply))) => {
                let step = latest_step(&services.store, &call, &reply).await;
                return twiml(pages.answer(&reply, &step, services.transfer.as_ref()));
            }
            Ok(ReplyState::Latest(None)) => return twiml(pages.listen(&services.greeting, 0)),
            Ok(ReplyState::Failed) => return twiml(pages.listen(LLM_APOLOGY, 0)),
            Ok(ReplyState::Pending) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!("the pending reply did not come in time; apologising");
            return twiml(pages.listen(SLOW_APOLOGY, 0));
        }
        sleep(REPLY_POLL.min(deadline - now)).await;
    }
}

/// `POST /call_status`: a finished call's history is freed. Always 204: Twilio ignores the body.
#[tracing::instrument(skip_all, fields(call_sid))]
async fn call_status(State(services): State<Arc<GatherServices>>, form: FormResult) -> Response {
    let (call, form) = match call_sid(form) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    let status = form.call_status.as_deref().unwrap_or_default();
    if TERMINAL_STATUSES.contains(&status) {
        match services.store.delete(&call).await {
            Ok(()) => tracing::info!(status, "call ended: history freed"),
            Err(err) => {
                tracing::warn!(status, %err, "call ended but its history could not be freed now; it expires by itself")
            }
        }
    } else {
        tracing::debug!(status, "call status");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Whether the call's latest answer, `reply`, ended or transferred the call (read from the
/// tool traffic stored with it); a store that fails now lets the conversation go on.
async fn latest_step(store: &Store, call: &CallSid, reply: &str) -> Step {
    match store.history(call).await {
        Ok(history) => history
            .last()
            .filter(|exchange| exchange.assistant == reply)
            .map_or(Step::Continue, |exchange| Step::of(&exchange.tools)),
        Err(err) => {
            tracing::warn!(%err, "could not read how the latest answer ends; listening on");
            Step::Continue
        }
    }
}

/// A request that is not a Twilio webhook: answered with a 4xx and a one-line reason.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    reason: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.status, self.reason).into_response()
    }
}

/// The form and its `CallSid`, or why the request is refused.
fn call_sid(form: FormResult) -> Result<(CallSid, TwilioForm), Refused> {
    let Form(form) = form.map_err(|rejection| {
        tracing::warn!(%rejection, "webhook body is not a usable form");
        Refused {
            status: rejection.status(),
            reason: rejection.body_text(),
        }
    })?;
    let Some(call) = form.call_sid.as_deref().and_then(CallSid::parse) else {
        tracing::warn!("webhook without a valid CallSid refused");
        return Err(Refused {
            status: StatusCode::BAD_REQUEST,
            reason: "CallSid missing or malformed".into(),
        });
    };
    tracing::Span::current().record("call_sid", call.as_str());
    Ok((call, form))
}

/// The caller's consecutive silent turns, from our own `?silence=N` in the action URL.
/// Anything unreadable counts as the limit, so a mangled URL can only end the call sooner.
fn silence_count(query: Option<&str>) -> u32 {
    let Some(query) = query else { return 0 };
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("silence="))
        .map_or(0, |n| n.parse().unwrap_or(MAX_REPROMPTS))
}

fn pages<'a>(services: &'a GatherServices, headers: &HeaderMap) -> Pages<'a> {
    Pages::new(
        &services.style,
        public_base(services.public_url.as_ref(), headers),
    )
}

fn store_failed(pages: &Pages<'_>, err: &StoreError) -> Response {
    tracing::error!(%err, "conversation store unavailable; the caller hears an apology");
    twiml(pages.listen(STORE_APOLOGY, 0))
}

fn twiml(document: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], document).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_count_reads_our_own_query_only() {
        assert_eq!(silence_count(None), 0);
        assert_eq!(silence_count(Some("x=1")), 0);
        assert_eq!(silence_count(Some("silence=1")), 1);
        assert_eq!(silence_count(Some("a=b&silence=7")), 7);
        assert_eq!(silence_count(Some("silence=lots")), MAX_REPROMPTS);
    }
}
