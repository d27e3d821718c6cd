//! What the server says about the call, taken from its own log events, so the demo can show the
//! transcript and the reply whichever providers are behind it (stand-ins or real).
//!
//! A `tracing` layer picks the call task's story events ("caller's turn ended", "assistant
//! says", barge-in, errors) and hands them to the demo through a bounded channel; when the demo
//! falls behind, events are dropped, never the call's.

use std::fmt;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Events buffered between the server and the demo's printer.
const QUEUE: usize = 256;

/// Something the server did, with when it was logged.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// When the event was logged.
    pub at: Instant,
    /// What happened.
    pub kind: ServerEventKind,
}

/// The server events the demo tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEventKind {
    /// The caller's turn ended with these words (the transcript the model gets).
    TurnEnded(String),
    /// The assistant is saying this phrase.
    Phrase(String),
    /// The caller spoke over the assistant; its audio was cleared.
    BargeIn,
    /// A warning or error of the server, as logged.
    Problem(String),
}

/// The receiving end, read by the demo.
pub type ServerEvents = mpsc::Receiver<ServerEvent>;

/// The layer to install in the process's subscriber, and the events it will deliver.
pub fn layer() -> (CaptureLayer, ServerEvents) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (CaptureLayer { tx }, rx)
}

/// Forwards the call task's story events to the demo.
#[derive(Debug)]
pub struct CaptureLayer {
    /// Where events go; `try_send` so logging never waits on the demo.
    tx: mpsc::Sender<ServerEvent>,
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("ivr_bridge") || meta.target().contains("standin") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let kind = if *meta.level() <= Level::WARN {
            let detail = fields.error.map_or(String::new(), |e| format!(": {e}"));
            ServerEventKind::Problem(format!("{}{detail}", fields.message))
        } else if fields.message == "caller's turn ended" {
            ServerEventKind::TurnEnded(fields.text)
        } else if fields.message == "assistant says" {
            ServerEventKind::Phrase(fields.text)
        } else if fields.message.starts_with("caller interrupted") {
            ServerEventKind::BargeIn
        } else {
            return;
        };
        let _ = self.tx.try_send(ServerEvent {
            at: Instant::now(),
            kind,
        });
    }
}

/// The fields the demo reads from an event.
#[derive(Default)]
struct Fields {
    message: String,
    text: String,
    error: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let rendered = format!("{value:?}");
        match field.name() {
            "message" => self.message = rendered,
            "text" => self.text = rendered.trim_matches('"').to_owned(),
            "err" | "error" => self.error = Some(rendered),
            _ => {}
        }
    }
}
