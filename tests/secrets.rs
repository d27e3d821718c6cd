//! Keys and the auth token never reach a log line, an error or a Debug print: every line the
//! server and its libraries log (at trace level) during a full call and during each failure
//! path is captured and searched.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ivr_bridge::Secret;
use support::{TestEnv, DEEPGRAM_KEY, MISTRAL_KEY};

/// Everything logged by this test binary.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        captured().lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const WRONG_DEEPGRAM: &str = "dg-wrong-key-SECRET-4d1c";
const WRONG_MISTRAL: &str = "mi-wrong-key-SECRET-93ab";
const AUTH_TOKEN: &str = "twilio-token-SECRET-77e0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_logged_or_printed() {
    // Everything at trace, through the same credential guard the binary uses.
    let filter =
        ivr_bridge::telemetry::without_credentials(tracing_subscriber::EnvFilter::new("trace"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| Capture)
        .init();

    // At once: a whole call with good keys; one where the voice fails (then retries) and the
    // model is rate limited (then retries); one where Deepgram and Mistral refuse wrong keys;
    // one where only Mistral does.
    let (env, failing, wrong, half_wrong) = tokio::join!(
        TestEnv::start(),
        TestEnv::start(),
        TestEnv::start_with(|config| {
            config.keys.deepgram_api_key = Some(Secret::new(WRONG_DEEPGRAM));
            config.keys.mistral_api_key = Some(Secret::new(WRONG_MISTRAL));
        }),
        TestEnv::start_with(|config| config.keys.mistral_api_key = Some(Secret::new(WRONG_MISTRAL))),
    );
    failing.tts.fail_next(2);
    failing
        .llm
        .fail_next(1, reqwest::StatusCode::TOO_MANY_REQUESTS);
    let (log, _, _, _) = tokio::join!(
        env.replay("one_question"),
        failing.replay("visiting_hours"),
        wrong.replay("one_question"),
        half_wrong.replay("visiting_hours"),
    );
    assert!(!log.media.is_empty(), "the call really ran");
    let debug = format!("{:?} {:?}", env.state, env.config);

    // Requests Twilio did not sign, with an auth token configured.
    let guarded = TestEnv::start_with(|config| {
        config.twilio.twilio_auth_token = Some(Secret::new(AUTH_TOKEN));
    })
    .await;
    let client = reqwest::Client::new();
    for signature in [None, Some("AAAA"), Some("not base64!")] {
        let mut request = client
            .post(format!("{}/call", guarded.http_url()))
            .form(&[("CallSid", "CA1"), ("SpeechResult", "hello")]);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        assert_eq!(request.send().await.unwrap().status(), 403);
    }
    let refused = tokio_tungstenite::connect_async(guarded.media_url()).await;
    assert!(refused.is_err());
    let debug = format!("{debug} {:?} {:?}", guarded.state, wrong.state);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = String::from_utf8_lossy(&captured().lock().unwrap()).into_owned();
    assert!(
        text.len() > 10_000,
        "the capture saw the calls ({} bytes)",
        text.len()
    );
    assert!(text.contains("refused a request that Twilio did not sign"));
    for secret in [
        DEEPGRAM_KEY,
        MISTRAL_KEY,
        WRONG_DEEPGRAM,
        WRONG_MISTRAL,
        AUTH_TOKEN,
    ] {
        let leaks: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(secret))
            .take(3)
            .collect();
        assert!(
            leaks.is_empty(),
            "{secret} appeared in the logs: {leaks:#?}"
        );
        assert!(
            !debug.contains(secret),
            "{secret} appeared in a Debug print"
        );
    }
}
