//! Small pieces every stand-in needs on the wire: the request's query string and key, request
//! ids, and a lock that survives a panicked holder (a record is still worth reading).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::http::HeaderMap;
use serde_json::Value;

/// A request's query string as a stand-in received it, kept both raw and as a multimap, so a
/// test can assert on repeated parameters (`keyterm=a&keyterm=b`) as well as on single ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Exactly what followed `?` (empty when there was no query).
    pub raw: String,
    /// Percent-decoded `key → values`, values in the order they appeared.
    pub params: BTreeMap<String, Vec<String>>,
}

impl Query {
    /// Parses a raw query string (without the `?`) the way a form decoder would; anything
    /// undecodable is skipped, like an unknown flag.
    pub fn parse(raw: Option<&str>) -> Self {
        let raw = raw.unwrap_or_default().to_owned();
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Ok(url) = reqwest::Url::parse(&format!("http://query.invalid/?{raw}")) {
            for (key, value) in url.query_pairs() {
                params
                    .entry(key.into_owned())
                    .or_default()
                    .push(value.into_owned());
            }
        }
        Self { raw, params }
    }

    /// The first value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// Every value of `key`, in order (empty when absent).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.params
            .get(key)
            .map(|values| values.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether `key` appears at all.
    pub fn has(&self, key: &str) -> bool {
        self.params.contains_key(key)
    }
}

/// A unique, UUID-shaped id: the providers put one in every response and header.
pub fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The `Authorization` header as text, if present and printable.
pub fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Whether the request's `Authorization` header is exactly `expected`.
pub fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes())
}

/// Locks `mutex`, reading through poisoning: a hook's state stays usable after a panic
/// elsewhere, and a stand-in never panics because a test did.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A message's content as text: a string, or the `text` of each chunk joined.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(chunks) => chunks.iter().filter_map(|c| c["text"].as_str()).collect(),
        _ => String::new(),
    }
}
