//! Calls at the same time are isolated: each hears only its own conversation.

use crate::support;

use std::collections::HashSet;

use ivr_sim::standin::faq;
use support::expect::{call_audio, GREETING};
use support::{framed, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_calls_each_get_only_their_own_answers() {
    let env = TestEnv::start().await;
    let names = [
        "one_question",
        "visiting_hours",
        "one_question",
        "visiting_hours",
    ];
    let url = env.media_url();
    let logs = futures::future::join_all(names.iter().map(|name| {
        let url = url.clone();
        async move { support::replay(&url, &support::fixture::load(name)).await }
    }))
    .await;

    // One recogniser socket and one model request per call, each with that call's words.
    assert_eq!(env.stt.connections().len(), names.len());
    let requests = env.llm.requests();
    assert_eq!(requests.len(), names.len());
    for request in &requests {
        assert_eq!(request.messages.len(), 2, "no history leaked between calls");
    }

    for (name, log) in names.iter().zip(&logs) {
        let fixture = support::fixture::load(name);
        let question = &fixture.sidecar.utterances[0].text;
        assert!(log.violations.is_empty(), "{name}: {:?}", log.violations);
        assert!(log
            .media
            .iter()
            .all(|f| f.stream_sid == fixture.sidecar.stream_sid));
        // Exactly the greeting and this call's own answer, nothing else.
        let expected = call_audio(&[faq::answer(question)]);
        assert_eq!(log.media_bytes(), expected, "{name} heard something else");
        assert!(log.clears.is_empty(), "{name}");
    }

    // Sanity: the two kinds of call really got different answers.
    let answers: HashSet<Vec<u8>> = logs
        .iter()
        .map(|log| log.media_bytes()[framed(&support::tones(GREETING)).len()..].to_vec())
        .collect();
    assert_eq!(answers.len(), 2);
}
