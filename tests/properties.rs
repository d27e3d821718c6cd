//! Property tests: arbitrary bytes and arbitrary JSON at every parser that takes input from the
//! network. Nothing may panic, and nothing may allocate beyond what its input justifies.

use ivr_bridge::audio::frames::{FrameChunker, FRAME_BYTES};
use ivr_bridge::audio::mulaw;
use ivr_bridge::llm::sse::SseParser;
use ivr_bridge::tts::text::{phrases, speakable};
use ivr_bridge::twilio::media::Inbound;
use ivr_bridge::twilio::signature::Validator;
use ivr_bridge::Secret;
use proptest::prelude::*;
use serde_json::{json, Value};

/// JSON values of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::hash_map("[a-zA-Z]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Messages shaped like Twilio's, with the right event names and anything in the fields.
fn twilio_like() -> impl Strategy<Value = Value> {
    let event = prop_oneof![
        Just("connected".to_owned()),
        Just("start".to_owned()),
        Just("media".to_owned()),
        Just("mark".to_owned()),
        Just("dtmf".to_owned()),
        Just("stop".to_owned()),
        "[a-z]{0,8}",
    ];
    (event, any_json(), any_json(), any_json()).prop_map(|(event, body, sid, extra)| {
        json!({"event": event, "streamSid": sid, "sequenceNumber": extra,
               "start": body.clone(), "media": body.clone(), "mark": body.clone(),
               "dtmf": body, "stop": {}})
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn twilio_parser_never_panics_on_text(text in ".{0,400}") {
        let _ = Inbound::parse(&text);
    }

    #[test]
    fn twilio_parser_never_panics_on_any_json(value in any_json()) {
        let _ = Inbound::parse(&value.to_string());
    }

    #[test]
    fn twilio_parser_never_panics_on_twilio_shaped_json(value in twilio_like()) {
        let _ = Inbound::parse(&value.to_string());
    }

    #[test]
    fn media_payloads_decode_to_bounded_pcm(payload in "[A-Za-z0-9+/=*%-]{0,600}") {
        let message = json!({"event":"media","media":{"payload": payload}}).to_string();
        if let Ok(Inbound::Media { media }) = Inbound::parse(&message) {
            let mut mulaw_bytes = Vec::new();
            if media.payload.decode_into(&mut mulaw_bytes).is_ok() {
                prop_assert!(mulaw_bytes.len() <= payload.len() * 3 / 4 + 3);
                let mut pcm = Vec::new();
                mulaw::decode_to_pcm16le(&mulaw_bytes, &mut pcm);
                prop_assert_eq!(pcm.len(), mulaw_bytes.len() * 2);
            }
        }
    }

    #[test]
    fn the_chunker_gives_whole_frames_for_any_split(
        audio in prop::collection::vec(any::<u8>(), 0..2_000),
        cuts in prop::collection::vec(0usize..400, 0..20),
    ) {
        let mut chunker = FrameChunker::new();
        let mut out = Vec::new();
        let mut rest = audio.as_slice();
        for cut in cuts {
            let (head, tail) = rest.split_at(cut.min(rest.len()));
            chunker.push(head, |frame| out.extend_from_slice(frame));
            prop_assert!(chunker.pending() < FRAME_BYTES);
            rest = tail;
        }
        chunker.push(rest, |frame| out.extend_from_slice(frame));
        if let Some(last) = chunker.finish() {
            out.extend_from_slice(&last);
        }
        prop_assert_eq!(out.len() % FRAME_BYTES, 0);
        prop_assert!(out.len() < audio.len() + FRAME_BYTES);
        prop_assert_eq!(&out[..audio.len()], audio.as_slice());
        prop_assert!(out[audio.len()..].iter().all(|&b| b == mulaw::SILENCE));
    }

    #[test]
    fn the_sse_reader_never_panics_and_holds_at_most_one_event(
        bytes in prop::collection::vec(any::<u8>(), 0..4_000),
        piece in 1usize..64,
    ) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in bytes.chunks(piece) {
            if parser.push(chunk, &mut events).is_err() {
                break;
            }
        }
        let total: usize = events.iter().map(String::len).sum();
        prop_assert!(total <= bytes.len() * 3);
    }

    #[test]
    fn phrases_keep_every_word(text in "[a-zA-Z ,.!?:;\n*#\\[\\]()-]{0,300}") {
        // Every word is kept, in order; punctuation with no word beside it is not a phrase.
        let joined: String = phrases(&text).concat();
        let words = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).collect::<String>();
        prop_assert_eq!(words(&joined), words(&text));
        for phrase in phrases(&text) {
            let _ = speakable(&phrase);
        }
    }

    #[test]
    fn signature_checks_never_panic(
        url in ".{0,80}",
        params in prop::collection::vec((".{0,12}", ".{0,12}"), 0..8),
        signature in ".{0,40}",
    ) {
        let validator = Validator::new(Secret::new("token"));
        let _ = validator.is_valid(&url, &params, &signature);
        let good = validator.sign(&url, &params);
        prop_assert!(validator.is_valid(&url, &params, &good));
    }
}

/// The Gather webhooks' form parsing, over HTTP: any body gets a 4xx or valid TwiML, never a
/// 5xx.
#[test]
fn gather_webhooks_answer_any_body_without_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let base = runtime.block_on(async {
        let config = test_config();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(ivr_bridge::serve(listener, config, std::future::pending()));
        format!("http://{address}")
    });
    let client = reqwest::Client::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    });
    let bodies = prop::collection::vec(any::<u8>(), 0..3_000);
    let paths = prop_oneof![
        Just("/call"),
        Just("/process_speech"),
        Just("/speak_response"),
        Just("/call_status"),
        Just("/"),
    ];
    let content_types = prop_oneof![
        Just("application/x-www-form-urlencoded"),
        Just("application/json"),
        Just("text/plain"),
    ];
    runner
        .run(
            &(paths, bodies, content_types),
            |(path, body, content_type)| {
                let status = runtime.block_on(async {
                    client
                        .post(format!("{base}{path}"))
                        .header("content-type", content_type)
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                });
                let status = status.expect("the server answered");
                prop_assert!(status < 500, "{path}: {status}");
                Ok(())
            },
        )
        .expect("no 5xx for any body");
}

/// Settings for a server whose providers are unreachable (nothing here calls them).
fn test_config() -> ivr_bridge::Config {
    ivr_bridge::Config::builder()
        .set("DEEPGRAM_API_KEY", "k")
        .set("MISTRAL_API_KEY", "k")
        .set("MISTRAL_API_URL", "http://127.0.0.1:9/v1/chat/completions")
        .set("LLM_TIMEOUT_MS", "200")
        .set("SPEAK_RESPONSE_WAIT_MS", "200")
        .build()
        .expect("config")
}
