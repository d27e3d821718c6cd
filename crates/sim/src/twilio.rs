//! Twilio's side of a Media Stream on the wire, sans-IO: the messages Twilio sends (built into a
//! caller's buffer, so a load generator allocates only the message itself) and the rules Twilio
//! applies to what the server sends (PROTOCOLS.md §1.3–1.4). Every simulated caller uses these.

use std::fmt::Write as _;

use base64::Engine;
use serde_json::Value;

/// The account every simulated call belongs to.
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// A server message Twilio would accept.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Audio to queue.
    Media(Vec<u8>),
    /// A mark to echo once the audio queued before it has played.
    Mark(String),
    /// Drop queued audio and echo pending marks.
    Clear,
}

/// Checks one text frame against Twilio's rules; `stream_sid` is `None` before `start` was
/// sent. Any problem means Twilio would reject the message (31951), so it is not applied.
pub fn check(text: &str, stream_sid: Option<&str>) -> Result<Outbound, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:.200}"))?;
    check_value(&v, stream_sid).map_err(|e| format!("{e}: {text:.200}"))
}

/// [`check`] for a message already parsed.
pub fn check_value(v: &Value, stream_sid: Option<&str>) -> Result<Outbound, String> {
    if !v.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let event = v["event"].as_str().unwrap_or_default();
    let (keys, inner): (&[&str], Option<(&str, &[&str])>) = match event {
        "media" => (
            &["event", "streamSid", "media"],
            Some(("media", &["payload"])),
        ),
        "mark" => (&["event", "streamSid", "mark"], Some(("mark", &["name"]))),
        "clear" => (&["event", "streamSid"], None),
        other => return Err(format!("event {other:?} is not media/mark/clear")),
    };
    exact_keys(v, keys, event)?;
    if let Some((field, inner_keys)) = inner {
        exact_keys(&v[field], inner_keys, &format!("{event}.{field}"))?;
    }
    let Some(expected) = stream_sid else {
        return Err(format!("{event} sent before Twilio sent `start`"));
    };
    if v["streamSid"] != expected {
        let sid = &v["streamSid"];
        return Err(format!(
            "{event} has streamSid {sid} instead of {expected:?}"
        ));
    }
    match event {
        "media" => {
            let payload = v["media"]["payload"]
                .as_str()
                .ok_or("media.payload is not a string")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map_err(|e| format!("media.payload is not base64: {e}"))?;
            if bytes.is_empty() {
                return Err("media.payload is empty".into());
            }
            Ok(Outbound::Media(bytes))
        }
        "mark" => match v["mark"]["name"].as_str() {
            Some(name) => Ok(Outbound::Mark(name.to_owned())),
            None => Err("mark.name is not a string".into()),
        },
        _ => Ok(Outbound::Clear),
    }
}

fn exact_keys(v: &Value, keys: &[&str], what: &str) -> Result<(), String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} is not an object"))?;
    let mut have: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want = keys.to_vec();
    have.sort_unstable();
    want.sort_unstable();
    if have == want {
        Ok(())
    } else {
        Err(format!(
            "{what} has fields {have:?}, Twilio wants exactly {want:?}"
        ))
    }
}

/// Appends `connected`, Twilio's first message.
pub fn connected(out: &mut String) {
    out.push_str(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
}

/// Appends `start` (sequence number `seq`) for a call on `stream_sid`.
pub fn start(out: &mut String, seq: u64, stream_sid: &str, call_sid: &str) {
    let _ = write!(
        out,
        r#"{{"event":"start","sequenceNumber":"{seq}","start":{{"accountSid":"{ACCOUNT_SID}","streamSid":"{stream_sid}","callSid":"{call_sid}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{}}}},"streamSid":"{stream_sid}"}}"#
    );
}

/// Appends an inbound `media` message carrying `audio` (μ-law), chunk `chunk` at
/// `timestamp_ms` since the stream started; the payload is encoded straight into `out`.
pub fn media(
    out: &mut String,
    seq: u64,
    stream_sid: &str,
    chunk: u64,
    timestamp_ms: u64,
    audio: &[u8],
) {
    let _ = write!(
        out,
        r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":""#
    );
    base64::engine::general_purpose::STANDARD.encode_string(audio, out);
    let _ = write!(out, r#""}},"streamSid":"{stream_sid}"}}"#);
}

/// Appends the echo of mark `name`, as Twilio sends it when the audio before it has played
/// (or was cleared).
pub fn mark(out: &mut String, seq: u64, stream_sid: &str, name: &str) {
    let _ = write!(
        out,
        r#"{{"event":"mark","sequenceNumber":"{seq}","streamSid":"{stream_sid}","mark":{{"name":"#
    );
    push_json_string(out, name);
    out.push_str("}}");
}

/// Appends `stop`: the caller hung up.
pub fn stop(out: &mut String, seq: u64, stream_sid: &str, call_sid: &str) {
    let _ = write!(
        out,
        r#"{{"event":"stop","sequenceNumber":"{seq}","stop":{{"accountSid":"{ACCOUNT_SID}","callSid":"{call_sid}"}},"streamSid":"{stream_sid}"}}"#
    );
}

/// Appends `text` as a JSON string, quoted and escaped (a mark name is the server's text).
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_messages_parse_as_twilio_sends_them() {
        let mut out = String::new();
        media(&mut out, 3, "MZ1", 2, 20, &[0xFF, 0x7F]);
        let v: Value = serde_json::from_str(&out).expect("media is JSON");
        assert_eq!(v["media"]["payload"], "/38=");
        assert_eq!(
            (v["sequenceNumber"].as_str(), v["media"]["chunk"].as_str()),
            (Some("3"), Some("2"))
        );
        out.clear();
        mark(&mut out, 4, "MZ1", "a \"quoted\"\nname");
        let v: Value = serde_json::from_str(&out).expect("mark is JSON");
        assert_eq!(v["mark"]["name"], "a \"quoted\"\nname");
        for build in [
            |o: &mut String| connected(o),
            |o: &mut String| start(o, 1, "MZ1", "CA1"),
            |o: &mut String| stop(o, 9, "MZ1", "CA1"),
        ] {
            out.clear();
            build(&mut out);
            assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
        }
    }
}
