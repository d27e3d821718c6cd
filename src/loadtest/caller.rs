//! One simulated Twilio call over a real WebSocket, in real time: the script's frames at their
//! offsets (tagged, see [`super::script`]), outbound audio "played" at 8 kHz on Twilio's
//! [`Line`] (timing only: no audio kept) so marks are echoed when their audio has played,
//! `clear` applied. What matters for the measures is reported to the collector as it happens.
//!
//! It shares the line model and Twilio's message builders ([`ivr_sim::twilio`]) with the other
//! simulated callers but keeps its own loop: it drives 1,000+ calls from one core, generates
//! tagged frames instead of replaying recorded JSON, never decodes the server's audio (only its
//! length) and reports to the collector with back-pressure, which the demo's and tests' caller
//! ([`ivr_sim::caller`]) would all make dearer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::script::{pcm_hash, tag, Script};
use ivr_bridge::audio::mulaw;
use ivr_bridge::twilio::playback::Line;
use ivr_bridge::woken::Woken;
use ivr_sim::standin::bank::FRAME_SAMPLES;
use ivr_sim::twilio;

/// Longest wait for the server to accept the socket.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// Audio time of one frame.
const FRAME: Duration = Duration::from_millis(20);
/// Samples per millisecond at 8 kHz: the line's clock.
const SAMPLES_PER_MS: u64 = 8;
/// Bytes read from the server's socket at a time: the server writes a reply's queued frames
/// together (up to 4 media messages, ≈ 1.2 KB), and a busy moment may hold a few such writes.
const READ_BUFFER: usize = 4 * 1024;
/// Server messages a caller reads in a row before it lets the other callers run.
const READS_BEFORE_YIELD: usize = 8;
/// Room for one media message (216 characters of payload and the envelope).
const MEDIA_MESSAGE_BYTES: usize = 360;

/// What a caller tells the collector.
#[derive(Debug)]
pub enum CallEvent {
    /// A sampled frame (see [`Plan::sample`]) is about to be written to the socket.
    FrameSent {
        /// Which call.
        call: u32,
        /// Its PCM hash (see [`pcm_hash`]).
        hash: u64,
        /// When.
        at: Instant,
    },
    /// The caller started an utterance.
    SpeechStart {
        /// Which call.
        call: u32,
        /// When its first frame was sent.
        at: Instant,
    },
    /// The caller finished an utterance: its turn ends.
    SpeechEnd {
        /// Which call.
        call: u32,
        /// When the first frame after it was sent.
        at: Instant,
    },
    /// The first reply audio after the caller's last utterance arrived.
    ReplyAudio {
        /// Which call.
        call: u32,
        /// When.
        at: Instant,
    },
    /// The server sent `clear`.
    Cleared {
        /// Which call.
        call: u32,
        /// When.
        at: Instant,
    },
    /// The call is over.
    Finished {
        /// Which call.
        call: u32,
        /// How long the socket was open.
        open_for: Duration,
        /// Why it failed, if it did.
        failure: Option<String>,
        /// How late each frame was sent against its schedule, µs (the load generator falling
        /// behind), kept by the caller and handed over once rather than one event per frame.
        late_us: Vec<u32>,
    },
}

/// What one caller does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The call's index (its tag).
    pub call: u32,
    /// The media stream URL.
    pub url: String,
    /// What to say; `None` for an idle caller that only sends line silence.
    pub script: Option<Arc<Script>>,
    /// How many times to play the script back to back in one stream.
    pub plays: u32,
    /// Idle callers say here when the greeting has played.
    pub greeted: Option<mpsc::Sender<u32>>,
    /// Forwarding is measured on the frames whose PCM hash is a multiple of this (1: all);
    /// the STT stand-in's probe samples the same frames.
    pub sample: u64,
    /// The callers' common clock: each sends its frames at its own [`frame_phase`] of the
    /// 20 ms period counted from here.
    pub epoch: Instant,
}

