//! The per-frame hot path, measured: what every 20 ms of every call costs on its way in (Twilio
//! JSON → base64 → μ-law → PCM for Deepgram) and on its way out (TTS bytes → 160-byte frames →
//! Twilio JSON).
//!
//! Run with `cargo bench --bench hot_path`; results and the machine are in BENCHMARKS.md. Under
//! `cargo test --benches` criterion runs each routine once, as a smoke test.

use std::hint::black_box;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::FutureExt as _;
use ivr_bridge::audio::frames::{FrameChunker, FRAME_BYTES};
use ivr_bridge::audio::mulaw;
use ivr_bridge::audio::pcm::PcmFrames;
use ivr_bridge::twilio::media::{Inbound, Outbound};
use ivr_bridge::twilio::stream::{MediaStream, StreamEvent};

/// A recorded call whose caller speaks from 2 s on: its frames carry real speech, not silence.
const RECORDING: &str = include_str!("../../../fixtures/calls/one_question.jsonl");
/// Offset of the media message taken from it (ms), inside the caller's question.
const SPEECH_AT_MS: u64 = 3000;
/// One mebibyte, the "bulk" input size.
const MIB: usize = 1 << 20;
/// The stream id outbound messages carry (as long as a real one).
const STREAM_SID: &str = "MZ1a713b52c7f6172e85f84b505940444e";
/// TTS network chunk sizes that never line up with a frame.
const AWKWARD_CHUNKS: [usize; 5] = [1, 37, 159, 333, 1021];

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The Twilio `media` message at [`SPEECH_AT_MS`], exactly as it was on the wire.
fn speech_message() -> String {
    RECORDING
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["at_ms"] == SPEECH_AT_MS && line["msg"]["event"] == "media")
        .map(|line| line["msg"].to_string())
        .expect("the recording has a media message at 3000 ms")
}

/// `len` bytes of μ-law covering every code, so no branch predictor sees a constant.
fn mulaw_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 151 % 256) as u8).collect()
}

