//! Twilio's voice in a ConversationRelay call: what it is saying, from when, at the speaking
//! rate, and what an interruption at a given moment heard of it (whole words).

use std::time::Duration;

use tokio::time::Instant;

/// What Twilio's voice says: pieces of text in order, each spoken from when it arrived or
/// the previous one ended, at the speaking rate.
#[derive(Debug)]
pub(super) struct Line {
    /// Time per character.
    per_char: Duration,
    /// (start, text, part of a reply) per piece, in order.
    pieces: Vec<(Instant, String, bool)>,
    /// Where the current reply's speech began.
    reply_from: Option<usize>,
}

impl Line {
    pub(super) fn new(rate: f64) -> Self {
        Self {
            per_char: Duration::from_secs_f64(1.0 / rate.max(1.0)),
            pieces: Vec::new(),
            reply_from: None,
        }
    }

    /// When what was queued has been spoken.
    fn end(&self) -> Option<Instant> {
        self.pieces
            .last()
            .map(|(start, text, _)| *start + self.length(text))
    }

    fn length(&self, text: &str) -> Duration {
        self.per_char * u32::try_from(text.chars().count()).unwrap_or(u32::MAX)
    }

    pub(super) fn quiet(&self, now: Instant) -> bool {
        self.end().is_none_or(|end| now >= end)
    }

    pub(super) fn speak(&mut self, text: &str, now: Instant, reply: bool) {
        let start = self.end().map_or(now, |end| end.max(now));
        if reply && self.reply_from.is_none() {
            self.reply_from = Some(self.pieces.len());
        }
        if !reply {
            self.reply_from = None;
        }
        self.pieces.push((start, text.to_owned(), reply));
    }

    /// The caller has spoken: the next reply text starts a new reply.
    pub(super) fn next_reply(&mut self) {
        self.reply_from = None;
    }

    /// When the current reply began to be spoken.
    pub(super) fn reply_started(&self) -> Option<Instant> {
        self.reply_from
            .and_then(|i| self.pieces.get(i))
            .map(|(start, _, _)| *start)
    }

    /// The caller speaks at `now`: what they heard of the current reply (whole words) and for
    /// how long it played; the rest is not spoken.
    pub(super) fn interrupt(&mut self, now: Instant) -> (String, Duration) {
        let from = self.reply_from.take().unwrap_or(self.pieces.len());
        let began = self.pieces.get(from).map_or(now, |(start, _, _)| *start);
        let mut heard = String::new();
        for (start, text, _) in &self.pieces[from..] {
            if *start >= now {
                break;
            }
            let chars = (now - *start).as_secs_f64() / self.per_char.as_secs_f64();
            heard.extend(text.chars().take(chars as usize));
        }
        let total: String = self.pieces[from..]
            .iter()
            .map(|(_, t, _)| t.as_str())
            .collect();
        if total.len() > heard.len() && !total[heard.len()..].starts_with(char::is_whitespace) {
            let cut = heard.rfind(char::is_whitespace).unwrap_or(0);
            heard.truncate(cut);
        }
        self.pieces.truncate(from);
        self.pieces.push((now, String::new(), false));
        (
            heard.trim().to_owned(),
            now.saturating_duration_since(began),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_hears_whole_words_spoken_so_far() {
        let t0 = Instant::now();
        let mut line = Line::new(10.0); // 100 ms a character
        line.speak("Hi!", t0, false);
        line.speak("We are open ", t0, true);
        line.speak("from eight.", t0 + Duration::from_millis(50), true);
        let started = line.reply_started().expect("a reply");
        assert_eq!(started, t0 + Duration::from_millis(300));
        // 9 characters of the reply: "We are op" → whole words "We are".
        let (heard, took) = line.interrupt(started + Duration::from_millis(900));
        assert_eq!(heard, "We are");
        assert_eq!(took, Duration::from_millis(900));
        assert!(line.quiet(started + Duration::from_millis(900)));
    }

    #[test]
    fn speech_queues_after_what_is_being_said() {
        let t0 = Instant::now();
        let mut line = Line::new(10.0);
        line.speak("abc", t0, true);
        line.speak("de", t0, true);
        assert_eq!(line.end(), Some(t0 + Duration::from_millis(500)));
        assert!(!line.quiet(t0 + Duration::from_millis(499)));
        assert!(line.quiet(t0 + Duration::from_millis(500)));
    }
}
