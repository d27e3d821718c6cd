//! One recogniser socket per call, whatever Deepgram protocol it speaks (live v1 or Flux v2).
//!
//! The call hands audio frames to [`SttStream::send_audio`] and polls [`SttStream::next`] from
//! its own task, which writes the audio to the socket as binary messages (batched when the
//! protocol wants bigger chunks; frames that queued while the socket was busy go out in one
//! write), speaks the protocol's keep-alive while no audio flows, and turns its JSON into
//! [`SttEvent`]s through a [`Dialect`]: no task of its own, so a frame costs no hand-over. Audio
//! sent while the socket is still connecting waits in a bounded queue, so the first words of a
//! call are not lost. If the socket drops mid-call the stream reconnects with
//! backoff while the queue keeps the caller's audio (up to 10 s), so the call goes on without
//! losing speech; only when Deepgram stays unreachable does the call hear [`SttEvent::Lost`].
//! A protocol that transcribes whole turns (Flux) also has the turn in progress sent again to
//! the new connection first ([`super::replay`]), so the turn is heard whole.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::time::{sleep, sleep_until, timeout, Instant, Sleep};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::connect::{connect, Socket};
use super::replay::{TurnAudio, TurnEdge};
use super::SttEvent;
use crate::secret::Secret;
use crate::woken::ReadWake;

/// Caller audio that may wait for the socket: 10 s of 20 ms frames.
pub const AUDIO_QUEUE_FRAMES: usize = 500;
/// Room the audio queue keeps once drained (it grows while the socket connects or is busy).
const KEPT_FRAMES: usize = 4;
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

/// Opens a recognition stream for one call on `url`. Returns at once: the socket is opened,
/// fed and read by whoever polls [`SttStream::next`] (the call's own task), not by a task of
/// its own.
pub(super) fn start<D: Dialect>(url: Url, key: Secret) -> SttStream {
    let state = State::Connecting(connecting::<D>(&url, &key));
    let session = Session::<D> {
        url,
        key,
        audio: VecDeque::new(),
        closed: false,
        state,
        ahead: None,
        failures: 0,
        connections: 0,
        earlier_audio_s: 0.0,
        connection_audio_bytes: 0,
        batch: BytesMut::new(),
        turn: TurnAudio::new(D::BYTES_PER_SECOND),
        dialect: std::marker::PhantomData,
    };
    SttStream {
        session: Box::new(session),
        dropped_frames: 0,
    }
}

/// One call's recognition stream, owned and driven by the call's task: audio goes in with
/// [`SttStream::send_audio`], and polling [`SttStream::next`] writes it to the socket and
/// reads what Deepgram says. Writing a frame from the task that received it saves a task
/// wake-up and a queue hand-over per 20 ms frame of every call.
pub struct SttStream {
    /// The socket and its state; boxed, so that a call holds one pointer to it.
    session: Box<dyn Pump>,
    /// Frames dropped because the queue was full.
    dropped_frames: u64,
}

impl std::fmt::Debug for SttStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SttStream")
            .field("dropped_frames", &self.dropped_frames)
            .finish_non_exhaustive()
    }
}

impl SttStream {
    /// How long [`SttStream::finish`] may take: the close's grace and a little.
    pub const FINISH_WITHIN: Duration = CLOSE_GRACE.saturating_add(Duration::from_millis(100));

    /// Queues one frame of audio (in the encoding the stream was opened for); never waits. It
    /// is written the next time [`SttStream::next`] is polled. Returns false when the frame had
    /// to be dropped (the recogniser is more than [`AUDIO_QUEUE_FRAMES`] frames behind, or gone).
    pub fn send_audio(&mut self, audio: Bytes) -> bool {
        let sent = self.session.queue(audio);
        if !sent {
            self.dropped_frames += 1;
        }
        sent
    }

    /// Frames dropped so far.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// What the recogniser says next; meanwhile writes the queued audio, keeps the socket alive
    /// and reconnects it. `None` once the stream is over (closed, or lost after
    /// [`SttEvent::Lost`]). Cancel-safe: nothing is lost when it is dropped unfinished.
    pub async fn next(&mut self) -> Option<SttEvent> {
        poll_fn(|cx| self.session.poll_event(cx)).await
    }