/// Where in the 20 ms frame period call `call` sends its frames. Real calls start at random
/// moments, so their frames are spread over the period; a ramp that starts a call every 20 ms
/// (1,000 calls over 20 s) would otherwise have every caller send in the same millisecond, and
/// the generator and the server would see 1,000 frames at once instead of 50 each millisecond.
/// The golden ratio's multiples spread any number of calls evenly.
pub fn frame_phase(call: u32) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    FRAME.mul_f64((f64::from(call) * GOLDEN).fract())
}

/// The first instant at or after `now` that is call `call`'s phase of a frame period counted
/// from `epoch`.
fn first_send(epoch: Instant, call: u32, now: Instant) -> Instant {
    let base = epoch + frame_phase(call);
    let behind = now.saturating_duration_since(base);
    let periods = behind.as_nanos().div_ceil(FRAME.as_nanos());
    base + FRAME * u32::try_from(periods).unwrap_or(u32::MAX)
}

/// Runs one call to its end (or until `hang_up` fires, for idle callers).
pub async fn run(plan: Plan, events: mpsc::Sender<CallEvent>, hang_up: CancellationToken) {
    let opened = Instant::now();
    let mut call = CallState::new(&plan);
    let failure = converse(&plan, &mut call, &events, &hang_up).await.err();
    let open_for = opened.elapsed();
    let _ = events
        .send(CallEvent::Finished {
            call: plan.call,
            open_for,
            failure,
            late_us: call.late_us,
        })
        .await;
}

/// Twilio's server-to-caller messages, the parts the caller needs.
#[derive(Deserialize)]
struct ServerMessage<'a> {
    event: &'a str,
    #[serde(borrow)]
    media: Option<Payload<'a>>,
    #[serde(borrow)]
    mark: Option<MarkName<'a>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    payload: &'a str,
}

#[derive(Deserialize)]
struct MarkName<'a> {
    name: &'a str,
}

async fn converse(
    plan: &Plan,
    call: &mut CallState,
    events: &mpsc::Sender<CallEvent>,
    hang_up: &CancellationToken,
) -> Result<(), String> {
    // Twilio's side: TCP_NODELAY, so the frame's send time is when it leaves.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let url = plan.url.as_str();
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (ws, _) = tokio::time::timeout(CONNECT_LIMIT, connect)
        .await
        .map_err(|_| "the server did not accept the socket within 10 s".to_owned())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sink, stream) = ws.split();
    // Woken by its timer every 20 ms, the caller would otherwise poll a socket with nothing to
    // read first each time (tungstenite zero-fills the 4 KiB read buffer before asking).
    let mut stream = Woken::new(stream);
    call.begin(first_send(plan.epoch, plan.call, Instant::now()));
    for opening in call.opening() {
        sink.send(Message::text(opening))
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
    }
    let mut read_in_a_row = 0usize;
    // Made once: a new hang-up future and a new timer each turn of the loop joined and left the
    // token's waiters and the timer wheel for every frame of every caller. The timer is moved
    // (later, mostly: a cheap move in tokio's wheel) when the next wake-up changes.
    let hung_up = hang_up.cancelled();
    tokio::pin!(hung_up);
    let timer = sleep_until(Instant::now().into());
    tokio::pin!(timer);
    let mut armed = None;
    loop {
        let wake = call.next_wake();
        if armed != Some(wake) {
            timer.as_mut().reset(wake.into());
            armed = Some(wake);
        }
        if read_in_a_row >= READS_BEFORE_YIELD {
            // A reply's audio arrives much faster than it plays: let the other callers send
            // their frames due meanwhile instead of reading all of it in one go (tokio lets a
            // task go on for 128 reads before it must give way).
            read_in_a_row = 0;
            tokio::task::yield_now().await;
        }
        let out: Vec<String> = tokio::select! {
            biased;
            msg = stream.next() => {
                read_in_a_row += 1;
                match msg {
                    Some(Ok(Message::Text(text))) => call.on_server(text.as_str(), events).await?,
                    Some(Ok(Message::Close(_))) | None => {
                        return call.closed_early();
                    }
                    Some(Err(e)) => return Err(format!("socket error: {e}")),
                    Some(Ok(_)) => Vec::new(),
                }
            }
            () = &mut hung_up, if call.script.is_none() => {
                let _ = sink.send(Message::text(call.stop())).await;
                let _ = sink.close().await;
                return Ok(());
            }
            () = &mut timer => {
                read_in_a_row = 0;
                let now = Instant::now();
                let mut out = call.due_marks(now);
                if call.check_greeting(now) {
                    if let Some(greeted) = &plan.greeted {
                        let _ = greeted.send(plan.call).await;
                    }
                }
                if now >= call.next_send {
                    match call.next_frame(events).await {
                        Some(frame) => out.push(frame),
                        None => {
                            let _ = sink.send(Message::text(call.stop())).await;
                            let _ = sink.close().await;
                            return call.finished();
                        }
                    }
                }
                out
            }
        };
        if out.is_empty() {
            continue;
        }
        // Mark echoes and the frame due together leave in one write.
        for text in out {
            sink.feed(Message::text(text))
                .await
                .map_err(|e| format!("cannot send: {e}"))?;
        }
        sink.flush()
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
    }
}

