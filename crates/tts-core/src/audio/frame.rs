//! The 20 ms wire frame and the framer that cuts a 48 kHz stream into them.
//!
//! It does not resample (feed it 48 kHz) and does not pace: it only groups samples.

use bytes::{BufMut, Bytes, BytesMut};

use super::{FRAME_BYTES, FRAME_SAMPLES};

/// One 20 ms frame of 48 kHz mono s16le: always exactly [`FRAME_BYTES`] bytes.
///
/// The field is private and the only constructor takes a fixed-size array, so a frame of any other
/// length cannot exist; the gateway relies on that when it paces by frame count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Encodes the samples little-endian.
    pub fn from_samples(samples: &[i16; FRAME_SAMPLES]) -> Self {
        let mut buf = BytesMut::with_capacity(FRAME_BYTES);
        for &s in samples {
            buf.put_i16_le(s);
        }
        Self(buf.freeze())
    }

    /// The encoded frame, [`FRAME_BYTES`] long.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The encoded frame, [`FRAME_BYTES`] long, without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Decodes the samples back, [`FRAME_SAMPLES`] of them.
    pub fn samples(&self) -> impl Iterator<Item = i16> + '_ {
        self.0
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
    }
}

/// Cuts a 48 kHz sample stream into 20 ms frames; the last partial frame is zero-padded by
/// [`Framer::finish`].
#[derive(Debug, Default)]
pub struct Framer {
    /// Fewer than [`FRAME_SAMPLES`] samples waiting for the rest of their frame.
    pending: Vec<i16>,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends every whole frame that `samples` completes to `out`, keeping the remainder.
    pub fn push(&mut self, mut samples: &[i16], out: &mut Vec<Frame>) {
        if !self.pending.is_empty() {
            let take = (FRAME_SAMPLES - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if let Ok(whole) = <&[i16; FRAME_SAMPLES]>::try_from(self.pending.as_slice()) {
                out.push(Frame::from_samples(whole));
                self.pending.clear();
            }
        }
        // Most pushes are large (a resampled engine buffer), so frame straight from the input
        // rather than copying through `pending`.
        let (whole, rest) = samples.as_chunks::<FRAME_SAMPLES>();
        out.extend(whole.iter().map(Frame::from_samples));
        self.pending.extend_from_slice(rest);
    }

    /// The pending remainder padded with zeros to a whole frame, or `None` if nothing is pending.
    /// Leaves the framer empty.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.pending.is_empty() {
            return None;
        }
        let mut last = [0i16; FRAME_SAMPLES];
        last[..self.pending.len()].copy_from_slice(&self.pending);
        self.pending.clear();
        Some(Frame::from_samples(&last))
    }

    /// Samples held back, waiting for a whole frame (always fewer than [`FRAME_SAMPLES`]).
    pub fn pending_samples(&self) -> usize {
        self.pending.len()
    }

    /// Drops pending samples, for a cancelled utterance.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame_all(input: &[i16], splits: &[usize]) -> Vec<Frame> {
        let mut framer = Framer::new();
        let mut frames = Vec::new();
        let mut rest = input;
        for &at in splits {
            let (head, tail) = rest.split_at(at.min(rest.len()));
            framer.push(head, &mut frames);
            assert!(framer.pending_samples() < FRAME_SAMPLES);
            rest = tail;
        }
        framer.push(rest, &mut frames);
        frames.extend(framer.finish());
        assert_eq!(framer.pending_samples(), 0);
        frames
    }

    #[test]
    fn frame_is_little_endian() {
        let mut samples = [0i16; FRAME_SAMPLES];
        samples[0] = 0x0102;
        samples[1] = -2;
        samples[FRAME_SAMPLES - 1] = i16::MIN;
        let frame = Frame::from_samples(&samples);
        assert_eq!(frame.bytes().len(), FRAME_BYTES);
        assert_eq!(&frame.bytes()[..4], &[0x02, 0x01, 0xfe, 0xff]);
        assert_eq!(&frame.bytes()[FRAME_BYTES - 2..], &[0x00, 0x80]);
        assert!(frame.samples().eq(samples.iter().copied()));
        assert_eq!(frame.into_bytes().len(), FRAME_BYTES);
    }

    #[test]
    fn finish_pads_with_zeros_and_empties() {
        let mut framer = Framer::new();
        let mut frames = Vec::new();
        framer.push(&[7; 1000], &mut frames);
        assert_eq!(frames.len(), 1);
        assert_eq!(framer.pending_samples(), 40);
        let last = framer.finish().expect("40 samples pending");
        let samples: Vec<i16> = last.samples().collect();
        assert!(samples[..40].iter().all(|&s| s == 7));
        assert!(samples[40..].iter().all(|&s| s == 0));
        assert_eq!(framer.finish(), None);
    }

    #[test]
    fn exact_multiple_leaves_nothing_to_finish() {
        let mut framer = Framer::new();
        let mut frames = Vec::new();
        framer.push(&[1; 2 * FRAME_SAMPLES], &mut frames);
        assert_eq!(frames.len(), 2);
        assert_eq!(framer.finish(), None);
    }

    #[test]
    fn clear_drops_pending() {
        let mut framer = Framer::new();
        let mut frames = Vec::new();
        framer.push(&[3; 500], &mut frames);
        framer.clear();
        assert_eq!(framer.pending_samples(), 0);
        assert_eq!(framer.finish(), None);
        assert!(frames.is_empty());
    }

    proptest! {
        #[test]
        fn frames_round_trip_any_split(
            input in prop::collection::vec(any::<i16>(), 0..5000),
            splits in prop::collection::vec(0usize..2000, 0..6),
        ) {
            let frames = frame_all(&input, &splits);
            prop_assert_eq!(frames.len(), input.len().div_ceil(FRAME_SAMPLES));
            prop_assert!(frames.iter().all(|f| f.bytes().len() == FRAME_BYTES));
            let decoded: Vec<i16> = frames.iter().flat_map(Frame::samples).collect();
            prop_assert_eq!(&decoded[..input.len()], &input[..]);
            prop_assert!(decoded[input.len()..].iter().all(|&s| s == 0));
        }
    }
}
