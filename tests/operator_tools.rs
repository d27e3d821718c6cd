//! The assistant's tools through real sockets: the signed POST to an operator's endpoint
//! ([`crate::support::tool_endpoint`], which checks the HMAC), each way a tool can fail becoming
//! a result the model answers, the 3-round limit, built-in steps, and the operator's tools file
//! checked at start-up (a bad one stops the binary with one line, exit 2).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ivr_bridge::llm::history;
use ivr_bridge::llm::mistral::Mistral;
use ivr_bridge::llm::tools::ToolRequest;
use ivr_bridge::llm::{ChatMessage, Role, ToolCall};
use ivr_bridge::metrics::Metrics;
use ivr_bridge::tools::{rounds, Step, ToolAnswer, ToolOutcome, Toolbox};
use ivr_sim::standin::{faq, LlmStandIn, ToolCallShape};
use serde_json::{json, Value};

use crate::support::tool_endpoint::{
    endpoint, tools_file, write_temp, Record, Seen, APPOINTMENT, SECRET,
};
use crate::support::{start_llm, MISTRAL_KEY};

const FALLBACK: &str = "Sorry, I could not do that just now.";

/// A configuration with the stand-in as Mistral and `path` as the tools file.
fn config(llm: &LlmStandIn, path: &Path) -> ivr_bridge::Config {
    ivr_bridge::Config::builder()
        .set("DEEPGRAM_API_KEY", "unused")
        .set("MISTRAL_API_KEY", MISTRAL_KEY)
        .set("MISTRAL_API_URL", llm.url())
        .set("TOOLS_FILE", path.to_string_lossy())
        .set("TOOLS_SECRET", SECRET)
        .build()
        .expect("config")
}

/// The stand-in Mistral, a tool endpoint, and a toolbox with the tools file.
struct Bench {
    llm: LlmStandIn,
    mistral: Mistral,
    toolbox: Toolbox,
    metrics: Arc<Metrics>,
    seen: Record,
}

impl Bench {
    async fn start(tag: &str) -> Self {
        let llm = start_llm().await;
        let seen = Record::default();
        let base = endpoint(seen.clone()).await;
        let config = config(&llm, &tools_file(&base, tag));
        let metrics = Arc::new(Metrics::new());
        let http = reqwest::Client::new();
        Self {
            mistral: Mistral::new(http.clone(), &config.llm, config.keys.mistral()),
            toolbox: Toolbox::new(&config.tools, http, metrics.clone()),
            llm,
            metrics,
            seen,
        }
    }

    fn conversation(words: &str) -> Vec<ChatMessage> {
        vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, words),
        ]
    }

    async fn ask(&self, words: &str) -> ToolAnswer {
        let conversation = Self::conversation(words);
        rounds::answer(
            &self.mistral,
            &self.toolbox,
            "CAtools1",
            conversation,
            FALLBACK,
        )
        .await
        .expect("an answer")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("record").clone()
    }
}

/// The history a turn leaves obeys Mistral's rules once the caller speaks again.
fn assert_valid_history(words: &str, answer: &ToolAnswer) {
    let mut messages = Bench::conversation(words);
    messages.extend(answer.tool_messages.iter().cloned());
    messages.push(ChatMessage::new(Role::Assistant, answer.text.as_str()));
    messages.push(ChatMessage::new(Role::User, "And then?"));
    assert_eq!(history::check(&messages), Ok(()), "{messages:#?}");
}

