//! What a replay compares, sans-IO: a call's conversation (turns heard, replies, barge-ins) or,
//! for a server elsewhere, what its wire shows (replies told apart by their marks, their audio,
//! clears), and the rules that say whether two of them differ in a way a test cares about.

use serde_json::Value;

use ivr_bridge::call::turns::ReplyId;
use ivr_bridge::events::CallEvent;
use ivr_sim::fixture::Sidecar;

/// A reply whose audio length differs by more than this fraction is reported as different.
pub const AUDIO_TOLERANCE: f64 = 0.25;

/// Words by which what the caller heard of a cut reply may differ between two runs: where the
/// cut lands is a matter of timing.
pub const HEARD_TOLERANCE_WORDS: usize = 3;

/// μ-law bytes per millisecond at 8 kHz.
const BYTES_PER_MS: u64 = 8;

/// One reply as a conversation saw it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SaidReply {
    /// Its phrases, in order.
    pub phrases: Vec<String>,
    /// The caller spoke over it.
    pub interrupted: bool,
    /// What the caller heard of it when they cut it off, when that is known.
    pub heard: Option<String>,
}

/// What was heard and said in a call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    /// The caller's turns as the model got them.
    pub turns: Vec<String>,
    /// The assistant's replies, greeting first.
    pub replies: Vec<SaidReply>,
    /// Times the caller spoke over the assistant.
    pub barge_ins: usize,
    /// Tools the model called, as `name(arguments)`.
    pub tool_calls: Vec<String>,
}

/// A tool call as compared: its name and its arguments, whatever their key order or spacing.
pub fn tool_call(name: &str, arguments: &str) -> String {
    let arguments = serde_json::from_str::<Value>(arguments)
        .map_or_else(|_| arguments.to_owned(), |v| v.to_string());
    format!("{name}({arguments})")
}

impl Conversation {
    /// Adds what `event` says to the conversation.
    pub fn on_event(&mut self, ids: &mut Vec<u64>, event: &CallEvent) {
        match event {
            CallEvent::TurnEnded { text, .. } => self.turns.push(text.clone()),
            CallEvent::Phrase { reply, text } => match ids.iter().position(|id| id == reply) {
                Some(i) => self.replies[i].phrases.push(text.clone()),
                None => {
                    ids.push(*reply);
                    self.replies.push(SaidReply {
                        phrases: vec![text.clone()],
                        ..SaidReply::default()
                    });
                }
            },
            CallEvent::BargeIn { reply, heard } => {
                self.barge_ins += 1;
                if let Some(i) = ids.iter().position(|id| id == reply) {
                    self.replies[i].interrupted = true;
                    self.replies[i].heard.clone_from(heard);
                }
            }
            CallEvent::ToolCall {
                name, arguments, ..
            } => self.tool_calls.push(tool_call(name, arguments)),
            CallEvent::Resumed { reply, .. } => {
                if let Some(i) = ids.iter().position(|id| id == reply) {
                    self.replies[i].interrupted = false;
                    self.replies[i].heard = None;
                }
            }
            _ => {}
        }
    }

    /// The tools a recording's model called, when the recording says (`None`: made before
    /// tools were recorded).
    pub fn recorded_tool_calls(sidecar: &Sidecar) -> Option<Vec<String>> {
        let calls = sidecar.tool_calls.as_ref()?;
        Some(
            calls
                .iter()
                .map(|c| tool_call(&c.name, &c.arguments))
                .collect(),
        )
    }

