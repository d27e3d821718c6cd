//! G.711 μ-law, bit-exact with the ITU-T G.191 reference (`g711.c`).
//!
//! Twilio carries 8 kHz μ-law; Deepgram's live STT is fed 16-bit linear PCM. Both directions are
//! table lookups built at compile time from the reference algorithm, so the per-frame cost is one
//! indexed load per sample and nothing can disagree with the reference at run time.

/// μ-law byte for digital silence (decodes to 0). Used to pad the last outbound frame.
pub const SILENCE: u8 = 0xFF;

/// Decoded value of every μ-law code, indexed by the code.
static DECODE: [i16; 256] = build_decode_table();

/// The same values as little-endian byte pairs, so decoding to `linear16` is one 2-byte copy
/// per sample with no conversion.
static DECODE_LE: [[u8; 2]; 256] = build_decode_le_table();

/// μ-law code of every 16-bit sample, indexed by `sample as u16` (two's complement bit pattern).
static ENCODE: [u8; 65_536] = build_encode_table();

/// Decodes one μ-law byte to a 16-bit linear sample.
#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE[code as usize]
}

/// Encodes one 16-bit linear sample to a μ-law byte.
#[inline]
pub fn encode(sample: i16) -> u8 {
    ENCODE[sample as u16 as usize]
}

/// Decodes μ-law bytes to 16-bit little-endian PCM, appending to `out` (two bytes per input byte).
///
/// This is the shape Deepgram's `encoding=linear16` wants on the wire.
pub fn decode_to_pcm16le(mulaw: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + mulaw.len() * 2, 0);
    decode_into(mulaw, &mut out[start..]);
}

/// Decodes μ-law bytes to 16-bit little-endian PCM in `pcm`, two bytes per code. `pcm` should
/// hold `2 * mulaw.len()` bytes: bytes past that are left alone, and codes that do not fit are
/// not decoded.
///
/// Writing into memory sized beforehand, four samples per 8-byte store, runs about four times as
/// fast as pushing sample by sample (BENCHMARKS.md).
pub fn decode_into(mulaw: &[u8], pcm: &mut [u8]) {
    let samples = mulaw.len().min(pcm.len() / 2);
    let (mulaw, pcm) = (&mulaw[..samples], &mut pcm[..samples * 2]);
    // A frame is 160 codes, so normally no sample is left for the pair-by-pair tail.
    let codes = mulaw.chunks_exact(4);
    let tail = codes.remainder();
    let mut words = pcm.chunks_exact_mut(8);
    for (word, four) in (&mut words).zip(codes) {
        let [a, b, c, d] =
            [four[0], four[1], four[2], four[3]].map(|code| DECODE_LE[usize::from(code)]);
        word.copy_from_slice(&[a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1]]);
    }
    for (pair, &code) in words.into_remainder().chunks_exact_mut(2).zip(tail) {
        pair.copy_from_slice(&DECODE_LE[usize::from(code)]);
    }
}

/// Encodes 16-bit little-endian PCM to μ-law, appending to `out`. A trailing odd byte is ignored:
/// callers that receive PCM in network chunks must carry it over themselves.
pub fn encode_from_pcm16le(pcm: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + pcm.len() / 2, SILENCE);
    for (code, pair) in out[start..].iter_mut().zip(pcm.chunks_exact(2)) {
        *code = ENCODE[usize::from(u16::from_le_bytes([pair[0], pair[1]]))];
    }
}

