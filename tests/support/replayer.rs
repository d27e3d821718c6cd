//! Plays a recorded call into the real server the way Twilio would, and logs what came back.
//!
//! Inbound lines go out as text frames at their recorded offsets (sequence numbers renumbered so
//! echoed marks can be interleaved); everything the server sends is checked against Twilio's
//! rules and played through [`Playback`] in real time, so marks echo when their audio has
//! played and `clear` drops what had not.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::fixture::Fixture;
pub use super::replay_log::{ClearRecord, MarkRecord, MediaFrame, ReplayLog};
use super::twilio_model::{check, Outbound, Playback};

/// Something extra to send, for malformed-input and edge-case tests.
#[derive(Clone, Debug)]
pub enum Inject {
    /// A raw text frame, sent as is.
    Text(String),
    /// A binary frame (Twilio never sends these).
    Binary(Vec<u8>),
    /// A Twilio message; its `sequenceNumber`, if present, is renumbered like the others.
    Message(Value),
}

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Extra frames at given offsets (ms since connect); sent after recorded lines of equal time.
    pub inject: Vec<(u64, Inject)>,
    /// How long to keep listening after the last line before closing the socket.
    pub linger: Duration,
    /// Hang up early: skip recorded lines after this offset and send `stop` there instead.
    pub hang_up_at_ms: Option<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            inject: Vec::new(),
            linger: Duration::from_millis(1500),
            hang_up_at_ms: None,
        }
    }
}

/// Replays `fixture` into `ws_url` with default options.
pub async fn replay(ws_url: &str, fixture: &Fixture) -> ReplayLog {
    replay_with(ws_url, fixture, ReplayOptions::default()).await
}

