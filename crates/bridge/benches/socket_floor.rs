//! The kernel's floor under a call's frame: what one receive from Twilio's socket and one send
//! to Deepgram's cost on this machine when nothing else is done. Every 20 ms frame of every call
//! needs at least that (one Twilio message in, one Deepgram message out, each on its own TCP
//! connection), so it bounds the server's CPU per call-minute from below: at 3,000 frames a
//! call-minute, 10 µs a frame is 0.03 s.
//!
//! Measured like the load generator's runs, on loopback: `CALLS` connections on each side, the
//! peers' work (writing Twilio's messages, reading Deepgram's) done outside the timed part.
//! No `epoll_wait`, no WebSocket framing, no JSON, no task: a lower bound, not a model.
//!
//! Run with `cargo bench --bench socket_floor`; the result and the machine are in BENCHMARKS.md.
//! Under `cargo test --benches` criterion runs it once, as a smoke test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Connections on each side (a call has one to Twilio and one to Deepgram).
const CALLS: usize = 200;
/// A Twilio `media` message of 20 ms as it arrives: 372 bytes of JSON in a masked WebSocket
/// frame (2-byte header + 2-byte length + 4-byte mask).
const TWILIO_MESSAGE: usize = 372 + 8;
/// 20 ms of 8 kHz PCM16 for Deepgram in a masked WebSocket frame.
const DEEPGRAM_MESSAGE: usize = 320 + 8;

/// Two ends of one loopback TCP connection, with `TCP_NODELAY` as the server sets it.
fn connection(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let address = listener.local_addr().expect("listener address");
    let near = TcpStream::connect(address).expect("connect on loopback");
    let (far, _) = listener.accept().expect("accept on loopback");
    for end in [&near, &far] {
        end.set_nodelay(true).expect("TCP_NODELAY");
    }
    (near, far)
}

fn frame_floor(c: &mut Criterion) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    // (Twilio's end, the server's end) and (the server's end, Deepgram's end).
    let mut twilio: Vec<_> = (0..CALLS).map(|_| connection(&listener)).collect();
    let mut deepgram: Vec<_> = (0..CALLS).map(|_| connection(&listener)).collect();
    let inbound = vec![b'x'; TWILIO_MESSAGE];
    let mut buffer = vec![0u8; 2 * DEEPGRAM_MESSAGE];

    let mut group = c.benchmark_group("socket_floor");
    // One Deepgram message per frame (what the server does: forwarding within 5 ms allows no
    // wait for the next frame), and two (what batching would save, at 20 ms of delay).
    for frames_per_send in [1, 2] {
        group.throughput(Throughput::Elements((CALLS * frames_per_send) as u64));
        let outbound = vec![0u8; DEEPGRAM_MESSAGE * frames_per_send];
        let name = format!("{frames_per_send} receive(s), one send");
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    for _ in 0..frames_per_send {
                        for (caller, _) in &mut twilio {
                            caller.write_all(&inbound).expect("Twilio's side writes");
                        }
                    }
                    let start = Instant::now();
                    for ((_, server_in), (server_out, _)) in twilio.iter_mut().zip(&mut deepgram) {
                        // On loopback a message is already queued whole: one read per message
                        // (Twilio's frames come 20 ms apart, so the server reads them one by one).
                        for _ in 0..frames_per_send {
                            server_in
                                .read_exact(&mut buffer[..TWILIO_MESSAGE])
                                .expect("the server reads");
                        }
                        server_out.write_all(&outbound).expect("the server writes");
                    }
                    spent += start.elapsed();
                    for (_, recogniser) in &mut deepgram {
                        recogniser
                            .read_exact(&mut buffer[..outbound.len()])
                            .expect("Deepgram's side reads");
                    }
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, frame_floor);
criterion_main!(benches);
