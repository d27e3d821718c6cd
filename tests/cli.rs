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