/// Replays `fixture` into `ws_url`. Panics if the connection cannot be opened (test setup).
pub async fn replay_with(ws_url: &str, fixture: &Fixture, opts: ReplayOptions) -> ReplayLog {
    let (ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {ws_url}: {e}"));
    let started = Instant::now();
    let (mut sink, mut stream) = ws.split();
    let schedule = schedule(fixture, &opts);
    let mut r = Replay::new(started, fixture.stream_sid().to_owned());
    let last_at = schedule.last().map_or(0, |(at, _)| *at);
    let end = started + Duration::from_millis(last_at) + opts.linger;
    let mut next = 0;
    while r.log.server_closed_at.is_none() {
        let send_at = schedule
            .get(next)
            .map_or(end, |(at, _)| started + Duration::from_millis(*at));
        let mark_at = r.playback.next_mark();
        let out: Vec<Message> = tokio::select! {
            biased;
            msg = stream.next() => r.on_server(msg),
            _ = sleep_until(mark_at.unwrap_or(end)), if mark_at.is_some() => r.due_marks(),
            _ = sleep_until(send_at) => match schedule.get(next) {
                Some((_, frame)) => { next += 1; vec![r.outgoing(frame)] }
                None => break,
            },
        };
        for msg in out {
            if sink.send(msg).await.is_err() {
                r.log.server_closed_at.get_or_insert_with(Instant::now);
            }
        }
    }
    if r.log.server_closed_at.is_none() {
        let _ = sink.send(Message::Close(None)).await;
        let _ = timeout(Duration::from_secs(1), async {
            while let Some(Ok(msg)) = stream.next().await {
                r.on_server(Some(Ok(msg)));
            }
        })
        .await;
    }
    r.finish()
}

/// Recorded inbound lines (cut at the hang-up) merged with injections, by offset.
fn schedule(fixture: &Fixture, opts: &ReplayOptions) -> Vec<(u64, Inject)> {
    let cut = opts.hang_up_at_ms.unwrap_or(u64::MAX);
    let mut out: Vec<(u64, Inject)> = fixture
        .inbound
        .iter()
        .filter(|l| l.at_ms <= cut || l.msg["event"] == "stop")
        .map(|l| (l.at_ms.min(cut), Inject::Message(l.msg.clone())))
        .collect();
    out.extend(opts.inject.iter().cloned());
    out.sort_by_key(|(at, _)| *at);
    out
}

/// The replay's state between socket events.
struct Replay {
    log: ReplayLog,
    playback: Playback,
    /// Our own `sequenceNumber` counter (Twilio's starts at 1 on `start`).
    seq: u64,
    /// Set once `start` went out: the server may talk from then on.
    started_stream: bool,
}

impl Replay {
    fn new(started: Instant, stream_sid: String) -> Self {
        let log = ReplayLog {
            started,
            stream_sid,
            media: Vec::new(),
            marks: Vec::new(),
            clears: Vec::new(),
            played: Vec::new(),
            unplayed_bytes: 0,
            violations: Vec::new(),
            stop_sent_at: None,
            server_closed_at: None,
            server_close_code: None,
            finished: started,
        };
        Self {
            log,
            playback: Playback::default(),
            seq: 0,
            started_stream: false,
        }
    }

    fn outgoing(&mut self, frame: &Inject) -> Message {
        match frame {
            Inject::Text(t) => Message::text(t.clone()),
            Inject::Binary(b) => Message::binary(b.clone()),
            Inject::Message(v) => {
                let mut v = v.clone();
                if v.get("sequenceNumber").is_some() {
                    self.seq += 1;
                    v["sequenceNumber"] = json!(self.seq.to_string());
                }
                match v["event"].as_str() {
                    Some("start") => self.started_stream = true,
                    Some("stop") => self.log.stop_sent_at = Some(Instant::now()),
                    _ => {}
                }
                Message::text(v.to_string())
            }
        }
    }

    fn on_server(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Vec<Message> {
        let now = Instant::now();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => {
                let v = format!("binary frame of {} bytes (31950)", b.len());
                self.log.violations.push(v);
                return Vec::new();
            }
            Some(Ok(Message::Close(frame))) => {
                self.log.server_close_code = frame.map(|f| u16::from(f.code));
                self.log.server_closed_at = Some(now);
                return Vec::new();
            }
            Some(Ok(_)) => return Vec::new(),
            Some(Err(_)) | None => {
                self.log.server_closed_at.get_or_insert(now);
                return Vec::new();
            }
        };
        let sid = self.started_stream.then_some(self.log.stream_sid.as_str());
        match check(text.as_str(), sid) {
            Err(v) => {
                self.log.violations.push(v);
                Vec::new()
            }
            Ok(Outbound::Media(bytes)) => {
                let stream_sid = self.log.stream_sid.clone();
                self.log.media.push(MediaFrame {
                    at: now,
                    stream_sid,
                    bytes: bytes.clone(),
                });
                self.playback.media(now, bytes);
                Vec::new()
            }
            Ok(Outbound::Mark(name)) => {
                let id = self.log.marks.len();
                let record = MarkRecord {
                    name,
                    sent_at: now,
                    echoed_at: None,
                    discarded: false,
                };
                self.log.marks.push(record);
                if self.playback.mark(now, id) {
                    vec![self.echo(id, now, false)]
                } else {
                    Vec::new()
                }
            }
            Ok(Outbound::Clear) => {
                let mut echoes = self.due_marks();
                let (dropped_bytes, marks) = self.playback.clear(now);
                self.log.clears.push(ClearRecord {
                    at: now,
                    dropped_bytes,
                });
                echoes.extend(marks.into_iter().map(|id| self.echo(id, now, true)));
                echoes
            }
        }
    }

    fn due_marks(&mut self) -> Vec<Message> {
        let now = Instant::now();
        let due = self.playback.due_marks(now);
        due.into_iter()
            .map(|id| self.echo(id, now, false))
            .collect()
    }

    fn echo(&mut self, id: usize, now: Instant, discarded: bool) -> Message {
        self.seq += 1;
        let mark = &mut self.log.marks[id];
        mark.echoed_at = Some(now);
        mark.discarded = discarded;
        let msg = json!({"event": "mark", "sequenceNumber": self.seq.to_string(),
            "streamSid": self.log.stream_sid, "mark": {"name": mark.name}});
        Message::text(msg.to_string())
    }

    fn finish(mut self) -> ReplayLog {
        let now = Instant::now();
        self.log.unplayed_bytes = self.playback.hang_up(now);
        self.log.played = std::mem::take(&mut self.playback.heard);
        self.log.finished = now;
        self.log
    }
}
