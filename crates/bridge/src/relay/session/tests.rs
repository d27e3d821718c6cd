use super::*;

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

fn session() -> Session {
    Session::new("Be brief.", "Hello!", Vec::new())
}

/// The reply an action list starts, with its messages.
fn answer(actions: &[Action]) -> (ReplyId, Vec<ChatMessage>) {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Answer { id, messages } => Some((*id, messages.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer in {actions:?}"))
}

fn saved(actions: &[Action]) -> Vec<Exchange> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Save { exchange, .. } => Some(exchange.clone()),
            _ => None,
        })
        .collect()
}

fn text(token: &str, last: bool) -> Action {
    Action::Send(Outbound::Text {
        token: token.into(),
        last,
    })
}

#[test]
fn a_whole_prompt_is_a_turn_and_its_reply_streams_back() {
    let t0 = Instant::now();
    let mut s = session();
    assert!(
        s.on_prompt("What are", false, t0).is_empty(),
        "a partial prompt waits"
    );
    let (id, messages) = answer(&s.on_prompt("What are your hours?", true, t0));
    assert!(
        messages[0].content.contains("Hello!"),
        "the greeting is known"
    );
    assert_eq!(messages.last().unwrap().content, "What are your hours?");
    assert_eq!(
        s.on_text(id, "Eight ".into(), ms(t0, 300)),
        [
            Action::Answered {
                id,
                latency: Duration::from_millis(300)
            },
            text("Eight ", false)
        ]
    );
    assert_eq!(
        s.on_text(id, "to six.".into(), ms(t0, 350)),
        [text("to six.", false)]
    );
    assert_eq!(s.on_done(id, ms(t0, 400)), [text("", true)]);
    assert!(s.on_text(id, "late".into(), ms(t0, 450)).is_empty());
    let actions = s.on_prompt("Thanks. Where are you?", true, ms(t0, 5000));
    assert_eq!(
        saved(&actions),
        [Exchange::new("What are your hours?", "Eight to six.")]
    );
    let (next, messages) = answer(&actions);
    assert_ne!(next, id);
    assert_eq!(
        messages.len(),
        4,
        "system, the first exchange, the new turn"
    );
    assert_eq!(s.latencies(), [Duration::from_millis(300)]);
    assert_eq!(s.turns(), 2);
}

#[test]
fn an_interruption_stops_the_reply_and_keeps_what_was_heard() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Hours?", true, t0));
    s.on_text(id, "We are open from eight ".into(), ms(t0, 200));
    let actions = s.on_interrupt("We are open", t0);
    assert_eq!(actions[0], Action::Cancel { id });
    assert!(actions.contains(&Action::Interrupted {
        id,
        heard: Some(format!("We are open{CUT_OFF}"))
    }));
    assert_eq!(
        saved(&actions),
        [Exchange::new("Hours?", format!("We are open{CUT_OFF}"))]
    );
    assert!(s.on_text(id, "to six".into(), ms(t0, 300)).is_empty());
    assert!(s.on_done(id, ms(t0, 300)).is_empty());
    let (_, messages) = answer(&s.on_prompt("And Sunday?", true, ms(t0, 2000)));
    assert_eq!(messages[2].content, format!("We are open{CUT_OFF}"));
    assert_eq!(s.barge_ins(), 1);
}

#[test]
fn an_interruption_after_the_last_text_still_corrects_the_history() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Hours?", true, t0));
    s.on_text(id, "We are open from eight to six.".into(), ms(t0, 200));
    s.on_done(id, ms(t0, 250));
    let actions = s.on_interrupt("We are open from", t0);
    assert!(
        !actions.contains(&Action::Cancel { id }),
        "nothing left to stop"
    );
    assert_eq!(
        saved(&actions),
        [Exchange::new(
            "Hours?",
            format!("We are open from{CUT_OFF}")
        )]
    );
    assert!(saved(&s.on_prompt("Sunday?", true, ms(t0, 900))).is_empty());
}

#[test]
fn words_over_a_reply_nobody_heard_continue_the_turn() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("I need", true, t0));
    let actions = s.on_interrupt("", t0);
    assert!(actions.contains(&Action::Interrupted { id, heard: None }));
    assert!(saved(&actions).is_empty());
    let actions = s.on_prompt("an appointment", true, ms(t0, 800));
    let (_, messages) = answer(&actions);
    assert_eq!(messages.last().unwrap().content, "I need an appointment");
    assert_eq!(messages.len(), 2);
    assert_eq!(s.turns(), 1);
}

