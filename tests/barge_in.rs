//! The caller talks over the assistant: `clear` at once, the old reply stops, the new words are
//! the next turn.

use crate::support;

use std::time::Duration;

use ivr_bridge::call::turns::CUT_OFF;
use ivr_sim::standin::faq::{DIRECTIONS, WEEKEND};
use support::expect::{asked_near_the_ear, call_audio, reply_phrases, GREETING};
use support::{spoken, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talking_over_the_reply_clears_it_at_once_and_starts_the_next_turn() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("barge_in");
    let question = fixture.sidecar.utterances[0].text.clone();
    let interruption = fixture.sidecar.utterances[1].clone();
    let log = env.replay("barge_in").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The long directions were playing when the caller spoke again.
    let texts = support::expect::requested(&env.tts);
    assert_eq!(texts[0], GREETING);
    assert!(texts.contains(&reply_phrases(DIRECTIONS)[0]));
    assert_eq!(log.clears.len(), 1, "one interruption, one clear");
    let clear = &log.clears[0];
    assert!(
        clear.dropped_bytes > 0,
        "the clear cut audio that was still queued"
    );

    // The clear followed the first transcript of the interruption within 100 ms.
    let stt = &env.stt.connections()[0];
    let interrupting = stt
        .first_words_after(log.at(interruption.start_ms))
        .expect("the recogniser heard the interruption");
    assert!(
        clear.at >= interrupting.at,
        "clear before the caller spoke?"
    );
    let requests = env.llm.requests();
    assert!(
        requests.len() == 2 && clear.at < requests[1].at,
        "the clear answered the caller's first words, before their turn was over"
    );

    // Nothing of the directions was sent after the clear: what follows is exactly the reply
    // to the interruption.
    let after = log.media_after(clear.at);
    let weekend = spoken(&reply_phrases(WEEKEND));
    assert_eq!(after, weekend);

    // The caller heard the greeting, the start of the directions and the whole new reply.
    let heard = log.heard();
    assert!(
        heard.len() < call_audio(&[DIRECTIONS, WEEKEND]).len(),
        "the directions were cut short"
    );
    assert!(heard.ends_with(&weekend));

    // Marks of the directions: those played before the clear, then the rest came back as
    // discarded. The new reply's marks all played.
    let directions: Vec<_> = log
        .marks
        .iter()
        .filter(|m| m.name.starts_with("reply-2."))
        .collect();
    let played = directions.iter().take_while(|m| !m.discarded).count();
    assert!(
        played >= 1,
        "at least the first phrase was heard before the interruption"
    );
    assert!(played < reply_phrases(DIRECTIONS).len());
    // The directions were asked of the voice only a little ahead of what the caller heard: the
    // phrases after the interruption were never synthesized.
    let asked = asked_near_the_ear(&env.tts, &log, 2, DIRECTIONS);
    assert!(
        asked < reply_phrases(DIRECTIONS).len(),
        "{asked} phrases asked for"
    );
    assert!(directions[played..]
        .iter()
        .all(|m| m.discarded && m.echoed_at.is_some_and(|at| at >= clear.at)));
    let last = log.marks.last().expect("a mark after the new reply");
    assert!(last.name.starts_with("reply-3.") && !last.discarded);

    // The interruption became the next turn, with the whole conversation before it.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2);
    let dialogue = support::expect::dialogue(&requests[1].messages);
    assert_eq!(dialogue.len(), 3);
    assert_eq!(dialogue[0], ("user", question.as_str()));
    assert_eq!(dialogue[2], ("user", interruption.text.as_str()));
    // The history keeps what the caller heard of the directions, to the word: the phrases
    // whose marks came back, then the words of the one playing when the caller spoke, cut off.
    let (role, heard_text) = dialogue[1];
    assert_eq!(role, "assistant");
    let heard_words = heard_text
        .strip_suffix(CUT_OFF)
        .unwrap_or_else(|| panic!("{heard_text:?} is not marked as cut off"));
    let phrases = reply_phrases(DIRECTIONS);
    assert!(
        heard_words.starts_with(&phrases[..played].join(" ")),
        "{heard_words:?}"
    );
    assert!(
        phrases.join(" ").starts_with(heard_words),
        "{heard_words:?}"
    );
    assert!(
        heard_words.len() < phrases[..=played].join(" ").len(),
        "{heard_words:?} goes past the phrase that was playing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_while_the_model_thinks_joins_the_turn_instead_of_answering_twice() {
    // A slow model: the caller's second sentence arrives while it is still thinking.
    let env = TestEnv::start().await;
    env.llm.set_total_delay(Duration::from_secs(4));
    env.llm.set_first_token_delay(Duration::from_secs(4));
    let fixture = support::fixture::load("barge_in");
    let said = fixture.said();
    let log = env.replay("barge_in").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The first request was abandoned; the second carries both sentences as one user turn.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        !requests[0].completed,
        "the abandoned request was cancelled, not awaited"
    );
    let last = requests[1].messages.last().expect("a user message");
    assert_eq!(last.0, "user");
    assert_eq!(last.1, format!("{} {}", said[0], said[1]));
    assert_eq!(
        requests[1].messages.len(),
        2,
        "system + the joined turn, nothing orphaned"
    );
    // Only the joined turn's answer was spoken after the greeting.
    let texts = support::expect::requested(&env.tts);
    assert_eq!(texts[0], GREETING);
    assert!(!texts.contains(&reply_phrases(DIRECTIONS)[0]), "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interruption_in_the_first_phrase_is_a_turn_of_its_own() {
    let env = TestEnv::start().await;
    // A model that takes half a second, so that the interruption (1.6 s after the question)
    // lands about 0.3 s into the answer's first phrase, which plays for about 0.5 s.
    env.llm.set_first_token_delay(Duration::from_millis(500));
    env.llm.set_total_delay(Duration::from_millis(500));
    let fixture = support::fixture::load("early_interruption");
    let question = fixture.sidecar.utterances[0].text.clone();
    let interruption = fixture.sidecar.utterances[1].text.clone();
    let log = env.replay("early_interruption").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert_eq!(log.clears.len(), 1, "one interruption, one clear");

    // The caller spoke before the first phrase of the answer was over: none of its marks came
    // back before the clear.
    let answer: Vec<_> = log
        .marks
        .iter()
        .filter(|m| m.name.starts_with("reply-2."))
        .collect();
    assert!(!answer.is_empty());
    assert!(answer.iter().all(|m| m.discarded), "{answer:?}");

    // Yet its audio had been playing, so the new question is a turn of its own, not glued to
    // the old one; the history keeps the words the caller heard, cut off.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let dialogue = support::expect::dialogue(&requests[1].messages);
    assert_eq!(dialogue.len(), 3, "{dialogue:?}");
    assert_eq!(dialogue[0], ("user", question.as_str()));
    assert_eq!(dialogue[2], ("user", interruption.as_str()));
    let (role, heard) = dialogue[1];
    assert_eq!(role, "assistant");
    let words = heard
        .strip_suffix(CUT_OFF)
        .unwrap_or_else(|| panic!("{heard:?} is not marked as cut off"));
    let first_phrase = &reply_phrases(DIRECTIONS)[0];
    assert!(
        !words.is_empty() && first_phrase.starts_with(words),
        "{heard:?}"
    );
    assert!(words.len() < first_phrase.len(), "{heard:?}");
}
