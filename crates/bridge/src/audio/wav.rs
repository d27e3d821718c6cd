//! A two-channel 16-bit PCM WAV writer: the RIFF header is 44 bytes of fixed layout, so a small
//! hand-written writer is clearer than a dependency.

use std::io::{self, Write};

/// Bytes of the canonical RIFF/WAVE header with one `fmt ` and one `data` chunk.
pub const HEADER_BYTES: usize = 44;

/// Writes `left` and `right` (16-bit samples at `sample_rate`) as a stereo WAV; the shorter
/// channel is padded with silence.
pub fn write_stereo(
    out: &mut impl Write,
    sample_rate: u32,
    left: &[i16],
    right: &[i16],
) -> io::Result<()> {
    const CHANNELS: u16 = 2;
    const BITS: u16 = 16;
    let frames = left.len().max(right.len());
    let block_align = CHANNELS * BITS / 8;
    let data_bytes = u32::try_from(frames * usize::from(block_align))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too long for a WAV file"))?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // PCM
    header.extend_from_slice(&CHANNELS.to_le_bytes());
    header.extend_from_slice(&sample_rate.to_le_bytes());
    header.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
    header.extend_from_slice(&block_align.to_le_bytes());
    header.extend_from_slice(&BITS.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_bytes.to_le_bytes());
    out.write_all(&header)?;
    let mut body = Vec::with_capacity(data_bytes as usize);
    for i in 0..frames {
        body.extend_from_slice(&left.get(i).copied().unwrap_or(0).to_le_bytes());
        body.extend_from_slice(&right.get(i).copied().unwrap_or(0).to_le_bytes());
    }
    out.write_all(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_interleaving_are_canonical() {
        let mut out = Vec::new();
        write_stereo(&mut out, 8000, &[1, 2, 3], &[-1]).unwrap();
        assert_eq!(out.len(), HEADER_BYTES + 3 * 4);
        assert_eq!(&out[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 36 + 12);
        assert_eq!(&out[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([out[22], out[23]]), 2);
        assert_eq!(u32::from_le_bytes(out[24..28].try_into().unwrap()), 8000);
        assert_eq!(u32::from_le_bytes(out[28..32].try_into().unwrap()), 32000);
        assert_eq!(u16::from_le_bytes([out[32], out[33]]), 4);
        assert_eq!(u16::from_le_bytes([out[34], out[35]]), 16);
        assert_eq!(&out[36..40], b"data");
        assert_eq!(u32::from_le_bytes(out[40..44].try_into().unwrap()), 12);
        let samples: Vec<i16> = out[44..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples, [1, -1, 2, 0, 3, 0]);
    }
}
