//! `TOOLS_FILE`: the operator's tools, read and checked once at start-up. Any problem is one
//! line naming the file, the tool and what is wrong, so a bad file stops the server before it
//! takes a call instead of failing in the middle of one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use super::schema::Schema;
use super::{END_CALL, TRANSFER_CALL};
use crate::llm::tools::Tool;

/// A tool's time limit when the file gives none.
pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 5000;
/// The longest time limit a tool may have: a caller on the line will not wait longer.
pub const MAX_TOOL_TIMEOUT_MS: u64 = 30_000;
/// Longest tool name Mistral accepts.
pub const MAX_NAME_CHARS: usize = 64;
/// Largest tools file read: far more than any sensible set of tools.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One of the operator's tools: what the model is told, where the bridge POSTs, how long it
/// waits, and the compiled schema its arguments are checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorTool {
    /// Name, description and parameters, as offered to the model.
    pub tool: Tool,
    /// Where a call is POSTed.
    pub url: Url,
    /// How long the bridge waits for the answer.
    pub timeout: Duration,
    /// `parameters`, compiled.
    pub schema: Schema,
}

/// The tools of `TOOLS_FILE`, in the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolsFile {
    /// The file they were read from, for log lines.
    pub path: PathBuf,
    /// The tools.
    pub tools: Vec<OperatorTool>,
}

/// One entry as written in the file; unknown fields are refused, so a typo (`timeout`) is
/// caught rather than silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    description: String,
    parameters: Value,
    url: String,
    timeout_ms: Option<u64>,
}

impl ToolsFile {
    /// Reads and checks the file at `path`; the error is one line naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let problem = |what: String| format!("TOOLS_FILE {}: {what}", path.display());
        let text = read(path).map_err(problem)?;
        Self::parse(path, &text).map_err(problem)
    }

    /// The value parser of `TOOLS_FILE`.
    pub(super) fn load_setting(raw: &str) -> Result<Self, String> {
        Self::load(Path::new(raw.trim()))
    }

    /// The tools in `text`, or what is wrong with them (without the file's name).
    fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|err| format!("not valid JSON: {err}"))?;
        let Value::Array(entries) = value else {
            return Err("must be a JSON array of tools".into());
        };
        let mut names = HashSet::new();
        let mut tools = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let tool = tool(entry).map_err(|(name, err)| match name {
                Some(name) => format!("tool {} ({name}): {err}", i + 1),
                None => format!("tool {}: {err}", i + 1),
            })?;
            if !names.insert(tool.tool.name.clone()) {
                return Err(format!(
                    "tool {} ({}): the name is used twice",
                    i + 1,
                    tool.tool.name
                ));
            }
            tools.push(tool);
        }
        Ok(Self {
            path: path.to_owned(),
            tools,
        })
    }
}

fn read(path: &Path) -> Result<String, String> {
    let unreadable = |err: std::io::Error| format!("cannot be read: {err}");
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!("is larger than {MAX_FILE_BYTES} bytes"));
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

/// One entry checked, or (its name if it has one, the problem).
fn tool(entry: Value) -> Result<OperatorTool, (Option<String>, String)> {
    let name = entry.get("name").and_then(Value::as_str).map(str::to_owned);
    let fail = |err: String| (name.clone(), err);
    let entry: Entry = serde_json::from_value(entry).map_err(|err| fail(err.to_string()))?;
    check_name(&entry.name).map_err(fail)?;
    if entry.description.trim().is_empty() {
        return Err(fail("description must not be empty".into()));
    }
    let url = Url::parse(entry.url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| fail("url must be an http:// or https:// URL".into()))?;
    let timeout_ms = entry.timeout_ms.unwrap_or(DEFAULT_TOOL_TIMEOUT_MS);
    if !(1..=MAX_TOOL_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(fail(format!(
            "timeout_ms must be from 1 to {MAX_TOOL_TIMEOUT_MS}"
        )));
    }
    let schema = Schema::parameters(&entry.parameters).map_err(fail)?;
    Ok(OperatorTool {
        tool: Tool {
            name: entry.name,
            description: entry.description,
            parameters: entry.parameters,
        },
        url,
        timeout: Duration::from_millis(timeout_ms),
        schema,
    })
}

