//! A whole call against the server inside the container image: CI builds the root `Dockerfile`
//! with podman, exports the image's filesystem, and points `IVR_BRIDGE_IMAGE_ROOTFS` at it
//! (`.ci/image.sh`). The server runs from that filesystem with `chroot` as nobody (65534), the
//! image's user, and reaches the providers' fakes by the host name `localhost`, so the image's
//! own name resolution (glibc, /etc/nsswitch.conf, /etc/hosts) is on the call's path.
//!
//! Built only with `--features image-test`, and needs root (chroot). Without the variable it
//! fails: a run that was asked for and proves nothing must not pass.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ivr_sim::standin::faq::HOURS;
use support::expect::call_audio;
use support::{eventually, LlmStandIn, SttStandIn, TtsStandIn, DEEPGRAM_KEY, MISTRAL_KEY};

/// The image's user and group (`USER` in the Dockerfile).
const IMAGE_USER: &str = "65534";
/// Where the Dockerfile's `ENTRYPOINT` has the binary.
const ENTRYPOINT: &str = "/ivr-bridge";

/// The exported image filesystem, from `IVR_BRIDGE_IMAGE_ROOTFS`.
fn rootfs() -> PathBuf {
    let Some(dir) = std::env::var_os("IVR_BRIDGE_IMAGE_ROOTFS") else {
        panic!(
            "IVR_BRIDGE_IMAGE_ROOTFS is not set: point it at an exported image filesystem \
             (.ci/image.sh does)"
        );
    };
    let dir = PathBuf::from(dir)
        .canonicalize()
        .expect("the rootfs exists");
    assert!(
        dir.join(ENTRYPOINT.trim_start_matches('/')).is_file(),
        "no {ENTRYPOINT} in {}",
        dir.display()
    );
    dir
}

/// A fake's URL with the host written as `localhost`, for the image to resolve.
fn by_name(url: String) -> String {
    url.replacen("127.0.0.1", "localhost", 1)
}

/// The server process, chrooted into the image; killed if the test fails midway.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

impl Server {
    async fn start(rootfs: &Path, stt: &SttStandIn, tts: &TtsStandIn, llm: &LlmStandIn) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Found here: the server's environment is cleared, PATH included.
        let chroot = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("chroot"))
            .find(|path| path.is_file())
            .expect("chroot (coreutils) on PATH");
        let child = Command::new(chroot)
            .arg(format!("--userspec={IMAGE_USER}:{IMAGE_USER}"))
            .arg(rootfs)
            .args([ENTRYPOINT, "serve"])
            .env_clear()
            .env("DEEPGRAM_API_KEY", DEEPGRAM_KEY)
            .env("MISTRAL_API_KEY", MISTRAL_KEY)
            .env("DEEPGRAM_STT_URL", by_name(stt.url()))
            .env("DEEPGRAM_TTS_URL", by_name(tts.url()))
            .env("MISTRAL_API_URL", by_name(llm.url()))
            .env("PORT", port.to_string())
            .env("SILENCE_TIMEOUT_MS", "600")
            .env("PREEMPTIVE_GENERATION", "false")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .spawn()
            .expect("chroot runs (as root)");
        let server = Self { child, port };
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        assert!(up, "the server in the image did not listen");
        server
    }

    /// A line of `/proc/<pid>/status`, e.g. `Uid`.
    fn status(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    fn terminate(&self) {
        support::instance::sigterm(&self.child);
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        support::instance::exit_code(&mut self.child, limit).await
    }
}

#[test]
fn the_image_has_no_shell() {
    let rootfs = rootfs();
    for shell in ["bin/sh", "bin/bash", "usr/bin/sh", "bin/busybox"] {
        assert!(!rootfs.join(shell).exists(), "{shell} is in the image");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_served_from_the_image_as_nobody_with_providers_found_by_name() {
    let rootfs = rootfs();
    let stt = support::start_stt().await;
    let tts = support::start_tts().await;
    let llm = support::start_llm().await;
    let mut server = Server::start(&rootfs, &stt, &tts, &llm).await;

    // It is the image's binary, in the image's filesystem, as the image's user.
    let pid = server.child.id();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the server's executable");
    assert_eq!(exe, rootfs.join(ENTRYPOINT.trim_start_matches('/')));
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("the server's root");
    assert_eq!(root, rootfs);
    let ids = [IMAGE_USER; 4].join(" ");
    assert_eq!(server.status("Uid"), ids, "real, effective, saved, fs uid");
    assert_eq!(server.status("Gid"), ids, "real, effective, saved, fs gid");

    let health = reqwest::get(format!("http://localhost:{}/healthz", server.port))
        .await
        .expect("healthz answers");
    assert_eq!(health.status().as_u16(), 200);

    // A whole call: the greeting, one question, its answer. The server reached all three
    // providers through `localhost`, which only the image's /etc/hosts can resolve.
    let media = format!("ws://localhost:{}/media", server.port);
    let log = support::replay(&media, &support::fixture::load("one_question")).await;
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    assert_eq!(log.media_bytes(), call_audio(&[HOURS]));
    assert_eq!(stt.connections().len(), 1, "one recogniser socket");
    assert_eq!(llm.requests().len(), 1, "one question to the model");

    // A rolling deploy's SIGTERM: the call has been hung up, so the drain ends at once, exit 0.
    server.terminate();
    assert_eq!(server.exit_code(Duration::from_secs(5)).await, Some(0));
}