#[test]
fn keypad_digits_are_a_turn_at_the_hash() {
    let t0 = Instant::now();
    let mut s = session();
    for key in ["1", "2", "*", "4", "2"] {
        assert!(s.on_dtmf(key, t0).is_empty());
    }
    let (_, messages) = answer(&s.on_dtmf("#", ms(t0, 100)));
    assert_eq!(messages.last().unwrap().content, "The caller pressed: 4 2");
    assert_eq!(s.keyed(), "12*42#");
}

#[test]
fn a_new_prompt_over_a_reply_in_progress_stops_it_and_keeps_what_was_sent() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Hours?", true, t0));
    s.on_text(id, "We are ".into(), ms(t0, 100));
    let actions = s.on_prompt("Sorry, Sunday hours?", true, ms(t0, 200));
    assert_eq!(actions[0], Action::Cancel { id });
    assert_eq!(
        saved(&actions),
        [Exchange::new("Hours?", format!("We are{CUT_OFF}"))]
    );
}

#[test]
fn the_session_ends_once_the_farewell_was_spoken() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Goodbye", true, t0));
    s.on_text(id, "Goodbye!".into(), ms(t0, 100));
    s.on_step(id, Step::End);
    s.on_done(id, ms(t0, 150));
    let at = s.next_deadline().expect("a farewell wait");
    assert_eq!(at, ms(t0, 150) + PER_CHAR * 8 + FAREWELL_MARGIN);
    assert!(s.on_tick(at - Duration::from_millis(1)).is_empty());
    let actions = s.on_tick(at);
    assert_eq!(saved(&actions), [Exchange::new("Goodbye", "Goodbye!")]);
    assert!(actions.contains(&Action::End {
        step: Step::End,
        handoff: r#"{"reason":"ended"}"#.into()
    }));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn words_during_the_farewell_keep_the_call_going() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Put me through", true, t0));
    s.on_text(id, "Putting you through now.".into(), ms(t0, 100));
    let reason = "wants a person".to_owned();
    s.on_step(id, Step::Transfer { reason });
    s.on_done(id, ms(t0, 150));
    assert!(s.next_deadline().is_some());
    s.on_interrupt("Putting you", t0);
    assert_eq!(s.next_deadline(), None);
    assert!(s.on_tick(ms(t0, 20_000)).is_empty());
}

#[test]
fn a_long_farewell_is_waited_for_at_most_the_limit() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Bye", true, t0));
    s.on_text(id, "word ".repeat(500), t0);
    s.on_step(id, Step::End);
    s.on_done(id, t0);
    assert_eq!(s.next_deadline(), Some(t0 + FAREWELL_LIMIT));
}

#[test]
fn a_failed_reply_says_the_fallback() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Hours?", true, t0));
    let actions = s.on_failed(id, "Sorry, say it again?", ms(t0, 900));
    assert!(actions.contains(&text("Sorry, say it again?", false)));
    assert_eq!(actions.last(), Some(&text("", true)));
}

#[test]
fn closing_saves_the_reply_as_far_as_it_went() {
    let t0 = Instant::now();
    let mut s = session();
    let (id, _) = answer(&s.on_prompt("Hours?", true, t0));
    s.on_text(id, "We are open ".into(), ms(t0, 100));
    let actions = s.close();
    assert_eq!(actions[0], Action::Cancel { id });
    assert_eq!(
        saved(&actions),
        [Exchange::new("Hours?", format!("We are open{CUT_OFF}"))]
    );
    assert!(s.close().is_empty());
}

#[test]
fn a_resumed_session_continues_the_history() {
    let t0 = Instant::now();
    let earlier = vec![Exchange::new("Hours?", "Eight to six.")];
    let mut s = Session::new("Be brief.", "Hello!", earlier);
    let (_, messages) = answer(&s.on_prompt("And Sunday?", true, t0));
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents[1..], ["Hours?", "Eight to six.", "And Sunday?"]);
}

