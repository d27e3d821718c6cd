//! Memory per idle call: N calls connected, greeting heard, caller silent.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::caller::{self, Plan};
use super::{process, Options};

/// How long idle callers get beyond the ramp to hear the greeting.
const GREETING_LIMIT: Duration = Duration::from_secs(30);
/// Pause before reading memory, so freed buffers settle.
const SETTLE: Duration = Duration::from_millis(500);

/// Memory per idle call: one warm-up call, then N callers that hear the greeting and stay
/// silent; (RSS with them − RSS before) / N.
#[derive(Debug, Clone, Copy)]
pub struct IdleMemory {
    /// Idle calls connected.
    pub calls: u32,
    /// Of them, how many heard the whole greeting.
    pub greeted: u32,
    /// Server RSS before, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with them, KiB.
    pub rss_with_kib: u64,
}

pub async fn measure(
    options: &Options,
    url: &str,
    pid: Option<u32>,
    events: &mpsc::Sender<caller::CallEvent>,
    note: &mut dyn FnMut(&str),
) -> Option<IdleMemory> {
    let pid = pid.filter(|_| options.idle)?;
    let base = options.calls;
    let sample = options.frame_sample;
    let (warm, _) = idle_calls(url, base + options.calls, 1, Duration::ZERO, events, sample).await;
    tokio::time::sleep(SETTLE).await;
    let rss_before_kib = process::rss_kib(pid)?;
    note(&format!(
        "idle: {} silent calls (after a warm-up call; server RSS {rss_before_kib} KiB)",
        options.calls
    ));
    drop(warm);
    let (hang_up, greeted) =
        idle_calls(url, base, options.calls, options.ramp, events, sample).await;
    tokio::time::sleep(SETTLE).await;
    let rss_with_kib = process::rss_kib(pid)?;
    hang_up.cancel();
    tokio::time::sleep(SETTLE).await;
    Some(IdleMemory {
        calls: options.calls,
        greeted,
        rss_before_kib,
        rss_with_kib,
    })
}

/// Starts `n` idle callers (tags from `first`) over `ramp`; returns once each has heard the
/// greeting (or the limit passed), with the token that hangs them up and how many were greeted.
async fn idle_calls(
    url: &str,
    first: u32,
    n: u32,
    ramp: Duration,
    events: &mpsc::Sender<caller::CallEvent>,
    sample: u64,
) -> (HangUp, u32) {
    let hang_up = CancellationToken::new();
    let (greeted_tx, mut greeted_rx) = mpsc::channel(n.max(1) as usize);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let plan = Plan {
            call: first + i,
            url: url.to_owned(),
            script: None,
            plays: 1,
            greeted: Some(greeted_tx.clone()),
            sample,
            epoch: started,
        };
        let at = started + ramp.mul_f64(f64::from(i) / f64::from(n.max(1)));
        tokio::time::sleep_until(at.into()).await;
        tasks.spawn(caller::run(plan, events.clone(), hang_up.clone()));
    }
    drop(greeted_tx);
    let mut greeted = 0;
    let deadline = tokio::time::sleep(GREETING_LIMIT);
    tokio::pin!(deadline);
    while greeted < n {
        tokio::select! {
            got = greeted_rx.recv() => match got {
                Some(_) => greeted += 1,
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    (
        HangUp {
            token: hang_up,
            tasks,
        },
        greeted,
    )
}

/// Idle callers, hung up when dropped or cancelled.
struct HangUp {
    token: CancellationToken,
    tasks: JoinSet<()>,
}

impl HangUp {
    fn cancel(&self) {
        self.token.cancel();
    }
}

impl Drop for HangUp {
    fn drop(&mut self) {
        self.token.cancel();
        self.tasks.detach_all();
    }
}
