//! How much of a reply the caller has heard at a given instant, to the word.
//!
//! Twilio plays a stream's audio in real time from the first frame it receives, one phrase after
//! the other. So a phrase starts playing when its first frame is sent or when the phrase before
//! it ends, whichever is later, and plays for its audio's length; the mark after each phrase
//! tells exactly when it ended, and corrects the estimate of everything after it. The point
//! reached inside the phrase being played is mapped onto its words in proportion to its text.

use std::time::Duration;

use tokio::time::Instant;

/// Audio shorter than this has not really been heard: an interruption before it continues the
/// caller's turn instead of starting a new one.
pub const AUDIBLE: Duration = Duration::from_millis(100);

/// Speech rate assumed for a phrase whose audio is still arriving (a synthesized voice speaks
/// about 15 characters a second).
const PER_CHAR: Duration = Duration::from_millis(65);

pub use crate::store::CUT_OFF;

/// When one phrase's audio went out and how long it plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct PhraseAudio {
    /// When its first frame was handed to the socket.
    pub(super) sent: Option<Instant>,
    /// Its audio's length, once all of it is queued.
    pub(super) length: Option<Duration>,
}

/// The playback of one reply, as far as it can be known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Playout {
    /// Per phrase, in order.
    phrases: Vec<PhraseAudio>,
    /// When the mark of the last phrase heard to its end came back.
    confirmed: Option<Instant>,
}

/// What the caller heard of a reply at one instant.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Position {
    /// Phrases heard to their end.
    pub(super) whole: usize,
    /// Of the next phrase, how far it has played, between 0 and 1.
    pub(super) part: f64,
    /// Audio played in all.
    pub(super) played: Duration,
}

impl Playout {
    /// Phrase `index` began to go out at `sent`.
    pub(super) fn sent(&mut self, index: usize, sent: Instant) {
        let phrase = self.phrase(index);
        phrase.sent = Some(phrase.sent.map_or(sent, |s| s.min(sent)));
    }

    /// All of phrase `index`'s audio is queued: it plays for `length`.
    pub(super) fn queued(&mut self, index: usize, sent: Instant, length: Duration) {
        self.sent(index, sent);
        self.phrase(index).length = Some(length);
    }

    /// Phrases from `from` on will be sent again: their times so far are void.
    pub(super) fn forget_from(&mut self, from: usize) {
        for phrase in self.phrases.iter_mut().skip(from) {
            *phrase = PhraseAudio::default();
        }
    }

    /// The mark after a phrase came back at `now`: it ended then.
    pub(super) fn confirmed(&mut self, now: Instant) {
        self.confirmed = Some(now);
    }

    fn phrase(&mut self, index: usize) -> &mut PhraseAudio {
        if self.phrases.len() <= index {
            self.phrases.resize(index + 1, PhraseAudio::default());
        }
        &mut self.phrases[index]
    }

    /// Where playback is at `now`, given that the first `marked` phrases' marks came back and
    /// the phrases' texts are `texts` (for the length of one whose audio is still arriving).
    pub(super) fn position(&self, marked: usize, texts: &[String], now: Instant) -> Position {
        let mut played = self.before(marked);
        // The next phrase starts when the last confirmed one ended, or when it is sent.
        let mut free_from = if marked == 0 { None } else { self.confirmed };
        let mut index = marked;
        loop {
            let audio = self.phrases.get(index).copied().unwrap_or_default();
            let Some(sent) = audio.sent else {
                return Position {
                    whole: index,
                    part: 0.0,
                    played,
                };
            };
            let start = free_from.map_or(sent, |free| free.max(sent));
            let elapsed = now.saturating_duration_since(start);
            let length = audio.length.unwrap_or_else(|| {
                let chars = texts.get(index).map_or(0, |t| t.chars().count());
                (PER_CHAR * u32::try_from(chars).unwrap_or(u32::MAX)).max(elapsed)
            });
            if audio.length.is_none() || elapsed < length || index + 1 >= texts.len() {
                let heard = elapsed.min(length);
                let part = if length.is_zero() {
                    0.0
                } else {
                    heard.as_secs_f64() / length.as_secs_f64()
                };
                return Position {
                    whole: index,
                    part: part.min(1.0),
                    played: played + heard,
                };
            }
            played += length;
            free_from = Some(start + length);
            index += 1;
        }
    }

    /// Audio of the phrases before `index` (those with a known length).
    fn before(&self, index: usize) -> Duration {
        self.phrases
            .iter()
            .take(index)
            .filter_map(|p| p.length)
            .sum()
    }
}

