//! Reply text made fit to be spoken: Markdown removed, split into pieces the TTS accepts.
//!
//! Models write for screens even when told not to. A voice that reads out asterisks, hashes or
//! URLs in brackets sounds broken, so every reply passes through [`speakable`] before synthesis.

/// Characters Deepgram's REST TTS accepts in one request.
pub const TTS_MAX_CHARS: usize = 2000;

/// Strips Markdown and layout: emphasis markers, headings, bullets, numbered-list markers, code
/// ticks, link and image syntax (their text is kept). Lines become sentences on one line.
pub fn speakable(reply: &str) -> String {
    let mut sentences: Vec<String> = Vec::new();
    for line in reply.lines() {
        let line = strip_inline(strip_line_marker(line.trim()));
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            continue;
        }
        sentences.push(line);
    }
    let mut out = String::with_capacity(reply.len());
    for (i, sentence) in sentences.iter().enumerate() {
        if i > 0 {
            let previous_ends = out.ends_with(['.', '!', '?', ':', ';', ',']);
            out.push_str(if previous_ends { " " } else { ". " });
        }
        out.push_str(sentence);
    }
    out
}

/// Removes a heading, bullet, quote or list-number marker at the start of a line.
fn strip_line_marker(line: &str) -> &str {
    let line = line
        .trim_start_matches('#')
        .trim_start_matches('>')
        .trim_start();
    for bullet in ["- ", "* ", "+ ", "• "] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return rest.trim_start();
        }
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return rest.trim_start();
        }
    }
    line
}

