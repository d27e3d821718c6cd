//! Only Twilio may drive a call: with `TWILIO_AUTH_TOKEN` set, every webhook and the Media
//! Stream handshake need a valid `X-Twilio-Signature`.

use crate::support;

use ivr_bridge::twilio::signature::Validator;
use ivr_bridge::Secret;
use support::TestEnv;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "twilio-auth-token-for-tests";
const PUBLIC: &str = "https://voice.example.com";

async fn signed_env() -> TestEnv {
    TestEnv::start_with(|config| {
        config.twilio.twilio_auth_token = Some(Secret::new(TOKEN));
        config.twilio.public_url = Some(reqwest::Url::parse(PUBLIC).unwrap());
    })
    .await
}

fn form(call_sid: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", "AC0123"),
        ("CallSid", call_sid),
        ("From", "+15551234567"),
        ("To", "+15557654321"),
        ("CallStatus", "ringing"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

/// POSTs `params` to `path`, signed for `signed_url` when given.
async fn post(
    env: &TestEnv,
    path: &str,
    params: &[(String, String)],
    signature: Option<String>,
) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", env.http_url()))
        .form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request.send().await.expect("answered").status().as_u16()
}

#[tokio::test]
async fn webhooks_need_twilios_signature_over_the_public_url() {
    let env = signed_env().await;
    let twilio = Validator::new(Secret::new(TOKEN));
    let params = form("CA1");
    for path in [
        "/",
        "/call",
        "/process_speech",
        "/speak_response",
        "/call_status",
        "/stream_ended",
    ] {
        let url = format!("{PUBLIC}{path}");
        let good = twilio.sign(&url, &params);
        assert_eq!(
            post(&env, path, &params, None).await,
            403,
            "{path} unsigned"
        );
        assert_eq!(
            post(&env, path, &params, Some("bm9wZQ==".into())).await,
            403,
            "{path} forged"
        );
        // Signed for another URL (the local one, as a proxy would see it): refused.
        let local = twilio.sign(&format!("{}{path}", env.http_url()), &params);
        assert_eq!(
            post(&env, path, &params, Some(local)).await,
            403,
            "{path} wrong URL"
        );
        // A parameter changed after signing: refused.
        let mut tampered = params.clone();
        tampered[2].1 = "+15550000000".into();
        assert_eq!(
            post(&env, path, &tampered, Some(good.clone())).await,
            403,
            "{path} tampered"
        );
        let status = post(&env, path, &params, Some(good)).await;
        assert!(status < 300, "{path} signed: {status}");
    }
    // The health check stays open for load balancers.
    let health = reqwest::get(format!("{}/healthz", env.http_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn the_media_stream_handshake_needs_the_wss_signature() {
    let env = signed_env().await;
    let twilio = Validator::new(Secret::new(TOKEN));
    let handshake = |signature: Option<String>| {
        let mut request = env.media_url().into_client_request().unwrap();
        if let Some(signature) = signature {
            request
                .headers_mut()
                .insert("x-twilio-signature", signature.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    let refused = handshake(None).await.expect_err("unsigned upgrade refused");
    assert!(refused.to_string().contains("403"), "{refused}");
    let https_form = twilio.sign(&format!("{PUBLIC}/media"), &[]);
    assert!(
        handshake(Some(https_form)).await.is_err(),
        "the https URL is not what Twilio signs"
    );

    let (socket, response) = handshake(Some(twilio.sign("wss://voice.example.com/media", &[])))
        .await
        .expect("signed upgrade accepted");
    assert_eq!(response.status(), 101);
    drop(socket);
}

#[tokio::test]
async fn behind_a_tunnel_without_public_url_the_forwarded_host_is_what_is_signed() {
    let env = TestEnv::start_with(|config| {
        config.twilio.twilio_auth_token = Some(Secret::new(TOKEN));
    })
    .await;
    let twilio = Validator::new(Secret::new(TOKEN));
    let params = form("CA2");
    let signature = twilio.sign("https://abc.ngrok-free.app/", &params);
    let status = reqwest::Client::new()
        .post(format!("{}/", env.http_url()))
        .header("host", "abc.ngrok-free.app")
        .header("x-forwarded-proto", "https")
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}
