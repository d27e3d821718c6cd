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
//! A second group, `quiet_read`, measures the poll of a WebSocket that has nothing to read, which
//! every frame also pays, with and without [`ivr_bridge::woken::ReadWake`].
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

/// What polling a WebSocket with nothing to read costs, and what [`ReadWake`] leaves of it. A
/// call's task polls every source each time it wakes (for a Twilio frame: the recogniser's
/// socket, which has nothing to say; for a transcript or a reply's event: Twilio's socket), so
/// every frame pays at least one such poll. `CALLS` client sockets over loopback, each polled
/// once per iteration, as many as a call's task would with that many calls live (their
/// buffers out of cache, as they are when a thousand calls take turns).
fn quiet_read(c: &mut Criterion) {
    use std::task::{Context, Waker};

    use futures::StreamExt;
    use ivr_bridge::socket::SOCKET_READ_BUFFER;
    use ivr_bridge::woken::ReadWake;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = WebSocketConfig::default().read_buffer_size(SOCKET_READ_BUFFER);
    let (mut sockets, _servers) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind on loopback");
        let url = format!("ws://{}/", listener.local_addr().expect("address"));
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..CALLS {
            let connect = tokio_tungstenite::connect_async_with_config(&url, Some(config), true);
            let accept = async {
                let (stream, _) = listener.accept().await.expect("accept");
                tokio_tungstenite::accept_async(stream)
                    .await
                    .expect("handshake")
            };
            let ((client, _), server) =
                tokio::join!(async { connect.await.expect("connect") }, accept);
            clients.push(client);
            servers.push(server);
        }
        (clients, servers)
    });
    let _entered = runtime.enter();
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut gates: Vec<ReadWake> = (0..CALLS).map(|_| ReadWake::default()).collect();

    let mut group = c.benchmark_group("quiet_read");
    group.throughput(Throughput::Elements(CALLS as u64));
    group.bench_function("poll the socket", |b| {
        b.iter(|| {
            for socket in &mut sockets {
                assert!(socket.poll_next_unpin(&mut cx).is_pending());
            }
        });
    });
    group.bench_function("poll through ReadWake", |b| {
        b.iter(|| {
            for (socket, gate) in sockets.iter_mut().zip(&mut gates) {
                let polled = gate.poll(&mut cx, |cx| socket.poll_next_unpin(cx));
                assert!(polled.is_pending());
            }
        });
    });
    group.finish();
}

criterion_group!(benches, frame_floor, quiet_read);
criterion_main!(benches);
