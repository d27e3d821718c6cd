//! `RECORD_DIR`: every Media Stream call (and ConversationRelay session) saved when it ends, as
//! a fixture a test can replay.
//!
//! The call task and the socket writer hand each raw Twilio message (and the call's events) to
//! the call's [`Tap`], which only `try_send`s into a bounded queue. A recording task per call
//! writes the fixture lines to a temporary file as they come and, when the call ends, renames it
//! into place beside the sidecar and, for a Media Stream, the two-channel WAV (each written to a temporary file and
//! renamed, so a reader never sees half a file). When the disk cannot keep up, the queue fills,
//! and that call's recording is dropped with a warning; the call itself never waits.

pub mod call;
pub mod format;
pub mod publish;
mod utc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::events::CallEvent;
use crate::queue;
use crate::twilio::stream::Copier;
use call::CallRecording;
use format::{Dir, RecordedSettings, Transport};

/// Messages and events a call may have waiting for its recording task: about 5 s of a call's
/// traffic (50 frames a second each way). A disk slower than that loses the recording.
pub const QUEUE: usize = 512;

/// Whether and where calls are recorded.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordSettings {
    /// Directory where every Media Stream call is saved when it ends (Twilio messages both ways
    /// as a replayable fixture, a sidecar with transcripts and replies, a two-channel WAV).
    /// Unset: nothing is recorded.
    #[arg(long, env = "RECORD_DIR", value_parser = parse_record_dir)]
    pub record_dir: Option<PathBuf>,
}

/// `RECORD_DIR`, created if needed and proven writable.
fn parse_record_dir(raw: &str) -> Result<PathBuf, String> {
    let dir = PathBuf::from(raw);
    check_dir(&dir).map_err(|err| err.to_string())?;
    Ok(dir)
}

/// `RECORD_DIR` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("RECORD_DIR={path:?} is not a writable directory: {source}")]
pub struct RecordDirError {
    /// The directory named.
    pub path: PathBuf,
    /// Why it cannot be written.
    pub source: std::io::Error,
}

/// Creates `dir` if needed and proves it writable by writing and removing a probe file.
pub fn check_dir(dir: &Path) -> Result<(), RecordDirError> {
    let fail = |source| RecordDirError {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".ivr-bridge-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Records calls into one directory; shared by every call.
#[derive(Debug)]
pub struct Recorder {
    /// Where recordings go.
    dir: PathBuf,
    /// Written into every sidecar, so a replay can use the same turn taking.
    settings: RecordedSettings,
    /// Queue length per call (smaller in tests).
    queue: usize,
    /// Numbers the temporary files of calls in progress.
    next: AtomicU64,
    /// The recording tasks, so the server can let them finish before it exits.
    tasks: TaskTracker,
}

impl Recorder {
    /// A recorder writing into `dir` (already checked with [`check_dir`]).
    pub fn new(dir: PathBuf, settings: RecordedSettings) -> Self {
        Self::with_queue(dir, settings, QUEUE)
    }

    /// Like [`Recorder::new`] with a given queue length per call.
    pub fn with_queue(dir: PathBuf, settings: RecordedSettings, queue: usize) -> Self {
        Self {
            dir,
            settings,
            queue: queue.max(1),
            next: AtomicU64::new(0),
            tasks: TaskTracker::new(),
        }
    }

    /// Starts recording a socket that opened at `opened`; the recording is kept when the call
    /// started and every [`Tap`] is gone, unless it was dropped on the way.
    pub fn open(&self, opened: Instant) -> Tap {
        self.open_transport(opened, Transport::Stream)
    }

    /// Like [`Recorder::open`] for a ConversationRelay session: its text messages and the
    /// sidecar are kept; there is no audio, so no WAV.
    pub fn open_relay(&self, opened: Instant) -> Tap {
        self.open_transport(opened, Transport::Relay)
    }

    fn open_transport(&self, opened: Instant, transport: Transport) -> Tap {
        let (tx, rx) = queue::bounded(self.queue);
        let dropped = Arc::new(AtomicBool::new(false));
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .dir
            .join(format!(".recording-{}-{n}.jsonl.part", std::process::id()));
        let task = Task {
            dir: self.dir.clone(),
            temp,
            settings: self.settings.clone(),
            dropped: dropped.clone(),
            recording: CallRecording::new(opened),
            transport,
            wall: SystemTime::now(),
            number: n,
        };
        self.tasks.spawn(task.run(rx));
        Tap { tx, dropped }
    }

    /// Waits up to `limit` for the recordings of ended calls to be written; called when the
    /// server stops, after its calls ended.
    pub async fn finish(&self, limit: std::time::Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                recordings = self.tasks.len(),
                "recordings still being written when the server stopped are lost"
            );
        }
    }
}