#[test]
fn handoff_data_says_what_next() {
    let transfer = Step::Transfer {
        reason: "billing".into(),
    };
    assert_eq!(
        handoff(&transfer),
        r#"{"reason":"transferred","why":"billing"}"#
    );
    assert_eq!(handoff(&Step::End), r#"{"reason":"ended"}"#);
}

/// Whether `actions` move the session.
fn moves(actions: &[Action]) -> bool {
    actions.contains(&Action::Move)
}

#[test]
fn a_drain_at_a_quiet_moment_moves_at_once_with_the_exchange_saved() {
    let t0 = Instant::now();
    let mut s = session();
    s.on_open(t0);
    let (id, _) = answer(&s.on_prompt("Hours?", true, ms(t0, 3000)));
    s.on_text(id, "Eight to six.".into(), ms(t0, 3300));
    s.on_done(id, ms(t0, 3400));
    // "Eight to six." (13 characters) is spoken by 3400 + 13 × 65 + 700 = 4945 ms.
    let actions = s.on_drain(ms(t0, 5000));
    assert_eq!(
        saved(&actions),
        [Exchange::new("Hours?", "Eight to six.")],
        "the exchange is final before the move"
    );
    assert_eq!(actions.last(), Some(&Action::Move));
    assert!(s.on_tick(ms(t0, 6000)).is_empty(), "moved once");
    assert!(s.close().is_empty(), "nothing left to save");
}

#[test]
fn a_drain_while_the_greeting_or_a_reply_is_spoken_waits_for_its_end() {
    let t0 = Instant::now();
    let mut s = session();
    s.on_open(t0);
    // "Hello!" is spoken by 6 × 65 + 700 = 1090 ms.
    assert!(!moves(&s.on_drain(ms(t0, 500))));
    assert_eq!(s.next_deadline(), Some(ms(t0, 1090)));
    assert!(!moves(&s.on_tick(ms(t0, 1089))));
    assert!(moves(&s.on_tick(ms(t0, 1090))));

    let mut s = session();
    s.on_open(t0);
    let (id, _) = answer(&s.on_prompt("Hours?", true, ms(t0, 2000)));
    s.on_text(id, "Eight to six.".into(), ms(t0, 2300));
    s.on_done(id, ms(t0, 2400));
    assert!(!moves(&s.on_drain(ms(t0, 2500))), "still being spoken");
    assert_eq!(s.next_deadline(), Some(ms(t0, 3945)));
    assert!(moves(&s.on_tick(ms(t0, 3945))));
}

#[test]
fn a_drain_while_a_reply_is_written_moves_once_it_is_done_and_spoken() {
    let t0 = Instant::now();
    let mut s = session();
    s.on_open(t0);
    let (id, _) = answer(&s.on_prompt("Hours?", true, ms(t0, 2000)));
    assert!(!moves(&s.on_drain(ms(t0, 2100))), "the model is answering");
    assert_eq!(s.next_deadline(), None, "nothing to time until it is done");
    s.on_text(id, "Eight ".into(), ms(t0, 2300));
    assert!(!moves(&s.on_tick(ms(t0, 9000))), "its text still comes");
    s.on_done(id, ms(t0, 9000));
    let quiet_at = s.next_deadline().expect("a deadline once done");
    assert_eq!(quiet_at, ms(t0, 9000 + 6 * 65 + 700));
    assert!(moves(&s.on_tick(quiet_at)));
}

#[test]
fn a_caller_mid_turn_or_a_farewell_is_never_a_quiet_moment() {
    let t0 = Instant::now();
    // Interrupted: the caller is speaking until their prompt comes.
    let mut s = session();
    s.on_open(t0);
    let (id, _) = answer(&s.on_prompt("Hours?", true, ms(t0, 2000)));
    s.on_text(id, "We are open from eight ".into(), ms(t0, 2200));
    s.on_interrupt("We are open", ms(t0, 2600));
    assert!(!moves(&s.on_drain(ms(t0, 20_000))));
    assert!(!s.quiet(ms(t0, 20_000)));
    let (next, _) = answer(&s.on_prompt("Sunday?", true, ms(t0, 20_100)));
    s.on_text(next, "Closed.".into(), ms(t0, 20_300));
    s.on_done(next, ms(t0, 20_400));
    assert!(moves(&s.on_tick(ms(t0, 30_000))), "quiet after the answer");

    // Digits without their `#`.
    let mut s = session();
    s.on_open(t0);
    s.on_dtmf("4", ms(t0, 2000));
    assert!(!moves(&s.on_drain(ms(t0, 9000))));
    let (id, _) = answer(&s.on_dtmf("#", ms(t0, 9100)));
    s.on_done(id, ms(t0, 9200));
    assert!(moves(&s.on_tick(ms(t0, 12_000))));

    // A farewell ends the call as it should; it is not moved.
    let mut s = session();
    s.on_open(t0);
    let (id, _) = answer(&s.on_prompt("Bye.", true, ms(t0, 2000)));
    s.on_text(id, "Goodbye!".into(), ms(t0, 2200));
    s.on_step(id, Step::End);
    s.on_done(id, ms(t0, 2300));
    assert!(!moves(&s.on_drain(ms(t0, 2400))));
    let actions = s.on_tick(ms(t0, 20_000));
    assert!(!moves(&actions));
    assert!(
        matches!(actions.last(), Some(Action::End { .. })),
        "{actions:?}"
    );
}
