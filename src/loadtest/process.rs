//! The server under test as a child process, and what `/proc` says about a process: CPU time,
//! resident memory, and the open-files limit.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::LoadError;

/// Linux's `USER_HZ`: /proc/<pid>/stat counts CPU time in these ticks.
const TICKS_PER_SECOND: f64 = 100.0;
/// How long the child server gets to answer `/healthz`.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The server, started from this very binary; killed when dropped.
#[derive(Debug)]
pub struct ChildServer {
    /// The process.
    child: Child,
    /// Where it listens.
    pub port: u16,
}

impl ChildServer {
    /// Runs `<this binary> serve` with `env` and a free `PORT`; waits until `/healthz` answers.
    pub async fn start(env: &[(&str, String)]) -> Result<Self, LoadError> {
        let port = free_port()?;
        let exe = std::env::current_exe().map_err(|e| LoadError::Server(e.to_string()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .map_err(|e| LoadError::Server(format!("cannot start the server: {e}")))?;
        let mut server = Self { child, port };
        server.wait_healthy().await?;
        Ok(server)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_healthy(&mut self) -> Result<(), LoadError> {
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LoadError::Server(format!("the server exited: {status}")));
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(LoadError::Server(
            "the server did not answer /healthz within 20 s".into(),
        ))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, LoadError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| LoadError::Server(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| LoadError::Server(e.to_string()))
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Seconds the threads of a process have spent on a CPU and waiting for one while runnable
/// (`/proc/<pid>/task/*/schedstat`; threads that ended are not counted). The wait is CPU time
/// other processes took: a pinned process alone on its core hardly waits, however busy.
pub fn sched_seconds(pid: u32) -> Option<SchedTimes> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = SchedTimes::default();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
        if let (Some(Some(run)), Some(Some(wait))) = (fields.next(), fields.next()) {
            total.running += run as f64 / 1e9;
            total.waiting += wait as f64 / 1e9;
        }
    }
    Some(total)
}

/// Time on a CPU and time waiting for one, s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchedTimes {
    /// On a CPU.
    pub running: f64,
    /// Runnable, waiting for a CPU.
    pub waiting: f64,
}

impl SchedTimes {
    /// What happened between `self` (earlier) and `later`.
    pub fn until(self, later: Self) -> Self {
        Self {
            running: later.running - self.running,
            waiting: later.waiting - self.waiting,
        }
    }

    /// Share of the runnable time spent waiting (0 when nothing ran).
    pub fn wait_share(self) -> f64 {
        let runnable = self.running + self.waiting;
        if runnable > 0.0 {
            self.waiting / runnable
        } else {
            0.0
        }
    }
}

/// How many files a process has open: the entries of `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u64)
}

/// This process's soft and hard limits on open files, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace().map(|n| {
        if n == "unlimited" {
            Some(u64::MAX)
        } else {
            n.parse().ok()
        }
    });
    Some((numbers.next()??, numbers.next()??))
}

/// Makes sure this process (and the server it starts, which inherits the limit) may open
/// `needed` files: raises the soft limit to the hard one with util-linux `prlimit` when that is
/// enough, else says which `ulimit -n` to run.
pub fn ensure_open_files(needed: u64) -> Result<String, LoadError> {
    let Some((soft, hard)) = open_files_limit() else {
        return Ok("open-files limit unknown (no /proc/self/limits)".into());
    };
    if soft >= needed {
        return Ok(format!("open-files limit {soft} (need about {needed})"));
    }
    if hard >= needed && Path::new("/usr/bin/prlimit").exists() {
        let pid = std::process::id().to_string();
        let limit = format!("--nofile={hard}:{hard}");
        let _ = Command::new("/usr/bin/prlimit")
            .args(["--pid", &pid, &limit])
            .status();
        if let Some((raised, _)) = open_files_limit().filter(|(s, _)| *s >= needed) {
            return Ok(format!(
                "open-files limit raised from {soft} to {raised} (need about {needed})"
            ));
        }
    }
    Err(LoadError::Limit(format!(
        "{needed} open files are needed and the limit is {soft} (hard {hard}): run `ulimit -n {}` \
(as root, or after raising the hard limit in /etc/security/limits.conf) and try again",
        needed.max(1024)
    )))
}