/// One recorded item with the moment it happened.
#[derive(Debug)]
struct Entry {
    at: Instant,
    item: Item,
}

#[derive(Debug)]
enum Item {
    Message(Dir, Utf8Bytes),
    Event(CallEvent),
}

/// A call's handle on its recording: cheap to clone (the writer holds one too), never waits.
#[derive(Debug, Clone)]
pub struct Tap {
    /// The recording task's queue.
    tx: queue::Sender<Entry>,
    /// Set once anything was lost: the recording is then dropped whole.
    dropped: Arc<AtomicBool>,
}

impl Copier for Tap {
    fn inbound(&self, text: &Utf8Bytes) {
        self.push(Item::Message(Dir::In, text.clone()));
    }
}

impl Tap {
    /// A message to Twilio.
    pub fn outbound(&self, text: &Utf8Bytes) {
        self.push(Item::Message(Dir::Out, text.clone()));
    }

    /// One of the call's events.
    pub fn event(&self, event: CallEvent) {
        self.push(Item::Event(event));
    }

    /// Whether this call's recording was dropped.
    pub fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
    }

    fn push(&self, item: Item) {
        if self.is_dropped() {
            return;
        }
        let entry = Entry {
            at: Instant::now(),
            item,
        };
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(queue::TrySendError::Full(_)) => {
                if !self.dropped.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "RECORD_DIR is not keeping up: this call's recording is dropped (the \
                         call goes on)"
                    );
                }
            }
            Err(queue::TrySendError::Closed(_)) => {
                self.dropped.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The recording task of one call.
struct Task {
    dir: PathBuf,
    /// The fixture lines as they come; renamed into place at the end.
    temp: PathBuf,
    settings: RecordedSettings,
    dropped: Arc<AtomicBool>,
    recording: CallRecording,
    /// A Media Stream (three files) or a relay session (no WAV).
    transport: Transport,
    /// When the socket opened, for the file name and the sidecar.
    wall: SystemTime,
    /// This recording's number in this process, to tell apart recordings of the same call.
    number: u64,
}

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
struct WriteError {
    path: PathBuf,
    source: std::io::Error,
}

impl Task {
    async fn run(mut self, mut rx: queue::Receiver<Entry>) {
        let result = self.collect(&mut rx).await;
        drop(rx);
        let call_sid = self.recording.started().map_or("", |(c, _)| c).to_owned();
        let kept = match result {
            Ok(()) if self.dropped.load(Ordering::Relaxed) => Ok(None),
            Ok(()) if self.recording.started().is_none() => Ok(None),
            Ok(()) => self.finish().await.map(Some),
            Err(err) => Err(err),
        };
        match kept {
            Ok(Some(path)) => tracing::info!(%call_sid, path = %path.display(), "call recorded"),
            Ok(None) => {}
            Err(err) => {
                self.dropped.store(true, Ordering::Relaxed);
                tracing::warn!(%call_sid, %err, "call recording dropped");
            }
        }
        if !matches!(tokio::fs::try_exists(&self.temp).await, Ok(false)) {
            let _ = tokio::fs::remove_file(&self.temp).await;
        }
    }

    /// Writes lines until every tap is gone or the recording was dropped.
    async fn collect(&mut self, rx: &mut queue::Receiver<Entry>) -> Result<(), WriteError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError { path, source }
        };
        let file = tokio::fs::File::create(&self.temp)
            .await
            .map_err(io(&self.temp))?;
        let mut out = tokio::io::BufWriter::new(file);
        while let Some(entry) = rx.recv().await {
            if self.dropped.load(Ordering::Relaxed) {
                return Ok(());
            }
            match entry.item {
                Item::Message(dir, text) => {
                    if let Some(mut line) = self.recording.message(entry.at, dir, text.as_str()) {
                        line.push('\n');
                        out.write_all(line.as_bytes())
                            .await
                            .map_err(io(&self.temp))?;
                    }
                }
                Item::Event(event) => self.recording.event(entry.at, event),
            }
        }
        out.flush().await.map_err(io(&self.temp))?;
        out.into_inner().sync_all().await.map_err(io(&self.temp))
    }

    /// Puts the files in place (no WAV for a relay session); returns the fixture's path.
    async fn finish(&mut self) -> Result<PathBuf, WriteError> {
        let call_sid = self.recording.started().map_or("", |(c, _)| c);
        let call_sid: String = call_sid
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect();
        let stamp = utc::compact(self.wall);
        let mut name = format!("{call_sid}_{stamp}");
        if matches!(
            tokio::fs::try_exists(self.dir.join(format!("{name}.jsonl"))).await,
            Ok(true)
        ) {
            // The same call sid in the same second: a replayed fixture, not a real call.
            name.push_str(&format!("-{}", self.number));
        }
        let jsonl = self.dir.join(format!("{name}.jsonl"));
        let mut sidecar = self
            .recording
            .sidecar(&name, &utc::rfc3339(self.wall), &self.settings);
        sidecar.transport = self.transport;
        let sidecar = serde_json::to_vec_pretty(&sidecar).map_err(|e| WriteError {
            path: jsonl.with_extension("json"),
            source: e.into(),
        })?;
        if self.transport == Transport::Stream {
            let recording =
                std::mem::replace(&mut self.recording, CallRecording::new(Instant::now()));
            let wav = recording.wav().map_err(|source| WriteError {
                path: jsonl.with_extension("wav"),
                source,
            })?;
            write_atomically(&jsonl.with_extension("wav"), &wav).await?;
        }
        write_atomically(&jsonl.with_extension("json"), &sidecar).await?;
        tokio::fs::rename(&self.temp, &jsonl)
            .await
            .map_err(|source| WriteError {
                path: jsonl.clone(),
                source,
            })?;
        Ok(jsonl)
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it to `path`.
async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let fail = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".part");
    let temp = PathBuf::from(temp);
    let mut file = tokio::fs::File::create(&temp).await.map_err(fail)?;
    file.write_all(bytes).await.map_err(fail)?;
    file.sync_all().await.map_err(fail)?;
    drop(file);
    tokio::fs::rename(&temp, path).await.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RecordedSettings {
        RecordedSettings {
            greeting: "Hi".into(),
            silence_timeout_ms: 600,
            turn_detection: "timer".into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_the_recording_not_the_call() {
        let dir = std::env::temp_dir().join(format!("ivr-rec-full-{}", std::process::id()));
        check_dir(&dir).unwrap();
        let recorder = Recorder::with_queue(dir.clone(), settings(), 4);
        let tap = recorder.open(Instant::now());
        tap.event(CallEvent::Started {
            call_sid: "CA1".into(),
            stream_sid: "MZ1".into(),
        });
        // The recording task cannot run before this test yields: the queue fills at once, and
        // pushing never waits.
        for _ in 0..10 {
            tap.inbound(&Utf8Bytes::from_static(r#"{"event":"media"}"#));
        }
        assert!(tap.is_dropped());
        drop(tap);
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "nothing is kept: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_relay_session_keeps_its_text_and_sidecar_without_a_wav() {
        let dir = std::env::temp_dir().join(format!("ivr-rec-relay-{}", std::process::id()));
        check_dir(&dir).unwrap();
        let recorder = Recorder::new(dir.clone(), settings());
        let tap = recorder.open_relay(Instant::now());
        tap.inbound(&Utf8Bytes::from_static(
            r#"{"type":"setup","sessionId":"VX1","callSid":"CA9"}"#,
        ));
        tap.event(CallEvent::Started {
            call_sid: "CA9".into(),
            stream_sid: "VX1".into(),
        });
        tap.outbound(&Utf8Bytes::from_static(
            r#"{"type":"text","token":"Hi.","last":true}"#,
        ));
        drop(tap);
        recorder.finish(std::time::Duration::from_secs(5)).await;
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let sidecar = std::fs::read_to_string(dir.join(&names[0])).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(names.len(), 2, "{names:?}");
        let sidecar: format::Sidecar = serde_json::from_str(&sidecar).unwrap();
        assert_eq!(sidecar.transport, Transport::Relay);
        assert_eq!(sidecar.stream_sid, "VX1");
        assert!(
            names[0].starts_with("CA9_") && names[0].ends_with(".json"),
            "{names:?}"
        );
        assert!(names[1].ends_with(".jsonl"), "{names:?}");
    }

    #[test]
    fn an_unwritable_dir_is_refused() {
        let file = std::env::temp_dir().join(format!("ivr-rec-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = check_dir(&file).unwrap_err().to_string();
        let _ = std::fs::remove_file(&file);
        assert!(err.starts_with("RECORD_DIR="), "{err}");
    }
}
