//! Soak: many calls in sequence (`--soak TOTAL`, `--calls N` at a time), and whether the
//! server's resident memory and open files come back to where they were once the calls are over.
//! A leak of a socket or a buffer per call shows as growth that does not return.

use serde::Serialize;

use super::{process, Options, Run};

/// Resident memory may end this far above where it started: the allocator keeps some of what
/// the busiest moment needed (issue 16: "within 4 MiB").
pub const RSS_RETURN_KIB: u64 = 4 * 1024;

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
    /// Whether the open files came back to `before`'s count (or fewer). Pooled provider
    /// connections stay open while idle (the server's pool keeps them 90 s): pause longer
    /// than that (`--soak-settle-s`) for an exact comparison.
    pub fds_returned: Option<bool>,
    /// Whether the open files after the last batch are no more than the most seen after any of
    /// the first quarter of the batches: pooled provider connections come and go by a few from
    /// one batch to the next, a file left open per call or per batch adds up past them.
    pub fds_flat: Option<bool>,
    /// The pause before the last reading, s.
    pub settle_s: f64,
}

/// The reading before the first batch: after one whole warm-up call (its tag is the one after
/// the soak's last), so what a server allocates once, and the provider connections it pools,
/// are not counted as growth.
pub(super) async fn before(run: &Run<'_>, pid: Option<u32>, note: &mut dyn FnMut(&str)) -> Sample {
    let options = run.options;
    let warm_up = options.total_calls();
    run.calls(warm_up..warm_up + 1).await;
    tokio::time::sleep(options.soak_settle).await;
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
    tokio::time::sleep(options.soak_settle).await;
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
        fds_flat: fds_flat(batches),
        settle_s: options.soak_settle.as_secs_f64(),
    }
}

/// No growth in open files from the first batches to the last (see [`SoakReport::fds_flat`]).
fn fds_flat(batches: &[Sample]) -> Option<bool> {
    let last = batches.last()?.fds?;
    let early = &batches[..batches.len().div_ceil(4)];
    let most_early = early.iter().filter_map(|s| s.fds).max()?;
    Some(last <= most_early)
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
                "soak: server open files {} before, {} peak, {} after {:.0} s: back to the count before: {}; no growth from the first batch to the last: {}",
                v(self.before.fds),
                v(self.peak.fds),
                v(self.after.fds),
                self.settle_s,
                yes(self.fds_returned),
                yes(self.fds_flat)
            ),
            format!("soak: RSS after each batch (KiB): {}", rss.join(" ")),
            format!("soak: open files after each batch: {}", fds.join(" ")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(fds: &[u64]) -> Vec<Sample> {
        fds.iter()
            .map(|&f| Sample {
                rss_kib: Some(30_000),
                fds: Some(f),
            })
            .collect()
    }

    #[test]
    fn pooled_connections_coming_and_going_are_not_growth() {
        let seen = batches(&[118, 120, 121, 120, 121, 119, 120, 119]);
        assert_eq!(fds_flat(&seen), Some(true));
    }

    #[test]
    fn a_file_left_open_per_batch_is_growth() {
        let seen = batches(&[118, 120, 121, 122, 123, 124, 125, 126]);
        assert_eq!(fds_flat(&seen), Some(false));
    }

    #[test]
    fn no_batches_or_no_readings_give_no_verdict() {
        assert_eq!(fds_flat(&[]), None);
        assert_eq!(fds_flat(&[Sample::default(), Sample::default()]), None);
    }
}
