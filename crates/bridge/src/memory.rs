//! Handing the memory freed by ended calls back to the system.
//!
//! glibc's allocator returns freed memory to the system only from the top of its heap: after a
//! busy hour, the pages freed below a block still in use stay resident, and a server that once
//! carried 1,000 calls keeps their memory while it carries ten. `malloc_trim(0)` releases every
//! free page. It walks the heap under the allocator's lock, so it runs when it pays: after the
//! number of live calls has fallen to half its peak since the last trim (or to zero), and now
//! and then while no call is live (what idle provider connections held is freed after the
//! calls, when the connection pool closes them).

/// Checks between two trims of a server with no live call.
pub const IDLE_CHECKS_PER_TRIM: u32 = 6;

/// When a trim pays. Sans-IO: fed the live call count at each check.
#[derive(Debug, Default)]
pub struct TrimPolicy {
    /// The most live calls seen since the last trim.
    peak: usize,
    /// Checks since the last trim.
    since_trim: u32,
}

impl TrimPolicy {
    /// `live` calls now: whether to trim. A trim follows a fall to half the peak since the
    /// last one, or every [`IDLE_CHECKS_PER_TRIM`] checks while no call is live.
    pub fn check(&mut self, live: usize) -> bool {
        self.since_trim += 1;
        let fell = self.peak > 0 && live * 2 <= self.peak;
        let idle = live == 0 && self.since_trim >= IDLE_CHECKS_PER_TRIM;
        if fell || idle {
            self.peak = live;
            self.since_trim = 0;
            true
        } else {
            self.peak = self.peak.max(live);
            false
        }
    }
}

/// Asks the allocator to return every free page to the system; whether it gave any back.
/// Elsewhere than glibc it does nothing (musl and the other allocators return memory
/// themselves).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches only the allocator's own free lists,
    // under the same locks as `malloc` and `free`; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Asks the allocator to return every free page to the system; whether it gave any back.
/// Elsewhere than glibc it does nothing (musl and the other allocators return memory
/// themselves).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trim follows a fall to half the peak or to zero, never a rise or a small dip; after
    /// a trim the peak starts again.
    #[test]
    fn trims_once_calls_fall_to_half_their_peak() {
        let mut policy = TrimPolicy::default();
        let checks = [10, 250, 200, 126, 125, 125, 100, 62, 0, 4, 2];
        let trims: Vec<bool> = checks.iter().map(|&live| policy.check(live)).collect();
        let expected = [
            false, false, false, false, true, false, false, true, true, false, true,
        ];
        assert_eq!(trims, expected);
    }

    /// With no call live, a trim comes every so many checks, not at every one; a call in
    /// between starts the count again at its end.
    #[test]
    fn an_idle_server_trims_now_and_then() {
        let mut policy = TrimPolicy::default();
        let n = IDLE_CHECKS_PER_TRIM as usize;
        let trims: Vec<bool> = (0..3 * n).map(|_| policy.check(0)).collect();
        let at: Vec<usize> = (0..3 * n).filter(|&i| trims[i]).collect();
        assert_eq!(at, [n - 1, 2 * n - 1, 3 * n - 1]);

        assert!(!policy.check(1));
        assert!(policy.check(0), "the call's end is a fall to zero");
        let trims: Vec<bool> = (0..n).map(|_| policy.check(0)).collect();
        assert_eq!(trims.iter().filter(|&&t| t).count(), 1);
        assert!(trims[n - 1]);
    }
}
