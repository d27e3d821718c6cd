//! The binary's start-up contract: a bad or missing setting is one line naming the variable and
//! exit code 2; keys never show in the output.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `ivr-bridge` with only `vars` in its environment, in an empty directory (no `.env`).
fn run(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "ivr-bridge-cli-{}-{}",
        std::process::id(),
        vars.len() * 31 + args.len()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .env_clear()
        .envs(vars.iter().copied())
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&dir);
    output
}

/// Asserts exit code 2 and a single stderr line containing `needle`; returns the line.
fn one_line_error(output: &Output, needle: &str) -> String {
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{needle} not named in: {}",
        lines[0]
    );
    lines[0].to_owned()
}

const KEYS: [(&str, &str); 2] = [
    ("DEEPGRAM_API_KEY", "dg-very-secret"),
    ("MISTRAL_API_KEY", "mi-very-secret"),
];

#[test]
fn a_missing_key_is_named_in_one_line() {
    one_line_error(&run(&[], &[]), "DEEPGRAM_API_KEY");
    one_line_error(&run(&KEYS[..1], &["serve"]), "MISTRAL_API_KEY");
}

#[test]
fn an_invalid_value_is_named_in_one_line_without_the_keys() {
    for (var, value) in [
        ("SILENCE_TIMEOUT_MS", "soon"),
        ("SILENCE_TIMEOUT_MS", "0"),
        ("PORT", "eighty"),
        ("DEEPGRAM_STT_URL", "https://api.deepgram.com/v1/listen"),
        ("MISTRAL_API_URL", "not a url"),
        ("PUBLIC_URL", "ftp://example.com"),
        ("RECORD_DIR", "/dev/null/recordings"),
    ] {
        let mut vars = KEYS.to_vec();
        vars.push((var, value));
        let line = one_line_error(&run(&vars, &[]), var);
        assert!(!line.contains("very-secret"), "{line}");
    }
}

#[test]
fn relay_mode_needs_only_the_mistral_key_and_names_a_bad_relay_setting() {
    let mistral = [("MISTRAL_API_KEY", "mi-very-secret")];
    one_line_error(&run(&[], &["serve", "--relay"]), "MISTRAL_API_KEY");
    for (var, value) in [
        ("RELAY_INTERRUPTIBLE", "sometimes"),
        ("RELAY_TTS_PROVIDER", "polly"),
        ("RELAY_TRANSCRIPTION_PROVIDER", "whisper"),
    ] {
        let mut vars = mistral.to_vec();
        vars.push((var, value));
        let line = one_line_error(&run(&vars, &["serve", "--relay"]), var);
        assert!(!line.contains("very-secret"), "{line}");
        let mut vars = vars.clone();
        vars.push(("MODE", "relay"));
        one_line_error(&run(&vars, &[]), var);
    }
}

#[test]
fn help_lists_the_settings_and_exits_zero() {
    let output = run(&[], &["serve", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for var in [
        "PORT",
        "PUBLIC_URL",
        "SILENCE_TIMEOUT_MS",
        "SYSTEM_PROMPT_FILE",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
}

/// Reads `child`'s terminal output on a thread, so the test can wait for a pattern with a limit.
fn terminal_reader(mut out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<Vec<u8>> {
    use std::io::Read;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects terminal output into `seen` until it contains `needle` (true) or 20 s pass (false).
fn wait_for(rx: &std::sync::mpsc::Receiver<Vec<u8>>, seen: &mut String, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => return false,
        }
    }
    true
}

/// Waits (up to 20 s) until the terminal of process `pid` has echo turned off, as `stty` tells.
fn wait_for_echo_off(pid: &str) {
    let Ok(tty) = std::fs::read_link(format!("/proc/{}/fd/0", pid.trim())) else {
        panic!("no terminal found for the server (pid {pid:?})");
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let settings = Command::new("stty").arg("-F").arg(&tty).arg("-a").output();
        if settings.is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|flag| flag == "-echo")
        }) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the prompt never turned the terminal's echo off");
}

/// The prototype's promise, kept safely: on a terminal, a missing key is asked for once, without
/// echo, used for this run, with a hint about `.env`. `script` (util-linux) gives the server a
/// real pseudo-terminal; what the test types goes through the terminal's line discipline, so an
/// echoed key would show in the output.
#[test]
fn missing_keys_are_asked_for_on_a_terminal_without_echo() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("ivr-bridge-cli-tty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server = format!("exec {} serve --port 0", env!("CARGO_BIN_EXE_ivr-bridge"));
    let mut child = Command::new("script")
        .args(["-qec", &server, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "dumb")
        // Nothing reachable: the server must start without asking the providers anything.
        .env("DEEPGRAM_STT_URL", "ws://127.0.0.1:9/v1/listen")
        .env("DEEPGRAM_TTS_URL", "http://127.0.0.1:9/v1/speak")
        .env("MISTRAL_API_URL", "http://127.0.0.1:9/v1/chat/completions")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs");
    let mut typed = child.stdin.take().expect("stdin");
    let rx = terminal_reader(child.stdout.take().expect("stdout"));
    let mut seen = String::new();

    // The server is script(1)'s child (`exec`); its standard input is the pseudo-terminal.
    let pid = child.id();
    let server =
        || std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let asked_deepgram = wait_for(&rx, &mut seen, "DEEPGRAM_API_KEY is not set. Paste it");
    if asked_deepgram {
        // A person reads the prompt before typing; the test must wait as long, until the prompt
        // has really turned echo off, or the line discipline echoes what arrives in between.
        wait_for_echo_off(&server());
        typed.write_all(b"dg-typed-secret\n").expect("type");
    }
    let asked_mistral = wait_for(&rx, &mut seen, "MISTRAL_API_KEY is not set. Paste it");
    if asked_mistral {
        wait_for_echo_off(&server());
        typed.write_all(b"mi-typed-secret\n").expect("type");
    }
    let started = wait_for(&rx, &mut seen, "ivr-bridge listening");
    // Stop the server first, then script.
    let server = server();
    for victim in server.split_whitespace().chain([pid.to_string().as_str()]) {
        let _ = Command::new("kill").args(["-TERM", victim]).status();
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(asked_deepgram, "no prompt for DEEPGRAM_API_KEY: {seen}");
    assert!(asked_mistral, "no prompt for MISTRAL_API_KEY: {seen}");
    assert!(
        started,
        "the server did not start with the typed keys: {seen}"
    );
    assert!(
        seen.contains("put DEEPGRAM_API_KEY=... in .env")
            && seen.contains("put MISTRAL_API_KEY=... in .env"),
        "no hint about .env: {seen}"
    );
    assert!(
        !seen.contains("dg-typed-secret") && !seen.contains("mi-typed-secret"),
        "a typed key was echoed or logged: {seen}"
    );
}
