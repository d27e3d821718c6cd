//! Mistral function calling end to end on a real socket: the server's own `Mistral` client
//! offers tools to the LLM stand-in, gets the calls back assembled (sent whole, as Mistral does,
//! or split across chunks), sends the results and hears the model use them; a history that
//! breaks Mistral's tool rules gets the stand-in's 400, and the same history repaired passes.

use futures::StreamExt;
use ivr_bridge::llm::history::{self, is_valid_tool_call_id};
use ivr_bridge::llm::mistral::{LlmError, Mistral, Piece};
use ivr_bridge::llm::tools::{Tool, ToolChoice, ToolOffer, ToolRequest};
use ivr_bridge::llm::{ChatMessage, Role, ToolCall};
use ivr_sim::standin::{faq, LlmStandIn, ToolCallShape};
use serde_json::{json, Value};

use crate::support::{start_llm, MISTRAL_KEY};

/// A client of the stand-in, with every other setting at its default.
fn client(llm: &LlmStandIn) -> Mistral {
    let config = ivr_bridge::Config::builder()
        .set("DEEPGRAM_API_KEY", "unused")
        .set("MISTRAL_API_KEY", MISTRAL_KEY)
        .set("MISTRAL_API_URL", llm.url())
        .build()
        .expect("config");
    Mistral::new(reqwest::Client::new(), &config.llm, config.keys.mistral())
}

/// `end_call` and `transfer_call`, as the bridge will offer them.
fn offer() -> ToolOffer {
    let end = Tool {
        name: "end_call".into(),
        description: "End the call when the conversation is over.".into(),
        parameters: json!({"type": "object", "properties": {}}),
    };
    let transfer = Tool {
        name: "transfer_call".into(),
        description: "Transfer the caller to a human.".into(),
        parameters: json!({"type": "object", "properties": {"reason": {"type": "string"}},
            "required": ["reason"]}),
    };
    ToolOffer {
        tools: vec![end, transfer],
        choice: ToolChoice::Auto,
        parallel: false,
    }
}

fn asking(words: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::User, words),
    ]
}

/// The streamed reply: its text and the tool calls that ended it.
async fn streamed(mistral: &Mistral, messages: &[ChatMessage]) -> (String, Vec<ToolRequest>) {
    let mut pieces = mistral
        .stream_with_tools(messages, &offer())
        .await
        .expect("a streamed reply");
    let (mut text, mut calls) = (String::new(), Vec::new());
    while let Some(piece) = pieces.next().await {
        match piece.expect("a piece") {
            Piece::Text(t) => {
                assert!(calls.is_empty(), "text after the tool calls");
                text.push_str(&t);
            }
            Piece::ToolCalls(c) => calls = c,
        }
    }
    (text, calls)
}

fn arguments(request: &ToolRequest) -> Value {
    Value::Object(request.arguments.clone().expect("arguments parse"))
}

#[tokio::test]
async fn a_streamed_tool_call_comes_back_whole_or_split_and_its_result_is_answered() {
    let llm = start_llm().await;
    let mistral = client(&llm);

    let (text, calls) = streamed(&mistral, &asking("Thanks, goodbye!")).await;
    assert_eq!(text, faq::GOODBYE, "the farewell comes with the call");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call.name, "end_call");
    assert!(is_valid_tool_call_id(&calls[0].call.id));
    assert_eq!(arguments(&calls[0]), json!({}));

    llm.set_tool_call_shape(ToolCallShape::Split);
    let words = "Can I speak to a person about my bill?";
    let (text, calls) = streamed(&mistral, &asking(words)).await;
    assert_eq!(text, "");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call.name, "transfer_call");
    assert_eq!(arguments(&calls[0]), json!({"reason": words}));

    let mut follow_up = asking(words);
    let call: ToolCall = calls[0].call.clone();
    follow_up.push(ChatMessage::assistant_tool_calls(text, vec![call.clone()]));
    follow_up.push(ChatMessage::tool_result(&call, "{\"ok\": true}"));
    assert_eq!(history::check(&follow_up), Ok(()));
    let (text, calls) = streamed(&mistral, &follow_up).await;
    assert!(calls.is_empty());
    assert_eq!(text, "transfer_call answered: {\"ok\": true}");

    let requests = llm.requests();
    assert_eq!(requests.len(), 3);
    let sent = &requests[2].body;
    assert_eq!(sent["tools"][1]["function"]["name"], "transfer_call");
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["parallel_tool_calls"], false);
    assert_eq!(
        sent["messages"][2]["tool_calls"][0],
        json!({"id": call.id, "type": "function",
            "function": {"name": "transfer_call", "arguments": call.arguments}}),
        "the call is echoed as received"
    );
    assert_eq!(requests[1].tool_calls.len(), 1);
}

