//! Transcript delivery: a call's messages POSTed as JSON to `TRANSCRIPT_WEBHOOK_URL`, in order,
//! off the audio path.
//!
//! Each call gets its own delivery task fed by a bounded queue: the call only ever `try_send`s,
//! so a slow or failing receiver can never hold up audio; when the queue is full the message is
//! dropped, counted and logged. The task sends one message at a time (so a call's messages
//! arrive in order) through the server's pooled HTTP client, retrying connection failures,
//! timeouts, 5xx and 429 with backoff within a bounded time; other 4xx answers are final.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::queue::{self, TrySendError};

/// Messages one call may have waiting for delivery; beyond this they are dropped.
pub const QUEUE_MESSAGES: usize = 256;
/// Longest one HTTP attempt may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before each retry; when they are used up the message has failed (four attempts).
const BACKOFF: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(800),
    Duration::from_secs(2),
];
/// Longest one message may take, attempts and pauses included, before it is given up.
const MESSAGE_BUDGET: Duration = Duration::from_secs(10);
/// Dropped messages logged one by one before the log is thinned out.
const DROPS_LOGGED: u64 = 5;

/// One message of a call's transcript, as the receiver gets it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptMessage<'a> {
    /// A final segment: words the recogniser will not revise.
    Segment {
        /// Twilio's call SID.
        call_sid: &'a str,
        /// Twilio's stream SID.
        stream_sid: &'a str,
        /// 1, 2, 3… per call, in the order sent; lets a receiver spot gaps and retried duplicates.
        sequence: u64,
        /// `inbound` (the caller, on an incoming call) or `outbound` (the other party).
        track: &'static str,
        /// The words.
        text: &'a str,
        /// Seconds from the start of the stream to the segment's start.
        start: f64,
        /// Seconds from the start of the stream to the segment's end.
        end: f64,
        /// Deepgram's confidence, 0 to 1.
        confidence: f64,
    },
    /// The last message of a call.
    CallEnded {
        /// Twilio's call SID.
        call_sid: &'a str,
        /// Twilio's stream SID.
        stream_sid: &'a str,
        /// Follows the last segment's.
        sequence: u64,
        /// Final segments sent before this message.
        segments: u64,
        /// Seconds the stream lasted.
        duration: f64,
        /// Why it ended: `caller_hung_up`, `socket_closed`, `socket_failed` or `server_shutdown`.
        reason: &'static str,
        /// False when part of the call may be missing from the transcript: speech recognition
        /// was lost, or audio or messages were dropped.
        complete: bool,
    },
}

/// Where transcripts go, shared by every call.
#[derive(Debug, Clone)]
pub struct TranscriptWebhook {
    /// The server's pooled HTTP client.
    client: reqwest::Client,
    /// `TRANSCRIPT_WEBHOOK_URL`.
    url: Url,
    /// Counts delivered, failed and dropped messages.
    metrics: Arc<Metrics>,
}

