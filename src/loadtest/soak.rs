//! Soak: many calls in sequence (`--soak TOTAL`, `--calls N` at a time), and whether the
//! server's resident memory and open files come back to where they were once the calls are over.
//! A leak of a socket or a buffer per call shows as growth that does not return.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::caller::CallEvent;
use super::{idle, process, Options};

/// Resident memory may end this far above where it started: the allocator keeps some of what
/// the busiest moment needed (issue 16: "within 4 MiB").
pub const RSS_RETURN_KIB: u64 = 4 * 1024;
/// Pause before the last reading, so sockets the server is closing are closed.
const SETTLE: Duration = Duration::from_secs(2);

/// The server's resident memory and open files at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// `VmRSS`, KiB.
    pub rss_kib: Option<u64>,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: Option<u64>,
}

impl Sample {
    /// Reads process `pid` now (nothing without a pid).
    pub fn of(pid: Option<u32>) -> Self {
        let Some(pid) = pid else {
            return Self::default();
        };
        Self {
            rss_kib: process::rss_kib(pid),
            fds: process::open_fds(pid),
        }
    }

    /// The larger of each value.
    pub fn max(self, other: Self) -> Self {
        Self {
            rss_kib: self.rss_kib.max(other.rss_kib),
            fds: self.fds.max(other.fds),
        }
    }
}

/// What the soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Calls in all.
    pub total: u32,
    /// Calls at a time.
    pub at_a_time: u32,
    /// After one warm-up call, before the first batch.
    pub before: Sample,
    /// The largest values seen while calls ran.
    pub peak: Sample,
    /// After each batch ended (no pause).
    pub after_each_batch: Vec<Sample>,
    /// After the last batch and a pause.
    pub after: Sample,
    /// `after.rss_kib − before.rss_kib`, KiB (negative: it shrank).
    pub rss_growth_kib: Option<i64>,
    /// Whether memory came back to within [`RSS_RETURN_KIB`] of `before`.
    pub rss_returned: Option<bool>,
    /// Whether the open files came back to `before`'s count (or fewer).
    pub fds_returned: Option<bool>,
}

/// The reading before the first batch: one warm-up call that hears the greeting and hangs up,
/// so what every server allocates once is not counted as growth.
pub async fn before(
    options: &Options,
    url: &str,
    pid: Option<u32>,
    events: &mpsc::Sender<CallEvent>,
    note: &mut dyn FnMut(&str),
) -> Sample {
    let warm_up = options.total_calls();
    let (hang_up, _) = idle::idle_calls(url, warm_up, 1, Duration::ZERO, events, 1).await;
    hang_up.cancel();
    drop(hang_up);
    tokio::time::sleep(SETTLE).await;
    let sample = Sample::of(pid);
    note(&format!(
        "soak: {} calls, {} at a time; server before: {}",
        options.total_calls(),
        options.calls,
        describe(sample)
    ));
    sample
}

/// The reading after the last batch, and the verdict.
pub async fn after(
    options: &Options,
    before: Sample,
    batches: &[Sample],
    peak: Sample,
    pid: Option<u32>,
    note: &mut dyn FnMut(&str),
) -> SoakReport {
    tokio::time::sleep(SETTLE).await;
    let after = Sample::of(pid);
    note(&format!("soak: server after: {}", describe(after)));
    verdict(options, before, batches, peak, after)
}

/// Puts the readings together and says whether they came back.
pub fn verdict(
    options: &Options,
    before: Sample,
    batches: &[Sample],
    peak: Sample,
    after: Sample,
) -> SoakReport {
    let growth = after
        .rss_kib
        .zip(before.rss_kib)
        .map(|(a, b)| a as i64 - b as i64);
    SoakReport {
        total: options.total_calls(),
        at_a_time: options.calls,
        before,
        peak,
        after_each_batch: batches.to_vec(),
        after,
        rss_growth_kib: growth,
        rss_returned: growth.map(|g| g <= RSS_RETURN_KIB as i64),
        fds_returned: after.fds.zip(before.fds).map(|(a, b)| a <= b),
    }
}

fn describe(s: Sample) -> String {
    let v = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| v.to_string());
    format!("RSS {} KiB, {} open files", v(s.rss_kib), v(s.fds))
}

impl SoakReport {
    /// The report's lines.
    pub fn lines(&self) -> Vec<String> {
        let v = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| v.to_string());
        let yes = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "n/a",
        };
        let rss: Vec<String> = self.after_each_batch.iter().map(|s| v(s.rss_kib)).collect();
        let fds: Vec<String> = self.after_each_batch.iter().map(|s| v(s.fds)).collect();
        vec![
            format!(
                "soak: {} calls, {} at a time; server RSS {} KiB before, {} peak, {} after ({} KiB): back within {} KiB: {}",
                self.total,
                self.at_a_time,
                v(self.before.rss_kib),
                v(self.peak.rss_kib),
                v(self.after.rss_kib),
                self.rss_growth_kib.map_or("n/a".to_owned(), |g| format!("{g:+}")),
                RSS_RETURN_KIB,
                yes(self.rss_returned)
            ),
            format!(
                "soak: server open files {} before, {} peak, {} after: back to the count before: {}",
                v(self.before.fds),
                v(self.peak.fds),
                v(self.after.fds),
                yes(self.fds_returned)
            ),
            format!("soak: RSS after each batch (KiB): {}", rss.join(" ")),
            format!("soak: open files after each batch: {}", fds.join(" ")),
        ]
    }
}