/// The words of `phrase` the caller heard when `part` of its audio had played, in proportion
/// to the text: every word of which more than half had played.
pub(super) fn words_heard(phrase: &str, part: f64) -> &str {
    let total = phrase.chars().count();
    if total == 0 || part <= 0.0 {
        return "";
    }
    let reached = part * total as f64;
    let mut end = 0;
    let mut word: Option<(usize, usize)> = None; // (first char, first byte)
    let mut chars = phrase.char_indices().enumerate().peekable();
    while let Some((at, (byte, c))) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let (first, _) = *word.get_or_insert((at, byte));
        let last = chars
            .peek()
            .is_none_or(|(_, (_, next))| next.is_whitespace());
        if last {
            let middle = (first + at + 1) as f64 / 2.0;
            if middle > reached {
                break;
            }
            end = byte + c.len_utf8();
            word = None;
        }
    }
    &phrase[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_word_counts_once_more_than_half_of_it_played() {
        let phrase = "one two three four";
        assert_eq!(words_heard(phrase, 0.0), "");
        assert_eq!(words_heard(phrase, 0.05), "", "less than half of \"one\"");
        assert_eq!(words_heard(phrase, 0.1), "one");
        assert_eq!(words_heard(phrase, 0.35), "one two");
        assert_eq!(words_heard(phrase, 1.0), phrase);
        assert_eq!(words_heard("héllo wörld", 0.6), "héllo");
        assert_eq!(words_heard("héllo wörld", 0.9), "héllo wörld");
        assert_eq!(words_heard("", 0.5), "");
    }

    #[test]
    fn twelve_words_cut_halfway_keep_about_six() {
        let phrase = "Our main clinic opens at eight and closes at six each weekday.";
        assert_eq!(phrase.split_whitespace().count(), 12);
        let heard = words_heard(phrase, 0.5);
        let kept = heard.split_whitespace().count();
        assert!((5..=7).contains(&kept), "{heard:?}");
    }

    #[test]
    fn playback_runs_in_real_time_from_the_first_frame() {
        let t0 = Instant::now();
        let texts = vec!["First phrase here.".to_owned(), "Second one.".to_owned()];
        let mut playout = Playout::default();
        playout.queued(0, t0, ms(1000));
        playout.queued(1, t0 + ms(300), ms(500));
        let at = |n| playout.position(0, &texts, t0 + ms(n));
        assert_eq!(at(0).whole, 0);
        assert_eq!(at(500).part, 0.5);
        assert_eq!(at(500).played, ms(500));
        // The second phrase was sent early; it plays after the first.
        let second = at(1250);
        assert_eq!((second.whole, second.part), (1, 0.5));
        assert_eq!(second.played, ms(1250));
        // Past the end of the last phrase, all of it was heard.
        assert_eq!(at(5000).part, 1.0);
    }

    #[test]
    fn a_mark_corrects_the_estimate() {
        let t0 = Instant::now();
        let texts = vec!["First.".to_owned(), "Second phrase.".to_owned()];
        let mut playout = Playout::default();
        playout.queued(0, t0, ms(1000));
        playout.queued(1, t0 + ms(100), ms(1000));
        // Twilio started late: the first mark came back at 1.4 s, not 1 s.
        playout.confirmed(t0 + ms(1400));
        let pos = playout.position(1, &texts, t0 + ms(1900));
        assert_eq!((pos.whole, pos.part), (1, 0.5));
        assert_eq!(pos.played, ms(1500));
    }

    #[test]
    fn a_phrase_sent_after_the_last_one_ended_starts_when_sent() {
        let t0 = Instant::now();
        let texts = vec!["One.".to_owned(), "Two.".to_owned()];
        let mut playout = Playout::default();
        playout.queued(0, t0, ms(400));
        // The voice was slow: the second phrase went out 1 s after the first ended.
        playout.queued(1, t0 + ms(1400), ms(400));
        let gap = playout.position(0, &texts, t0 + ms(1000));
        assert_eq!((gap.whole, gap.part), (1, 0.0));
        let later = playout.position(0, &texts, t0 + ms(1600));
        assert_eq!((later.whole, later.part), (1, 0.5));
    }

    #[test]
    fn audio_still_arriving_is_measured_by_its_text() {
        let t0 = Instant::now();
        // 20 characters: about 1.3 s of speech.
        let texts = vec!["abcd efgh ijkl mnop.".to_owned()];
        let mut playout = Playout::default();
        playout.sent(0, t0);
        let pos = playout.position(0, &texts, t0 + ms(650));
        assert_eq!(pos.whole, 0);
        assert!((pos.part - 0.5).abs() < 0.01, "{pos:?}");
        assert_eq!(pos.played, ms(650));
        let none = Playout::default().position(0, &texts, t0);
        assert_eq!(none.played, Duration::ZERO);
    }
}
