//! A real nginx in front of test instances, running the shipped `deploy/nginx/ivr-bridge.conf`
//! with only its `listen` line and its upstream's `server` lines rewritten: what is tested is
//! what users get. Runs in the foreground (`daemon off`) as a single process with its own prefix
//! in a scratch directory, and is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shipped configuration.
pub const SHIPPED: &str = include_str!("../../deploy/nginx/ivr-bridge.conf");
/// How long nginx may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx owned by one test.
pub struct Nginx {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx on a free port in front of `upstreams` (ports on 127.0.0.1). Panics with a
    /// clear message when nginx is not installed.
    pub async fn start(upstreams: &[u16]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ivr-bridge-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs")).expect("nginx scratch directory");
        let site = site_config(SHIPPED, port, upstreams);
        std::fs::write(dir.join("ivr-bridge.conf"), site).expect("writing the site config");
        std::fs::write(dir.join("nginx.conf"), main_config(&dir)).expect("writing nginx.conf");
        let mut command = Command::new(nginx_binary());
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"));
        let child = super::spawn_tool(&mut command, "nginx");
        let mut nginx = Self { port, child, dir };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}); its log:\n{}", nginx.error_log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx never listened on {port}; its log:\n{}",
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// nginx's error log so far, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }

    /// nginx's access log so far (which instance served what), for failure messages.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `nginx` on the PATH, else Debian's `/usr/sbin/nginx` (sbin is not on every user's PATH).
fn nginx_binary() -> &'static str {
    let on_path = Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !on_path && Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// The shipped site with its `listen` line on `port` and its upstream servers replaced by
/// `upstreams`. Panics if the shipped file no longer has the lines this rewrites.
pub fn site_config(shipped: &str, port: u16, upstreams: &[u16]) -> String {
    let mut out = Vec::new();
    let (mut in_upstream, mut listens, mut servers) = (false, 0, 0);
    for line in shipped.lines() {
        let code = line.trim();
        if code.starts_with("upstream ivr_bridge {") {
            in_upstream = true;
        } else if in_upstream && code == "}" {
            in_upstream = false;
            out.extend(
                upstreams
                    .iter()
                    .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;")),
            );
        }
        if in_upstream && code.starts_with("server ") {
            servers += 1;
            continue;
        }
        if code == "listen 80;" {
            listens += 1;
            out.push(format!("    listen 127.0.0.1:{port};"));
            continue;
        }
        out.push(line.to_owned());
    }
    assert_eq!(
        listens, 1,
        "the shipped config should have one `listen 80;` line"
    );
    assert!(
        servers > 0,
        "the shipped config should have an `upstream ivr_bridge` with servers"
    );
    out.join("\n")
}

/// A minimal main configuration around the site: foreground, everything under `dir`, and one
/// process (no master and workers), so that killing it can never leave a worker behind.
fn main_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           log_format upstreams '$request $status upstream=$upstream_addr statuses=$upstream_status';\n\
           access_log {d}/logs/access.log upstreams;\n\
           client_body_temp_path {d}/client_body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           include {d}/ivr-bridge.conf;\n\
         }}\n"
    )
}