/// The reference `ulaw_expand` for one code.
const fn reference_decode(code: u8) -> i16 {
    let sign: i32 = if code < 0x80 { -1 } else { 1 };
    let inverted = !code as i32;
    let exponent = (inverted >> 4) & 0x07;
    let segment = exponent + 1;
    let mantissa = inverted & 0x0F;
    let step = 4 << segment;
    (sign * ((0x80 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
}

/// The reference `ulaw_compress` for one sample: one's complement for negatives, 14-bit magnitude
/// plus the bias of 33, clipped, segment search, inversion.
const fn reference_encode(sample: i16) -> u8 {
    let x = sample as i32;
    let mut magnitude = if x < 0 {
        ((!x) >> 2) + 33
    } else {
        (x >> 2) + 33
    };
    if magnitude > 0x1FFF {
        magnitude = 0x1FFF;
    }
    let mut i = magnitude >> 6;
    let mut segment = 1;
    while i != 0 {
        segment += 1;
        i >>= 1;
    }
    let high_nibble = 0x08 - segment;
    let low_nibble = 0x0F - ((magnitude >> segment) & 0x0F);
    let mut code = (high_nibble << 4) | low_nibble;
    if x >= 0 {
        code |= 0x80;
    }
    code as u8
}

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = reference_decode(code as u8);
        code += 1;
    }
    table
}

const fn build_decode_le_table() -> [[u8; 2]; 256] {
    let mut table = [[0u8; 2]; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = reference_decode(code as u8).to_le_bytes();
        code += 1;
    }
    table
}

const fn build_encode_table() -> [u8; 65_536] {
    let mut table = [0u8; 65_536];
    let mut index = 0;
    while index < 65_536 {
        table[index] = reference_encode(index as u16 as i16);
        index += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn every_encoded_sample_matches_the_reference_digest() {
        let encoded: Vec<u8> = (i16::MIN..=i16::MAX).map(encode).collect();
        assert_eq!(encoded.len(), 65_536);
        assert_eq!(
            hex(&Sha256::digest(&encoded)),
            "90c29de505fb68e766118303bd552a16005dcf810873698bee1d8f3b247ce28c"
        );
    }

    #[test]
    fn every_decoded_code_matches_the_reference_digest() {
        let mut pcm = Vec::new();
        decode_to_pcm16le(&(0..=255u8).collect::<Vec<_>>(), &mut pcm);
        assert_eq!(pcm.len(), 512);
        assert_eq!(
            hex(&Sha256::digest(&pcm)),
            "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
        );
    }

    #[test]
    fn every_length_decodes_sample_by_sample() {
        let codes: Vec<u8> = (0..=255u8).rev().collect();
        for len in 0..=9 {
            let mut pcm = vec![0xAA];
            decode_to_pcm16le(&codes[..len], &mut pcm);
            let expected: Vec<u8> = [0xAA]
                .into_iter()
                .chain(codes[..len].iter().flat_map(|&c| decode(c).to_le_bytes()))
                .collect();
            assert_eq!(pcm, expected, "{len} codes");
        }
        let mut short = [0u8; 5];
        decode_into(&codes[..4], &mut short);
        assert_eq!(short[4], 0, "a code that does not fit is not decoded");
    }

    #[test]
    fn endpoints_match_the_reference() {
        assert_eq!(encode(0), 0xFF);
        assert_eq!(encode(-1), 0x7F);
        assert_eq!(encode(32767), 0x80);
        assert_eq!(encode(-32768), 0x00);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(SILENCE), 0);
        assert_eq!(decode(0x7F), 0);
    }

    #[test]
    fn decoding_then_encoding_returns_every_code_but_negative_zero() {
        for code in 0..=255u8 {
            let back = encode(decode(code));
            // 0x7F is "negative zero": it decodes to 0, which encodes as positive zero 0xFF.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(back, expected, "code {code:#04x}");
        }
    }

    #[test]
    fn pcm_helpers_are_inverse_on_the_codes() {
        let codes: Vec<u8> = (0..=255u8).filter(|&c| c != 0x7F).collect();
        let mut pcm = Vec::new();
        decode_to_pcm16le(&codes, &mut pcm);
        let mut back = Vec::new();
        encode_from_pcm16le(&pcm, &mut back);
        assert_eq!(back, codes);
    }
}
