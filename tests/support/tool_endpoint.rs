//! An operator's tool endpoint for tests: a small axum server on 127.0.0.1 that records each
//! request, checks its `X-Ivr-Bridge-Signature` (its own HMAC-SHA256, not the server's code), and
//! answers by path, one path per way a tool can fail; and a tools file pointing at it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::spawn_http;

pub const SECRET: &str = "tools-test-secret";
pub const APPOINTMENT: &str = "Your appointment is on Monday at 9:00.";

/// A request the tool endpoint received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub content_type: String,
    pub signature_ok: bool,
    pub body: Value,
}

pub type Record = Arc<Mutex<Vec<Seen>>>;

/// The operator's endpoint: records each request, checks its signature, answers by path.
pub async fn endpoint(record: Record) -> String {
    async fn handle(
        State(record): State<Record>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
        mac.update(&body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let signature_ok = header("x-ivr-bridge-signature") == expected;
        let path = uri.path().to_owned();
        record.lock().expect("record").push(Seen {
            path: path.clone(),
            content_type: header("content-type"),
            signature_ok,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        if !signature_ok {
            return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
        }
        match path.as_str() {
            "/lookup" => APPOINTMENT.into_response(),
            "/sluggish" => {
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                APPOINTMENT.into_response()
            }
            "/slow" => std::future::pending().await,
            "/down" => (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response(),
            "/big" => "x".repeat(17 * 1024).into_response(),
            "/binary" => vec![0xffu8, 0xfe, 0x00].into_response(),
            "/badjson" => ([("content-type", "application/json")], "{oops").into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = Router::new()
        .route("/{*path}", post(handle))
        .with_state(record);
    format!("http://{}", spawn_http(app).await)
}

/// A tools file for `base` (each tool waits 2 s, `slow_tool` 100 ms), in a fresh temporary
/// folder; returns its path.
pub fn tools_file(base: &str, tag: &str) -> PathBuf {
    let tool = |name: &str, path: &str, parameters: Value| {
        json!({"name": name, "description": format!("The {name} tool."),
            "parameters": parameters, "url": format!("{base}{path}"), "timeout_ms": 2000})
    };
    let named = json!({"type": "object", "properties": {"name": {"type": "string"}},
        "required": ["name"]});
    let mut slow = tool("slow_tool", "/slow", named.clone());
    slow["timeout_ms"] = json!(100);
    let tools = json!([
        tool("lookup_appointment", "/lookup", named.clone()),
        slow,
        tool("down_tool", "/down", named.clone()),
        tool("big_tool", "/big", named.clone()),
        tool("binary_tool", "/binary", named.clone()),
        tool("badjson_tool", "/badjson", named.clone()),
        tool(
            "count_visits",
            "/lookup",
            json!({"type": "object",
            "properties": {"count": {"type": "integer"}}, "required": ["count"]})
        ),
    ]);
    write_temp(tag, "tools.json", &tools.to_string())
}

/// Writes `text` to `name` in a temporary folder of this process named by `tag`.
pub fn write_temp(tag: &str, name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ivr-tools-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a temp file");
    path
}
