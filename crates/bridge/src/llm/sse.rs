//! Server-sent events, sans-IO: bytes in as they arrive, complete `data` payloads out.
//!
//! Network chunks split lines (and UTF-8 characters) anywhere, so bytes are held until a line is
//! complete. Events end at a blank line; several `data:` lines of one event are joined with `\n`;
//! comments (`:`) and other fields are ignored; `\n`, `\r\n` and `\r` all end lines.

/// Longest event we hold; a provider sending more without a blank line is broken.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Why the stream cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// An event grew past [`MAX_EVENT_BYTES`].
    #[error("server-sent event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// `data` of the current event so far.
    data: String,
    /// The current event had at least one `data` field.
    has_data: bool,
    /// The previous byte was `\r`, so a following `\n` belongs to the same line end.
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; appends the `data` of every event they complete to `events`.
    pub fn push(&mut self, bytes: &[u8], events: &mut Vec<String>) -> Result<(), SseError> {
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => self.end_line(events),
                _ => {
                    self.line.push(byte);
                    if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                        return Err(SseError::TooLarge);
                    }
                }
            }
        }
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                events.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return;
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.find(':') {
            Some(0) => return,
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..]),
            ),
            None => (line.as_ref(), ""),
        };
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<String> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in input.chunks(piece) {
            parser.push(chunk, &mut events).unwrap();
        }
        events
    }

    #[test]
    fn events_survive_any_split_point() {
        let input = "data: {\"a\":\"é\"}\n\n: comment\nevent: x\ndata: one\ndata: two\r\n\r\ndata: [DONE]\n\n";
        let expected = vec![
            "{\"a\":\"é\"}".to_owned(),
            "one\ntwo".to_owned(),
            "[DONE]".to_owned(),
        ];
        for piece in 1..input.len() {
            assert_eq!(
                parse_in_pieces(input.as_bytes(), piece),
                expected,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn an_unfinished_event_is_held_back() {
        assert!(parse_in_pieces(b"data: partial\n", 4).is_empty());
    }

    #[test]
    fn a_runaway_event_is_refused() {
        let mut parser = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(parser.push(&big, &mut Vec::new()), Err(SseError::TooLarge));
    }
}