impl TranscriptWebhook {
    /// Delivers to `url` through `client`.
    pub fn new(client: reqwest::Client, url: Url, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            url,
            metrics,
        }
    }

    /// Starts one call's delivery task; it logs in the current span (the call's). `cancel`
    /// abandons whatever is still queued (the server is shutting down).
    pub fn open(&self, cancel: CancellationToken) -> CallDelivery {
        let (queue, messages) = queue::bounded(QUEUE_MESSAGES);
        let task = tokio::spawn(
            self.clone()
                .deliver_all(messages, cancel)
                .instrument(tracing::Span::current()),
        );
        CallDelivery {
            queue,
            task,
            metrics: self.metrics.clone(),
            dropped: 0,
        }
    }

    async fn deliver_all(self, mut messages: queue::Receiver<Bytes>, cancel: CancellationToken) {
        loop {
            let body = tokio::select! {
                () = cancel.cancelled() => return,
                body = messages.recv() => match body {
                    Some(body) => body,
                    None => return,
                },
            };
            let delivered = tokio::select! {
                () = cancel.cancelled() => return,
                delivered = self.deliver(body) => delivered,
            };
            let outcome = if delivered { "delivered" } else { "failed" };
            self.metrics.transcript_webhook(outcome);
        }
    }

    /// POSTs one message until it is accepted, refused, or its time is up; true if accepted.
    async fn deliver(&self, body: Bytes) -> bool {
        let deadline = Instant::now() + MESSAGE_BUDGET;
        let mut retries = BACKOFF.iter();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = self
                .client
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(REQUEST_TIMEOUT.min(left))
                .send()
                .await;
            let (why, asked) = match sent {
                Ok(response) => match verdict(response.status()) {
                    Verdict::Delivered => return true,
                    Verdict::Refused => {
                        tracing::warn!(status = %response.status(), "transcript webhook refused a message; not retried");
                        return false;
                    }
                    Verdict::Retry => (
                        format!("HTTP {}", response.status()),
                        retry_after(response.headers()),
                    ),
                },
                Err(err) => (transport_error(&err), None),
            };
            let Some(&pause) = retries.next() else {
                tracing::warn!(%why, "transcript webhook message given up after its retries");
                return false;
            };
            let pause = asked.map_or(pause, |asked| asked.max(pause));
            if Instant::now() + pause >= deadline {
                tracing::warn!(%why, "transcript webhook message given up: out of time for retries");
                return false;
            }
            tracing::debug!(%why, ?pause, "transcript webhook failed; retrying");
            sleep(pause).await;
        }
    }
}

/// What to do after an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// 2xx: done.
    Delivered,
    /// 5xx, 429 or 408: the receiver may take it later.
    Retry,
    /// Any other answer: sending it again would get the same.
    Refused,
}

fn verdict(status: StatusCode) -> Verdict {
    if status.is_success() {
        Verdict::Delivered
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Verdict::Retry
    } else {
        Verdict::Refused
    }
}

/// A `Retry-After` given in seconds (the HTTP-date form is not honoured; the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// The log's words for a request that got no answer.
fn transport_error(err: &reqwest::Error) -> String {
    if err.is_connect() {
        "cannot connect".to_owned()
    } else if err.is_timeout() {
        "no answer in time".to_owned()
    } else {
        err.to_string()
    }
}

/// One call's side of its delivery task.
#[derive(Debug)]
pub struct CallDelivery {
    /// Serialized messages on their way to the task.
    queue: queue::Sender<Bytes>,
    /// The task; it ends when the queue is closed and empty.
    task: JoinHandle<()>,
    /// Counts dropped messages.
    metrics: Arc<Metrics>,
    /// Messages dropped because the queue was full.
    dropped: u64,
}

