//! `ivr-bridge demo` runs a whole call to completion with no keys and no network, tells it on
//! stdout, and writes a two-channel WAV of what both sides heard.

use std::path::PathBuf;
use std::process::Command;

/// A parsed canonical WAV: its format and samples per channel.
struct Wav {
    channels: u16,
    sample_rate: u32,
    bits: u16,
    left: Vec<i16>,
    right: Vec<i16>,
}

fn parse_wav(bytes: &[u8]) -> Wav {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    assert_eq!(u32_at(4) as usize, bytes.len() - 8, "RIFF size");
    assert_eq!(u16_at(20), 1, "PCM");
    assert_eq!(&bytes[36..40], b"data");
    assert_eq!(u32_at(40) as usize, bytes.len() - 44, "data size");
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Wav {
        channels: u16_at(22),
        sample_rate: u32_at(24),
        bits: u16_at(34),
        left: samples.iter().step_by(2).copied().collect(),
        right: samples.iter().skip(1).step_by(2).copied().collect(),
    }
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

#[test]
fn the_demo_plays_a_call_with_stand_ins_and_writes_its_wav() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("ivr-bridge-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fixture = root.join("fixtures/calls/one_question.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .env_clear()
        .args(["demo", "--fixture"])
        .arg(&fixture)
        .args(["--out", "call.wav"])
        .current_dir(&dir)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains(
            "Deepgram and Mistral are local stand-ins; set DEEPGRAM_API_KEY and MISTRAL_API_KEY"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("heard      \"What are the hospital's opening hours?\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("says \"We are open Monday to Friday,\""),
        "{stdout}"
    );
    assert!(stdout.contains("after the caller stopped"), "{stdout}");
    assert!(stdout.contains("1 answered turn(s)"), "{stdout}");
    assert!(stdout.contains("call.wav"), "{stdout}");

    let bytes = std::fs::read(dir.join("call.wav")).expect("the WAV was written");
    let _ = std::fs::remove_dir_all(&dir);
    let wav = parse_wav(&bytes);
    assert_eq!((wav.channels, wav.sample_rate, wav.bits), (2, 8000, 16));
    let secs = wav.left.len() as f64 / 8000.0;
    assert!(
        (secs - 10.06).abs() < 0.5,
        "{secs} s, the fixture lasts 10.06 s"
    );
    // The caller asks between 2 s and 4 s; the assistant greets before and answers after.
    let at = |samples: &[i16], from: f64, to: f64| {
        rms(&samples[(from * 8000.0) as usize..(to * 8000.0) as usize])
    };
    assert!(at(&wav.left, 2.0, 4.0) > 1000.0, "caller channel silent");
    assert!(
        at(&wav.right, 0.0, 2.0) > 300.0,
        "no greeting on the assistant channel"
    );
    assert!(
        at(&wav.right, 5.0, 9.0) > 300.0,
        "no reply on the assistant channel"
    );
    assert!(
        at(&wav.right, 2.5, 4.0) < 50.0,
        "the assistant talks over the question"
    );
}

#[test]
fn the_default_demo_tells_an_early_interruption_and_a_resumed_backchannel() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("ivr-bridge-demo-{}.wav", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .env_clear()
        .arg("demo")
        .arg("--out")
        .arg(&out)
        .current_dir(&root)
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("fixtures/calls/demo.jsonl"), "{stdout}");

    // The caller asks for directions a moment into the answer about opening hours: they had
    // heard only its first words, and their question is a turn of its own.
    let early = "barge-in: the caller spoke over the assistant after hearing \"We are open";
    assert!(stdout.contains(early), "{stdout}");
    assert!(
        stdout.contains("heard      \"How do I get to the hospital?\""),
        "the question was not glued to the one before: {stdout}"
    );
    assert!(
        stdout.contains(
            "the interruption is a turn of its own: the model's history keeps \"We are open"
        ),
        "{stdout}"
    );
    // "Uh-huh." over the directions: cleared at once, then the directions go on.
    assert!(
        stdout.contains("only a backchannel (\"Uh-huh.\"): the reply resumes from phrase"),
        "{stdout}"
    );
    assert!(!stdout.contains("heard      \"Uh-huh.\""), "{stdout}");
    assert!(stdout.contains("3 answered turn(s)"), "{stdout}");
    // "Goodbye": the assistant ends the call once its farewell was heard; the stream closes
    // and Twilio's <Connect action> request gets <Hangup/>.
    assert!(stdout.contains("calls the tool end_call"), "{stdout}");
    assert!(stdout.contains("POST /stream_ended → 200"), "{stdout}");
    assert!(stdout.contains("runs <Hangup/>"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[test]
fn the_relay_demo_plays_a_conversation_relay_session_to_its_hang_up() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_ivr-bridge"))
        .env_clear()
        .args(["demo", "--relay"])
        .current_dir(&root)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{stdout}"))
    };
    // The story in order: setup, the question, the interruption and what the history keeps,
    // the goodbye through end_call, `end`, and Twilio hanging up after /stream_ended.
    let order = [
        find("setup: session VX"),
        find("says \"How do I get to the hospital?\""),
        find("sends interrupt (heard \"From the central"),
        find("the model's history keeps \"From the central"),
        find("says \"Thank you, that is all. Goodbye.\""),
        find("end_call({})"),
        find("end, handoffData"),
        find("POST /stream_ended → 200"),
        find("runs <Hangup/>"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    assert!(stdout.contains("4 answered turn(s)"), "{stdout}");
}
