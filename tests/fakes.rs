//! Tests of the simulated world's stand-ins and caller with the tests' hooks on (record, faults,
//! test voice), against plain clients: no ivr-bridge server involved. If these fail, behaviour
//! tests can't be trusted.

use crate::support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use ivr_sim::standin::faq;
use ivr_sim::standin::voice::{tones as audio_for, TONE_BYTES_PER_CHAR as BYTES_PER_CHAR};
use support::fixture::{pcm16le, FRAME_BYTES};
use support::transcript;
use support::{Fixture, LlmStandIn, SttStandIn, DEEPGRAM_KEY, MISTRAL_KEY};

const LISTEN_QUERY: &str = "model=nova-2&encoding=linear16&sample_rate=8000&channels=1\
&interim_results=true&endpointing=300&utterance_end_ms=1000&vad_events=true&smart_format=true";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_stt(stt: &SttStandIn, auth: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("{}?{LISTEN_QUERY}", stt.url())
        .into_client_request()
        .unwrap();
    if let Some(auth) = auth {
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// Reads text messages until the socket ends (completing the close handshake); returns them
/// and the fake's close code.
async fn read_all(mut rx: futures::stream::SplitStream<Ws>) -> (Vec<Value>, Option<u16>) {
    let (mut msgs, mut code) = (Vec::new(), None);
    while let Some(Ok(msg)) = rx.next().await {
        match msg {
            Message::Text(t) => msgs.push(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(frame) => code = frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    }
    (msgs, code)
}

/// Final transcripts grouped into utterances: finals accumulate until `speech_final`.
fn utterances(msgs: &[Value]) -> Vec<String> {
    let (mut out, mut acc) = (Vec::new(), Vec::<String>::new());
    for m in msgs
        .iter()
        .filter(|m| m["type"] == "Results" && m["is_final"] == true)
    {
        if !transcript(m).is_empty() {
            acc.push(transcript(m).to_owned());
        }
        if m["speech_final"] == true && !acc.is_empty() {
            out.push(acc.join(" "));
            acc.clear();
        }
    }
    out
}

#[tokio::test]
async fn stt_refuses_a_wrong_key_before_upgrading() {
    let stt = support::start_stt().await;
    let key = format!("Token {DEEPGRAM_KEY}");
    let bearer = format!("Bearer {DEEPGRAM_KEY}");
    for auth in [None, Some("Token nope"), Some(bearer.as_str())] {
        assert_eq!(connect_stt(&stt, auth).await.err(), Some(401), "{auth:?}");
    }
    stt.set_refuse_all(true);
    assert_eq!(connect_stt(&stt, Some(&key)).await.err(), Some(503));
    stt.set_refuse_all(false);
    assert!(connect_stt(&stt, Some(&key)).await.is_ok());
    let refusals = stt.refusals();
    let statuses: Vec<u16> = refusals.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 401, 503]);
    assert_eq!(refusals[1].authorization.as_deref(), Some("Token nope"));
    assert!(support::eventually(Duration::from_secs(1), || stt.connections().len() == 1).await);
}

/// Streams a fixture's whole inbound audio as PCM16LE in `batch`-frame binary messages, then
/// `CloseStream`; returns what the fake said and its close code.
async fn transcribe(
    stt: &SttStandIn,
    fixture: &Fixture,
    batch: usize,
) -> (Vec<Value>, Option<u16>) {
    let ws = connect_stt(stt, Some(&format!("Token {DEEPGRAM_KEY}")))
        .await
        .unwrap();
    let (mut tx, rx) = ws.split();
    let reader = tokio::spawn(read_all(rx));
    let pcm = pcm16le(&fixture.inbound_mulaw());
    for chunk in pcm.chunks(FRAME_BYTES * 2 * batch) {
        tx.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    tx.send(Message::text(r#"{"type":"CloseStream"}"#))
        .await
        .unwrap();
    reader.await.unwrap()
}

#[tokio::test]
async fn stt_transcribes_every_fixture_with_interims_finals_and_events() {
    let stt = support::start_stt().await;
    let fixtures = support::fixture::all();
    let runs = fixtures
        .iter()
        .enumerate()
        .map(|(i, f)| transcribe(&stt, f, [1, 5, 3, 1][i % 4]));
    let results = futures::future::join_all(runs).await;
    for (fixture, (msgs, close)) in fixtures.iter().zip(results) {
        let name = &fixture.sidecar.name;
        let texts: Vec<&str> = fixture
            .sidecar
            .utterances
            .iter()
            .map(|u| u.text.as_str())
            .collect();
        assert_eq!(utterances(&msgs), texts, "{name}");
        // A noise (a cough) is speech to the recogniser's detector, with no words.
        let sounds = texts.len() + fixture.sidecar.noises.len();
        let count = |kind: &str| msgs.iter().filter(|m| m["type"] == kind).count();
        assert_eq!(count("SpeechStarted"), sounds, "{name}");
        assert_eq!(count("UtteranceEnd"), sounds, "{name}");
        let interims: Vec<&Value> = msgs.iter().filter(|m| m["is_final"] == false).collect();
        assert!(
            interims.len() >= texts.len(),
            "{name}: {} interims",
            interims.len()
        );
        // Interims without words are the noises'.
        let noise_starts: Vec<f64> = fixture
            .sidecar
            .noises
            .iter()
            .map(|n| n.start_ms as f64 / 1000.0)
            .collect();
        for m in interims.iter().filter(|m| transcript(m).is_empty()) {
            let start = m["start"].as_f64().unwrap_or(-1.0);
            assert!(
                noise_starts.iter().any(|s| (s - start).abs() < 0.05),
                "{name}: an interim without words at {start} s"
            );
        }
        for m in interims.iter().filter(|m| !transcript(m).is_empty()) {
            let t = transcript(m);
            assert!(texts.iter().any(|u| u.starts_with(t)), "{name}: {t:?}");
        }
        let finals = msgs.iter().filter(|m| m["is_final"] == true);
        let wordless = finals.filter(|m| transcript(m).is_empty()).count();
        assert_eq!(wordless, fixture.sidecar.noises.len(), "{name}");
        let finals = msgs.iter().filter(|m| m["is_final"] == true);
        assert!(finals.clone().all(|m| m["from_finalize"] == false));
        assert!(
            finals.clone().any(|m| m["speech_final"] == false),
            "{name}: no split final"
        );
        assert_eq!(msgs.last().unwrap()["type"], "Metadata", "{name}");
        assert_eq!(close, Some(1000), "{name}");
    }
    let conns = stt.connections();
    assert_eq!(conns.len(), fixtures.len());
    for c in &conns {
        assert_eq!(c.close_streams, 1);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(c.query.get("encoding"), Some("linear16"));
    }
    let total: usize = fixtures.iter().map(|f| f.inbound_mulaw().len() * 2).sum();
    assert_eq!(conns.iter().map(|c| c.audio.len()).sum::<usize>(), total);
}

#[tokio::test]
async fn stt_finalize_flushes_and_never_repeats_words() {
    let stt = support::start_stt().await;
    let fixture = support::fixture::load("one_question");
    let text = &fixture.sidecar.utterances[0].text;
    let ws = connect_stt(&stt, Some(&format!("Token {DEEPGRAM_KEY}")))
        .await
        .unwrap();
    let (mut tx, rx) = ws.split();
    let reader = tokio::spawn(read_all(rx));
    let pcm = pcm16le(&fixture.inbound_mulaw());
    let middle = (2_000 + 1_000) / 20 * FRAME_BYTES * 2 + 1; // mid-utterance, mid-sample
    tx.send(Message::binary(pcm[..middle].to_vec()))
        .await
        .unwrap();
    for control in [
        r#"{"type":"KeepAlive"}"#,
        "not json",
        r#"{"type":"Finalize"}"#,
    ] {
        tx.send(Message::text(control)).await.unwrap();
    }
    tx.send(Message::binary(pcm[middle..].to_vec()))
        .await
        .unwrap();
    tx.send(Message::text(r#"{"type":"CloseStream"}"#))
        .await
        .unwrap();
    let (msgs, close) = reader.await.unwrap();
    let finals: Vec<&Value> = msgs.iter().filter(|m| m["is_final"] == true).collect();
    let flushed: Vec<&str> = finals
        .iter()
        .filter(|m| m["from_finalize"] == true)
        .map(|m| transcript(m))
        .collect();
    assert!(!flushed.is_empty() && text.starts_with(&flushed.join(" ")));
    let all: Vec<&str> = finals
        .iter()
        .map(|m| transcript(m))
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(all.join(" "), *text);
    assert_eq!(close, Some(1000));
    let conn = &stt.connections()[0];
    assert_eq!(
        (conn.keepalives, conn.finalizes, conn.close_streams),
        (1, 1, 1)
    );
    assert_eq!(conn.violations.len(), 3, "{:?}", conn.violations); // 2 odd frames, "not json"
}

#[tokio::test]
async fn stt_delays_transcripts_and_drops_connections_on_request() {
    let stt = support::start_stt().await;
    stt.set_transcript_delay(Duration::from_millis(300));
    let fixture = support::fixture::load("visiting_hours");
    let ws = connect_stt(&stt, Some(&format!("Token {DEEPGRAM_KEY}")))
        .await
        .unwrap();
    let (mut tx, rx) = ws.split();
    let reader = tokio::spawn(read_all(rx));
    let pcm = pcm16le(&fixture.inbound_mulaw()[..4_000 * 8]);
    tx.send(Message::binary(pcm)).await.unwrap();
    let sent = tokio::time::Instant::now();
    assert!(
        support::eventually(Duration::from_secs(2), || {
            stt.connections()[0].sent_of("Results").len() > 1
        })
        .await
    );
    let first = stt.connections()[0].sent_of("Results")[0].at;
    assert!(first - sent >= Duration::from_millis(290));
    stt.disconnect_all();
    let (_, close) = reader.await.unwrap();
    assert_eq!(close, Some(1011));
}

#[tokio::test]
async fn tts_streams_the_audio_for_the_text_in_awkward_chunks() {
    let tts = support::start_tts().await;
    let text = "Visiting hours are every day from 10 AM to 8 PM.";
    let resp = reqwest::Client::new()
        .post(format!(
            "{}?model=aura-asteria-en&encoding=mulaw&sample_rate=8000&container=none",
            tts.url()
        ))
        .header("authorization", format!("Token {DEEPGRAM_KEY}"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mulaw");
    let mut stream = resp.bytes_stream();
    let (mut body, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    let expected = audio_for(text);
    assert_eq!(expected.len(), text.len() * BYTES_PER_CHAR);
    assert!(expected.iter().all(|&b| b != 0xFF));
    assert_ne!(audio_for("a"), audio_for("b"));
    assert_eq!(body, expected);
    assert!(chunks >= 5, "only {chunks} chunks");
    assert!(support::eventually(Duration::from_secs(1), || tts.requests()[0].completed).await);
    assert_eq!(tts.texts(), [text]);
}

#[tokio::test]
async fn tts_refuses_bad_auth_params_and_bodies() {
    let tts = support::start_tts().await;
    let good = "model=aura-asteria-en&encoding=mulaw&sample_rate=8000&container=none";
    let cases: [(&str, &str, Value, u16); 7] = [
        ("Token wrong", good, json!({"text": "hi"}), 401),
        (
            "",
            "model=m&encoding=linear16&sample_rate=8000&container=none",
            json!({"text": "hi"}),
            400,
        ),
        (
            "",
            "model=m&encoding=mulaw&sample_rate=16000&container=none",
            json!({"text": "hi"}),
            400,
        ),
        (
            "",
            "model=m&encoding=mulaw&sample_rate=8000",
            json!({"text": "hi"}),
            400,
        ),
        ("", good, json!({"text": "hi", "voice": "x"}), 400),
        ("", good, json!({"text": 5}), 400),
        ("", good, json!("hi"), 400),
    ];
    let client = reqwest::Client::new();
    for (auth, query, body, status) in cases {
        let auth = if auth.is_empty() {
            format!("Token {DEEPGRAM_KEY}")
        } else {
            auth.into()
        };
        let resp = client
            .post(format!("{}?{query}", tts.url()))
            .header("authorization", auth)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{query} {body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["err_code"].is_string() && err["request_id"].is_string(),
            "{err}"
        );
    }
    tts.fail_next(1);
    let send = || {
        client
            .post(format!("{}?{good}", tts.url()))
            .header("authorization", format!("Token {DEEPGRAM_KEY}"))
            .json(&json!({"text": "hi"}))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 500);
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(tts.requests().len(), 9);
    assert!(!tts.requests()[0].auth_ok);
}

async fn chat(llm: &LlmStandIn, auth: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(llm.url())
        .header("authorization", auth)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn mistral_answers_from_the_faq_and_validates_like_the_real_api() {
    let llm = support::start_llm().await;
    let bearer = format!("Bearer {MISTRAL_KEY}");
    let messages = json!([{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is your ADDRESS?"}]);
    let resp = chat(
        &llm,
        &bearer,
        json!({"model": "mistral-small-latest", "messages": messages,
        "temperature": 0.3, "max_tokens": 200}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let reply = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(reply, faq::answer("what is your address?"));
    assert!(reply.contains("**") && reply.contains("](https://"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(faq::answer("How do I get to the hospital?").len() >= 260);
    assert_eq!(faq::answer("Blue cheese"), faq::FALLBACK);

    let resp = chat(
        &llm,
        "Bearer nope",
        json!({"model": "m", "messages": messages}),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let extra = json!({"model": "m", "messages": messages, "max_completion_tokens": 5});
    let resp = chat(&llm, &bearer, extra).await;
    assert_eq!(resp.status(), 422);
    let err: Value = resp.json().await.unwrap();
    let detail = &err["message"]["detail"][0];
    assert_eq!(detail["type"], "extra_forbidden");
    assert_eq!(detail["loc"], json!(["body", "max_completion_tokens"]));
    let ends_with_assistant = json!([{"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}]);
    let resp = chat(
        &llm,
        &bearer,
        json!({"model": "m", "messages": ends_with_assistant}),
    )
    .await;
    assert_eq!(resp.status(), 400);

    llm.fail_next(1, reqwest::StatusCode::TOO_MANY_REQUESTS);
    let ok = json!({"model": "m", "messages": messages});
    assert_eq!(chat(&llm, &bearer, ok.clone()).await.status(), 429);
    assert_eq!(chat(&llm, &bearer, ok).await.status(), 200);
    let requests = llm.requests();
    assert_eq!(requests.len(), 6);
    assert_eq!(
        requests[0].messages[1],
        ("user".into(), "What is your ADDRESS?".into())
    );
    assert_eq!(requests[0].model.as_deref(), Some("mistral-small-latest"));
}

#[tokio::test]
async fn mistral_streams_sse_ending_in_done() {
    let llm = support::start_llm().await;
    let question = "What time do you open on Monday?";
    let body = json!({"model": "mistral-small-latest", "stream": true,
        "messages": [{"role": "user", "content": question}]});
    let resp = chat(&llm, &format!("Bearer {MISTRAL_KEY}"), body).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, faq::answer(question));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last["usage"].is_object());
    assert!(chunks.len() > 5);
    assert!(llm.requests()[0].stream);
    assert!(support::eventually(Duration::from_secs(1), || llm.requests()[0].completed).await);
}

#[test]
fn twilio_rules_accept_only_exact_messages_for_the_stream() {
    use ivr_sim::twilio::{check, Outbound};
    let sid = Some("MZ1");
    let ok = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#;
    assert_eq!(check(ok, sid), Ok(Outbound::Media(vec![0xFF, 0xFF])));
    let mark = r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"a"}}"#;
    assert_eq!(check(mark, sid), Ok(Outbound::Mark("a".into())));
    assert_eq!(
        check(r#"{"event":"clear","streamSid":"MZ1"}"#, sid),
        Ok(Outbound::Clear)
    );
    for bad in [
        r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8=","track":"outbound"}}"#,
        r#"{"event":"media","streamSid":"MZ1","media":{"payload":"not base64!"}}"#,
        r#"{"event":"media","streamSid":"MZ2","media":{"payload":"//8="}}"#,
        r#"{"event":"clear","streamSid":"MZ1","sequenceNumber":"1"}"#,
        r#"{"event":"stop","streamSid":"MZ1"}"#,
        "clear",
    ] {
        assert!(check(bad, sid).is_err(), "{bad}");
    }
    assert!(check(ok, None).is_err(), "accepted before start");
}

/// A synthetic call: `connected`, `start`, `seconds` of 20 ms silence frames, `stop`.
fn synthetic_call(seconds: u64) -> Fixture {
    let mut fixture = support::fixture::load("one_question");
    let sid = fixture.stream_sid().to_owned();
    let frame = base64_frame();
    let mut lines: Vec<_> = fixture.inbound.drain(..2).collect();
    for i in 0..seconds * 50 {
        let msg = json!({"event": "media", "sequenceNumber": "0", "streamSid": sid,
            "media": {"track": "inbound", "chunk": (i + 1).to_string(),
                "timestamp": (i * 20).to_string(), "payload": frame}});
        lines.push(support::fixture::Scheduled {
            at_ms: i * 20,
            msg,
            audio: Some(vec![0xFF; FRAME_BYTES]),
        });
    }
    let mut stop = fixture.inbound.pop().unwrap();
    stop.at_ms = seconds * 1000;
    lines.push(stop);
    fixture.inbound = lines;
    fixture
}

fn base64_frame() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([0xFFu8; FRAME_BYTES])
}

/// A scripted stand-in for the server: after `start` it plays 500 ms + mark m1, three bad
/// messages, waits for m1's echo, plays 1 s + mark m2, clears after 300 ms, sends m3 on an
/// empty buffer, then closes. Returns everything it received.
async fn scripted_server(mut ws: axum::extract::ws::WebSocket, sid: String) -> Vec<Value> {
    use axum::extract::ws::Message as M;
    let mut got: Vec<Value> = Vec::new();
    async fn until(ws: &mut axum::extract::ws::WebSocket, got: &mut Vec<Value>, event: &str) {
        while let Some(Ok(M::Text(t))) = ws.recv().await {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            let hit = v["event"] == event;
            got.push(v);
            if hit {
                return;
            }
        }
    }
    use base64::Engine;
    let media = |n: usize| {
        let payload = base64::engine::general_purpose::STANDARD.encode(vec![0x55u8; n]);
        M::text(
            json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}).to_string(),
        )
    };
    let mark = |name: &str| {
        M::text(json!({"event": "mark", "streamSid": sid, "mark": {"name": name}}).to_string())
    };
    until(&mut ws, &mut got, "start").await;
    for _ in 0..5 {
        ws.send(media(800)).await.unwrap();
    }
    ws.send(mark("m1")).await.unwrap();
    ws.send(M::binary(vec![1u8, 2, 3])).await.unwrap();
    ws.send(M::text(
        json!({"event": "mark", "streamSid": "MZnope", "mark": {"name": "x"}}).to_string(),
    ))
    .await
    .unwrap();
    ws.send(M::text(
        json!({"event": "clear", "streamSid": sid, "extra": 1}).to_string(),
    ))
    .await
    .unwrap();
    until(&mut ws, &mut got, "mark").await;
    ws.send(media(8000)).await.unwrap();
    ws.send(mark("m2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(M::text(
        json!({"event": "clear", "streamSid": sid}).to_string(),
    ))
    .await
    .unwrap();
    until(&mut ws, &mut got, "mark").await;
    ws.send(mark("m3")).await.unwrap();
    until(&mut ws, &mut got, "mark").await;
    let _ = ws
        .send(M::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    while let Some(Ok(_)) = ws.recv().await {}
    got
}

#[tokio::test]
async fn replayer_plays_marks_and_clears_like_twilio() {
    use axum::extract::ws::WebSocketUpgrade;
    let fixture = synthetic_call(3);
    let sid = fixture.stream_sid().to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let app = axum::Router::new().route(
        "/media",
        axum::routing::get(move |ws: WebSocketUpgrade| {
            let (sid, tx) = (sid.clone(), tx.lock().unwrap().take());
            async move {
                ws.on_upgrade(move |socket| async move {
                    let got = scripted_server(socket, sid).await;
                    let _ = tx.map(|tx| tx.send(got));
                })
            }
        }),
    );
    let addr = support::spawn_http(app).await;
    let log = support::replay(&format!("ws://{addr}/media"), &fixture).await;
    let got = rx.await.unwrap();

    let names: Vec<&str> = log.marks.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["m1", "m2", "m3"]);
    let [m1, m2, m3] = [&log.marks[0], &log.marks[1], &log.marks[2]];
    // The 500 ms of audio before m1 starts playing when its first frame arrives; the mark itself
    // arrives a little later (how much later depends on the machine's load), so measure from
    // the first frame.
    let m1_wait = m1.echoed_at.unwrap() - log.media[0].at;
    assert!(
        m1_wait >= Duration::from_millis(495) && !m1.discarded,
        "{m1_wait:?}"
    );
    assert!(m2.discarded && m2.echoed_at.unwrap() - log.clears[0].at < Duration::from_millis(50));
    assert!(!m3.discarded && m3.echoed_at.unwrap() - m3.sent_at < Duration::from_millis(50));
    assert_eq!(log.clears.len(), 1);
    let dropped = log.clears[0].dropped_bytes;
    assert!((4_800..=6_000).contains(&dropped), "dropped {dropped}");
    let heard = log.heard();
    assert_eq!(heard.len(), 4_000 + 8_000 - dropped);
    assert_eq!(heard[..], log.media_bytes()[..heard.len()]);
    assert_eq!(log.violations.len(), 3, "{:?}", log.violations);
    assert_eq!(log.server_close_code, Some(1000));
    assert!(log.ms(log.server_closed_at.unwrap()) < 2_000);

    let seqs: Vec<u64> = got
        .iter()
        .filter_map(|v| v["sequenceNumber"].as_str())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let echoes: Vec<&Value> = got.iter().filter(|v| v["event"] == "mark").collect();
    assert_eq!(echoes.len(), 3);
    assert_eq!(echoes[1]["mark"]["name"], "m2");
    assert_eq!(echoes[1]["streamSid"], fixture.stream_sid());
}