/// Removes inline Markdown: `**`, `__`, `*`, `_` used as emphasis, backticks, `[text](url)` and
/// `![alt](url)` (keeping the text).
fn strip_inline(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' | '`' => {}
            '_' if is_emphasis_underscore(&chars, i) => {}
            '!' if chars.get(i + 1) == Some(&'[') => {}
            '[' => {
                if let Some((text_end, url_end)) = link_at(&chars, i) {
                    out.extend(&chars[i + 1..text_end]);
                    i = url_end + 1;
                    continue;
                }
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// An underscore at a word edge (`_word_`, `__word__`) is emphasis; inside a word (`snake_case`)
/// it is text.
fn is_emphasis_underscore(chars: &[char], i: usize) -> bool {
    let before = i.checked_sub(1).map(|j| chars[j]);
    let after = chars.get(i + 1).copied();
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    !(word(before) && word(after))
}

/// For `[text](url)` starting at `start`: the index of `]` and of `)`.
fn link_at(chars: &[char], start: usize) -> Option<(usize, usize)> {
    let text_end = start + chars[start..].iter().position(|&c| c == ']')?;
    if chars.get(text_end + 1) != Some(&'(') {
        return None;
    }
    let url_end = text_end + 1 + chars[text_end + 1..].iter().position(|&c| c == ')')?;
    Some((text_end, url_end))
}

/// Splits text into pieces of at most `max_chars` characters, at sentence ends where possible,
/// else at spaces, else anywhere. Pieces are trimmed and never empty.
pub fn split_for_tts(text: &str, max_chars: usize) -> Vec<&str> {
    let max_chars = max_chars.max(1);
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.chars().count() <= max_chars {
            pieces.push(rest);
            break;
        }
        let limit = rest
            .char_indices()
            .nth(max_chars)
            .map_or(rest.len(), |(i, _)| i);
        let window = &rest[..limit];
        let cut = window
            .rfind(['.', '!', '?'])
            .map(|i| i + 1)
            .or_else(|| window.rfind(' '))
            .filter(|&i| i > 0)
            .unwrap_or(limit);
        pieces.push(rest[..cut].trim());
        rest = rest[cut..].trim_start();
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// A phrase longer than this is cut at its last clause mark (`,` `;` `:`) rather than waiting
/// for its sentence to end.
pub const LONG_PHRASE_CHARS: usize = 200;

/// Words after which the first phrase may end at a clause mark: the first sound of a reply
/// should not wait for a whole sentence, but a phrase of one word sounds clipped.
const FIRST_PHRASE_MIN_WORDS: usize = 3;

/// Abbreviations whose period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr.", "mrs.", "ms.", "dr.", "st.", "no.", "vs.", "e.g.", "i.e.", "approx.", "dept.", "jr.",
    "sr.", "prof.", "ave.", "mt.",
];

/// Cuts a reply that arrives in pieces into phrases worth synthesizing on their own: sentences,
/// lines, and — for the first phrase, so the caller hears something sooner — the first clause.
///
/// A phrase is cut the moment its closing punctuation arrives, not when the next token does
/// (the first phrase's synthesis starts one model token sooner), unless that punctuation is
/// ambiguous: a `.` or `,` right after a digit ("9.30", "4,000") or a known abbreviation's
/// period ("Dr.") waits for the next character to decide.
///
/// The cut points depend only on the text, never on how it was split into pieces, so the same
/// reply always becomes the same phrases.
#[derive(Debug, Default)]
pub struct PhraseSplitter {
    /// Text not yet emitted.
    buffer: String,
    /// Phrases emitted so far.
    emitted: usize,
}

impl PhraseSplitter {
    /// A splitter at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the reply; returns the phrases it completes, trimmed and non-empty.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        let mut phrases = Vec::new();
        for c in piece.chars() {
            if self.buffer.is_empty()
                && self.emitted > 0
                && matches!(c, '"' | '”' | '’' | ')' | ']')
            {
                // It closes the phrase just cut (`"hi."`): nothing to say on its own.
                continue;
            }
            let ends = ends_now(last_word(&self.buffer), c);
            self.buffer.push(c);
            if c.is_whitespace() || ends {
                if let Some(cut) = self.cut_point() {
                    let rest = self.buffer.split_off(cut);
                    let phrase = std::mem::replace(&mut self.buffer, rest);
                    self.emit(phrase, &mut phrases);
                }
            }
        }
        phrases
    }

    /// The reply is complete: returns what is left as the last phrase.
    pub fn finish(&mut self) -> Option<String> {
        let mut phrases = Vec::new();
        let rest = std::mem::take(&mut self.buffer);
        self.emit(rest, &mut phrases);
        phrases.pop()
    }

    fn emit(&mut self, phrase: String, phrases: &mut Vec<String>) {
        let phrase = phrase.trim();
        // Punctuation alone (the rest of an ellipsis, a closing quote) is nothing to say.
        if phrase.chars().any(char::is_alphanumeric) {
            phrases.push(phrase.to_owned());
            self.emitted += 1;
        }
    }

    /// Where the buffer (whose last char is whitespace, or punctuation that may end a phrase
    /// at once) should be cut, if anywhere.
    fn cut_point(&self) -> Option<usize> {
        let text = self.buffer.as_str();
        if text.ends_with('\n') && !text.trim().is_empty() {
            return Some(text.len());
        }
        let body = text.trim_end();
        let last = body.chars().last()?;
        let words = body.split_whitespace().count();
        let sentence_end = matches!(last, '.' | '!' | '?') && !ends_with_abbreviation(body);
        let clause_end = matches!(last, ',' | ';' | ':')
            && ((self.emitted == 0 && words >= FIRST_PHRASE_MIN_WORDS)
                || body.chars().count() >= LONG_PHRASE_CHARS);
        (sentence_end || clause_end).then_some(text.len())
    }
}

/// The word at the end of `text` (since its last whitespace).
fn last_word(text: &str) -> &str {
    text.rsplit(char::is_whitespace).next().unwrap_or("")
}

/// Whether punctuation `c`, right after `word`, may end a phrase as soon as it arrives. It may
/// not when it could be inside a token the next character continues: a number ("9.30",
/// "4,000", "9:30"), a web or mail address ("example.com", "https://", "a@b.org"), or a word
/// with a period already in it ("e.g.", "a.m."); those wait for the next character.
fn ends_now(word: &str, c: char) -> bool {
    if !matches!(c, '.' | ',' | '!' | '?' | ';' | ':') || word.is_empty() {
        return false;
    }
    let lower = word.to_ascii_lowercase();
    let address =
        lower.contains(['/', '@', ':', '.']) || lower.contains("http") || lower.contains("www");
    let number = matches!(c, '.' | ',' | ':') && word.ends_with(|d: char| d.is_ascii_digit());
    !address && !number
}

fn ends_with_abbreviation(text: &str) -> bool {
    let word = text
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_lowercase();
    let initial = word.len() == 2 && word.starts_with(|c: char| c.is_alphabetic());
    initial || ABBREVIATIONS.contains(&word.as_str())
}

/// The phrases of a complete reply, as [`PhraseSplitter`] cuts it when it streams in.
pub fn phrases(reply: &str) -> Vec<String> {
    let mut splitter = PhraseSplitter::new();
    let mut out = splitter.push(reply);
    out.extend(splitter.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_sentences_lines_and_a_first_clause() {
        let reply =
            "From the station, walk north. Dr. Smith is in room 4, upstairs! Ready?\n- Yes\n- No";
        assert_eq!(
            phrases(reply),
            [
                "From the station,",
                "walk north.",
                "Dr. Smith is in room 4, upstairs!",
                "Ready?",
                "- Yes",
                "- No"
            ]
        );
    }

    #[test]
    fn phrases_do_not_depend_on_how_the_text_arrives() {
        let reply =
            "We open at 8 a.m. on weekdays, and at 9.30 on Saturday. Visiting hours: 10 to 8. \
                     See **our site** for e.g. parking. Anything else?";
        let whole = phrases(reply);
        for size in 1..12 {
            let mut splitter = PhraseSplitter::new();
            let mut got = Vec::new();
            let chars: Vec<char> = reply.chars().collect();
            for piece in chars.chunks(size) {
                got.extend(splitter.push(&piece.iter().collect::<String>()));
            }
            got.extend(splitter.finish());
            assert_eq!(got, whole, "pieces of {size}");
        }
        assert_eq!(whole.concat().replace(' ', ""), reply.replace(' ', ""));
    }

    #[test]
    fn a_long_sentence_is_cut_at_a_clause() {
        let long = format!(
            "{}, and then more words follow here.",
            "word ".repeat(45).trim()
        );
        let got = phrases(&format!("Short first. {long}"));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[1].ends_with(','));
    }

    #[test]
    fn a_phrase_leaves_when_its_punctuation_arrives() {
        let mut splitter = PhraseSplitter::new();
        assert!(splitter.push("We are open").is_empty());
        assert_eq!(splitter.push(" today."), ["We are open today."]);
        assert!(splitter.push(" Come by at").is_empty());
        assert_eq!(splitter.push(" noon!"), ["Come by at noon!"]);
        assert_eq!(splitter.push(" Right?"), ["Right?"]);
    }

    #[test]
    fn ambiguous_punctuation_waits_for_the_next_character() {
        let mut splitter = PhraseSplitter::new();
        // A digit before `.`: maybe a decimal.
        assert!(splitter.push("It costs 9.").is_empty());
        assert!(splitter.push("50 dollars at 9").is_empty());
        assert!(splitter.push(".").is_empty());
        assert_eq!(splitter.push(" "), ["It costs 9.50 dollars at 9."]);
        // An abbreviation's period.
        assert!(splitter.push("Ask Dr.").is_empty());
        assert!(splitter.push(" Smith").is_empty());
        assert_eq!(splitter.push("."), ["Ask Dr. Smith."]);
        // A digit before `,`: maybe a thousands separator.
        let mut first = PhraseSplitter::new();
        assert!(first.push("We have 4,").is_empty());
        assert_eq!(first.push("000 beds,"), ["We have 4,000 beds,"]);
    }

    #[test]
    fn addresses_and_times_are_not_cut() {
        let reply =
            "See [the map](https://example.com/map). Call at 9:30, or write to a@b.org. Bye.";
        let mut splitter = PhraseSplitter::new();
        let mut got = Vec::new();
        for c in reply.chars() {
            got.extend(splitter.push(&c.to_string()));
        }
        got.extend(splitter.finish());
        assert_eq!(
            got,
            [
                "See [the map](https://example.com/map).",
                "Call at 9:30, or write to a@b.org.",
                "Bye."
            ]
        );
    }

    #[test]
    fn punctuation_alone_is_not_a_phrase() {
        assert_eq!(phrases("Well... okay."), ["Well.", "okay."]);
        assert_eq!(
            phrases("He said \"hi.\" Then left."),
            ["He said \"hi.", "Then left."]
        );
    }

    #[test]
    fn one_short_clause_does_not_make_a_phrase() {
        assert_eq!(phrases("Yes, we do."), ["Yes, we do."]);
    }

    #[test]
    fn strips_emphasis_headings_bullets_and_links() {
        let reply = "## Opening hours\n**We are open** Monday to *Friday*.\n- 8 AM to 6 PM\n- closed on weekends\n\nSee [our site](https://example.com) or ![map](m.png).";
        assert_eq!(
            speakable(reply),
            "Opening hours. We are open Monday to Friday. 8 AM to 6 PM. closed on weekends. See our site or map."
        );
    }

    #[test]
    fn keeps_plain_text_and_inner_underscores() {
        assert_eq!(
            speakable("Call extension 4_2, it's __fast__."),
            "Call extension 4_2, it's fast."
        );
        assert_eq!(speakable("1. First\n2) Second"), "First. Second");
        assert_eq!(speakable("Use `code` here"), "Use code here");
    }

    #[test]
    fn brackets_that_are_not_links_stay() {
        assert_eq!(speakable("Room [B] is upstairs"), "Room [B] is upstairs");
    }

    #[test]
    fn splits_long_text_at_sentence_ends() {
        let text = "One two. Three four five. Six.";
        assert_eq!(
            split_for_tts(text, 12),
            vec!["One two.", "Three four", "five. Six."]
        );
        assert_eq!(split_for_tts(text, 100), vec![text]);
        assert!(split_for_tts("  ", 10).is_empty());
    }

    #[test]
    fn split_pieces_respect_the_limit_on_unicode() {
        let text = "é".repeat(4999);
        let pieces = split_for_tts(&text, TTS_MAX_CHARS);
        assert!(pieces.iter().all(|p| p.chars().count() <= TTS_MAX_CHARS));
        assert_eq!(pieces.concat(), text);
    }
}
