//! The reader driven by scripted sockets: what each message becomes, and what ends a stream.

use super::*;
use crate::audio::mulaw;

const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;
const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
/// μ-law `FF 7F 00` at 40 ms of the outbound track.
const MEDIA: &str = r#"{"event":"media","sequenceNumber":"4","media":{"track":"outbound","chunk":"2","timestamp":"40","payload":"/38A"},"streamSid":"MZ1"}"#;
const STOP: &str = r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC1","callSid":"CA1"},"streamSid":"MZ1"}"#;

type Scripted = futures::stream::Iter<std::vec::IntoIter<Result<Message, axum::Error>>>;

fn text(s: &str) -> Result<Message, axum::Error> {
    Ok(Message::Text(s.into()))
}

/// A socket that delivers `messages`, then ends.
fn socket(messages: Vec<Result<Message, axum::Error>>) -> MediaStream<Scripted> {
    MediaStream::new(futures::stream::iter(messages))
}

#[tokio::test]
async fn start_skips_what_comes_before_it() {
    let mut stream = socket(vec![
        text(CONNECTED),
        Ok(Message::Binary(vec![1, 2].into())),
        text(MEDIA),
        text("not json"),
        text(START),
        text(STOP),
    ]);
    let start = stream.start(Duration::from_secs(10)).await.expect("start");
    assert_eq!(
        (start.call_sid.as_str(), start.stream_sid.as_str()),
        ("CA1", "MZ1")
    );
    assert_eq!(
        stream.malformed(),
        0,
        "only messages after start are counted"
    );
    assert_eq!(stream.next().await, StreamEvent::End(StreamEnd::Stopped));
}

#[tokio::test]
async fn no_start_when_the_socket_ends_or_fails_first() {
    let mut closed = socket(vec![text(CONNECTED), Ok(Message::Close(None))]);
    assert_eq!(closed.start(Duration::from_secs(10)).await, None);
    let mut ended = socket(vec![text(CONNECTED)]);
    assert_eq!(ended.start(Duration::from_secs(10)).await, None);
    let mut failed = socket(vec![Err(axum::Error::new(std::io::Error::other("reset")))]);
    assert_eq!(failed.start(Duration::from_secs(10)).await, None);
}

#[tokio::test(start_paused = true)]
async fn no_start_within_the_limit_gives_up_at_the_limit() {
    let silent = futures::stream::iter(vec![text(CONNECTED)])
        .chain(futures::stream::pending::<Result<Message, axum::Error>>());
    let mut stream = MediaStream::new(silent);
    let opened = Instant::now();
    assert_eq!(stream.start(Duration::from_secs(10)).await, None);
    assert_eq!(opened.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn media_becomes_pcm_with_its_track_and_time() {
    let mut stream = socket(vec![text(START), text(MEDIA)]);
    stream.start(Duration::from_secs(10)).await.expect("start");
    let mut expected = Vec::new();
    mulaw::decode_to_pcm16le(&[0xFF, 0x7F, 0x00], &mut expected);
    assert_eq!(
        stream.next().await,
        StreamEvent::Media(Frame {
            track: Track::Outbound,
            timestamp_ms: Some(40),
            audio: Bytes::from(expected),
        })
    );
}

#[tokio::test]
async fn an_undecoded_stream_hands_over_the_mulaw_as_is() {
    let mut stream = socket(vec![text(START), text(MEDIA)]).undecoded();
    stream.start(Duration::from_secs(10)).await.expect("start");
    let StreamEvent::Media(frame) = stream.next().await else {
        panic!("media expected")
    };
    assert_eq!(frame.audio.as_ref(), [0xFF, 0x7F, 0x00]);
}

#[tokio::test]
async fn marks_and_keys_are_events() {
    let mut stream = socket(vec![
        text(START),
        text(
            r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"reply-1.0"}}"#,
        ),
        text(
            r##"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"#"}}"##,
        ),
    ]);
    stream.start(Duration::from_secs(10)).await.expect("start");
    assert_eq!(stream.next().await, StreamEvent::Mark("reply-1.0".into()));
    assert_eq!(stream.next().await, StreamEvent::Dtmf("#".into()));
    assert_eq!(stream.next().await, StreamEvent::End(StreamEnd::Closed));
}

#[tokio::test]
async fn unusable_messages_are_counted_and_skipped() {
    let mut stream = socket(vec![
        text(START),
        Ok(Message::Binary(vec![0xFF; 160].into())),
        text("this is not json"),
        text(r#"{"event":"hologram","streamSid":"MZ1"}"#),
        text(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"%%%"}}"#),
        text(r#"{"event":"media","streamSid":"MZ1","media":{}}"#),
        // Neither is malformed: a second start is ignored, `connected` and pings are noise.
        text(START),
        text(CONNECTED),
        Ok(Message::Ping(Bytes::new())),
        text(STOP),
    ]);
    stream.start(Duration::from_secs(10)).await.expect("start");
    assert_eq!(stream.next().await, StreamEvent::End(StreamEnd::Stopped));
    assert_eq!(stream.malformed(), 5);
    stream.skip("media of an unknown track");
    assert_eq!(stream.malformed(), 6);
}

#[tokio::test]
async fn a_failed_socket_ends_the_stream_as_failed() {
    let mut stream = socket(vec![
        text(START),
        Err(axum::Error::new(std::io::Error::other("reset"))),
    ]);
    stream.start(Duration::from_secs(10)).await.expect("start");
    assert_eq!(stream.next().await, StreamEvent::End(StreamEnd::Failed));
}

#[test]
fn end_labels_are_the_calls_counter_outcomes() {
    let labels = [StreamEnd::Stopped, StreamEnd::Closed, StreamEnd::Failed].map(StreamEnd::label);
    assert_eq!(labels, ["caller_hung_up", "socket_closed", "socket_failed"]);
}
