//! The TTS stand-in's voices: text → μ-law 8 kHz audio, deterministically.
//!
//! [`Voice::Hum`] sounds like speech from afar. Not speech synthesis: each character becomes a
//! short sound whose length follows the text (vowels voiced with two formants over a gliding
//! pitch, consonants as a soft hiss, spaces and punctuation as pauses), so a demo recording is
//! listenable and a reply lasts about as long as a real voice would take to say it.
//!
//! [`Voice::Tones`] is for tests that check every byte: a tone sequence seeded by the text, never
//! containing μ-law silence (0xFF), so the server's frame padding stands out.

use ivr_bridge::audio::mulaw;

/// Audio samples per second.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples per character: 64 ms, close to a real voice's 14–16 characters a second.
pub const SAMPLES_PER_CHAR: usize = 512;
/// Pause after `.`, `!`, `?`, `,` and friends, in samples: 160 ms on top of the character.
const PUNCTUATION_PAUSE: usize = 1280;
/// Peak amplitude of a voiced sound (of 32767).
const VOICED_AMPLITUDE: f64 = 9000.0;
/// Amplitude of the consonant hiss.
const HISS_AMPLITUDE: f64 = 1800.0;
/// Samples of fade in and out per character, against clicks: 5 ms.
const FADE: usize = 40;
/// Harmonics summed for a voiced sound (up to the telephone band's top at ~3.4 kHz).
const HARMONICS: usize = 26;

/// μ-law bytes of [`Voice::Tones`] audio per character of text: 150 (so most replies end
/// mid-frame).
pub const TONE_BYTES_PER_CHAR: usize = 150;

/// Which sound the TTS stand-in makes of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Voice {
    /// Speech-like hum whose length follows the text ([`speak`]): the demo's and load test's.
    #[default]
    Hum,
    /// Tones that never contain 0xFF ([`tones`]): for tests that compare audio byte for byte.
    Tones,
}

impl Voice {
    /// The μ-law audio for `text` in this voice.
    pub fn audio(self, text: &str) -> Vec<u8> {
        match self {
            Self::Hum => speak(text),
            Self::Tones => tones(text),
        }
    }
}

/// [`Voice::Tones`] audio for `text`: [`TONE_BYTES_PER_CHAR`] μ-law bytes per character, a tone
/// sequence seeded by a hash of the text, never 0xFF (μ-law silence) so padding stands out.
pub fn tones(text: &str) -> Vec<u8> {
    let mut seed = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let len = text.chars().count() * TONE_BYTES_PER_CHAR;
    let mut out = Vec::with_capacity(len);
    let mut freq = 0.0;
    for i in 0..len {
        if i % 400 == 0 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            freq = 200.0 + (seed >> 33) as f64 % 1800.0;
        }
        let phase = 2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(SAMPLE_RATE);
        let code = mulaw::encode((phase.sin() * 8000.0) as i16);
        out.push(if code == 0xFF { 0xFE } else { code });
    }
    out
}

/// [`Voice::Hum`] audio for `text`. Deterministic: the same text always sounds the same.
pub fn speak(text: &str) -> Vec<u8> {
    let mut voice = Hum::default();
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::with_capacity(chars.len() * SAMPLES_PER_CHAR);
    for (i, &c) in chars.iter().enumerate() {
        // The pitch falls over a sentence, as a statement's does.
        let progress = i as f64 / chars.len().max(1) as f64;
        voice.pitch = 150.0 - 35.0 * progress;
        voice.sound(c, &mut out);
    }
    out
}

/// Playing time of `bytes` μ-law bytes, in milliseconds.
pub fn duration_ms(bytes: usize) -> u64 {
    bytes as u64 * 1000 / u64::from(SAMPLE_RATE)
}

/// The continuous state of the voice between characters.
#[derive(Default)]
struct Hum {
    /// Fundamental frequency now, Hz.
    pitch: f64,
    /// Phase of the fundamental, radians, kept across characters so nothing clicks.
    phase: f64,
    /// State of the noise generator.
    noise: u32,
}

