//! `TURN_DETECTION=flux`: Deepgram Flux is the call's recogniser. Its `EndOfTurn` ends the turn
//! at once (no silence timer), its `StartOfTurn` clears a playing reply before any words, the
//! caller's μ-law goes to it untouched, and drops, errors and malformed messages lose no speech.

use crate::support;

use std::time::Duration;

use ivr_bridge::config::TurnDetection;
use ivr_sim::standin::faq::{DIRECTIONS, HOURS, WEEKEND};
use ivr_sim::standin::stt::FluxFault;
use support::expect::{call_audio, call_marks, reply_phrases};
use support::{spoken, TestEnv};

/// A silence timer far longer than Flux's end of turn, so the two cannot be confused.
const SILENCE: Duration = Duration::from_millis(3000);
/// The stand-in ends a turn 420 ms after the last speech (eot_threshold 0.7); the turn must
/// end within this long of the utterance's last frame (the timer would need 3 s more).
const TURN_END_LIMIT: Duration = Duration::from_millis(1000);

/// The server with Flux deciding turns, `preemptive` for PREEMPTIVE_GENERATION.
async fn flux_env(preemptive: bool) -> TestEnv {
    TestEnv::start_with(|config| {
        config.turns.turn_detection = TurnDetection::Flux;
        config.turns.silence_timeout = SILENCE;
        config.turns.preemptive_generation = preemptive;
    })
    .await
}

/// The user messages of a request.
/// Plays `one_question` into `env` in the background, once Flux has heard `bytes` of it
/// (8 μ-law bytes a millisecond) within `limit` (else it fails saying `what`); the call's log
/// comes from the handle.
async fn call_heard_for(
    env: &TestEnv,
    bytes: usize,
    limit: Duration,
    what: &str,
) -> tokio::task::JoinHandle<support::Recording> {
    let url = env.media_url();
    let call = tokio::spawn(async move {
        let fixture = support::fixture::load("one_question");
        support::replay(&url, &fixture).await
    });
    let heard = support::eventually(limit, || {
        let flux = env.stt.flux_connections();
        flux.first().is_some_and(|c| c.audio.len() >= bytes)
    })
    .await;
    assert!(heard, "{what}");
    call
}