/// A name Mistral accepts (`a-zA-Z0-9_-`, 1 to 64) and that is not a built-in tool's.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(format!(
            "name must be 1 to {MAX_NAME_CHARS} of a-z, A-Z, 0-9, _ and -"
        ));
    }
    if name == END_CALL || name == TRANSFER_CALL {
        return Err(format!("name {name} is a built-in tool's"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup() -> Value {
        json!({"name": "lookup_appointment", "description": "Find the caller's next appointment.",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                "required": ["name"]},
            "url": "https://clinic.example.com/tools/lookup"})
    }

    fn parse(tools: Value) -> Result<ToolsFile, String> {
        ToolsFile::parse(Path::new("tools.json"), &tools.to_string())
    }

    #[test]
    fn a_good_file_gives_its_tools_with_defaults() {
        let mut other = lookup();
        other["name"] = json!("book-visit");
        other["timeout_ms"] = json!(1500);
        let file = parse(json!([lookup(), other])).expect("a good file");
        assert_eq!(file.tools.len(), 2);
        assert_eq!(file.tools[0].tool.name, "lookup_appointment");
        assert_eq!(file.tools[0].timeout, Duration::from_millis(5000));
        assert_eq!(file.tools[1].timeout, Duration::from_millis(1500));
        assert!(parse(json!([])).expect("no tools").tools.is_empty());
    }

    #[test]
    fn each_problem_is_named() {
        let with = |key: &str, value: Value| {
            let mut tool = lookup();
            tool[key] = value;
            json!([tool])
        };
        let without = |key: &str| {
            let mut tool = lookup();
            tool.as_object_mut().map(|t| t.remove(key));
            json!([tool])
        };
        for (tools, error) in [
            (json!({"tools": []}), "must be a JSON array of tools"),
            (
                without("url"),
                "tool 1 (lookup_appointment): missing field `url`",
            ),
            (without("name"), "tool 1: missing field `name`"),
            (
                with("timeout", json!(5)),
                "tool 1 (lookup_appointment): unknown field `timeout`",
            ),
            (
                json!([lookup(), lookup()]),
                "tool 2 (lookup_appointment): the name is used twice",
            ),
            (
                with("name", json!("end_call")),
                "tool 1 (end_call): name end_call is a built-in",
            ),
            (
                with("name", json!("transfer_call")),
                "tool 1 (transfer_call): name transfer_call is",
            ),
            (
                with("name", json!("look up")),
                "tool 1 (look up): name must be 1 to 64",
            ),
            (with("name", json!("x".repeat(65))), "name must be 1 to 64"),
            (
                with("url", json!("ftp://clinic.example.com/x")),
                "url must be an http",
            ),
            (with("url", json!("not a url")), "url must be an http"),
            (
                with("timeout_ms", json!(0)),
                "timeout_ms must be from 1 to 30000",
            ),
            (
                with("timeout_ms", json!(3_600_000)),
                "timeout_ms must be from 1 to 30000",
            ),
            (
                with("parameters", json!("object")),
                "parameters must be a JSON Schema object",
            ),
            (
                with("parameters", json!({"type": "array"})),
                "parameters must be an object schema",
            ),
            (
                with("description", json!(" ")),
                "description must not be empty",
            ),
        ] {
            let err = parse(tools.clone()).expect_err("a bad file");
            assert!(err.contains(error), "{tools}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = ToolsFile::parse(Path::new("t.json"), "[{").expect_err("bad JSON");
        assert!(err.starts_with("not valid JSON: "), "{err}");
    }

    #[test]
    fn the_file_is_named_in_every_error() {
        let err = ToolsFile::load(Path::new("/nonexistent/tools.json")).expect_err("missing");
        assert!(
            err.starts_with("TOOLS_FILE /nonexistent/tools.json: cannot be read: "),
            "{err}"
        );
    }
}
