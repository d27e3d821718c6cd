//! How the Flux stand-in reads a handshake's query and a `Configure` message, as Flux does
//! (PROTOCOLS.md §10.1–10.2): what it refuses with 400, and the turn-detection thresholds.

use serde_json::{json, Value};

use super::flux::FRAMES_PER_THRESHOLD;
use super::wire::Query;

/// The models Flux serves.
const MODELS: [&str; 2] = ["flux-general-en", "flux-general-multi"];
/// Raw encodings Flux takes.
const ENCODINGS: [&str; 6] = ["linear16", "linear32", "mulaw", "alaw", "opus", "ogg-opus"];
/// Sample rates Flux takes for raw audio.
const SAMPLE_RATES: [&str; 5] = ["8000", "16000", "24000", "44100", "48000"];
/// Every query parameter Flux documents.
const KNOWN_PARAMS: [&str; 12] = [
    "model",
    "encoding",
    "sample_rate",
    "eot_threshold",
    "eager_eot_threshold",
    "eot_timeout_ms",
    "keyterm",
    "language_hint",
    "numerals",
    "profanity_filter",
    "mip_opt_out",
    "tag",
];

/// The turn-detection settings of one connection (query, then `Configure`).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// `eot_threshold` (0.5–1.0, default 0.7).
    pub eot_threshold: f64,
    /// `eager_eot_threshold` (0.3–0.9); `None`: no eager events.
    pub eager_eot_threshold: Option<f64>,
    /// `eot_timeout_ms` (500–60000, default 5000).
    pub eot_timeout_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            eot_threshold: 0.7,
            eager_eot_threshold: None,
            eot_timeout_ms: 5000,
        }
    }
}

impl Thresholds {
    /// Reads a handshake's query as Flux does: `Err` is the reason of a 400 (no Flux model, a
    /// bad encoding or rate, a threshold out of range). The second value lists what a real
    /// Flux would accept but the stand-in cannot honour or the bridge should not send.
    pub fn from_query(query: &Query) -> Result<(Self, Vec<String>), String> {
        let model = query.get("model").unwrap_or_default();
        if !MODELS.contains(&model) {
            return Err(format!(
                "No such model: {model:?} (Flux needs a flux model)"
            ));
        }
        let encoding = query.get("encoding");
        if let Some(encoding) = encoding {
            if !ENCODINGS.contains(&encoding) {
                return Err(format!("Unsupported encoding {encoding:?}"));
            }
            match query.get("sample_rate") {
                Some(rate) if SAMPLE_RATES.contains(&rate) => {}
                Some(rate) => return Err(format!("Unsupported sample_rate {rate:?}")),
                None => return Err("sample_rate is required with encoding".into()),
            }
        }
        let mut thresholds = Self::default();
        if let Some(raw) = query.get("eot_threshold") {
            thresholds.eot_threshold = number(raw, 0.5, 1.0, "eot_threshold")?;
        }
        if let Some(raw) = query.get("eager_eot_threshold") {
            thresholds.eager_eot_threshold = Some(number(raw, 0.3, 0.9, "eager_eot_threshold")?);
        }
        if let Some(raw) = query.get("eot_timeout_ms") {
            thresholds.eot_timeout_ms = number(raw, 500.0, 60_000.0, "eot_timeout_ms")? as u64;
        }
        let mut violations = Vec::new();
        if encoding != Some("mulaw") || query.get("sample_rate") != Some("8000") {
            violations.push(format!(
                "the stand-in expects Twilio's audio as is (encoding=mulaw&sample_rate=8000), got {:?}",
                query.raw
            ));
        }
        for key in query.params.keys() {
            if !KNOWN_PARAMS.contains(&key.as_str()) {
                violations.push(format!("{key} is not a Flux parameter"));
            }
        }
        Ok((thresholds, violations))
    }

    /// Applies a `Configure` message's `thresholds`; `Err` (nothing changed) when a value is
    /// out of range.
    pub fn configure(&mut self, thresholds: &Value) -> Result<(), String> {
        let mut next = self.clone();
        let value = |key: &str| thresholds.get(key).and_then(Value::as_f64);
        if let Some(x) = value("eot_threshold") {
            next.eot_threshold = within(x, 0.5, 1.0, "eot_threshold")?;
        }
        if let Some(x) = value("eager_eot_threshold") {
            next.eager_eot_threshold = Some(within(x, 0.3, 0.9, "eager_eot_threshold")?);
        }
        if let Some(x) = value("eot_timeout_ms") {
            next.eot_timeout_ms = within(x, 500.0, 60_000.0, "eot_timeout_ms")? as u64;
        }
        *self = next;
        Ok(())
    }

    /// As `ConfigureSuccess` echoes them.
    pub fn to_json(&self) -> Value {
        let mut out = json!({"eot_threshold": self.eot_threshold,
            "eot_timeout_ms": self.eot_timeout_ms});
        if let Some(eager) = self.eager_eot_threshold {
            out["eager_eot_threshold"] = json!(eager);
        }
        out
    }

    /// Silent frames before the turn ends: the threshold's frames, or the timeout's.
    pub(super) fn end_frames(&self) -> u64 {
        let model = if self.eot_threshold >= 1.0 {
            u64::MAX
        } else {
            (self.eot_threshold * FRAMES_PER_THRESHOLD).round() as u64
        };
        model.min(self.eot_timeout_ms / 20)
    }

    /// Silent frames before `EagerEndOfTurn`, when eager mode is on.
    pub(super) fn eager_frames(&self) -> Option<u64> {
        self.eager_eot_threshold
            .map(|t| (t * FRAMES_PER_THRESHOLD).round() as u64)
    }
}

fn number(raw: &str, low: f64, high: f64, name: &str) -> Result<f64, String> {
    let x = raw
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("{name} must be a number"))?;
    within(x, low, high, name)
}

fn within(x: f64, low: f64, high: f64, name: &str) -> Result<f64, String> {
    if (low..=high).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{name} must be between {low} and {high}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_like_flux_reads_it() {
        let parse = |raw: &str| Thresholds::from_query(&Query::parse(Some(raw)));
        let (t, violations) =
            parse("model=flux-general-en&encoding=mulaw&sample_rate=8000&eager_eot_threshold=0.5")
                .unwrap();
        assert_eq!(t.eager_eot_threshold, Some(0.5));
        assert!(violations.is_empty(), "{violations:?}");
        assert!(parse("model=nova-3&encoding=mulaw&sample_rate=8000").is_err());
        assert!(parse("encoding=mulaw&sample_rate=8000").is_err());
        assert!(parse("model=flux-general-en&encoding=mulaw").is_err());
        assert!(parse("model=flux-general-en&encoding=mp3&sample_rate=8000").is_err());
        assert!(
            parse("model=flux-general-en&encoding=mulaw&sample_rate=8000&eot_threshold=0.2")
                .is_err()
        );
        let (_, violations) =
            parse("model=flux-general-en&encoding=linear16&sample_rate=8000&interim_results=true")
                .unwrap();
        assert_eq!(violations.len(), 2, "{violations:?}");
    }
}
