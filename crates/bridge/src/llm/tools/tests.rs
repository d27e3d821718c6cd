use serde_json::{json, Value};

use super::*;
use crate::llm::history::is_valid_tool_call_id;

fn assemble(deltas: &[Value]) -> Vec<ToolRequest> {
    let mut assembler = CallAssembler::new();
    for delta in deltas {
        assembler.push(delta);
    }
    assembler.finish()
}

fn args(request: &ToolRequest) -> Value {
    Value::Object(request.arguments.clone().expect("valid arguments"))
}

#[test]
fn a_call_arriving_whole_is_one_request() {
    let calls = assemble(&[json!([{"id":"D681PevKs","type":"function","index":0,
        "function":{"name":"transfer_call","arguments":"{\"reason\": \"billing\"}"}}])]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call.id, "D681PevKs");
    assert_eq!(calls[0].call.name, "transfer_call");
    assert_eq!(calls[0].call.arguments, "{\"reason\": \"billing\"}");
    assert_eq!(args(&calls[0]), json!({"reason": "billing"}));
}

#[test]
fn arguments_split_across_many_chunks_are_joined() {
    let text = "{\"reason\": \"billing\", \"urgent\": true}";
    let mut deltas = vec![json!([{"index":0,"id":"abcDEF123","type":"function",
        "function":{"name":"transfer_call","arguments":""}}])];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(3) {
        let piece: String = piece.iter().collect();
        deltas.push(json!([{"index":0,"function":{"arguments":piece}}]));
    }
    let calls = assemble(&deltas);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call.id, "abcDEF123");
    assert_eq!(calls[0].call.arguments, text);
    assert_eq!(
        args(&calls[0]),
        json!({"reason": "billing", "urgent": true})
    );
}

#[test]
fn several_calls_in_one_delta_keep_their_order() {
    let calls = assemble(&[json!([
        {"id":"aaaaaaaa1","index":0,"function":{"name":"lookup","arguments":"{\"a\":1}"}},
        {"id":"bbbbbbbb2","index":1,"function":{"name":"end_call","arguments":"{}"}}
    ])]);
    let names: Vec<_> = calls.iter().map(|c| c.call.name.as_str()).collect();
    assert_eq!(names, ["lookup", "end_call"]);
    assert_eq!(args(&calls[0]), json!({"a": 1}));
    assert_eq!(args(&calls[1]), json!({}));
}

#[test]
fn interleaved_split_calls_go_to_their_own_slots() {
    let calls = assemble(&[
        json!([{"index":0,"id":"aaaaaaaa1","function":{"name":"one","arguments":"{\"x\""}}]),
        json!([{"index":1,"id":"bbbbbbbb2","function":{"name":"two","arguments":"{\"y\""}}]),
        json!([{"index":0,"function":{"arguments":":1}"}},{"index":1,"function":{"arguments":":2}"}}]),
    ]);
    assert_eq!(args(&calls[0]), json!({"x": 1}));
    assert_eq!(args(&calls[1]), json!({"y": 2}));
}

#[test]
fn whole_calls_in_separate_chunks_with_the_same_index_stay_apart() {
    let calls = assemble(&[
        json!([{"index":0,"id":"aaaaaaaa1","function":{"name":"one","arguments":"{}"}}]),
        json!([{"index":0,"id":"bbbbbbbb2","function":{"name":"two","arguments":"{}"}}]),
    ]);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].call.id, "bbbbbbbb2");
}

#[test]
fn bad_json_arguments_become_a_request_that_says_so() {
    let calls = assemble(&[json!([{"id":"abcDEF123","index":0,
        "function":{"name":"transfer_call","arguments":"{\"reason\": "}}])]);
    assert_eq!(calls.len(), 1);
    let err = calls[0].arguments.clone().expect_err("unparseable");
    assert_eq!(err.name, "transfer_call");
    assert!(err.to_string().contains("not a JSON object"), "{err}");
    assert_eq!(
        calls[0].call.arguments, "{\"reason\": ",
        "echoed as received"
    );
    let not_object =
        assemble(&[json!([{"id":"abcDEF123","function":{"name":"f","arguments":"[1]"}}])]);
    assert!(not_object[0].arguments.is_err());
}

#[test]
fn object_arguments_are_accepted_and_echoed_as_text() {
    let calls = assemble(&[json!([{"id":"abcDEF123","index":0,
        "function":{"name":"transfer_call","arguments":{"reason":"billing"}}}])]);
    assert_eq!(args(&calls[0]), json!({"reason": "billing"}));
    assert_eq!(calls[0].call.arguments, r#"{"reason":"billing"}"#);
}

#[test]
fn empty_arguments_are_no_arguments_and_a_missing_id_is_made() {
    let calls = assemble(&[json!([{"function":{"name":"end_call"}}])]);
    assert_eq!(args(&calls[0]), json!({}));
    assert!(
        is_valid_tool_call_id(&calls[0].call.id),
        "{}",
        calls[0].call.id
    );
}

#[test]
fn whole_message_calls_are_separate_even_with_index_zero() {
    let calls = calls_of_message(&json!([
        {"id":"aaaaaaaa1","type":"function","index":0,"function":{"name":"one","arguments":"{}"}},
        {"id":"aaaaaaaa1","type":"function","index":0,"function":{"name":"two","arguments":"{}"}}
    ]));
    assert_eq!(calls.len(), 2);
    assert!(calls_of_message(&Value::Null).is_empty());
}

#[test]
fn the_offer_serializes_as_mistral_documents_it() {
    let tool = Tool {
        name: "transfer_call".into(),
        description: "Transfer the caller to a human.".into(),
        parameters: json!({"type":"object","properties":{"reason":{"type":"string"}},
            "required":["reason"]}),
    };
    assert_eq!(
        serde_json::to_value(&tool).unwrap(),
        json!({"type":"function","function":{"name":"transfer_call",
            "description":"Transfer the caller to a human.",
            "parameters":{"type":"object","properties":{"reason":{"type":"string"}},
                "required":["reason"]}}})
    );
    let choices = [
        (ToolChoice::Auto, json!("auto")),
        (ToolChoice::None, json!("none")),
        (ToolChoice::Any, json!("any")),
        (
            ToolChoice::Function("end_call".into()),
            json!({"type":"function","function":{"name":"end_call"}}),
        ),
    ];
    for (choice, expected) in choices {
        assert_eq!(serde_json::to_value(&choice).unwrap(), expected);
    }
}

#[test]
fn a_call_reads_from_a_message_with_object_arguments() {
    let call: ToolCall = serde_json::from_value(json!({"id":"abcDEF123","type":"function",
        "function":{"name":"f","arguments":{"a":1}}}))
    .unwrap();
    assert_eq!(call.arguments, r#"{"a":1}"#);
}

#[test]
fn any_split_of_the_arguments_assembles_the_same_call() {
    let text = r#"{"reason": "déjà vu, \"quoted\"", "n": [1, 2]}"#;
    let chars: Vec<char> = text.chars().collect();
    for size in 1..=chars.len() {
        let mut deltas = vec![json!([{"index":0,"id":"abcDEF123","function":{"name":"f"}}])];
        for piece in chars.chunks(size) {
            let piece: String = piece.iter().collect();
            deltas.push(json!([{"index":0,"function":{"arguments":piece}}]));
        }
        let calls = assemble(&deltas);
        assert_eq!(calls.len(), 1, "size {size}");
        assert_eq!(calls[0].call.arguments, text, "size {size}");
        assert_eq!(
            args(&calls[0]),
            json!({"reason": "déjà vu, \"quoted\"", "n": [1, 2]})
        );
    }
}