    /// What a recording's sidecar says, as far as it says it: `None` parts were not recorded.
    pub fn recorded(sidecar: &Sidecar) -> (Vec<String>, Option<Vec<SaidReply>>, Option<usize>) {
        let turns = match &sidecar.turns {
            Some(turns) => turns.iter().map(|t| t.text.clone()).collect(),
            // A hand-made fixture: what the caller says is what should be heard.
            None => sidecar.utterances.iter().map(|u| u.text.clone()).collect(),
        };
        let replies = sidecar.replies.as_ref().map(|replies| {
            replies
                .iter()
                .map(|r| SaidReply {
                    phrases: r.phrases.clone(),
                    interrupted: r.interrupted,
                    heard: sidecar
                        .barge_ins
                        .iter()
                        .flatten()
                        .find(|b| b.reply == r.reply && !b.resumed)
                        .and_then(|b| b.heard.clone()),
                })
                .collect()
        });
        (turns, replies, sidecar.barge_ins.as_ref().map(Vec::len))
    }
}

/// Lower case, letters and digits only (apostrophes dropped, other punctuation a space), single
/// spaces: "What's  the ADDRESS?" and "whats the address" are the same words.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|c| !matches!(c, '\'' | '’')) {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim_end().to_owned()
}

/// Whether two replies say the same: the same words, or, when the caller cut either one short,
/// one's words are the start of the other's (where a barge-in lands is a matter of timing).
pub fn same_reply(a: &SaidReply, b: &SaidReply) -> bool {
    let (x, y) = (
        normalise(&a.phrases.join(" ")),
        normalise(&b.phrases.join(" ")),
    );
    if a.interrupted || b.interrupted {
        (x.starts_with(&y) || y.starts_with(&x)) && same_heard(a, b)
    } else {
        x == y
    }
}

/// Whether two cut replies were heard to about the same word: one's heard words start the
/// other's, and their counts differ by at most [`HEARD_TOLERANCE_WORDS`]. Unknown on either
/// side (a recording made before this was kept) is not a difference.
fn same_heard(a: &SaidReply, b: &SaidReply) -> bool {
    let (Some(x), Some(y)) = (&a.heard, &b.heard) else {
        return true;
    };
    let (x, y) = (normalise(x), normalise(y));
    let (nx, ny) = (x.split(' ').count(), y.split(' ').count());
    (x.starts_with(&y) || y.starts_with(&x)) && nx.abs_diff(ny) <= HEARD_TOLERANCE_WORDS
}

/// One reply as the wire shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireReply {
    /// The server's reply number, from its marks (`None`: audio cut before its first mark).
    pub reply: Option<u64>,
    /// Marks sent (one per phrase).
    pub marks: usize,
    /// Audio sent, ms.
    pub audio_ms: u64,
    /// A `clear` cut it.
    pub cut: bool,
}

/// What the server sent, summed up.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wire {
    /// Replies in order.
    pub replies: Vec<WireReply>,
    /// `clear` messages.
    pub clears: usize,
}

impl Wire {
    /// Sums up the server's messages: audio belongs to the reply of the mark that follows it;
    /// audio not yet marked when a `clear` comes belongs to the reply being played.
    pub fn from_messages<'a>(messages: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut wire = Wire::default();
        let mut pending = 0u64;
        for msg in messages {
            match msg["event"].as_str() {
                Some("media") => {
                    let payload = msg["media"]["payload"].as_str().unwrap_or_default();
                    pending += decoded_len(payload);
                }
                Some("mark") => {
                    let name = msg["mark"]["name"].as_str().unwrap_or_default();
                    let id = ReplyId::parse_mark(name).map(|(id, _)| id.0);
                    let reply = wire.reply_for(id);
                    reply.marks += 1;
                    reply.audio_ms += std::mem::take(&mut pending) / BYTES_PER_MS;
                }
                Some("clear") => {
                    wire.clears += 1;
                    let last = wire.current();
                    last.audio_ms += std::mem::take(&mut pending) / BYTES_PER_MS;
                    last.cut = true;
                }
                _ => {}
            }
        }
        if pending > 0 {
            wire.current().audio_ms += pending / BYTES_PER_MS;
        }
        wire
    }

    fn reply_for(&mut self, id: Option<u64>) -> &mut WireReply {
        if self.replies.last().is_none_or(|r| r.reply != id || r.cut) {
            self.replies.push(WireReply {
                reply: id,
                ..WireReply::default()
            });
        }
        self.current()
    }

    /// The reply being played: the last one unless a `clear` ended it.
    fn current(&mut self) -> &mut WireReply {
        if self.replies.last().is_none_or(|r| r.cut) {
            self.replies.push(WireReply::default());
        }
        let last = self.replies.len() - 1;
        &mut self.replies[last]
    }
}

