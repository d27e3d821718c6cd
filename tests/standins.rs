//! The provider stand-ins speak the real wire formats: the server's own clients talk to them
//! unchanged, and they refuse what the providers refuse.

use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ivr_bridge::llm::mistral::Mistral;
use ivr_bridge::llm::{ChatMessage, Role};
use ivr_bridge::tts::deepgram::DeepgramTts;
use ivr_sim::fixture::CallFixture;
use ivr_sim::standin::{faq, voice, Bank, Delays, StandIns};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Settings with every default, pointed at the stand-ins.
fn config(stand_ins: &StandIns) -> ivr_bridge::Config {
    let mut config = ivr_bridge::Config::builder()
        .set("DEEPGRAM_API_KEY", "unset")
        .set("MISTRAL_API_KEY", "unset")
        .build()
        .expect("config");
    config.turns.silence_timeout = Duration::from_millis(1000);
    config.assistant.greeting = "Hello".into();
    config.assistant.system_prompt = "Be brief.".into();
    stand_ins.configure(&mut config);
    config
}

fn fast() -> Delays {
    Delays {
        llm_first_token: Duration::from_millis(10),
        llm_total: Duration::from_millis(30),
        tts_first_byte: Duration::from_millis(5),
    }
}

fn question(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::User, text),
    ]
}

#[tokio::test]
async fn mistral_client_gets_faq_answers_whole_and_streamed() {
    let stand_ins = StandIns::start(Bank::new(), fast()).await.expect("start");
    let config = config(&stand_ins);
    let mistral = Mistral::new(reqwest::Client::new(), &config.llm, config.keys.mistral());
    let whole = mistral
        .complete(&question("What is your address?"))
        .await
        .expect("complete");
    assert_eq!(whole, faq::ADDRESS);
    let mut pieces = mistral
        .stream(&question("Can I visit on Sunday?"))
        .await
        .expect("stream");
    let mut streamed = Vec::new();
    while let Some(piece) = pieces.next().await {
        streamed.push(piece.expect("a delta"));
    }
    assert!(
        streamed.len() > 3,
        "word-sized deltas expected: {streamed:?}"
    );
    assert_eq!(streamed.concat(), faq::VISITING);
    let fallback = mistral
        .complete(&question("Sing me a song"))
        .await
        .expect("complete");
    assert_eq!(fallback, faq::FALLBACK);
    stand_ins.shutdown().await;
}

#[tokio::test]
async fn tts_client_gets_a_stream_of_audio_as_long_as_the_text() {
    let stand_ins = StandIns::start(Bank::new(), fast()).await.expect("start");
    let config = config(&stand_ins);
    let tts = DeepgramTts::new(reqwest::Client::new(), &config.tts, config.keys.deepgram());
    let text = "We are open Monday to Friday.";
    let mut chunks = tts.synthesize(text).await.expect("synthesize");
    let (mut audio, mut count) = (Vec::new(), 0);
    while let Some(chunk) = chunks.next().await {
        audio.extend_from_slice(&chunk.expect("audio"));
        count += 1;
    }
    assert!(count > 1, "audio must stream in several chunks");
    assert_eq!(audio, voice::speak(text));
    let ms = voice::duration_ms(audio.len());
    assert!(
        (1800..2400).contains(&ms),
        "{ms} ms for {} characters",
        text.len()
    );

    let wrong_key = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/speak?encoding=mulaw&sample_rate=8000&container=none",
            stand_ins.tts.addr
        ))
        .header("Authorization", "Token nope")
        .json(&serde_json::json!({"text": "hi"}))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_key.status(), 401);
    stand_ins.shutdown().await;
}

#[tokio::test]
async fn stt_recognises_a_known_utterance_and_refuses_a_wrong_key() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixture =
        CallFixture::load(&root.join("fixtures/calls/one_question.jsonl")).expect("fixture");
    let stand_ins = StandIns::start(fixture.bank(), fast())
        .await
        .expect("start");
    let url = format!(
        "ws://{}/v1/listen?encoding=linear16&sample_rate=8000&interim_results=true\
&vad_events=true&utterance_end_ms=1000",
        stand_ins.stt.addr
    );
    let mut refused = url.clone().into_client_request().expect("request");
    refused
        .headers_mut()
        .insert("Authorization", "Token nope".parse().expect("header"));
    assert!(tokio_tungstenite::connect_async(refused).await.is_err());

    let mut request = url.into_client_request().expect("request");
    let auth = format!("Token {}", ivr_sim::standin::STAND_IN_KEY);
    request
        .headers_mut()
        .insert("Authorization", auth.parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    for frame in fixture.inbound.iter().filter_map(|s| s.audio.as_deref()) {
        let mut pcm = Vec::new();
        ivr_bridge::audio::mulaw::decode_to_pcm16le(frame, &mut pcm);
        ws.send(Message::binary(pcm)).await.expect("send");
    }
    ws.send(Message::text(r#"{"type":"CloseStream"}"#))
        .await
        .expect("close stream");
    let mut kinds = Vec::new();
    let mut finals = Vec::new();
    while let Some(Ok(Message::Text(text))) = ws.next().await {
        let msg: Value = serde_json::from_str(text.as_str()).expect("json");
        let kind = msg["type"].as_str().unwrap_or_default().to_owned();
        if kind == "Results" && msg["is_final"] == true {
            let t = msg["channel"]["alternatives"][0]["transcript"]
                .as_str()
                .unwrap_or_default();
            finals.push(t.to_owned());
        }
        kinds.push(kind);
    }
    let heard: Vec<&str> = finals
        .iter()
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(heard.join(" "), "What are the hospital's opening hours?");
    for kind in ["SpeechStarted", "UtteranceEnd", "Metadata"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(kinds.last().map(String::as_str), Some("Metadata"));
    stand_ins.shutdown().await;
}
