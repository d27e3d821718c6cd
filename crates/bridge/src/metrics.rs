//! What operators put on dashboards: `GET /metrics` in the Prometheus (OpenMetrics) text format,
//! through the official `prometheus-client` crate.
//!
//! One [`Metrics`] per process, shared by every call. Counters and histograms are atomics: a
//! call records without locks, and nothing on the 20 ms frame path records at all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How a call ended, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `caller_hung_up`, `socket_closed`, `socket_failed`, `stt_unavailable`, `server_shutdown`.
    pub outcome: String,
}

/// A provider failure, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderError {
    /// `deepgram_stt`, `deepgram_tts` or `mistral`.
    pub provider: String,
    /// What went wrong, e.g. `dropped`, `unreachable`, `http_429`, `timeout`.
    pub kind: String,
}

/// What became of a transcript webhook message, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookOutcome {
    /// `delivered` (2xx), `failed` (4xx, or retries used up) or `dropped` (the call's delivery
    /// queue was full).
    pub outcome: String,
}

/// A tool call's fate, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolCallLabels {
    /// The tool's name: a built-in, one of `TOOLS_FILE`'s, or `unknown` for a name the model
    /// invented (so the label set stays bounded).
    pub tool: String,
    /// `ok`, `timeout`, `http_error`, `bad_response`, `too_large`, `unknown_tool`,
    /// `bad_arguments`, `end_call` or `transfer`.
    pub outcome: String,
}

/// Why a ConversationRelay session was resumed in a new one, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResumeCause {
    /// `failed` (the session dropped with the call up) or `moved` (off a draining instance).
    pub cause: String,
}

/// A tool, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabel {
    /// The tool's name (one of `TOOLS_FILE`'s).
    pub tool: String,
}

/// Histograms by tool; the constructor gives each tool the latency buckets.
pub type ToolHistograms = Family<ToolLabel, Histogram, fn() -> Histogram>;

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    /// Where the metrics are registered, for rendering.
    registry: Registry,
    /// Media Streams in progress.
    pub active_calls: Gauge,
    /// Calls ended, by outcome.
    pub calls: Family<Outcome, Counter>,
    /// Caller turns sent to the model.
    pub turns: Counter,
    /// Times a caller talked over the assistant.
    pub barge_ins: Counter,
    /// Provider failures, by provider and kind.
    pub provider_errors: Family<ProviderError, Counter>,
    /// End of a final segment's audio → its transcript arriving (seconds).
    pub stt_final_latency: Histogram,
    /// Model request → first words (seconds).
    pub llm_first_token: Histogram,
    /// Model request → last words (seconds).
    pub llm_total: Histogram,
    /// Synthesis request → first audio bytes (seconds).
    pub tts_first_byte: Histogram,
    /// End of the caller's speech → first reply audio sent (seconds).
    pub turn_latency: Histogram,
    /// Transcript webhook messages, by outcome (transcription mode).
    pub transcript_webhooks: Family<WebhookOutcome, Counter>,
    /// Times a silent caller was asked whether they are still there.
    pub idle_prompts: Counter,
    /// Callers' interruptions of the assistant, by outcome: `barge_in` (they took the floor),
    /// `resumed` (a backchannel or noise: the reply went on), `ignored` (too few words).
    pub interruptions: Family<Outcome, Counter>,
    /// Replies prepared before the caller's turn ended, by outcome: `used` (the turn ended on
    /// the text they answered) or `discarded` (the caller said more).
    pub preemptive_replies: Family<Outcome, Counter>,
    /// Tool calls the model made, by tool and outcome.
    pub tool_calls: Family<ToolCallLabels, Counter>,
    /// An operator tool's request → its answer (seconds), by tool.
    pub tool_duration: ToolHistograms,
    /// Relay calls that went on in a new ConversationRelay session, by cause.
    pub relay_resumptions: Family<ResumeCause, Counter>,
}

