//! The webhook's TwiML, the health check, and what `/media` does with a plain request.

use crate::support;

use support::TestEnv;

/// Parses TwiML and returns the `<Stream url>` and the verbs under `<Response>`.
fn stream_url(twiml: &str) -> (String, Vec<String>) {
    let doc = roxmltree::Document::parse(twiml).expect("TwiML is XML");
    let response = doc.root_element();
    assert_eq!(response.tag_name().name(), "Response");
    let verbs = response
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_owned())
        .collect();
    let stream = response
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .expect("a Stream element");
    assert_eq!(
        stream.parent().map(|p| p.tag_name().name()),
        Some("Connect")
    );
    (stream.attribute("url").expect("url").to_owned(), verbs)
}

async fn post_webhook(env: &TestEnv, headers: &[(&str, &str)]) -> (String, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/", env.http_url()))
        .form(&[("CallSid", "CA123"), ("From", "+15551234567")]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = support::gather_phone::answer(request).await;
    assert_eq!(answer.status, 200);
    (answer.content_type, answer.body)
}

#[tokio::test]
async fn webhook_connects_the_call_to_the_media_stream_behind_a_tunnel() {
    let env = TestEnv::start().await;
    let (content_type, twiml) = post_webhook(
        &env,
        &[
            ("host", "abc.ngrok-free.app"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    let (url, verbs) = stream_url(&twiml);
    assert_eq!(url, "wss://abc.ngrok-free.app/media");
    // With an action, Twilio runs what `/stream_ended` answers, never a verb after `<Connect>`.
    assert_eq!(verbs, ["Connect"]);
    let connect = &support::gather_phone::verbs(&twiml)[0];
    assert_eq!(
        connect.attr("action"),
        "https://abc.ngrok-free.app/stream_ended"
    );
}

#[tokio::test]
async fn webhook_uses_public_url_when_configured() {
    let env = TestEnv::start_with(|config| {
        config.twilio.public_url = Some(reqwest::Url::parse("https://voice.example.com").unwrap());
    })
    .await;
    let (_, twiml) = post_webhook(&env, &[("host", "internal:8080")]).await;
    assert_eq!(stream_url(&twiml).0, "wss://voice.example.com/media");
    let connect = &support::gather_phone::verbs(&twiml)[0];
    assert_eq!(
        connect.attr("action"),
        "https://voice.example.com/stream_ended"
    );
}

#[tokio::test]
async fn webhook_without_tls_in_front_gives_a_ws_url() {
    let env = TestEnv::start().await;
    let (_, twiml) = post_webhook(&env, &[]).await;
    assert_eq!(stream_url(&twiml).0, format!("ws://{}/media", env.server));
    let connect = &support::gather_phone::verbs(&twiml)[0];
    assert_eq!(
        connect.attr("action"),
        format!("http://{}/stream_ended", env.server)
    );
}

#[tokio::test]
async fn health_check_and_plain_get_on_media() {
    let env = TestEnv::start().await;
    let health = reqwest::get(format!("{}/healthz", env.http_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let media = reqwest::get(format!("{}/media", env.http_url()))
        .await
        .unwrap();
    assert!(media.status().is_client_error(), "{}", media.status());
}