/// The caller's side of the call between socket events.
struct CallState {
    call: u32,
    script: Option<Arc<Script>>,
    plays: u32,
    stream_sid: String,
    call_sid: String,
    started: Instant,
    /// Next frame: (play, index in the script), or the idle caller's frame count.
    play: u32,
    index: usize,
    next_send: Instant,
    seq: u64,
    /// Utterances started / ended in the current play.
    started_utterances: usize,
    ended_utterances: usize,
    /// Reply audio not yet seen since the caller's last utterance ended.
    awaiting_reply: bool,
    /// Whether the greeting's audio has arrived (idle callers report when it has played).
    heard_audio: bool,
    greeting_told: bool,
    replies: u32,
    line: Line,
    /// Forwarding is measured on frames whose hash is a multiple of this.
    sample: u64,
    /// Send lateness of every frame, µs.
    late_us: Vec<u32>,
}

impl CallState {
    fn new(plan: &Plan) -> Self {
        let started = Instant::now();
        Self {
            call: plan.call,
            script: plan.script.clone(),
            plays: plan.plays.max(1),
            stream_sid: format!("MZ{:032x}", plan.call),
            call_sid: format!("CA{:032x}", plan.call),
            started,
            play: 0,
            index: 0,
            next_send: started,
            seq: 0,
            started_utterances: 0,
            ended_utterances: 0,
            awaiting_reply: false,
            heard_audio: false,
            greeting_told: false,
            replies: 0,
            line: Line::new(),
            sample: plan.sample.max(1),
            late_us: Vec::with_capacity(plan.script.as_ref().map_or(0, |s| s.frames.len())),
        }
    }

    /// The socket is open: the recording's clock starts at `at`, with its first frame.
    fn begin(&mut self, at: Instant) {
        self.started = at;
        self.next_send = at;
    }

    /// `at` on the line's clock: samples since the call started.
    fn sample(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64 * SAMPLES_PER_MS / 1000
    }

    /// The instant of line sample `sample`.
    fn instant(&self, sample: u64) -> Instant {
        self.started + Duration::from_micros(sample * 1000 / SAMPLES_PER_MS)
    }

    fn opening(&mut self) -> [String; 2] {
        self.seq = 1;
        let mut connected = String::new();
        twilio::connected(&mut connected);
        let mut start = String::with_capacity(MEDIA_MESSAGE_BYTES);
        twilio::start(&mut start, self.seq, &self.stream_sid, &self.call_sid);
        [connected, start]
    }

