//! A real `redis-server` for one test: its own free loopback port and scratch directory, no
//! persistence, stopped (and its directory removed) on drop. It can be stopped and started
//! again on the same port, to test an outage.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a fresh `redis-server` may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports tried when another process grabs the one picked first.
const START_ATTEMPTS: usize = 5;

/// A running (or stopped) `redis-server` owned by one test.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    port: u16,
    /// The process, while running.
    child: Option<Child>,
    /// Working directory and log file.
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers. Panics with a clear message
    /// when `redis-server` is not installed.
    pub async fn start() -> Self {
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("ivr-bridge-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("creating the redis-server directory");
            let mut server = Self {
                port,
                child: None,
                dir,
            };
            if server.spawn_and_wait().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of {START_ATTEMPTS} free ports");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A direct connection, for a test to look at the keys.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the test redis-server")
    }

    /// Kills the server (an outage); the port stays reserved for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing answers, as with a
    /// Redis that hangs or a network that drops packets.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        for _ in 0..START_ATTEMPTS {
            if self.spawn_and_wait().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Spawns `redis-server` and waits until it answers; `false` if it exited (port taken).
    async fn spawn_and_wait(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        let child = super::spawn_tool(&mut command, "redis-server");
        let pid = child.id();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.exited() {
                self.child = None;
                return false;
            }
            if answers_as(self.port, pid).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        panic!(
            "redis-server on port {} never answered; its log:\n{log}",
            self.port
        );
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_some())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether the Redis server answering on `port` is process `pid` (and not some other test's
/// server that took the port first).
async fn answers_as(port: u16, pid: u32) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"INFO server\r\n").await.is_err() {
        return false;
    }
    let wanted = format!("process_id:{pid}\r\n");
    let mut seen = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains(&wanted) {
                return true;
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(500), read_all)
        .await
        .unwrap_or(false)
}