fn mulaw_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("mulaw_decode");
    for len in [FRAME_BYTES, MIB] {
        let input = mulaw_bytes(len);
        let mut out = Vec::with_capacity(len * 2);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &input, |b, input| {
            b.iter(|| {
                out.clear();
                mulaw::decode_to_pcm16le(black_box(input), &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn mulaw_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("mulaw_encode");
    for len in [FRAME_BYTES, MIB] {
        let mut pcm = Vec::with_capacity(len * 2);
        mulaw::decode_to_pcm16le(&mulaw_bytes(len), &mut pcm);
        let mut out = Vec::with_capacity(len);
        // Throughput in μ-law bytes produced, comparable with decode.
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &pcm, |b, pcm| {
            b.iter(|| {
                out.clear();
                mulaw::encode_from_pcm16le(black_box(pcm), &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn twilio_inbound(c: &mut Criterion) {
    let message = speech_message();
    let mut group = c.benchmark_group("twilio_inbound");
    group.throughput(Throughput::Elements(1));
    let mut mulaw = Vec::with_capacity(FRAME_BYTES);
    group.bench_function("parse_and_base64_decode", |b| {
        b.iter(|| {
            let Ok(Inbound::Media { media }) = Inbound::parse(black_box(&message)) else {
                panic!("not a media message");
            };
            media.payload.decode_into(&mut mulaw).expect("base64");
            black_box(&mulaw);
        })
    });
    let mut pcm = Vec::with_capacity(FRAME_BYTES * 2);
    group.bench_function("parse_decode_to_pcm", |b| {
        b.iter(|| {
            let Ok(Inbound::Media { media }) = Inbound::parse(black_box(&message)) else {
                panic!("not a media message");
            };
            media.payload.decode_into(&mut mulaw).expect("base64");
            pcm.clear();
            mulaw::decode_to_pcm16le(&mulaw, &mut pcm);
            black_box(&pcm);
        })
    });
    // What the call task does with each frame before queueing it for the recogniser: the PCM
    // as its own `Bytes` (dropped here at once, as the recogniser's task does once it is sent).
    group.bench_function("frame_to_stt/vec_per_frame", |b| {
        b.iter(|| {
            let Ok(Inbound::Media { media }) = Inbound::parse(black_box(&message)) else {
                panic!("not a media message");
            };
            media.payload.decode_into(&mut mulaw).expect("base64");
            let mut pcm = Vec::with_capacity(mulaw.len() * 2);
            mulaw::decode_to_pcm16le(&mulaw, &mut pcm);
            black_box(bytes::Bytes::from(pcm))
        })
    });
    let mut frames = PcmFrames::new();
    group.bench_function("frame_to_stt/pooled", |b| {
        b.iter(|| {
            let Ok(Inbound::Media { media }) = Inbound::parse(black_box(&message)) else {
                panic!("not a media message");
            };
            media.payload.decode_into(&mut mulaw).expect("base64");
            black_box(frames.decode(&mulaw))
        })
    });
    // The same through the reader both modes use: socket message → `StreamEvent::Media`. The
    // socket is an endless in-memory stream of the message (no allocation of its own).
    let text: &'static str = Box::leak(message.clone().into_boxed_str());
    let socket = futures::stream::repeat_with(move || {
        Ok::<_, axum::Error>(Message::Text(Utf8Bytes::from_static(text)))
    });
    let mut reader = MediaStream::new(socket);
    group.bench_function("frame_to_stt/stream_reader", |b| {
        b.iter(|| match reader.next().now_or_never() {
            Some(StreamEvent::Media(frame)) => black_box(frame.audio),
            other => panic!("not media: {other:?}"),
        })
    });
    group.finish();
}

fn base64_alone(c: &mut Criterion) {
    let frame = mulaw_bytes(FRAME_BYTES);
    let text = BASE64.encode(&frame);
    let mut group = c.benchmark_group("base64");
    group.throughput(Throughput::Bytes(FRAME_BYTES as u64));
    let mut decoded = Vec::with_capacity(FRAME_BYTES);
    group.bench_function("decode_frame", |b| {
        b.iter(|| {
            decoded.clear();
            BASE64
                .decode_vec(black_box(text.as_bytes()), &mut decoded)
                .expect("base64");
            black_box(&decoded);
        })
    });
    let mut encoded = String::with_capacity(text.len());
    group.bench_function("encode_frame", |b| {
        b.iter(|| {
            encoded.clear();
            BASE64.encode_string(black_box(&frame), &mut encoded);
            black_box(&encoded);
        })
    });
    group.finish();
}

/// TTS bytes cut into awkward chunks → whole frames → the JSON text frames Twilio receives.
fn outbound_frames(c: &mut Criterion) {
    let audio = mulaw_bytes(64 * 1024);
    let mut group = c.benchmark_group("outbound");
    group.throughput(Throughput::Bytes(audio.len() as u64));
    for chunk in AWKWARD_CHUNKS {
        group.bench_with_input(
            BenchmarkId::new("chunk_and_render", chunk),
            &chunk,
            |b, &n| {
                b.iter(|| {
                    let mut chunker = FrameChunker::new();
                    let mut rendered = 0usize;
                    for piece in audio.chunks(n) {
                        chunker.push(black_box(piece), |frame| {
                            rendered += Outbound::Media(frame).to_json(STREAM_SID).len();
                        });
                    }
                    if let Some(last) = chunker.finish() {
                        rendered += Outbound::Media(&last).to_json(STREAM_SID).len();
                    }
                    black_box(rendered);
                })
            },
        );
    }
    group.finish();
}

/// Short runs: the machine has 2 cores and the whole suite should finish in a few minutes.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = mulaw_decode, mulaw_encode, twilio_inbound, base64_alone, outbound_frames
}
criterion_main!(hot_path);