    /// No more audio: what is queued is sent, then `CloseStream`; [`SttStream::next`] then
    /// gives the last results and ends within [`CLOSE_GRACE`] of the close.
    pub fn close(&mut self) {
        self.session.close();
    }

    /// Ends the stream: sends `CloseStream` and gives Deepgram a moment for the last results
    /// (which nobody reads any more), at most [`SttStream::FINISH_WITHIN`].
    pub async fn finish(mut self) {
        self.close();
        let _ = timeout(Self::FINISH_WITHIN, async {
            while self.next().await.is_some() {}
        })
        .await;
    }
}

/// A session, whatever its dialect.
trait Pump: Send {
    /// See [`SttStream::send_audio`].
    fn queue(&mut self, audio: Bytes) -> bool;
    /// See [`SttStream::close`].
    fn close(&mut self);
    /// See [`SttStream::next`].
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<SttEvent>>;
}

/// Opening a socket (boxed: the handshake's future is over 10 KiB, and inline it would make
/// every call that big for the whole call, not just while connecting).
type Connecting = Pin<Box<dyn Future<Output = Result<Box<Socket>, SttError>> + Send>>;

/// Starts opening a socket to `url`.
fn connecting<D: Dialect>(url: &Url, key: &Secret) -> Connecting {
    let (url, key) = (url.clone(), key.clone());
    Box::pin(async move { connect(&url, &key, D::SERVICE).await })
}

/// Where a session is.
enum State {
    /// Opening a socket.
    Connecting(Connecting),
    /// Connected.
    Open(Box<Open>),
    /// Waiting before the next attempt after a failed one.
    Backoff(Pin<Box<Sleep>>),
    /// Over: closed, or given up.
    Done,
}

/// An open connection.
struct Open {
    socket: Box<Socket>,
    /// When it opened (a drop soon after counts as a failed attempt).
    opened: Instant,
    /// Maps Deepgram's audio times on this connection to ours.
    clock: Clock,
    /// The turn in progress, still to be sent again before new audio ([`Dialect::REPLAY_TURN`]).
    replay: VecDeque<Bytes>,
    /// Messages handed to the socket since its last flush.
    unflushed: usize,
    /// When audio or a keep-alive was last sent, and when the next keep-alive is due
    /// (reset only when it fires, not on every frame).
    last_sent: Instant,
    keepalive: Option<Pin<Box<Sleep>>>,
    /// `CloseStream` was sent; the last results are taken until this runs out.
    closing: Option<Pin<Box<Sleep>>>,
    /// Whether the socket's read side woke the call since it last had nothing.
    read: ReadWake,
}

/// One Deepgram socket's state, owned by the call.
struct Session<D> {
    url: Url,
    key: Secret,
    /// Caller audio waiting for the socket (while connecting, or while it is busy).
    audio: VecDeque<Bytes>,
    /// No more audio comes: `CloseStream` follows what is queued.
    closed: bool,
    state: State,
    /// An event already decided, returned before anything else.
    ahead: Option<SttEvent>,
    /// Failed attempts in a row.
    failures: usize,
    connections: u32,
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

impl<D: Dialect> Pump for Session<D> {
    fn queue(&mut self, audio: Bytes) -> bool {
        if self.closed
            || matches!(self.state, State::Done)
            || self.audio.len() >= AUDIO_QUEUE_FRAMES
        {
            return false;
        }
        self.audio.push_back(audio);
        true
    }

    fn close(&mut self) {
        self.closed = true;
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<SttEvent>> {
        if let Some(event) = self.ahead.take() {
            return Poll::Ready(Some(event));
        }
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Connecting(connecting) => match ready!(connecting.as_mut().poll(cx)) {
                    Ok(socket) => self.opened(socket),
                    Err(err) => {
                        if let Some(event) = self.failed(err) {
                            return Poll::Ready(Some(event));
                        }
                    }
                },
                State::Backoff(pause) => {
                    ready!(pause.as_mut().poll(cx));
                    self.reconnect();
                }
                State::Open(_) => match self.poll_open(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(event))) => return Poll::Ready(Some(event)),
                    Poll::Ready(Ok(None)) => self.state = State::Done,
                    Poll::Ready(Err(err)) => return Poll::Ready(Some(self.dropped(err))),
                },
            }
        }
    }
}

