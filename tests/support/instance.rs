//! The server binary as a child process — one instance of a deployment — pointed at the test's
//! stand-ins, with its log in a file the test can read. Killed on drop if the test fails midway.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{LlmStandIn, SttStandIn, TtsStandIn, DEEPGRAM_KEY, MISTRAL_KEY};

/// One running `ivr-bridge serve`.
pub struct Instance {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Instance {
    /// Starts the binary (path from `env!("CARGO_BIN_EXE_ivr-bridge")`) with the stand-ins'
    /// URLs and `extra` settings, and waits until it listens.
    pub async fn start(
        binary: &str,
        stand_ins: (&SttStandIn, &TtsStandIn, &LlmStandIn),
        extra: &[(&str, String)],
    ) -> Self {
        let (stt, tts, llm) = stand_ins;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("ivr-bridge-instance-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("instance scratch directory");
        let log = std::fs::File::create(dir.join("server.log")).expect("instance log file");
        let child = Command::new(binary)
            .env_clear()
            .env("DEEPGRAM_API_KEY", DEEPGRAM_KEY)
            .env("MISTRAL_API_KEY", MISTRAL_KEY)
            .env("DEEPGRAM_STT_URL", stt.url())
            .env("DEEPGRAM_TTS_URL", tts.url())
            .env("MISTRAL_API_URL", llm.url())
            .env("PORT", port.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // As in every test's configuration: tests count model requests (see test_config).
            .env("PREEMPTIVE_GENERATION", "false")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("the server starts");
        let mut instance = Self { port, child, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                instance.child.try_wait().ok().flatten().is_none(),
                "instance on {port} exited at start; its log:\n{}",
                instance.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance on {port} never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        instance
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the instance logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as a rolling deploy does.
    pub fn terminate(&self) {
        sigterm(&self.child);
    }

    /// The exit code once exited, `None` while running.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        exit_code(&mut self.child, limit).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends SIGTERM to `child`, as a rolling deploy does.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM failed");
}

/// Waits up to `limit` for `child` to exit; its exit code (`None`: still running, or killed by
/// a signal).
pub async fn exit_code(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
