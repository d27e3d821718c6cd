use super::*;
use crate::llm::ToolCall;

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: "{}".into(),
    }
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::new(Role::User, text)
}

fn assistant(text: &str) -> ChatMessage {
    ChatMessage::new(Role::Assistant, text)
}

fn roles(messages: &[ChatMessage]) -> Vec<Role> {
    messages.iter().map(|m| m.role).collect()
}

#[test]
fn ids_are_nine_alphanumerics() {
    assert!(is_valid_tool_call_id("D681PevKs"));
    for bad in [
        "D681PevK",
        "D681PevKs0",
        "D681Pev-s",
        "call_0001",
        "",
        "é81PevKs",
    ] {
        assert!(!is_valid_tool_call_id(bad), "{bad}");
    }
    let made: Vec<String> = (0..1000).map(|_| new_tool_call_id()).collect();
    assert!(made.iter().all(|id| is_valid_tool_call_id(id)), "{made:?}");
    let distinct: std::collections::HashSet<_> = made.iter().collect();
    assert_eq!(distinct.len(), made.len());
}

#[test]
fn a_well_formed_tool_exchange_passes() {
    let c = call("abcDEF123", "lookup");
    let history = vec![
        ChatMessage::new(Role::System, "Be brief."),
        user("When is my appointment?"),
        ChatMessage::assistant_tool_calls("", vec![c.clone()]),
        ChatMessage::tool_result(&c, "{\"at\": \"9:00\"}"),
    ];
    assert_eq!(check(&history), Ok(()));
    let mut answered = history.clone();
    answered.push(assistant("At nine."));
    answered.push(user("Thanks"));
    assert_eq!(check(&answered), Ok(()));
}

#[test]
fn each_broken_rule_is_named() {
    let c = call("abcDEF123", "lookup");
    let d = call("zyxWVU987", "end_call");
    let asked = ChatMessage::assistant_tool_calls("", vec![c.clone(), d.clone()]);
    let cases = [
        (
            vec![user("q"), asked.clone(), ChatMessage::tool_result(&c, "r")],
            HistoryError::Unanswered(1),
        ),
        (
            vec![
                user("q"),
                asked.clone(),
                ChatMessage::tool_result(&c, "r"),
                ChatMessage::tool_result(&c, "r"),
            ],
            HistoryError::Unanswered(1),
        ),
        (
            vec![
                user("q"),
                asked.clone(),
                ChatMessage::tool_result(&c, "r"),
                ChatMessage::tool_result(&d, "r"),
                user("more"),
            ],
            HistoryError::UserAfterTool(4),
        ),
        (
            vec![user("q"), ChatMessage::tool_result(&c, "r")],
            HistoryError::StrayResult(1),
        ),
        (
            vec![
                user("q"),
                ChatMessage::assistant_tool_calls("", vec![call("call_1", "f")]),
            ],
            HistoryError::BadId("call_1".into()),
        ),
        (vec![user("q"), assistant("a")], HistoryError::BadLastRole),
        (vec![], HistoryError::BadLastRole),
    ];
    for (history, expected) in cases {
        assert_eq!(check(&history), Err(expected), "{history:?}");
    }
}

#[test]
fn repair_gives_every_call_one_result_in_order() {
    let c = call("abcDEF123", "lookup");
    let d = call("zyxWVU987", "end_call");
    let history = vec![
        user("q"),
        ChatMessage::assistant_tool_calls("Let me see.", vec![c.clone(), d.clone()]),
        ChatMessage::tool_result(&d, "ended"),
        ChatMessage::tool_result(&d, "twice"),
    ];
    let fixed = repair(history);
    assert_eq!(check(&fixed), Ok(()));
    assert_eq!(fixed[2].tool_call_id.as_deref(), Some("abcDEF123"));
    assert_eq!(fixed[2].content, NO_RESULT);
    assert_eq!(fixed[3].content, "ended");
    assert_eq!(fixed.len(), 4);
}

#[test]
fn repair_puts_an_assistant_turn_between_a_result_and_the_caller() {
    let c = call("abcDEF123", "lookup");
    let history = vec![
        user("q"),
        ChatMessage::assistant_tool_calls("", vec![c.clone()]),
        user("wait, one more thing"),
    ];
    let fixed = repair(history);
    assert_eq!(
        roles(&fixed),
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Assistant,
            Role::User
        ]
    );
    assert_eq!(fixed[3].content, AFTER_TOOL);
    assert_eq!(check(&fixed), Ok(()));
}

#[test]
fn repair_renames_bad_ids_in_calls_and_results_alike() {
    let c = call("call_0001", "lookup");
    let history = vec![
        user("q"),
        ChatMessage::assistant_tool_calls("", vec![c.clone()]),
        ChatMessage::tool_result(&c, "r"),
        ChatMessage::tool_result(&call("orphan0001", "x"), "stray"),
    ];
    let fixed = repair(history);
    assert_eq!(check(&fixed), Ok(()));
    assert_eq!(fixed.len(), 3);
    assert_eq!(fixed[2].content, "r");
    assert_eq!(
        fixed[2].tool_call_id.as_deref(),
        Some(fixed[1].tool_calls[0].id.as_str())
    );
}

#[test]
fn repair_leaves_a_good_history_alone() {
    let c = call("abcDEF123", "lookup");
    let history = vec![
        ChatMessage::new(Role::System, "s"),
        user("q"),
        ChatMessage::assistant_tool_calls("", vec![c.clone()]),
        ChatMessage::tool_result(&c, "r"),
        assistant("a"),
        user("q2"),
    ];
    assert_eq!(repair(history.clone()), history);
    let plain = vec![user("q"), assistant("a"), user("q2")];
    assert_eq!(repair(plain.clone()), plain);
}