    fn stop(&mut self) -> String {
        self.seq += 1;
        let mut text = String::with_capacity(MEDIA_MESSAGE_BYTES);
        twilio::stop(&mut text, self.seq, &self.stream_sid, &self.call_sid);
        text
    }

    fn echo(&mut self, name: &str) -> String {
        self.seq += 1;
        let mut text = String::with_capacity(128);
        twilio::mark(&mut text, self.seq, &self.stream_sid, name);
        text
    }

    /// Echoes of the marks whose audio has played by `now`.
    fn due_marks(&mut self, now: Instant) -> Vec<String> {
        let due = self.line.due_marks(self.sample(now));
        due.iter().map(|name| self.echo(name)).collect()
    }

    /// The next media message, reporting the frame and any utterance edge; `None` at the end.
    async fn next_frame(&mut self, events: &mpsc::Sender<CallEvent>) -> Option<String> {
        let scheduled = self.next_send;
        let (audio, chunk) = match self.script.clone() {
            Some(script) => {
                let (at_ms, frame) = script.frames.get(self.index).copied()?;
                self.utterance_edges(&script, at_ms, events).await;
                let pos = self.index as u32;
                self.advance(&script);
                (tag(&frame, self.call, pos), pos)
            }
            None => {
                let pos = self.index as u32;
                self.index += 1;
                self.next_send += FRAME;
                let silence = [mulaw::SILENCE; FRAME_SAMPLES];
                (tag(&silence, self.call, pos & 0xFFFF), pos)
            }
        };
        self.seq += 1;
        let timestamp = scheduled
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        let mut text = String::with_capacity(MEDIA_MESSAGE_BYTES);
        let chunk = u64::from(chunk) + 1;
        twilio::media(
            &mut text,
            self.seq,
            &self.stream_sid,
            chunk,
            timestamp,
            &audio,
        );
        let at = Instant::now();
        let late = at.saturating_duration_since(scheduled).as_micros();
        self.late_us.push(u32::try_from(late).unwrap_or(u32::MAX));
        let hash = pcm_hash(&audio);
        if hash % self.sample == 0 {
            let call = self.call;
            let _ = events.send(CallEvent::FrameSent { call, hash, at }).await;
        }
        Some(text)
    }

    /// Moves to the next frame of the script (and the next play at its end).
    fn advance(&mut self, script: &Script) {
        self.index += 1;
        if self.index >= script.frames.len() && self.play + 1 < self.plays {
            self.play += 1;
            self.index = 0;
            self.started_utterances = 0;
            self.ended_utterances = 0;
        }
        let offset = u64::from(self.play) * script.stop_ms;
        let at_ms = script
            .frames
            .get(self.index)
            .map_or(offset + script.stop_ms, |(at, _)| offset + at);
        self.next_send = self.started + Duration::from_millis(at_ms);
    }

    async fn utterance_edges(
        &mut self,
        script: &Script,
        at_ms: u64,
        events: &mpsc::Sender<CallEvent>,
    ) {
        let (call, at) = (self.call, Instant::now());
        if let Some(u) = script.utterances.get(self.started_utterances) {
            if at_ms >= u.start_ms {
                self.started_utterances += 1;
                let _ = events.send(CallEvent::SpeechStart { call, at }).await;
            }
        }
        if let Some(u) = script.utterances.get(self.ended_utterances) {
            if at_ms >= u.end_ms {
                self.ended_utterances += 1;
                self.awaiting_reply = true;
                let _ = events.send(CallEvent::SpeechEnd { call, at }).await;
            }
        }
    }