impl<D: Dialect> Session<D> {
    /// Connects again, unless the call is over and nothing is left to send.
    fn reconnect(&mut self) {
        self.state = if self.closed && self.audio.is_empty() && self.batch.is_empty() {
            State::Done
        } else {
            State::Connecting(connecting::<D>(&self.url, &self.key))
        };
    }

    /// A socket opened: the turn in progress goes first on it, then the queued audio.
    fn opened(&mut self, socket: Box<Socket>) {
        self.connections += 1;
        if self.connections > 1 {
            tracing::info!("speech recognition reconnected; buffered audio follows");
        }
        let now = Instant::now();
        let mut clock = Clock {
            first_audio: None,
            earlier_audio_s: self.earlier_audio_s,
        };
        let mut replay = VecDeque::new();
        if D::REPLAY_TURN && self.turn.len() > 0 {
            let replayed = Duration::from_secs_f64(self.turn.len() as f64 / D::BYTES_PER_SECOND);
            clock.first_audio = now.checked_sub(replayed);
            replay.extend(self.turn.chunks().cloned());
        }
        self.state = State::Open(Box::new(Open {
            socket,
            opened: now,
            clock,
            replay,
            unflushed: 0,
            last_sent: now,
            keepalive: D::KEEPALIVE.map(|_| Box::pin(sleep_until(now + KEEPALIVE_EVERY))),
            closing: None,
            read: ReadWake::default(),
        }));
    }

    /// An attempt failed: the next one after a pause, or, once the pauses are used up, the
    /// recogniser is given up (the event to tell the call).
    fn failed(&mut self, err: SttError) -> Option<SttEvent> {
        let Some(&delay) = RECONNECT_BACKOFF.get(self.failures) else {
            self.state = State::Done;
            return Some(SttEvent::Lost(Box::new(err)));
        };
        self.failures += 1;
        tracing::warn!(%err, attempt = self.failures, "cannot reach speech recognition; retrying");
        self.state = State::Backoff(Box::pin(sleep(delay)));
        None
    }

    /// The open socket broke: the call hears [`SttEvent::Dropped`], and the socket is opened
    /// again while the audio waits (at once after a healthy connection, else after a pause).
    fn dropped(&mut self, err: SttError) -> SttEvent {
        let opened = match &self.state {
            State::Open(open) => open.opened,
            _ => Instant::now(),
        };
        self.earlier_audio_s += self.connection_audio_bytes as f64 / D::BYTES_PER_SECOND;
        self.connection_audio_bytes = 0;
        if D::REPLAY_TURN {
            // The replayed turn is sent again, not heard twice.
            self.earlier_audio_s -= self.turn.len() as f64 / D::BYTES_PER_SECOND;
        }
        tracing::warn!(
            %err,
            "speech recognition dropped mid-call; reconnecting, caller audio is kept meanwhile"
        );
        if opened.elapsed() >= HEALTHY_AFTER {
            self.failures = 0;
            self.reconnect();
        } else {
            // Dropped as soon as it opened: a failure like a refused handshake, so a service
            // that fails every connection is given up, not hammered.
            self.ahead = self.failed(err);
        }
        SttEvent::Dropped
    }

    /// The frame's bytes as one binary message, or `None` while a chunk is still filling.
    fn chunk(&mut self, frame: Bytes) -> Option<Bytes> {
        if self.batch.is_empty() && frame.len() >= D::CHUNK_BYTES {
            return Some(frame);
        }
        self.batch.extend_from_slice(&frame);
        (self.batch.len() >= D::CHUNK_BYTES).then(|| self.batch.split().freeze())
    }