impl Hum {
    fn sound(&mut self, c: char, out: &mut Vec<u8>) {
        match c.to_ascii_lowercase() {
            'a' | 'e' | 'i' | 'o' | 'u' | 'y' => {
                let (f1, f2) = formants(c.to_ascii_lowercase());
                self.voiced(f1, f2, out);
            }
            c if c.is_alphanumeric() => self.hiss(out),
            '.' | '!' | '?' | ',' | ';' | ':' => pause(SAMPLES_PER_CHAR + PUNCTUATION_PAUSE, out),
            _ => pause(SAMPLES_PER_CHAR, out),
        }
    }

    /// A vowel: harmonics of the pitch, each weighted by its closeness to the two formants.
    fn voiced(&mut self, f1: f64, f2: f64, out: &mut Vec<u8>) {
        let gains: Vec<f64> = (1..=HARMONICS)
            .map(|k| {
                let f = k as f64 * self.pitch;
                resonance(f, f1, 90.0) + 0.6 * resonance(f, f2, 120.0)
            })
            .collect();
        let norm: f64 = gains.iter().sum::<f64>().max(1e-9);
        let step = 2.0 * std::f64::consts::PI * self.pitch / f64::from(SAMPLE_RATE);
        for n in 0..SAMPLES_PER_CHAR {
            let sample: f64 = gains
                .iter()
                .enumerate()
                .map(|(k, g)| g * ((k + 1) as f64 * self.phase).sin())
                .sum();
            self.phase = (self.phase + step) % (2.0 * std::f64::consts::PI);
            push(sample / norm * VOICED_AMPLITUDE * fade(n), out);
        }
    }

    /// A consonant: soft noise.
    fn hiss(&mut self, out: &mut Vec<u8>) {
        for n in 0..SAMPLES_PER_CHAR {
            self.noise = self
                .noise
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let white = f64::from(self.noise >> 16) / 32768.0 - 1.0;
            push(white * HISS_AMPLITUDE * fade(n), out);
        }
    }
}

/// First and second formant of a vowel, Hz (textbook averages).
fn formants(vowel: char) -> (f64, f64) {
    match vowel {
        'a' => (730.0, 1090.0),
        'e' => (530.0, 1840.0),
        'i' | 'y' => (300.0, 2200.0),
        'o' => (570.0, 840.0),
        _ => (440.0, 1020.0),
    }
}

/// Gain of a resonance at `centre` with half-width `width`, heard at `f`.
fn resonance(f: f64, centre: f64, width: f64) -> f64 {
    1.0 / (1.0 + ((f - centre) / width).powi(2))
}

/// Envelope of a character: ramps at both ends.
fn fade(n: usize) -> f64 {
    let from_end = SAMPLES_PER_CHAR - 1 - n;
    (n.min(from_end) as f64 / FADE as f64).min(1.0)
}

fn pause(samples: usize, out: &mut Vec<u8>) {
    out.extend(std::iter::repeat_n(mulaw::encode(0), samples));
}

fn push(sample: f64, out: &mut Vec<u8>) {
    out.push(mulaw::encode(sample.clamp(-32767.0, 32767.0) as i16));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_follows_the_text() {
        let short = speak("Hi.");
        let long = speak("We are open Monday to Friday from eight to six.");
        assert_eq!(short.len(), 3 * SAMPLES_PER_CHAR + PUNCTUATION_PAUSE);
        let per_char = duration_ms(long.len()) / 47;
        assert!((60..=75).contains(&per_char), "{per_char} ms per character");
    }

    #[test]
    fn vowels_are_loud_and_spaces_are_silent() {
        let audio = speak("a ");
        let rms = |bytes: &[u8]| {
            let sum: f64 = bytes
                .iter()
                .map(|&b| f64::from(mulaw::decode(b)).powi(2))
                .sum();
            (sum / bytes.len() as f64).sqrt()
        };
        assert!(rms(&audio[..SAMPLES_PER_CHAR]) > 2000.0);
        assert_eq!(rms(&audio[SAMPLES_PER_CHAR..]), 0.0);
        assert_eq!(speak("same text"), speak("same text"));
    }
}
