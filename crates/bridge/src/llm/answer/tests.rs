use super::*;

/// The text of one streamed chunk, if it carries any.
fn delta_text(data: &str) -> Result<Option<String>, LlmError> {
    delta_parts(data).map(|(text, _)| text)
}

#[test]
fn reads_string_content() {
    let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","tool_calls":null,"prefix":false},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    assert_eq!(reply_text(body).unwrap(), "Hello!");
}

#[test]
fn reads_chunked_content_and_skips_thinking() {
    let body = br#"{"choices":[{"message":{"role":"assistant","content":[{"type":"thinking","thinking":[]},{"type":"text","text":"Open "},{"type":"text","text":"at eight."}]}}]}"#;
    assert_eq!(reply_text(body).unwrap(), "Open at eight.");
}

#[test]
fn empty_or_missing_content_is_an_error() {
    assert!(reply_text(br#"{"choices":[]}"#).is_err());
    assert!(reply_text(br#"{"choices":[{"message":{"content":"  "}}]}"#).is_err());
    assert!(reply_text(b"not json").is_err());
}

#[test]
fn streamed_chunks_yield_their_text() {
    let role = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
    assert_eq!(delta_text(role).unwrap(), None);
    let piece = r#"{"choices":[{"index":0,"delta":{"content":"Open "},"finish_reason":null}]}"#;
    assert_eq!(delta_text(piece).unwrap().as_deref(), Some("Open "));
    let last = r#"{"choices":[{"index":0,"delta":{"content":"daily."},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
    assert_eq!(delta_text(last).unwrap().as_deref(), Some("daily."));
    let chunks = r#"{"choices":[{"delta":{"content":[{"type":"text","text":"Hi"}]}}]}"#;
    assert_eq!(delta_text(chunks).unwrap().as_deref(), Some("Hi"));
    assert!(delta_text("{not json").is_err());
    assert_eq!(delta_text(r#"{"choices":[]}"#).unwrap(), None);
}

#[test]
fn a_whole_answer_with_tool_calls_is_a_reply() {
    let body = br#"{"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"","tool_calls":[{"id":"D681PevKs","type":"function","index":0,"function":{"name":"transfer_call","arguments":"{\"reason\": \"billing\"}"}}]}}]}"#;
    let reply = whole_reply(body).unwrap();
    assert_eq!(reply.text, "");
    assert_eq!(reply.tool_calls.len(), 1);
    assert_eq!(reply.tool_calls[0].call.id, "D681PevKs");
    let args = reply.tool_calls[0].arguments.clone().unwrap();
    assert_eq!(args["reason"], "billing");
    assert!(reply_text(body).is_err(), "no text for the text-only path");
}

/// Feeds `events` (SSE `data` payloads) to a stream's state; returns the pieces it yields.
fn pieces(events: &[&str]) -> Vec<Piece> {
    let mut deltas = Deltas::new(Box::pin(futures::stream::empty()));
    for data in events {
        deltas
            .read(format!("data: {data}\r\n\r\n").as_bytes())
            .unwrap();
    }
    deltas.ready.into_iter().collect()
}

#[test]
fn streamed_tool_calls_come_after_the_text_once_the_stream_ends() {
    let got = pieces(&[
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"Goodbye!"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"abcDEF123","index":0,"function":{"name":"end_call","arguments":""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ]);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], Piece::Text("Goodbye!".into()));
    let Piece::ToolCalls(calls) = &got[1] else {
        panic!("tool calls expected: {got:?}");
    };
    assert_eq!(calls[0].call.name, "end_call");
    assert_eq!(calls[0].call.arguments, "{}");
    assert!(calls[0].arguments.is_ok());
}

#[test]
fn a_stream_without_tool_calls_yields_only_text() {
    let got = pieces(&[r#"{"choices":[{"delta":{"content":"Hi"}}]}"#, "[DONE]"]);
    assert_eq!(got, [Piece::Text("Hi".into())]);
}