    /// The next message for the socket, if any: the replayed turn, then audio, then (once the
    /// call is over) the last partial chunk and `CloseStream`.
    fn next_message(&mut self, open: &mut Open) -> Option<Message> {
        if let Some(chunk) = open.replay.pop_front() {
            self.connection_audio_bytes += chunk.len() as u64;
            return Some(Message::Binary(chunk));
        }
        while let Some(frame) = self.audio.pop_front() {
            if self.audio.is_empty() && self.audio.capacity() > KEPT_FRAMES {
                self.audio.shrink_to(KEPT_FRAMES);
            }
            open.clock.first_audio.get_or_insert_with(Instant::now);
            if let Some(chunk) = self.chunk(frame) {
                if D::REPLAY_TURN {
                    self.turn.push(&chunk);
                }
                self.connection_audio_bytes += chunk.len() as u64;
                return Some(Message::Binary(chunk));
            }
        }
        if !self.closed || open.closing.is_some() {
            return None;
        }
        if !self.batch.is_empty() {
            let rest = self.batch.split().freeze();
            self.connection_audio_bytes += rest.len() as u64;
            return Some(Message::Binary(rest));
        }
        open.closing = Some(Box::pin(sleep(CLOSE_GRACE)));
        Some(Message::text(CLOSE_STREAM))
    }

    /// Writes what waits for the socket (a flush after every [`MESSAGES_PER_WRITE`]
    /// messages); stops where the socket is busy, to go on when it is writable again.
    fn poll_write(&mut self, open: &mut Open, cx: &mut Context<'_>) -> Result<(), WsError> {
        let mut wrote = false;
        loop {
            if open.unflushed >= MESSAGES_PER_WRITE {
                match open.socket.poll_flush_unpin(cx)? {
                    Poll::Ready(()) => open.unflushed = 0,
                    Poll::Pending => return Ok(()),
                }
            }
            let waiting = !open.replay.is_empty()
                || !self.audio.is_empty()
                || (self.closed && open.closing.is_none());
            if !waiting || open.socket.poll_ready_unpin(cx)?.is_pending() {
                break;
            }
            let Some(message) = self.next_message(open) else {
                break;
            };
            open.socket.start_send_unpin(message)?;
            open.unflushed += 1;
            wrote = true;
        }
        if let (Some(keepalive), Some(text)) = (open.keepalive.as_mut(), D::KEEPALIVE) {
            if wrote {
                open.last_sent = Instant::now();
            }
            if open.closing.is_none() && keepalive.as_mut().poll(cx).is_ready() {
                // Due once nothing was sent for a while; the timer is moved only now, not on
                // every frame.
                let now = Instant::now();
                if now >= open.last_sent + KEEPALIVE_EVERY
                    && open.socket.poll_ready_unpin(cx)?.is_ready()
                {
                    open.socket.start_send_unpin(Message::text(text))?;
                    open.unflushed += 1;
                    open.last_sent = now;
                }
                // Not due any more (just sent, or audio went out meanwhile): the timer moves to
                // the next due time. Still due (the socket was busy): it stays fired, and the
                // socket's wake-up brings the keep-alive back here.
                if now < open.last_sent + KEEPALIVE_EVERY {
                    keepalive.as_mut().reset(open.last_sent + KEEPALIVE_EVERY);
                    let _ = keepalive.as_mut().poll(cx);
                }
            }
        }
        if open.unflushed > 0 && open.socket.poll_flush_unpin(cx)?.is_ready() {
            open.unflushed = 0;
        }
        Ok(())
    }

