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