impl CallDelivery {
    /// Queues one message; never waits. False when it had to be dropped.
    pub fn send(&mut self, message: &TranscriptMessage<'_>) -> bool {
        let body = match serde_json::to_vec(message) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                tracing::warn!(%err, "transcript message cannot be serialized; dropped");
                return false;
            }
        };
        match self.queue.try_send(body) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.dropped += 1;
                self.metrics.transcript_webhook("dropped");
                if self.dropped <= DROPS_LOGGED || self.dropped % 100 == 0 {
                    tracing::warn!(
                        dropped = self.dropped,
                        "transcript webhook is behind: message dropped"
                    );
                }
                false
            }
        }
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// No more messages: waits up to `limit` for the queue to be delivered. Returns whether it
    /// was; if not, delivery goes on in the background until done or cancelled.
    pub async fn finish(self, limit: Duration) -> bool {
        let Self { queue, task, .. } = self;
        drop(queue);
        timeout(limit, task).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_errors_and_throttling_are_retried_other_refusals_are_not() {
        assert_eq!(verdict(StatusCode::OK), Verdict::Delivered);
        assert_eq!(verdict(StatusCode::NO_CONTENT), Verdict::Delivered);
        assert_eq!(verdict(StatusCode::INTERNAL_SERVER_ERROR), Verdict::Retry);
        assert_eq!(verdict(StatusCode::SERVICE_UNAVAILABLE), Verdict::Retry);
        assert_eq!(verdict(StatusCode::TOO_MANY_REQUESTS), Verdict::Retry);
        assert_eq!(verdict(StatusCode::BAD_REQUEST), Verdict::Refused);
        assert_eq!(verdict(StatusCode::NOT_FOUND), Verdict::Refused);
        assert_eq!(verdict(StatusCode::UNAUTHORIZED), Verdict::Refused);
    }

    #[test]
    fn retry_after_in_seconds_is_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    fn segment(sequence: u64) -> TranscriptMessage<'static> {
        TranscriptMessage::Segment {
            call_sid: "CA1",
            stream_sid: "MZ1",
            sequence,
            track: "inbound",
            text: "Hello.",
            start: 2.0,
            end: 3.5,
            confidence: 0.9,
        }
    }

    fn counted(metrics: &Metrics, outcome: &str) -> u64 {
        metrics
            .transcript_webhooks
            .get_or_create(&crate::metrics::WebhookOutcome {
                outcome: outcome.to_owned(),
            })
            .get()
    }

    /// A receiver on 127.0.0.1 that answers every POST with `status` and counts them.
    async fn receiver(status: StatusCode) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { status }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Url::parse(&format!("http://{addr}/hook")).unwrap(), hits)
    }

    #[tokio::test]
    async fn a_refusal_is_final_and_counted_as_failed() {
        let (url, hits) = receiver(StatusCode::BAD_REQUEST).await;
        let metrics = Arc::new(Metrics::new());
        let webhook = TranscriptWebhook::new(reqwest::Client::new(), url, metrics.clone());
        let mut delivery = webhook.open(CancellationToken::new());
        assert!(delivery.send(&segment(1)) && delivery.send(&segment(2)));
        assert!(delivery.finish(Duration::from_secs(5)).await);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(counted(&metrics, "failed"), 2);
        assert_eq!(counted(&metrics, "delivered"), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A receiver that accepts connections and never answers: the first message hangs.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let metrics = Arc::new(Metrics::new());
        let webhook = TranscriptWebhook::new(reqwest::Client::new(), url, metrics.clone());
        let cancel = CancellationToken::new();
        let mut delivery = webhook.open(cancel.clone());
        let sent = (1..=QUEUE_MESSAGES as u64 + 50)
            .filter(|&n| delivery.send(&segment(n)))
            .count();
        assert!(
            (QUEUE_MESSAGES..=QUEUE_MESSAGES + 1).contains(&sent),
            "{sent}"
        );
        let dropped = QUEUE_MESSAGES as u64 + 50 - sent as u64;
        assert_eq!(delivery.dropped(), dropped);
        assert_eq!(counted(&metrics, "dropped"), dropped);
        cancel.cancel();
        assert!(delivery.finish(Duration::from_secs(1)).await);
    }

    #[test]
    fn messages_have_the_documented_shape() {
        assert_eq!(
            serde_json::to_value(segment(1)).unwrap(),
            json!({"type":"segment","call_sid":"CA1","stream_sid":"MZ1","sequence":1,
                   "track":"inbound","text":"Hello.","start":2.0,"end":3.5,"confidence":0.9})
        );
        let ended = TranscriptMessage::CallEnded {
            call_sid: "CA1",
            stream_sid: "MZ1",
            sequence: 2,
            segments: 1,
            duration: 10.0,
            reason: "caller_hung_up",
            complete: true,
        };
        assert_eq!(
            serde_json::to_value(&ended).unwrap(),
            json!({"type":"call_ended","call_sid":"CA1","stream_sid":"MZ1","sequence":2,
                   "segments":1,"duration":10.0,"reason":"caller_hung_up","complete":true})
        );
    }
}