fn user_turns(messages: &[(String, String)]) -> Vec<&str> {
    let users = messages.iter().filter(|(role, _)| role == "user");
    users.map(|(_, content)| content.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_turn_ends_the_turn_well_before_the_silence_timer() {
    let env = flux_env(true).await;
    let fixture = support::fixture::load("one_question");
    let utterance = &fixture.sidecar.utterances[0];
    let log = env.replay("one_question").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // The end of the call closes the Flux stream (the server does it as the call ends).
    let closed = support::eventually(Duration::from_secs(2), || {
        let flux = env.stt.flux_connections();
        flux.first().is_some_and(|c| c.close_streams == 1)
    })
    .await;
    assert!(closed, "CloseStream at the end of the call");
    // Flux alone: no v1 socket was ever opened.
    assert!(env.stt.connections().is_empty(), "a v1 socket was opened");
    assert!(env.stt.refusals().is_empty());
    let flux = env.stt.flux_connections();
    assert_eq!(flux.len(), 1, "one Flux connection");
    let conn = &flux[0];
    assert!(conn.violations.is_empty(), "{:?}", conn.violations);
    assert_eq!(conn.query.get("model"), Some("flux-general-en"));
    assert_eq!(conn.query.get("encoding"), Some("mulaw"));
    assert_eq!(conn.query.get("sample_rate"), Some("8000"));
    assert_eq!(conn.query.get("eager_eot_threshold"), Some("0.5"));
    assert!(
        !conn.query.has("eot_threshold"),
        "Deepgram's default unless set"
    );
    // Twilio's μ-law went through untouched, in 80 ms chunks.
    let sent = fixture.inbound_mulaw();
    assert!(sent.starts_with(&conn.audio) && conn.audio.len() + 640 >= sent.len());
    assert!(conn.binary_frames * 640 >= conn.audio.len() && conn.binary_frames > 1);

    // The turn ended on EndOfTurn, soon after the caller stopped and at once after the event.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1, "one turn, one request");
    let spoken_until = log.at(utterance.end_ms);
    let turn_end = requests[0].at.saturating_duration_since(spoken_until);
    assert!(
        requests[0].at > spoken_until && turn_end <= TURN_END_LIMIT,
        "the model was asked {turn_end:?} after the caller stopped (timer: {SILENCE:?})"
    );
    let end_of_turn = conn
        .sent
        .iter()
        .find(|s| s.msg["event"] == "EndOfTurn")
        .expect("Flux ended the turn");
    assert_eq!(end_of_turn.msg["transcript"], utterance.text.as_str());
    // With PREEMPTIVE_GENERATION the answer was asked for on EagerEndOfTurn, before the turn
    // was over, and released on EndOfTurn; without an eager event, at once after EndOfTurn.
    let asked_on = conn
        .sent
        .iter()
        .find(|s| s.msg["event"] == "EagerEndOfTurn")
        .unwrap_or(end_of_turn);
    let reaction = requests[0].at.saturating_duration_since(asked_on.at);
    assert!(
        requests[0].at >= asked_on.at && reaction < SILENCE,
        "model asked {reaction:?} after {}",
        asked_on.msg["event"]
    );
    if asked_on.at < end_of_turn.at {
        assert!(
            requests[0].at < end_of_turn.at,
            "asked for before the turn was over"
        );
    }

    // Otherwise the same call as with the timer.
    assert_eq!(user_turns(&requests[0].messages), [utterance.text.as_str()]);
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
    let marks: Vec<String> = log.marks.iter().map(|m| m.name.clone()).collect();
    assert_eq!(marks, call_marks(&[HOURS]));
    assert!(log.clears.is_empty(), "nobody interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_of_turn_clears_a_playing_reply_before_any_words() {
    let env = flux_env(true).await;
    let fixture = support::fixture::load("barge_in");
    let question = fixture.sidecar.utterances[0].text.clone();
    let interruption = fixture.sidecar.utterances[1].clone();
    let log = env.replay("barge_in").await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    assert_eq!(log.clears.len(), 1, "one interruption, one clear");
    let clear = &log.clears[0];
    assert!(clear.dropped_bytes > 0, "the clear cut queued audio");

    // The clear answered the interruption's StartOfTurn, before Flux had any of its words.
    let conn = &env.stt.flux_connections()[0];
    let after = |s: &&ivr_sim::standin::stt::SttSent| s.at >= log.at(interruption.start_ms);
    let start = conn
        .sent
        .iter()
        .filter(after)
        .find(|s| s.msg["event"] == "StartOfTurn")
        .expect("Flux heard the interruption start");
    let first_words = conn
        .sent
        .iter()
        .filter(after)
        .find(|s| s.msg["transcript"].as_str().is_some_and(|t| !t.is_empty()))
        .expect("Flux heard the interruption's words");
    assert!(
        clear.at >= start.at && clear.at < first_words.at,
        "the clear answered StartOfTurn, before Flux had any words"
    );
    assert!(
        start.at < first_words.at,
        "StartOfTurn came before the words"
    );

    // What follows the clear is exactly the reply to the interruption, a turn of its own.
    let after_clear = log.media_after(clear.at);
    assert_eq!(after_clear, spoken(&reply_phrases(WEEKEND)));
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        user_turns(&requests[1].messages),
        [question.as_str(), interruption.text.as_str()]
    );
    assert!(log.heard().len() < call_audio(&[DIRECTIONS, WEEKEND]).len());
}

/// Media messages carrying `audio` (μ-law), one 20 ms frame each, from `at_ms` on.
fn media_at(sid: &str, at_ms: u64, audio: &[u8]) -> Vec<(u64, support::Inject)> {
    use base64::Engine;
    let frames = audio.chunks(support::fixture::FRAME_BYTES);
    frames
        .enumerate()
        .map(|(i, frame)| {
            let payload = base64::engine::general_purpose::STANDARD.encode(frame);
            let message = serde_json::json!({"event": "media", "streamSid": sid,
                "sequenceNumber": "1", "media": {"track": "inbound", "chunk": "1",
                "timestamp": (at_ms + 20 * i as u64).to_string(), "payload": payload}});
            (at_ms + 20 * i as u64, support::Inject::Message(message))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noise_over_the_reply_clears_it_then_it_resumes_with_no_new_turn() {
    let env = flux_env(true).await;
    let fixture = support::fixture::load("barge_in");
    let sid = fixture.sidecar.stream_sid.clone();
    // A loud sound no recogniser knows (the stand-in voice's tones), 360 ms, while the
    // directions play; the call ends before the recording's real interruption.
    let noise = support::tones("A cough, or a door banging.");
    let options = support::PlayOptions {
        inject: media_at(&sid, 5_000, &noise[..18 * 160]),
        hang_up_at_ms: Some(6_100),
        ..support::PlayOptions::default()
    };
    let log = support::replay_with(&env.media_url(), &fixture, options).await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    // Flux heard a turn start and end without words.
    let conn = &env.stt.flux_connections()[0];
    let events: Vec<(&str, &str)> = conn
        .sent
        .iter()
        .filter(|s| s.at >= log.at(5_000))
        .filter_map(|s| Some((s.msg["event"].as_str()?, s.msg["transcript"].as_str()?)))
        .filter(|(event, _)| *event != "Update")
        .collect();
    assert_eq!(events, [("StartOfTurn", ""), ("EndOfTurn", "")]);
    let end_of_turn = conn.sent.iter().rfind(|s| s.msg["event"] == "EndOfTurn");
    let end_of_turn = end_of_turn.expect("the noise's turn ended").at;

    // The reply was cleared at once, then resumed from the phrase that was cut: the audio
    // after the clear is a phrase of the directions from its start, with no new request.
    assert_eq!(log.clears.len(), 1, "one clear");
    let clear = &log.clears[0];
    assert!(clear.at < end_of_turn, "cleared before the turn's end");
    let after = log.media_after(clear.at);
    assert!(!after.is_empty(), "the reply resumed");
    let phrases = reply_phrases(DIRECTIONS);
    let resumed = phrases.iter().position(|p| {
        let audio = spoken(std::slice::from_ref(p));
        audio.starts_with(&after) || after.starts_with(&audio)
    });
    assert!(
        resumed.is_some_and(|n| n >= 1),
        "the audio after the clear is not a later phrase's start"
    );
    assert_eq!(env.llm.requests().len(), 1, "no new turn, no new request");
    // Each phrase was asked of the voice once, in order (the call ends before the last ones
    // are needed, so they may never be made).
    let texts = support::expect::requested(&env.tts);
    let expected = support::expect::call_texts(&[DIRECTIONS]);
    assert!(
        texts.len() > 1 + resumed.unwrap_or_default() && expected.starts_with(&texts),
        "no new voice request: {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_loses_no_speech() {
    let env = flux_env(false).await;
    let fixture = support::fixture::load("one_question");
    // Flux drops the socket a second into the call, before the caller asks.
    let call = call_heard_for(
        &env,
        8_000,
        Duration::from_secs(5),
        "Flux heard the first second of the call",
    )
    .await;
    env.stt.disconnect_all();
    let log = call.await.expect("replay");
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    let flux = env.stt.flux_connections();
    assert_eq!(flux.len(), 2, "one reconnection");
    assert!(env.stt.connections().is_empty(), "no v1 socket");
    // PREEMPTIVE_GENERATION=false: no eager end of turn asked for.
    assert!(!flux[0].query.has("eager_eot_threshold"));
    // All caller audio reached Flux across both sockets (at most the chunk in flight at the
    // moment of the drop is gone), in order.
    let received: Vec<u8> = flux.iter().flat_map(|c| c.audio.clone()).collect();
    let sent = fixture.inbound_mulaw();
    assert!(sent.starts_with(&flux[0].audio));
    assert!(
        received.len() + 640 >= sent.len(),
        "{} of {}",
        received.len(),
        sent.len()
    );

    // The question was still heard and answered in full.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1);
    let question = fixture.sidecar.utterances[0].text.as_str();
    assert_eq!(user_turns(&requests[0].messages), [question]);
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_mid_question_replays_the_turn_and_the_question_is_heard_once_whole() {
    let env = flux_env(true).await;
    let fixture = support::fixture::load("one_question");
    let utterance = fixture.sidecar.utterances[0].clone();
    // Flux drops the socket a second into the question (8 μ-law bytes a millisecond).
    let mid_question = (utterance.start_ms as usize + 1_000) * 8;
    let call = call_heard_for(
        &env,
        mid_question,
        Duration::from_secs(10),
        "Flux heard the first second of the question",
    )
    .await;
    env.stt.disconnect_all();
    let log = call.await.expect("replay");
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    let flux = env.stt.flux_connections();
    assert_eq!(flux.len(), 2, "one reconnection");
    let first = &flux[0];
    assert!(
        first.sent.iter().all(|s| s.msg["event"] != "EndOfTurn"),
        "the first connection never finished the question"
    );
    // The second connection first heard the question again from before its start: the same
    // bytes as the caller sent, from at most a second before the question.
    let sent = fixture.inbound_mulaw();
    let second = &flux[1].audio;
    let replayed_from = (0..sent.len())
        .step_by(160)
        .find(|&at| sent[at..].starts_with(&second[..640]))
        .expect("the second connection heard the caller's own audio");
    assert!(
        replayed_from <= utterance.start_ms as usize * 8,
        "{replayed_from}"
    );
    assert!(
        sent[replayed_from..].starts_with(&second[..second.len().min(sent.len() - replayed_from)])
    );
    let end = flux[1]
        .sent
        .iter()
        .find(|s| s.msg["event"] == "EndOfTurn")
        .expect("the second connection ended the turn");
    assert_eq!(end.msg["transcript"], utterance.text.as_str());

    // Asked once, with the whole question, answered once.
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(user_turns(&requests[0].messages), [utterance.text.as_str()]);
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_and_a_flux_error_beside_a_good_call() {
    let env = flux_env(true).await;
    let fixture = support::fixture::load("one_question");
    let call = call_heard_for(
        &env,
        4_000,
        Duration::from_secs(5),
        "Flux is hearing the call",
    )
    .await;
    for raw in [
        "this is not json",
        r#"{"type":"TurnInfo","event":"EndOfTurn","transcript":42}"#,
        r#"{"type":"TurnInfo","event":"SomethingNew","turn_index":0,"transcript":"Ignore me."}"#,
        r#"{"type":"Mystery"}"#,
    ] {
        env.stt.flux_fault(FluxFault::Raw(raw.to_owned()));
    }
    // Then a fatal Error: the connection ends and is reconnected.
    env.stt.flux_fault(FluxFault::Error);
    let log = call.await.expect("replay");
    assert!(log.violations.is_empty(), "{:?}", log.violations);

    let flux = env.stt.flux_connections();
    assert_eq!(
        flux.len(),
        2,
        "the Error ended one connection; one reconnection"
    );
    assert_eq!(flux[0].close_sent.map(|(_, code)| code), Some(1011));
    let requests = env.llm.requests();
    assert_eq!(requests.len(), 1, "no turn from the malformed messages");
    let question = fixture.sidecar.utterances[0].text.as_str();
    assert_eq!(user_turns(&requests[0].messages), [question]);
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flux_stand_in_refuses_what_flux_refuses() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let env = TestEnv::start().await;
    let connect = |query: &str, key: &str| {
        let url = format!("{}?{query}", env.stt.flux_url());
        let mut request = url.into_client_request().expect("a request");
        let token = format!("Token {key}").parse().expect("a header");
        request.headers_mut().insert("authorization", token);
        tokio_tungstenite::connect_async(request)
    };
    let good = "model=flux-general-en&encoding=mulaw&sample_rate=8000";
    let status = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
        Ok(_) => 101,
    };
    assert_eq!(status(connect(good, "wrong").await), 401);
    let nova = "model=nova-3&encoding=mulaw&sample_rate=8000";
    assert_eq!(status(connect(nova, support::DEEPGRAM_KEY).await), 400);
    let no_rate = "model=flux-general-en&encoding=mulaw";
    assert_eq!(status(connect(no_rate, support::DEEPGRAM_KEY).await), 400);
    let eager = "model=flux-general-en&encoding=mulaw&sample_rate=8000&eager_eot_threshold=0.95";
    assert_eq!(status(connect(eager, support::DEEPGRAM_KEY).await), 400);
    assert_eq!(status(connect(good, support::DEEPGRAM_KEY).await), 101);
    let refused: Vec<u16> = env.stt.flux_refusals().iter().map(|r| r.status).collect();
    assert_eq!(refused, [401, 400, 400, 400]);
    assert_eq!(env.stt.flux_connections().len(), 1);
    assert!(env.stt.refusals().is_empty(), "v1's record is its own");
}