#[tokio::test]
async fn a_tool_call_is_a_signed_post_and_its_answer_reaches_the_caller() {
    let bench = Bench::start("signed").await;
    let words = "Can you lookup appointment for Jane Doe?";
    let answer = bench.ask(words).await;
    assert_eq!(answer.step, Step::Continue);
    assert_eq!(
        answer.text,
        format!("lookup_appointment answered: {APPOINTMENT}")
    );

    let seen = bench.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/lookup");
    assert!(
        seen[0].signature_ok,
        "the HMAC of the body with TOOLS_SECRET"
    );
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(
        seen[0].body,
        json!({"call_sid": "CAtools1", "name": "lookup_appointment",
            "arguments": {"name": words}})
    );

    let requests = bench.llm.requests();
    assert_eq!(requests.len(), 2, "asked, then asked again with the result");
    let sent = &requests[1].body["messages"];
    assert_eq!(
        sent[2]["tool_calls"][0]["function"]["name"],
        "lookup_appointment"
    );
    assert_eq!(sent[3]["role"], "tool");
    assert_eq!(sent[3]["content"], APPOINTMENT);
    assert_eq!(sent[3]["tool_call_id"], sent[2]["tool_calls"][0]["id"]);
    assert_eq!(answer.tool_messages.len(), 2);
    assert_valid_history(words, &answer);

    let metrics = bench.metrics.render();
    assert!(
        metrics
            .contains(r#"ivr_bridge_tool_calls_total{tool="lookup_appointment",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ivr_bridge_tool_duration_seconds_count{tool="lookup_appointment"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn each_failure_becomes_a_result_the_model_answers() {
    let bench = Bench::start("failures").await;
    for (words, tool, error, outcome) in [
        (
            "Try the slow tool",
            "slow_tool",
            "slow_tool did not answer within 100 ms",
            "timeout",
        ),
        (
            "Try the down tool",
            "down_tool",
            "down_tool failed: HTTP 503: down for maintenance",
            "http_error",
        ),
        (
            "Try the big tool",
            "big_tool",
            "big_tool gave an answer larger than 16384 bytes",
            "too_large",
        ),
        (
            "Try the binary tool",
            "binary_tool",
            "binary_tool gave an unreadable answer: not UTF-8 text",
            "bad_response",
        ),
        (
            "Try the badjson tool",
            "badjson_tool",
            "badjson_tool gave an unreadable answer: not valid JSON",
            "bad_response",
        ),
        (
            "Please count visits",
            "count_visits",
            "the arguments of count_visits do not match its parameters: count is required",
            "bad_arguments",
        ),
    ] {
        let answer = bench.ask(words).await;
        let prefix = format!("{tool} answered: ");
        let result = answer.text.strip_prefix(&prefix).unwrap_or_else(|| {
            panic!(
                "{words}: the model did not answer the result: {}",
                answer.text
            )
        });
        let result: Value = serde_json::from_str(result).expect("a JSON result");
        let said = result["error"].as_str().unwrap_or_default();
        assert!(said.starts_with(error), "{words}: {said}");
        assert_valid_history(words, &answer);
        let line = format!(r#"ivr_bridge_tool_calls_total{{tool="{tool}",outcome="{outcome}"}} 1"#);
        assert!(bench.metrics.render().contains(&line), "{line} missing");
    }
    let asked: Vec<String> = bench.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        asked,
        ["/slow", "/down", "/big", "/binary", "/badjson"],
        "no POST for bad arguments"
    );
}

#[tokio::test]
async fn arguments_that_are_not_json_and_unknown_tools_are_told_to_the_model() {
    let bench = Bench::start("badargs").await;
    bench.llm.set_tool_call_shape(ToolCallShape::Malformed);
    let words = "Can you lookup appointment for Jane?";
    let answer = bench.ask(words).await;
    let result = answer
        .text
        .strip_prefix("lookup_appointment answered: ")
        .expect("the model answers the result");
    assert!(
        result.contains("the arguments of lookup_appointment are not a JSON object"),
        "{result}"
    );
    assert!(bench.seen().is_empty(), "nothing POSTed");

    let invented = ToolRequest::from(ToolCall {
        id: "abcDEF123".into(),
        name: "book_flight".into(),
        arguments: "{}".into(),
    });
    let outcome = bench.toolbox.run("CAtools1", &invented).await;
    assert_eq!(
        outcome,
        ToolOutcome::Result(r#"{"error":"there is no tool named \"book_flight\""}"#.into())
    );
    let not_offered = ToolRequest::from(ToolCall {
        id: "abcDEF124".into(),
        name: "transfer_call".into(),
        arguments: r#"{"reason": "x"}"#.into(),
    });
    let outcome = bench.toolbox.run("CAtools1", &not_offered).await;
    assert!(
        matches!(outcome, ToolOutcome::Result(_)),
        "no TRANSFER_TO: {outcome:?}"
    );
    let metrics = bench.metrics.render();
    assert!(
        metrics.contains(r#"ivr_bridge_tool_calls_total{tool="unknown",outcome="unknown_tool"} 2"#),
        "an invented name is not a label: {metrics}"
    );
    assert!(!metrics.contains("book_flight"), "{metrics}");
}

#[tokio::test]
async fn a_model_that_keeps_calling_tools_gets_three_rounds_then_the_fallback() {
    let bench = Bench::start("rounds").await;
    bench.llm.keep_calling_tools(true);
    let words = "Can you lookup appointment for Jane?";
    let answer = bench.ask(words).await;
    assert_eq!(answer.text, FALLBACK);
    assert_eq!(answer.step, Step::Continue);
    assert_eq!(bench.seen().len(), 3, "three rounds of the tool");
    assert_eq!(
        bench.llm.requests().len(),
        4,
        "the fourth request's calls are not run"
    );
    assert_eq!(answer.tool_messages.len(), 6);
    assert_valid_history(words, &answer);
}

#[tokio::test]
async fn end_call_and_transfer_call_are_steps_not_results() {
    let bench = Bench::start("builtins").await;
    let answer = bench.ask("Thanks, goodbye!").await;
    assert_eq!(answer.step, Step::End);
    assert_eq!(answer.text, faq::GOODBYE);
    assert_eq!(
        bench.llm.requests().len(),
        1,
        "nothing to ask after the end"
    );
    assert_eq!(Step::of(&answer.tool_messages), Step::End);
    assert_valid_history("Thanks, goodbye!", &answer);
}

// ---- The binary: a bad tools file stops it with one line ----

/// Runs the binary with the keys and `vars`, in an empty folder of its own.
fn run_binary(tag: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("ivr-tools-cli-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .env_clear()
        .env("DEEPGRAM_API_KEY", "dg-very-secret")
        .env("MISTRAL_API_KEY", "mi-very-secret")
        .envs(vars.iter().copied())
        .current_dir(&dir)
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&dir);
    output
}

#[test]
fn a_bad_tools_setting_stops_the_binary_with_one_line() {
    let good = tools_file("http://127.0.0.1:9", "cli-good");
    let duplicate = write_temp(
        "cli-dup",
        "tools.json",
        &json!([
            {"name": "a", "description": "A.", "parameters": {"type": "object"}, "url": "http://x.example/a"},
            {"name": "a", "description": "A.", "parameters": {"type": "object"}, "url": "http://x.example/a"}
        ])
        .to_string(),
    );
    let bad_json = write_temp("cli-json", "tools.json", "[{\"name\": ");
    let good = good.to_string_lossy().into_owned();
    let duplicate = duplicate.to_string_lossy().into_owned();
    let bad_json = bad_json.to_string_lossy().into_owned();
    for (tag, vars, needle) in [
        (
            "missing",
            vec![
                ("TOOLS_FILE", "/nonexistent/tools.json"),
                ("TOOLS_SECRET", "s"),
            ],
            "TOOLS_FILE /nonexistent/tools.json: cannot be read",
        ),
        (
            "dup",
            vec![("TOOLS_FILE", duplicate.as_str()), ("TOOLS_SECRET", "s")],
            "tool 2 (a): the name is used twice",
        ),
        (
            "json",
            vec![("TOOLS_FILE", bad_json.as_str()), ("TOOLS_SECRET", "s")],
            ": not valid JSON: ",
        ),
        (
            "secret",
            vec![("TOOLS_FILE", good.as_str())],
            "TOOLS_SECRET is not set",
        ),
        (
            "to",
            vec![("TRANSFER_TO", "555-1234")],
            "TRANSFER_TO must be",
        ),
        (
            "callerid",
            vec![
                ("TRANSFER_TO", "+15557654321"),
                ("TRANSFER_CALLER_ID", "me"),
            ],
            "TRANSFER_CALLER_ID must be",
        ),
    ] {
        let output = run_binary(tag, &vars);
        assert_eq!(output.status.code(), Some(2), "{tag}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{tag}: expected one line, got: {stderr}");
        assert!(
            lines[0].contains(needle),
            "{tag}: {needle} not in: {}",
            lines[0]
        );
        assert!(!lines[0].contains("very-secret"), "{}", lines[0]);
    }
}