    /// Moves audio out and takes the next event in. `Ok(None)`: the stream ended as asked.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<SttEvent>, SttError>> {
        // Taken out for the while, so that the session's audio and the socket can be used
        // together.
        let State::Open(mut open) = std::mem::replace(&mut self.state, State::Done) else {
            return Poll::Ready(Ok(None));
        };
        let result = self.poll_socket(&mut open, cx);
        self.state = State::Open(open);
        result
    }

    fn poll_socket(
        &mut self,
        open: &mut Open,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<SttEvent>, SttError>> {
        let lost = |reason: String| SttError::Lost {
            service: D::SERVICE,
            reason,
        };
        self.poll_write(open, cx)
            .map_err(|err| lost(err.to_string()))?;
        if let Some(closing) = open.closing.as_mut() {
            if closing.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(None));
            }
        }
        loop {
            let socket = &mut open.socket;
            let message = match ready!(open.read.poll(cx, |cx| socket.poll_next_unpin(cx))) {
                Some(Ok(message)) => message,
                Some(Err(err)) => return Poll::Ready(Err(lost(err.to_string()))),
                None if open.closing.is_some() => return Poll::Ready(Ok(None)),
                None => return Poll::Ready(Err(lost("socket ended".into()))),
            };
            match message {
                Message::Text(text) => match D::parse(&text, &open.clock) {
                    Incoming::Event(event) => {
                        if let Some(edge) = D::turn_edge(&event) {
                            self.turn.edge(edge);
                        }
                        return Poll::Ready(Ok(Some(event)));
                    }
                    Incoming::Fatal(reason) => return Poll::Ready(Err(lost(reason))),
                    Incoming::Nothing => {}
                },
                Message::Close(frame) => {
                    return Poll::Ready(match (open.closing.is_some(), frame) {
                        (true, _) => Ok(None),
                        (false, Some(f)) => {
                            Err(lost(format!("closed by Deepgram: {} {}", f.code, f.reason)))
                        }
                        (false, None) => Err(lost("closed by Deepgram".into())),
                    });
                }
                _ => {}
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

    /// A dialect that passes frames as they are and says nothing back.
    struct Plain;

    impl Dialect for Plain {
        const SERVICE: &'static str = "test recogniser";
        const KEEPALIVE: Option<&'static str> = None;
        const BYTES_PER_SECOND: f64 = 16_000.0;
        const CHUNK_BYTES: usize = 0;

        fn parse(_text: &str, _clock: &Clock) -> Incoming {
            Incoming::Nothing
        }
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 320])
    }

    /// A recogniser on 127.0.0.1 that keeps every message it is sent, and answers
    /// `CloseStream` with a close frame; returns its URL and what it got.
    async fn listener() -> (Url, tokio::sync::oneshot::Receiver<Vec<Message>>) {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = Url::parse(&format!(
            "ws://{}/v1/listen",
            server.local_addr().expect("addr")
        ))
        .expect("url");
        let (done, got) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = server.accept().await.expect("accept");
            let mut socket = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
            let mut messages = Vec::new();
            while let Some(Ok(message)) = socket.next().await {
                let closing = message.to_text().is_ok_and(|t| t == CLOSE_STREAM);
                messages.push(message);
                if closing {
                    let _ = socket.close(None).await;
                }
            }
            let _ = done.send(messages);
        });
        (url, got)
    }

    #[tokio::test]
    async fn audio_queued_while_connecting_goes_out_in_order_then_closestream() {
        let (url, got) = listener().await;
        let mut stream = start::<Plain>(url, Secret::new("k"));
        for n in 0..5 {
            assert!(
                stream.send_audio(frame(n)),
                "queued before the socket opened"
            );
        }
        // Nothing is said back, so polling only moves the audio until the stream is closed.
        let _ = timeout(Duration::from_millis(300), stream.next()).await;
        for n in 5..8 {
            assert!(stream.send_audio(frame(n)));
        }
        stream.close();
        assert!(!stream.send_audio(frame(9)), "no audio after the close");
        let ended = timeout(Duration::from_secs(2), stream.next()).await;
        assert!(
            matches!(ended, Ok(None)),
            "the stream ends once the close is answered"
        );
        let messages = got.await.expect("the recogniser's record");
        let firsts: Vec<u8> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Binary(bytes) => bytes.first().copied(),
                _ => None,
            })
            .collect();
        assert_eq!(firsts, (0..8).collect::<Vec<u8>>(), "every frame, in order");
        let texts: Vec<_> = messages.iter().filter_map(|m| m.to_text().ok()).collect();
        assert_eq!(texts.last(), Some(&CLOSE_STREAM), "{messages:?}");
        assert_eq!(stream.dropped_frames(), 1);
    }

    #[tokio::test]
    async fn audio_beyond_ten_seconds_of_queue_is_dropped_and_counted() {
        // Nothing listens: the stream keeps retrying while the audio waits.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url =
            Url::parse(&format!("ws://{}/", closed.local_addr().expect("addr"))).expect("url");
        drop(closed);
        let mut stream = start::<Plain>(url, Secret::new("k"));
        for n in 0..AUDIO_QUEUE_FRAMES {
            assert!(stream.send_audio(frame(n as u8)), "frame {n} fits");
        }
        assert!(!stream.send_audio(frame(0)));
        assert!(!stream.send_audio(frame(0)));
        assert_eq!(stream.dropped_frames(), 2);
    }

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
