//! Sounds over a reply that are not a turn: an "uh-huh" clears the audio at once, then the
//! reply resumes from the phrase that was cut with the audio it had; a cough never interrupts;
//! too few words never interrupt; and a pause mid-sentence does not end the caller's turn.

use crate::support;

use std::path::Path;
use std::time::Duration;

use ivr_sim::fixture::Sidecar;
use ivr_sim::standin::faq::{DIRECTIONS, WEEKEND};
use support::expect::{asked_near_the_ear, call_audio, call_texts, reply_phrases, requested};
use support::{spoken, transcript, Recording, TestEnv};

/// The server's metrics page.
async fn metrics(env: &TestEnv) -> String {
    let page = reqwest::get(format!("{}/metrics", env.http_url())).await;
    let page = page.expect("scrape").text().await;
    page.expect("metrics")
}

/// A call that heard the greeting and the whole of the directions, uncut.
fn heard_the_whole_answer(log: &Recording) {
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert!(log.clears.is_empty(), "nothing interrupted the answer");
    assert_eq!(log.heard(), call_audio(&[DIRECTIONS]));
    assert!(log.marks.iter().all(|m| !m.discarded), "{:?}", log.marks);
}

/// The sidecar the server recorded into `dir`, once the recording is complete.
async fn recorded_sidecar(dir: &Path) -> Sidecar {
    let written = || file_in(dir, "jsonl").is_some() && sidecar_in(dir).is_some();
    let found = support::eventually(Duration::from_secs(5), written).await;
    assert!(found, "no recording in {}", dir.display());
    sidecar_in(dir).unwrap_or_default()
}

fn file_in(dir: &Path, ext: &str) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?.filter_map(Result::ok);
    let mut paths = entries.map(|e| e.path());
    paths.find(|p| p.extension().is_some_and(|x| x == ext))
}