#[tokio::test]
async fn whole_replies_carry_tool_calls_and_bad_arguments_surface_as_such() {
    let llm = start_llm().await;
    let mistral = client(&llm);
    let reply = mistral
        .complete_with_tools(&asking("Transfer me to an agent"), &offer())
        .await
        .expect("a reply");
    assert_eq!(reply.tool_calls.len(), 1);
    assert_eq!(reply.tool_calls[0].call.name, "transfer_call");

    llm.set_tool_call_shape(ToolCallShape::Malformed);
    let (_, calls) = streamed(&mistral, &asking("Transfer me to an agent")).await;
    assert_eq!(calls.len(), 1);
    let err = calls[0].arguments.clone().expect_err("malformed arguments");
    assert_eq!(err.name, "transfer_call");

    let plain = mistral
        .complete(&asking("What are your opening hours?"))
        .await
        .expect("no tools, the FAQ answer");
    assert_eq!(plain, faq::HOURS);
}

#[tokio::test]
async fn a_history_breaking_the_tool_rules_is_refused_and_passes_once_repaired() {
    let llm = start_llm().await;
    let mistral = client(&llm);
    let call = ToolCall {
        id: "abcDEF123".into(),
        name: "end_call".into(),
        arguments: "{}".into(),
    };
    let mut broken = asking("Goodbye");
    broken.push(ChatMessage::assistant_tool_calls("", vec![call.clone()]));
    broken.push(ChatMessage::tool_result(&call, "cancelled"));
    broken.push(ChatMessage::new(Role::User, "Wait, one more thing"));

    let refused = |result: Result<_, LlmError>| match result {
        Err(LlmError::Status { status, body }) => (status.as_u16(), body),
        Err(other) => panic!("a 400 expected, got {other}"),
        Ok(_) => panic!("a 400 expected, got an answer"),
    };
    let (status, body) = refused(mistral.stream_with_tools(&broken, &offer()).await.map(drop));
    assert_eq!(status, 400);
    assert!(
        body.contains("Unexpected role 'user' after role 'tool'"),
        "{body}"
    );

    let mut unanswered = asking("Goodbye");
    unanswered.push(ChatMessage::assistant_tool_calls("", vec![call.clone()]));
    unanswered.push(ChatMessage::new(Role::User, "Hello?"));
    let (status, body) = refused(
        mistral
            .complete_with_tools(&unanswered, &offer())
            .await
            .map(drop),
    );
    assert_eq!(status, 400);
    assert!(body.contains("Not the same number"), "{body}");

    let mut bad_id = asking("Goodbye");
    let other = ToolCall {
        id: "call_1".into(),
        ..call.clone()
    };
    bad_id.push(ChatMessage::assistant_tool_calls("", vec![other.clone()]));
    bad_id.push(ChatMessage::tool_result(&other, "ok"));
    let (status, body) = refused(
        mistral
            .complete_with_tools(&bad_id, &offer())
            .await
            .map(drop),
    );
    assert_eq!(status, 400);
    assert!(body.contains("3280"), "{body}");

    for history in [broken, unanswered, bad_id] {
        let repaired = history::repair(history);
        assert_eq!(history::check(&repaired), Ok(()));
        let (text, _) = streamed(&mistral, &repaired).await;
        assert!(!text.is_empty(), "the repaired history gets an answer");
    }
}
