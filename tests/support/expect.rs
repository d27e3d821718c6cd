//! What the server must send for a given conversation: phrases as spoken and their audio.

use ivr_bridge::tts::text::{phrases, speakable};

use super::spoken;

/// The greeting every call starts with.
pub const GREETING: &str = ivr_bridge::config::DEFAULT_GREETING;

/// The TTS requests a reply becomes: its phrases, Markdown stripped.
pub fn reply_phrases(answer: &str) -> Vec<String> {
    phrases(answer)
        .iter()
        .map(|p| speakable(p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// A whole reply as the caller hears it and as the history keeps it.
pub fn heard(answer: &str) -> String {
    reply_phrases(answer).join(" ")
}

/// Every TTS text of a call that hears the greeting and then `answers`, in order.
pub fn call_texts(answers: &[&str]) -> Vec<String> {
    let mut texts = vec![GREETING.to_owned()];
    for answer in answers {
        texts.extend(reply_phrases(answer));
    }
    texts
}

/// The audio Twilio must receive for that call.
pub fn call_audio(answers: &[&str]) -> Vec<u8> {
    spoken(&call_texts(answers))
}

/// The mark names of that call, in order: one per phrase, replies numbered from 1.
pub fn call_marks(answers: &[&str]) -> Vec<String> {
    let mut marks = vec!["reply-1.0".to_owned()];
    for (reply, answer) in answers.iter().enumerate() {
        let count = reply_phrases(answer).len();
        marks.extend((0..count).map(|i| format!("reply-{}.{i}", reply + 2)));
    }
    marks
}

/// `texts` sorted, for comparing request logs whose order concurrent requests may swap.
pub fn sorted(mut texts: Vec<String>) -> Vec<String> {
    texts.sort();
    texts
}

/// The TTS texts a call asked for, without the fallback phrase the server prepares ahead of
/// any failure.
pub fn requested(tts: &super::TtsStandIn) -> Vec<String> {
    let fallback = speakable(ivr_bridge::config::DEFAULT_FALLBACK_PHRASE);
    tts.texts().into_iter().filter(|t| *t != fallback).collect()
}

/// (role, content) pairs of a model request, without the system prompt.
pub fn dialogue(messages: &[(String, String)]) -> Vec<(&str, &str)> {
    messages
        .iter()
        .skip(1)
        .map(|(role, content)| (role.as_str(), content.as_str()))
        .collect()
}

/// When each phrase of `answer`, spoken as reply `reply`, was asked of the voice (in phrase
/// order; as many as were asked), checked against what the caller had heard by then: phrase
/// `k` only once phrase `k - LOOKAHEAD - 1` had played to its end (its mark came back, not
/// discarded), so a long answer is made a little ahead of the ear, never all at once.
pub fn asked_near_the_ear(
    tts: &super::TtsStandIn,
    log: &super::Recording,
    reply: u64,
    answer: &str,
) -> usize {
    use ivr_bridge::call::reply::LOOKAHEAD;
    let requests = tts.requests();
    let asked: Vec<_> = reply_phrases(answer)
        .iter()
        .map_while(|phrase| {
            let mut asked = requests.iter().filter(|r| r.text.as_ref() == Some(phrase));
            asked.next().map(|r| r.at)
        })
        .collect();
    let heard_at = |phrase: usize| {
        let mark = log.marks.iter().find(|m| {
            !m.discarded
                && ivr_bridge::call::turns::ReplyId::parse_mark(&m.name)
                    .is_some_and(|(id, index)| id.0 == reply && index == phrase)
        });
        mark.and_then(|m| m.echoed_at)
    };
    for (k, at) in asked.iter().enumerate().skip(LOOKAHEAD + 1) {
        let before = k - LOOKAHEAD - 1;
        assert!(
            heard_at(before).is_some_and(|heard| heard <= *at),
            "phrase {k} of reply {reply} was asked for before phrase {before} was heard"
        );
    }
    asked.len()
}