/// Bytes a base64 text decodes to, without decoding it.
fn decoded_len(b64: &str) -> u64 {
    let padding = b64.bytes().rev().take_while(|&b| b == b'=').count() as u64;
    (b64.len() as u64 / 4 * 3).saturating_sub(padding)
}

/// Whether two wire replies match: the same marks and audio within [`AUDIO_TOLERANCE`], unless
/// either was cut (then only their existence counts).
pub fn same_wire_reply(a: &WireReply, b: &WireReply) -> bool {
    if a.cut || b.cut {
        return true;
    }
    let (x, y) = (a.audio_ms as f64, b.audio_ms as f64);
    a.marks == b.marks && (x - y).abs() <= AUDIO_TOLERANCE * x.max(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(text: &[&str], interrupted: bool) -> SaidReply {
        SaidReply {
            phrases: text.iter().map(|s| (*s).to_owned()).collect(),
            interrupted,
            heard: None,
        }
    }

    #[test]
    fn cut_replies_differ_when_heard_to_a_different_word() {
        let phrases = ["We are open from eight in the morning until six in the evening."];
        let heard = |words: &str| SaidReply {
            heard: Some(format!("{words}…")),
            ..reply(&phrases, true)
        };
        let early = heard("We are open from");
        assert!(same_reply(&early, &heard("We are open from eight in")));
        assert!(!same_reply(
            &early,
            &heard("We are open from eight in the morning")
        ));
        assert!(!same_reply(&early, &heard("We are closed")));
        assert!(same_reply(&early, &reply(&phrases, true)));
    }

    #[test]
    fn normalising_ignores_case_punctuation_and_spacing() {
        assert_eq!(normalise("  What's the  ADDRESS?! "), "whats the address");
        assert_eq!(normalise("8 AM - 6 PM."), "8 am 6 pm");
        assert_ne!(normalise("open Monday"), normalise("open Sunday"));
    }

    #[test]
    fn cut_replies_compare_by_their_common_start() {
        let full = reply(
            &["We are open Monday to Friday,", "from 8 AM to 6 PM."],
            false,
        );
        let cut = reply(&["We are open Monday to Friday,"], true);
        assert!(same_reply(&full, &cut));
        assert!(!same_reply(
            &full,
            &reply(&["We are open Monday to Friday,"], false)
        ));
        assert!(!same_reply(&cut, &reply(&["We are closed."], true)));
    }

    #[test]
    fn the_wire_tells_replies_apart_by_their_marks() {
        let media = |bytes: usize| {
            use base64::Engine;
            let payload = base64::engine::general_purpose::STANDARD.encode(vec![0xFF; bytes]);
            json!({"event": "media", "media": {"payload": payload}})
        };
        let mark = |name: &str| json!({"event": "mark", "mark": {"name": name}});
        let messages = [
            media(1600),
            mark("reply-0.0"),
            media(800),
            mark("reply-1.0"),
            media(800),
            mark("reply-1.1"),
            media(400),
            json!({"event": "clear"}),
            media(160),
        ];
        let wire = Wire::from_messages(&messages);
        assert_eq!(wire.clears, 1);
        let summary: Vec<_> = wire
            .replies
            .iter()
            .map(|r| (r.reply, r.marks, r.audio_ms, r.cut))
            .collect();
        assert_eq!(
            summary,
            [
                (Some(0), 1, 200, false),
                (Some(1), 2, 250, true),
                (None, 0, 20, false)
            ]
        );
    }
}
