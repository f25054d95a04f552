//! A minimal RIFF/WAVE writer for 16-bit mono PCM, for `ttsd say` and for listening to test output.
//!
//! It does not read WAV, write other formats or stream: the sample count must be known up front
//! because the header carries the data length.

use std::io::{self, Write};

/// Size of the canonical PCM header: RIFF chunk header, 16-byte `fmt ` chunk, `data` chunk header.
const HEADER_BYTES: usize = 44;

/// Samples converted per `write_all`, so an unbuffered writer sees a few large writes, not one per sample.
const SAMPLES_PER_WRITE: usize = 4096;

/// Writes `samples` as a 16-bit PCM mono RIFF/WAVE file with a 44-byte header.
///
/// Fails with [`io::ErrorKind::InvalidInput`] when the data would not fit the format's 32-bit sizes
/// (about 2^31 samples, over 12 hours at 48 kHz).
pub fn write_wav(mut writer: impl Write, samples: &[i16], sample_rate: u32) -> io::Result<()> {
    let header = header(samples.len(), sample_rate)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many samples for a WAV file"))?;
    writer.write_all(&header)?;
    let mut buf = Vec::with_capacity(SAMPLES_PER_WRITE * 2);
    for block in samples.chunks(SAMPLES_PER_WRITE) {
        buf.clear();
        buf.extend(block.iter().flat_map(|s| s.to_le_bytes()));
        writer.write_all(&buf)?;
    }
    Ok(())
}

/// The 44-byte header, or `None` when the sizes overflow the format's `u32` fields.
fn header(sample_count: usize, sample_rate: u32) -> Option<[u8; HEADER_BYTES]> {
    const CHANNELS: u16 = 1;
    const BITS_PER_SAMPLE: u16 = 16;
    const BLOCK_ALIGN: u16 = CHANNELS * BITS_PER_SAMPLE / 8;
    let data_len = u32::try_from(sample_count.checked_mul(usize::from(BLOCK_ALIGN))?).ok()?;
    let riff_len = data_len.checked_add((HEADER_BYTES - 8) as u32)?;
    let byte_rate = sample_rate.checked_mul(u32::from(BLOCK_ALIGN))?;

    let mut h = [0u8; HEADER_BYTES];
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &riff_len.to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(), // WAVE_FORMAT_PCM
        &CHANNELS.to_le_bytes(),
        &sample_rate.to_le_bytes(),
        &byte_rate.to_le_bytes(),
        &BLOCK_ALIGN.to_le_bytes(),
        &BITS_PER_SAMPLE.to_le_bytes(),
        b"data",
        &data_len.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        h[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    debug_assert_eq!(at, HEADER_BYTES);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn header_fields_parse_back() {
        let samples: Vec<i16> = (0..10_000).map(|i| (i * 7) as i16).collect();
        let mut file = Vec::new();
        write_wav(&mut file, &samples, 22_050).unwrap();

        assert_eq!(file.len(), 44 + 2 * samples.len());
        assert_eq!(&file[0..4], b"RIFF");
        assert_eq!(u32_at(&file, 4) as usize, file.len() - 8);
        assert_eq!(&file[8..12], b"WAVE");
        assert_eq!(&file[12..16], b"fmt ");
        assert_eq!(u32_at(&file, 16), 16, "fmt chunk size");
        assert_eq!(u16_at(&file, 20), 1, "PCM");
        assert_eq!(u16_at(&file, 22), 1, "channels");
        assert_eq!(u32_at(&file, 24), 22_050, "sample rate");
        assert_eq!(u32_at(&file, 28), 44_100, "byte rate");
        assert_eq!(u16_at(&file, 32), 2, "block align");
        assert_eq!(u16_at(&file, 34), 16, "bits per sample");
        assert_eq!(&file[36..40], b"data");
        assert_eq!(u32_at(&file, 40) as usize, 2 * samples.len());
        let decoded: Vec<i16> = file[44..]
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(decoded, samples);
    }

    #[test]
    fn empty_file_is_just_a_header() {
        let mut file = Vec::new();
        write_wav(&mut file, &[], 48_000).unwrap();
        assert_eq!(file.len(), 44);
        assert_eq!(u32_at(&file, 4), 36);
        assert_eq!(u32_at(&file, 40), 0);
    }

    #[test]
    fn oversized_data_is_refused() {
        // Checked on the header alone: allocating 4 GiB of samples in a test is not an option.
        assert!(header((u32::MAX as usize - 36) / 2, 48_000).is_some());
        assert!(header(u32::MAX as usize / 2, 48_000).is_none());
        assert!(header(usize::MAX, 48_000).is_none());
    }
}