    async fn on_server(
        &mut self,
        text: &str,
        events: &mpsc::Sender<CallEvent>,
    ) -> Result<Vec<String>, String> {
        let now = Instant::now();
        let msg: ServerMessage<'_> = serde_json::from_str(text)
            .map_err(|e| format!("unreadable message from the server: {e}"))?;
        let call = self.call;
        match (msg.event, msg.media, msg.mark) {
            ("media", Some(media), _) => {
                if std::mem::take(&mut self.awaiting_reply) {
                    self.replies += 1;
                    let _ = events.send(CallEvent::ReplyAudio { call, at: now }).await;
                }
                self.heard_audio = true;
                let sample = self.sample(now);
                self.line
                    .media_len(sample, decoded_len(media.payload) as u64);
                Ok(Vec::new())
            }
            ("mark", _, Some(mark)) => {
                // Marks already due go first, so echoes keep Twilio's order.
                let mut out = self.due_marks(now);
                let name = mark.name.to_owned();
                if let Some(name) = self.line.mark(self.sample(now), name) {
                    out.push(self.echo(&name));
                }
                Ok(out)
            }
            ("clear", _, _) => {
                let _ = events.send(CallEvent::Cleared { call, at: now }).await;
                let mut out = self.due_marks(now);
                let (_, names) = self.line.clear(self.sample(now));
                out.extend(names.iter().map(|n| self.echo(n)));
                Ok(out)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// When something is next due: a frame, a mark, or the end of the greeting (idle callers).
    fn next_wake(&self) -> Instant {
        let mut wake = self.next_send;
        if let Some(mark) = self.line.next_mark() {
            wake = wake.min(self.instant(mark));
        }
        if self.script.is_none() && self.heard_audio && !self.greeting_told {
            if let Some(until) = self.line.playing_until() {
                wake = wake.min(self.instant(until));
            }
        }
        wake
    }

    /// Whether an idle caller's greeting has just finished playing (true once).
    fn check_greeting(&mut self, now: Instant) -> bool {
        let idle = self.script.is_none();
        if idle && self.heard_audio && !self.greeting_told && !self.line.playing(self.sample(now)) {
            self.greeting_told = true;
            return true;
        }
        false
    }

    /// The server closed the socket before the script ended.
    fn closed_early(&self) -> Result<(), String> {
        match &self.script {
            Some(script) if self.index < script.frames.len() => Err(format!(
                "the server closed the call at {:.1} s of the recording",
                self.started.elapsed().as_secs_f64()
            )),
            _ => self.finished(),
        }
    }

    /// Whether every utterance got a reply.
    fn finished(&self) -> Result<(), String> {
        let Some(script) = &self.script else {
            return Ok(());
        };
        let expected = script.utterances.len() as u32 * self.plays;
        if self.replies < expected {
            return Err(format!(
                "{} of {expected} turns got no reply audio",
                expected - self.replies
            ));
        }
        Ok(())
    }
}

/// Bytes a base64 payload decodes to.
fn decoded_len(payload: &str) -> usize {
    let padding = payload.bytes().rev().take_while(|&b| b == b'=').count();
    (payload.len() / 4 * 3).saturating_sub(padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_started_a_period_apart_send_at_different_moments() {
        let mut phases: Vec<Duration> = (0..1000).map(frame_phase).collect();
        assert!(phases.iter().all(|p| *p < FRAME));
        phases.sort();
        // 1,000 phases over 20 ms: no gap much wider than the even spacing of 20 µs.
        let widest = phases.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest < Duration::from_micros(40), "{widest:?}");
    }

    #[test]
    fn the_first_frame_waits_for_the_callers_phase() {
        let epoch = Instant::now();
        let phase = frame_phase(7);
        assert_eq!(first_send(epoch, 7, epoch), epoch + phase);
        // Connected 45 ms in: the next instant at the phase is in the third period.
        let now = epoch + Duration::from_millis(45);
        let first = first_send(epoch, 7, now);
        assert!(first >= now && first < now + FRAME);
        assert_eq!(
            (first - epoch).as_nanos() % FRAME.as_nanos(),
            phase.as_nanos()
        );
    }
}