/// Buckets from 10 ms to about 20 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `ivr_bridge` prefix.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("ivr_bridge");
        let metrics = Self {
            registry: Registry::default(),
            active_calls: Gauge::default(),
            calls: Family::default(),
            turns: Counter::default(),
            barge_ins: Counter::default(),
            provider_errors: Family::default(),
            stt_final_latency: latency_buckets(),
            llm_first_token: latency_buckets(),
            llm_total: latency_buckets(),
            tts_first_byte: latency_buckets(),
            turn_latency: latency_buckets(),
            transcript_webhooks: Family::default(),
            idle_prompts: Counter::default(),
            interruptions: Family::default(),
            preemptive_replies: Family::default(),
            tool_calls: Family::default(),
            tool_duration: Family::new_with_constructor(latency_buckets),
            relay_resumptions: Family::default(),
        };
        registry.register(
            "active_calls",
            "Media Streams in progress",
            metrics.active_calls.clone(),
        );
        registry.register("calls", "Calls ended, by outcome", metrics.calls.clone());
        registry.register(
            "turns",
            "Caller turns sent to the model",
            metrics.turns.clone(),
        );
        registry.register(
            "barge_ins",
            "Times a caller talked over the assistant",
            metrics.barge_ins.clone(),
        );
        registry.register(
            "provider_errors",
            "Provider failures, by provider and kind",
            metrics.provider_errors.clone(),
        );
        registry.register(
            "stt_final_latency_seconds",
            "End of a final segment's audio to its transcript",
            metrics.stt_final_latency.clone(),
        );
        registry.register(
            "llm_first_token_seconds",
            "Model request to its first words",
            metrics.llm_first_token.clone(),
        );
        registry.register(
            "llm_total_seconds",
            "Model request to its last words",
            metrics.llm_total.clone(),
        );
        registry.register(
            "tts_first_byte_seconds",
            "Synthesis request to its first audio",
            metrics.tts_first_byte.clone(),
        );
        registry.register(
            "turn_latency_seconds",
            "End of the caller's speech to the first reply audio",
            metrics.turn_latency.clone(),
        );
        registry.register(
            "transcript_webhooks",
            "Transcript webhook messages, by outcome: delivered, failed or dropped",
            metrics.transcript_webhooks.clone(),
        );
        registry.register(
            "idle_prompts",
            "Times a silent caller was asked whether they are still there",
            metrics.idle_prompts.clone(),
        );
        registry.register(
            "interruptions",
            "Callers' interruptions of the assistant, by outcome: barge_in, resumed or ignored",
            metrics.interruptions.clone(),
        );
        registry.register(
            "preemptive_replies",
            "Replies prepared before the caller's turn ended, by outcome: used or discarded",
            metrics.preemptive_replies.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls the model made, by tool and outcome",
            metrics.tool_calls.clone(),
        );
        registry.register(
            "tool_duration_seconds",
            "An operator tool's request to its answer, by tool",
            metrics.tool_duration.clone(),
        );
        registry.register(
            "relay_resumptions",
            "Relay calls that went on in a new ConversationRelay session, by cause: failed or moved",
            metrics.relay_resumptions.clone(),
        );
        Self {
            registry: root,
            ..metrics
        }
    }

    /// Counts a transcript webhook message's fate: `delivered`, `failed` or `dropped`.
    pub fn transcript_webhook(&self, outcome: &str) {
        self.transcript_webhooks
            .get_or_create(&WebhookOutcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a tool call's outcome (`tool` must come from a bounded set of names).
    pub fn tool_call(&self, tool: &str, outcome: &str) {
        self.tool_calls
            .get_or_create(&ToolCallLabels {
                tool: tool.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records how long an operator tool took to answer.
    pub fn tool_took(&self, tool: &str, seconds: f64) {
        self.tool_duration
            .get_or_create(&ToolLabel {
                tool: tool.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts a relay call going on in a new session: `failed` or `moved`.
    pub fn relay_resumed(&self, cause: &str) {
        self.relay_resumptions
            .get_or_create(&ResumeCause {
                cause: cause.to_owned(),
            })
            .inc();
    }

    /// Counts a call's end.
    pub fn call_ended(&self, outcome: &str) {
        self.calls
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a provider failure.
    pub fn provider_error(&self, provider: &str, kind: &str) {
        self.provider_errors
            .get_or_create(&ProviderError {
                provider: provider.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let metrics = Metrics::new();
        metrics.active_calls.inc();
        metrics.turns.inc();
        metrics.call_ended("caller_hung_up");
        metrics.provider_error("mistral", "http_429");
        metrics.turn_latency.observe(0.35);
        metrics.transcript_webhook("dropped");
        metrics.tool_call("lookup", "timeout");
        metrics.tool_took("lookup", 0.2);
        let text = metrics.render();
        for line in [
            "ivr_bridge_active_calls 1",
            "ivr_bridge_turns_total 1",
            "ivr_bridge_calls_total{outcome=\"caller_hung_up\"} 1",
            "ivr_bridge_provider_errors_total{provider=\"mistral\",kind=\"http_429\"} 1",
            "ivr_bridge_turn_latency_seconds_count 1",
            "ivr_bridge_transcript_webhooks_total{outcome=\"dropped\"} 1",
            "ivr_bridge_tool_calls_total{tool=\"lookup\",outcome=\"timeout\"} 1",
            "ivr_bridge_tool_duration_seconds_count{tool=\"lookup\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
