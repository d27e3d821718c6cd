//! Which cores the load generator and the server under test run on: `--generator-cpus` and
//! `--server-cpus` lists (`1`, `0,2-3`), pinning a whole process (every thread in
//! `/proc/<pid>/task`) with `sched_setaffinity`, and reading back what the kernel allows.
//!
//! Pinning both sides makes the server's share of the machine known, so "calls per server core"
//! means something, and keeps the generator from stealing the server's core.

use std::fmt;
use std::str::FromStr;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The largest CPU number a list may name (the kernel's `CPU_SETSIZE` is 1024).
const MAX_CPU: usize = 1023;

/// A set of CPU numbers, sorted, without repeats, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

/// A CPU list that cannot be read, or cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuError {
    /// The list is empty.
    #[error("empty CPU list (expected e.g. `1` or `0,2-3`)")]
    Empty,
    /// One item is neither a number nor a range `a-b`.
    #[error("`{0}` is not a CPU number or a range like `2-3`")]
    Item(String),
    /// A range runs backwards.
    #[error("CPU range `{0}` runs backwards")]
    Backwards(String),
    /// A CPU number is beyond what Linux can name.
    #[error("CPU {0} is beyond {MAX_CPU}")]
    TooLarge(usize),
    /// The machine does not let this process use a listed CPU.
    #[error("CPU {cpu} is not available here (available: {allowed})")]
    Unavailable {
        /// The CPU asked for.
        cpu: usize,
        /// What the process may use.
        allowed: CpuList,
    },
    /// The kernel refused.
    #[error("cannot pin process {pid} to CPUs {cpus}: {error}")]
    Pin {
        /// The process.
        pid: u32,
        /// The list.
        cpus: CpuList,
        /// Why.
        error: String,
    },
}

impl CpuList {
    /// How many CPUs (at least one).
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The CPUs a process may be pinned to here: its cgroup's (`cpuset.cpus.effective`), else
    /// the online ones, else this process's own affinity. Not only this process's own: a
    /// generator started under `taskset -c 0` may still pin its server to core 1.
    pub fn available() -> Option<Self> {
        [
            "/sys/fs/cgroup/cpuset.cpus.effective",
            "/sys/devices/system/cpu/online",
        ]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|list| list.trim().parse().ok())
        .or_else(Self::allowed_here)
    }

    /// The CPUs this process may run on now, or `None` if the kernel does not say.
    pub fn allowed_here() -> Option<Self> {
        let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let cpus: Vec<usize> = (0..=MAX_CPU)
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect();
        (!cpus.is_empty()).then_some(Self(cpus))
    }

    /// Checks every listed CPU is one a process may be pinned to here.
    pub fn check_available(&self) -> Result<(), CpuError> {
        let Some(allowed) = Self::available() else {
            return Ok(());
        };
        match self.0.iter().find(|c| !allowed.0.contains(c)) {
            Some(&cpu) => Err(CpuError::Unavailable { cpu, allowed }),
            None => Ok(()),
        }
    }

    fn set(&self) -> Result<CpuSet, nix::Error> {
        let mut set = CpuSet::new();
        for &cpu in &self.0 {
            set.set(cpu)?;
        }
        Ok(set)
    }

    /// Pins every thread of process `pid` (this process too) to these CPUs. Threads started
    /// later inherit the affinity of the thread that starts them.
    pub fn pin(&self, pid: u32) -> Result<(), CpuError> {
        let fail = |error: String| CpuError::Pin {
            pid,
            cpus: self.clone(),
            error,
        };
        let set = self.set().map_err(|e| fail(e.to_string()))?;
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| fail(format!("cannot list its threads: {e}")))?;
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread may end between listing and pinning; that is not a failure.
            match sched_setaffinity(Pid::from_raw(tid), &set) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        Ok(())
    }
}

/// What the kernel allows process `pid` (its main thread): `Cpus_allowed_list` of
/// `/proc/<pid>/status`, e.g. `0-1`.
pub fn allowed_list(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

impl FromStr for CpuList {
    type Err = CpuError;

    fn from_str(text: &str) -> Result<Self, CpuError> {
        let mut cpus = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let number = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| CpuError::Item(item.to_owned()))
            };
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(item)?, number(item)?),
            };
            if last < first {
                return Err(CpuError::Backwards(item.to_owned()));
            }
            if last > MAX_CPU {
                return Err(CpuError::TooLarge(last));
            }
            cpus.extend(first..=last);
        }
        if cpus.is_empty() {
            return Err(CpuError::Empty);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Self(cpus))
    }
}

impl fmt::Display for CpuList {
    /// The kernel's own form: `0,2-3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<usize>, CpuError> {
        s.parse::<CpuList>().map(|l| l.0)
    }

    #[test]
    fn lists_and_ranges_are_read() {
        assert_eq!(parse("1"), Ok(vec![1]));
        assert_eq!(parse("0,2-3"), Ok(vec![0, 2, 3]));
        assert_eq!(parse(" 3 , 1-2,2 "), Ok(vec![1, 2, 3]));
        assert_eq!(parse("5-5"), Ok(vec![5]));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(parse(""), Err(CpuError::Empty));
        assert_eq!(parse(",,"), Err(CpuError::Empty));
        assert_eq!(parse("a"), Err(CpuError::Item("a".into())));
        assert_eq!(parse("1-"), Err(CpuError::Item("1-".into())));
        assert_eq!(parse("-1"), Err(CpuError::Item("-1".into())));
        assert_eq!(parse("1-2-3"), Err(CpuError::Item("1-2-3".into())));
        assert_eq!(parse("3-1"), Err(CpuError::Backwards("3-1".into())));
        assert_eq!(parse("1024"), Err(CpuError::TooLarge(1024)));
    }

    #[test]
    fn lists_print_as_the_kernel_writes_them() {
        let list: CpuList = "3,0,1,2,7,9-10".parse().expect("list");
        assert_eq!(list.to_string(), "0-3,7,9-10");
        assert_eq!(list.count(), 7);
    }

    #[test]
    fn a_cpu_this_process_may_not_use_is_refused() {
        let list: CpuList = "1023".parse().expect("list");
        let allowed = CpuList::available().expect("CPUs readable");
        assert!(!allowed.0.contains(&1023), "a 1024-core machine?");
        assert!(matches!(
            list.check_available(),
            Err(CpuError::Unavailable { cpu: 1023, .. })
        ));
        assert_eq!(allowed.check_available(), Ok(()));
    }
}
