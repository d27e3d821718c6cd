//! One recogniser socket per call, whatever Deepgram protocol it speaks (live v1 or Flux v2).
//!
//! The call hands audio frames to [`SttStream::send_audio`]; a task owns the socket, forwards
//! the audio as binary messages (batched when the protocol wants bigger chunks; frames that
//! queued while the socket was busy go out in one write), speaks the
//! protocol's keep-alive while no audio flows, and turns its JSON into [`SttEvent`]s through a
//! [`Dialect`]. Audio sent while the socket is still connecting waits in a bounded queue, so the
//! first words of a call are not lost. If the socket drops mid-call the task reconnects with
//! backoff while the queue keeps the caller's audio (up to 10 s), so the call goes on without
//! losing speech; only when Deepgram stays unreachable does the call hear [`SttEvent::Lost`].
//! A protocol that transcribes whole turns (Flux) also has the turn in progress sent again to
//! the new connection first ([`super::replay`]), so the turn is heard whole.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::task::JoinHandle;
use tokio::time::{interval, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::connect::{connect, Socket};
use super::replay::{TurnAudio, TurnEdge};
use super::SttEvent;
use crate::queue;
use crate::secret::Secret;

/// Caller audio that may wait for the socket: 10 s of 20 ms frames.
pub const AUDIO_QUEUE_FRAMES: usize = 500;
/// Most audio messages written to the socket at once, when frames queued up while it was busy.
/// The socket's write buffer keeps the largest size it ever held for the rest of the call: 16
/// (≈ 5.4 KB of 20 ms PCM frames) grew every call by kilobytes whenever the server fell behind.
const MESSAGES_PER_WRITE: usize = 4;
/// Deepgram closes a socket that hears nothing for about 10 s; speak up well before.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(4);
/// Pause before each reconnection attempt after a failed one; when they are used up, the
/// recogniser is given up (about 4 s of retrying, within the 10 s the audio queue holds).
const RECONNECT_BACKOFF: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// A connection that lasted this long was healthy: a drop after it reconnects at once, with
/// the backoff reset; one that dropped sooner counts as a failed attempt.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);
/// After `CloseStream`, how long we wait for the last results.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// `CloseStream`, the same in both protocols (PROTOCOLS.md §4.3, §10.2).
const CLOSE_STREAM: &str = r#"{"type":"CloseStream"}"#;

/// Why the recogniser is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum SttError {
    /// The handshake failed or timed out.
    #[error("cannot connect to {service}: {reason}")]
    Connect {
        /// Which Deepgram service ("Deepgram live STT", "Deepgram Flux").
        service: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The socket failed or closed while the call was still talking to it.
    #[error("{service} connection lost: {reason}")]
    Lost {
        /// Which Deepgram service.
        service: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Where a connection's audio sits on our clock: Deepgram counts audio seconds from each
/// connection's first audio, and restarts at zero on every connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    /// When this connection's first audio was sent (Twilio's audio arrives in real time, so
    /// audio time tracks our clock from there).
    pub(super) first_audio: Option<Instant>,
    /// Seconds of audio sent on earlier connections.
    pub(super) earlier_audio_s: f64,
}

impl Clock {
    /// Deepgram's audio time `secs` on our clock; `None` when unknown or absurd.
    pub(super) fn at(&self, secs: f64) -> Option<Instant> {
        let sent = self.first_audio?;
        (secs.is_finite() && (0.0..86_400.0).contains(&secs))
            .then(|| sent + Duration::from_secs_f64(secs))
    }
}

/// What one server text message means to the call.
#[derive(Debug)]
pub(super) enum Incoming {
    /// Something the call must hear.
    Event(SttEvent),
    /// The service reported a fatal error: this connection is over (it is reconnected).
    Fatal(String),
    /// Metadata, acknowledgements, anything unreadable: skipped.
    Nothing,
}

/// What differs between Deepgram's streaming protocols; the socket handling is shared.
pub(super) trait Dialect: Send + 'static {
    /// The service's name in errors and logs.
    const SERVICE: &'static str;
    /// Sent every few seconds while no audio flows; `None` when the protocol has none.
    const KEEPALIVE: Option<&'static str>;
    /// Audio bytes in one second of what is sent (maps audio time across reconnections).
    const BYTES_PER_SECOND: f64;
    /// Frames are batched into binary messages of at least this many bytes (0: one a frame).
    const CHUNK_BYTES: usize;

    /// A new connection hears the turn in progress again first (see [`super::replay`]).
    const REPLAY_TURN: bool = false;

    /// Reads one server text message.
    fn parse(text: &str, clock: &Clock) -> Incoming;

    /// Where `event` puts the caller's turn, for [`Dialect::REPLAY_TURN`].
    fn turn_edge(_event: &SttEvent) -> Option<TurnEdge> {
        None
    }
}

/// Opens a recognition stream for one call on `url`. Returns at once; the socket connects in
/// the background and `events` receives what it hears until the stream is finished or `cancel`
/// fires.
pub(super) fn start<D: Dialect>(
    url: Url,
    key: Secret,
    events: queue::Sender<SttEvent>,
    cancel: CancellationToken,
) -> SttStream {
    let (audio, audio_rx) = queue::bounded(AUDIO_QUEUE_FRAMES);
    let session = Session::<D> {
        url,
        key,
        audio: audio_rx,
        events,
        cancel: cancel.clone(),
        earlier_audio_s: 0.0,
        connection_audio_bytes: 0,
        batch: BytesMut::new(),
        turn: TurnAudio::new(D::BYTES_PER_SECOND),
        dialect: std::marker::PhantomData,
    };
    SttStream {
        audio,
        task: tokio::spawn(session.run()),
        cancel,
        dropped_frames: 0,
    }
}

/// One call's recognition stream, held by the call task.
#[derive(Debug)]
pub struct SttStream {
    /// Caller audio on its way to the socket.
    audio: queue::Sender<Bytes>,
    /// The task that owns the socket.
    task: JoinHandle<()>,
    /// Stops the task outright.
    cancel: CancellationToken,
    /// Frames dropped because the queue was full.
    dropped_frames: u64,
}

impl SttStream {
    /// Queues one frame of audio (in the encoding the stream was opened for); never waits.
    /// Returns false when the frame had to be dropped (the recogniser is more than
    /// [`AUDIO_QUEUE_FRAMES`] frames behind, or gone).
    pub fn send_audio(&mut self, audio: Bytes) -> bool {
        let sent = self.audio.try_send(audio).is_ok();
        if !sent {
            self.dropped_frames += 1;
        }
        sent
    }

    /// Frames dropped so far.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Ends the stream: sends `CloseStream`, gives Deepgram a moment for the last results, then
    /// stops the task.
    pub async fn finish(self) {
        let Self {
            audio,
            mut task,
            cancel,
            ..
        } = self;
        drop(audio);
        if timeout(CLOSE_GRACE + Duration::from_millis(100), &mut task)
            .await
            .is_err()
        {
            cancel.cancel();
            let _ = task.await;
        }
    }
}

/// The task that owns one Deepgram socket.
struct Session<D> {
    url: Url,
    key: Secret,
    audio: queue::Receiver<Bytes>,
    events: queue::Sender<SttEvent>,
    cancel: CancellationToken,
    /// Seconds of audio sent on earlier connections: Deepgram's times restart at zero on each
    /// connection, so this maps them back onto the stream's audio.
    earlier_audio_s: f64,
    /// Bytes of audio sent on the current connection.
    connection_audio_bytes: u64,
    /// Frames waiting to make up one chunk ([`Dialect::CHUNK_BYTES`]); kept across a
    /// reconnection, so a drop does not lose them.
    batch: BytesMut,
    /// The turn in progress, sent again on a new connection ([`Dialect::REPLAY_TURN`]).
    turn: TurnAudio,
    dialect: std::marker::PhantomData<D>,
}

impl<D: Dialect> Session<D> {
    /// Connects, pumps, and reconnects after a drop, until the stream is finished, cancelled,
    /// or Deepgram stays unreachable through every backoff step.
    async fn run(mut self) {
        let mut failures = 0;
        let mut connections = 0u32;
        loop {
            // Boxed: the handshake's future is over 10 KiB, and inline it would make every
            // call's task that big for the whole call, not just while connecting.
            let connecting = Box::pin(connect(&self.url, &self.key, D::SERVICE));
            let connected = tokio::select! {
                () = self.cancel.cancelled() => return,
                result = connecting => result,
            };
            let err = match connected {
                Ok(socket) => {
                    connections += 1;
                    if connections > 1 {
                        tracing::info!("speech recognition reconnected; buffered audio follows");
                    }
                    let opened = Instant::now();
                    let result = self.pump(socket).await;
                    self.earlier_audio_s +=
                        self.connection_audio_bytes as f64 / D::BYTES_PER_SECOND;
                    self.connection_audio_bytes = 0;
                    if D::REPLAY_TURN {
                        // The replayed turn is sent again, not heard twice.
                        self.earlier_audio_s -= self.turn.len() as f64 / D::BYTES_PER_SECOND;
                    }
                    let Err(err) = result else { return };
                    tracing::warn!(
                        %err,
                        "speech recognition dropped mid-call; reconnecting, caller audio is kept meanwhile"
                    );
                    let _ = self.events.send(SttEvent::Dropped).await;
                    if opened.elapsed() >= HEALTHY_AFTER {
                        failures = 0;
                        None
                    } else {
                        // Dropped as soon as it opened: a failure like a refused handshake, so
                        // a service that fails every connection is given up, not hammered.
                        Some(err)
                    }
                }
                Err(err) => Some(err),
            };
            if let Some(err) = err {
                let Some(&delay) = RECONNECT_BACKOFF.get(failures) else {
                    let _ = self.events.send(SttEvent::Lost(Box::new(err))).await;
                    return;
                };
                failures += 1;
                tracing::warn!(%err, attempt = failures, "cannot reach speech recognition; retrying");
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            if self.audio.is_closed() && self.audio.is_empty() && self.batch.is_empty() {
                return;
            }
        }
    }

    /// The frame's bytes as one binary message, or `None` while a chunk is still filling.
    fn chunk(&mut self, frame: Bytes) -> Option<Bytes> {
        if self.batch.is_empty() && frame.len() >= D::CHUNK_BYTES {
            return Some(frame);
        }
        self.batch.extend_from_slice(&frame);
        (self.batch.len() >= D::CHUNK_BYTES).then(|| self.batch.split().freeze())
    }

    /// Writes `first` and the frames that queued up behind it in one flush, each still its own
    /// message; none is held back to wait for another.
    async fn write_queued(
        &mut self,
        socket: &mut Socket,
        first: Bytes,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(frame) = next {
            if let Some(chunk) = self.chunk(frame) {
                if D::REPLAY_TURN {
                    self.turn.push(&chunk);
                }
                let len = chunk.len() as u64;
                socket.feed(Message::Binary(chunk)).await?;
                self.connection_audio_bytes += len;
                written += 1;
            }
            next = if written < MESSAGES_PER_WRITE {
                self.audio.try_recv().ok()
            } else {
                None
            };
        }
        if written > 0 {
            socket.flush().await?;
        }
        Ok(())
    }

    /// Moves audio out and events in until the stream is finished, cancelled or broken.
    /// Not split: this task alone reads and writes the socket, so the halves' lock would buy
    /// nothing.
    async fn pump(&mut self, mut socket: Box<Socket>) -> Result<(), SttError> {
        let lost = |err: tokio_tungstenite::tungstenite::Error| SttError::Lost {
            service: D::SERVICE,
            reason: err.to_string(),
        };
        let mut keepalive = interval(KEEPALIVE_EVERY);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        keepalive.reset();
        let mut closing: Option<Instant> = None;
        let mut clock = Clock {
            first_audio: None,
            earlier_audio_s: self.earlier_audio_s,
        };
        if D::REPLAY_TURN && self.turn.len() > 0 {
            let replayed = Duration::from_secs_f64(self.turn.len() as f64 / D::BYTES_PER_SECOND);
            clock.first_audio = Instant::now().checked_sub(replayed);
            for chunk in self.turn.chunks() {
                socket
                    .send(Message::Binary(chunk.clone()))
                    .await
                    .map_err(lost)?;
                self.connection_audio_bytes += chunk.len() as u64;
            }
        }
        // Made once, not on every frame's turn of the loop.
        let cancelled = self.cancel.clone().cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                () = &mut cancelled => return Ok(()),
                frame = self.audio.recv(), if closing.is_none() => match frame {
                    Some(frame) => {
                        clock.first_audio.get_or_insert_with(Instant::now);
                        self.write_queued(&mut socket, frame).await.map_err(lost)?;
                        keepalive.reset();
                    }
                    None => {
                        if !self.batch.is_empty() {
                            let rest = self.batch.split().freeze();
                            self.connection_audio_bytes += rest.len() as u64;
                            socket.send(Message::Binary(rest)).await.map_err(lost)?;
                        }
                        socket.send(Message::text(CLOSE_STREAM)).await.map_err(lost)?;
                        closing = Some(Instant::now() + CLOSE_GRACE);
                    }
                },
                _ = keepalive.tick(), if closing.is_none() && D::KEEPALIVE.is_some() => {
                    if let Some(keepalive) = D::KEEPALIVE {
                        socket.send(Message::text(keepalive)).await.map_err(lost)?;
                    }
                }
                () = sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => {
                    return Ok(());
                }
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => match D::parse(&text, &clock) {
                        Incoming::Event(event) => {
                            if let Some(edge) = D::turn_edge(&event) {
                                self.turn.edge(edge);
                            }
                            if self.events.send(event).await.is_err() {
                                return Ok(());
                            }
                        }
                        Incoming::Fatal(reason) => {
                            return Err(SttError::Lost { service: D::SERVICE, reason });
                        }
                        Incoming::Nothing => {}
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return match closing {
                            Some(_) => Ok(()),
                            None => Err(SttError::Lost {
                                service: D::SERVICE,
                                reason: match frame {
                                    Some(f) => format!("closed by Deepgram: {} {}", f.code, f.reason),
                                    None => "closed by Deepgram".into(),
                                },
                            }),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(lost(err)),
                    None if closing.is_some() => return Ok(()),
                    None => {
                        return Err(SttError::Lost {
                            service: D::SERVICE,
                            reason: "socket ended".into(),
                        })
                    }
                },
            }
        }
    }
}

/// Deepgram's number, or 0 when it sent NaN or infinity (never passed on).
pub(super) fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_maps_audio_seconds_and_refuses_absurd_ones() {
        let sent = Instant::now();
        let clock = Clock {
            first_audio: Some(sent),
            earlier_audio_s: 3.0,
        };
        assert_eq!(clock.at(1.5), Some(sent + Duration::from_millis(1_500)));
        assert_eq!(clock.at(f64::NAN), None);
        assert_eq!(clock.at(-1.0), None);
        let unknown = Clock {
            first_audio: None,
            ..clock
        };
        assert_eq!(unknown.at(1.0), None);
    }
}
