//! Audio as the recognisers analyse it: whatever sizes the client's binary messages have, in
//! fixed frames (a frame may span two messages).

/// Cuts a byte stream into frames of one size, keeping the part of a frame not yet complete.
#[derive(Debug)]
pub struct Framer {
    /// Bytes per frame.
    size: usize,
    /// The start of the next frame.
    pending: Vec<u8>,
}

impl Framer {
    /// Frames of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            pending: Vec::with_capacity(size),
        }
    }

    /// Feeds `bytes`; calls `on_frame` with every frame now complete, in order.
    pub fn push(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            let take = (self.size - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < self.size {
                return;
            }
            on_frame(&self.pending);
            self.pending.clear();
        }
        let mut frames = bytes.chunks_exact(self.size);
        for frame in frames.by_ref() {
            on_frame(frame);
        }
        self.pending.extend_from_slice(frames.remainder());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_span_messages_of_any_size() {
        let mut framer = Framer::new(4);
        let mut seen = Vec::new();
        for part in [
            &[1u8, 2, 3][..],
            &[4, 5],
            &[],
            &[6, 7, 8, 9, 10, 11, 12, 13],
        ] {
            framer.push(part, |f| seen.push(f.to_vec()));
        }
        assert_eq!(
            seen,
            vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10, 11, 12]]
        );
        framer.push(&[14, 15, 16], |f| seen.push(f.to_vec()));
        assert_eq!(seen.last(), Some(&vec![13, 14, 15, 16]));
    }
}