fn sidecar_in(dir: &Path) -> Option<Sidecar> {
    let text = std::fs::read_to_string(file_in(dir, "json")?).ok()?;
    serde_json::from_str(&text).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uh_huh_over_the_answer_clears_it_then_the_answer_resumes() {
    let dir = std::env::temp_dir().join(format!("ivr-bridge-backchannel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ivr_bridge::record::check_dir(&dir).expect("a writable RECORD_DIR");
    let record_dir = dir.clone();
    let env = TestEnv::start_with(|config| config.record.record_dir = Some(record_dir)).await;
    let fixture = support::fixture::load("backchannel");
    let uh_huh = fixture.sidecar.utterances[1].clone();
    let log = env.replay("backchannel").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The clear followed the recogniser's first words of "Uh-huh." at once, as any barge-in.
    assert_eq!(log.clears.len(), 1, "one interruption, one clear");
    let clear = &log.clears[0];
    assert!(clear.dropped_bytes > 0, "the clear cut audio still queued");
    let stt = &env.stt.connections()[0];
    let words = stt
        .first_words_after(log.at(uh_huh.start_ms))
        .expect("the recogniser heard the uh-huh");
    assert_eq!(transcript(&words.msg), uh_huh.text);
    assert!(clear.at >= words.at, "clear before the caller spoke?");

    // Twilio played the directions up to the clear: the phrases whose marks came back, then
    // part of the one playing. After the clear, the same reply goes on from that phrase, as
    // the same audio: nothing asked of the model or the voice again.
    let phrases = reply_phrases(DIRECTIONS);
    let answer: Vec<_> = log
        .marks
        .iter()
        .filter(|m| m.name.starts_with("reply-2."))
        .collect();
    let played = answer
        .iter()
        .take_while(|m| m.sent_at < clear.at && !m.discarded)
        .count();
    let cleared = answer.iter().filter(|m| m.sent_at < clear.at).skip(played);
    assert!(
        cleared.clone().all(|m| m.discarded),
        "marks of the audio the clear dropped come back discarded: {answer:?}"
    );
    let resumed: Vec<_> = answer.iter().filter(|m| m.sent_at > clear.at).collect();
    let from = phrases.len() - resumed.len();
    // The phrase that was cut: the one after those whose marks came back (or the next, had
    // its audio just ended with its mark still on the way).
    assert!(
        (played..=played + 1).contains(&from),
        "it resumes from phrase {from}, {played} were heard"
    );
    for (mark, index) in resumed.iter().zip(from..) {
        assert_eq!(mark.name, format!("reply-2.{index}.1"), "take 1 of reply 2");
        assert!(!mark.discarded, "the resumed phrases played: {mark:?}");
    }
    let after = log.media_after(clear.at);
    assert_eq!(after, spoken(&phrases[from..]));
    assert!(
        log.heard().ends_with(&after),
        "the caller heard it to the end"
    );
    assert_eq!(
        env.llm.requests().len(),
        1,
        "one question, one model request"
    );
    assert_eq!(requested(&env.tts), call_texts(&[DIRECTIONS]));
    // Each phrase was made only a little ahead of what the caller had heard, resumed or not.
    assert_eq!(
        asked_near_the_ear(&env.tts, &log, 2, DIRECTIONS),
        phrases.len()
    );
    for request in env.llm.requests() {
        assert!(
            !request.messages.iter().any(|(_, m)| m.contains("Uh-huh")),
            "{:?}",
            request.messages
        );
    }

    let page = metrics(&env).await;
    assert!(
        page.contains("ivr_bridge_interruptions_total{outcome=\"resumed\"} 1\n"),
        "{page}"
    );
    assert!(!page.contains("outcome=\"barge_in\""), "{page}");

    // The recording says the same: one turn, the answer not interrupted in the end, the
    // barge-in resumed.
    let sidecar = recorded_sidecar(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let turns = sidecar.turns.unwrap_or_default();
    assert_eq!(turns.len(), 1, "{turns:?}");
    let barge_ins = sidecar.barge_ins.unwrap_or_default();
    assert!(
        matches!(barge_ins.as_slice(), [b] if b.resumed && b.reply == 2),
        "{barge_ins:?}"
    );
    let replies = sidecar.replies.unwrap_or_default();
    assert!(
        replies.iter().all(|r| !r.interrupted),
        "{replies:?} were interrupted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cough_over_the_answer_interrupts_nothing() {
    let env = TestEnv::start().await;
    let fixture = support::fixture::load("cough");
    let cough = fixture.sidecar.noises[0].clone();
    let log = env.replay("cough").await;

    // The recogniser heard a sound and found no words in it.
    let stt = &env.stt.connections()[0];
    let heard_cough = stt
        .sent
        .iter()
        .filter(|s| s.msg["type"] == "Results" && s.at >= log.at(cough.start_ms));
    let results: Vec<&str> = heard_cough.map(|s| transcript(&s.msg)).collect();
    assert!(!results.is_empty(), "the cough went unheard");
    assert!(results.iter().all(|t| t.is_empty()), "{results:?}");

    heard_the_whole_answer(&log);
    assert_eq!(env.llm.requests().len(), 1);
    let page = metrics(&env).await;
    assert!(!page.contains("ivr_bridge_interruptions_total{"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_words_than_barge_in_min_words_never_interrupt() {
    let env = TestEnv::start_with(|config| config.turns.barge_in_min_words = 2).await;
    let log = env.replay("backchannel").await;

    heard_the_whole_answer(&log);
    assert_eq!(env.llm.requests().len(), 1, "the word is no turn either");
    let page = metrics(&env).await;
    assert!(
        page.contains("ivr_bridge_interruptions_total{outcome=\"ignored\"} 1\n"),
        "{page}"
    );
    assert!(!page.contains("outcome=\"resumed\""), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_mid_sentence_shorter_than_the_timer_is_one_turn() {
    // The default silence timer (2 s); the caller pauses 1.2 s after "What are your opening
    // hours", long enough for the recogniser to end a segment there.
    let env = TestEnv::start_with(|config| {
        config.turns.silence_timeout = Duration::from_millis(2000);
    })
    .await;
    let fixture = support::fixture::load("mid_sentence_pause");
    let said = fixture.said();
    let log = env.replay("mid_sentence_pause").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    let stt = &env.stt.connections()[0];
    let ends = stt
        .sent
        .iter()
        .filter(|s| s.msg["speech_final"] == true && !transcript(&s.msg).is_empty());
    assert_eq!(
        ends.count(),
        2,
        "the recogniser ended a segment in the pause"
    );

    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let dialogue = support::expect::dialogue(&requests[0].messages);
    let whole = format!("{} {}", said[0], said[1]);
    assert_eq!(dialogue, [("user", whole.as_str())]);
    assert_eq!(log.heard(), call_audio(&[WEEKEND]));
}
