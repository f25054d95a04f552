//! Text normalisation and segmentation (`tts_core::text`).
//!
//! Input: three bytes of segmenter configuration, then text split into streamed pieces at each 0xFF byte
//! (never part of UTF-8; each piece is decoded lossily). Invariants, from the module's documentation:
//! - `normalize_whitespace` is idempotent and leaves no control character, no leading, trailing or
//!   doubled whitespace;
//! - chunks are non-empty, trimmed, at most `max_chunk_chars` chars, and only an utterance's first
//!   chunk is marked `first`;
//! - chunks hold exactly the input's non-whitespace chars, in order (nothing lost, nothing invented);
//! - streaming: the pieces pushed one by one, then a final empty push, give exactly the chunks of one
//!   final push of the whole text; pending text stays under `max_chunk_chars + 2` chars.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_core::text::{Chunk, Segmenter, SegmenterConfig, normalize_whitespace};

fuzz_target!(|data: &[u8]| {
    let [a, b, c, rest @ ..] = data else {
        return;
    };
    let config = SegmenterConfig {
        first_chunk_min_chars: usize::from(*a % 64),
        first_chunk_max_words: usize::from(*b % 10),
        max_chunk_chars: 1 + usize::from(*c),
    };
    let pieces: Vec<String> = rest
        .split(|&byte| byte == 0xFF)
        .map(|piece| String::from_utf8_lossy(piece).into_owned())
        .collect();
    let whole: String = pieces.concat();

    check_normalize(&whole);

    let mut streamed = Segmenter::new(config);
    let mut from_pieces = Vec::new();
    for piece in &pieces {
        from_pieces.extend(streamed.push(piece, false));
        assert!(
            streamed.pending_chars() <= config.max_chunk_chars + 2,
            "pending {} chars with max_chunk_chars {}",
            streamed.pending_chars(),
            config.max_chunk_chars
        );
    }
    from_pieces.extend(streamed.push("", true));
    assert_eq!(streamed.pending_chars(), 0, "a final push leaves nothing pending");
    assert!(!streamed.in_utterance(), "a final push ends the utterance");

    let mut at_once = Segmenter::new(config);
    let chunks = at_once.push(&whole, true);
    check_chunks(&chunks, &whole, config);
    assert_eq!(from_pieces, chunks, "streamed pieces give the chunks of one push");
});

fn check_normalize(text: &str) {
    let normal = normalize_whitespace(text);
    assert_eq!(normalize_whitespace(&normal), normal, "idempotent");
    assert!(!normal.chars().any(char::is_control), "no control chars");
    assert!(!normal.starts_with(char::is_whitespace) && !normal.ends_with(char::is_whitespace));
    assert!(!normal.contains("  "), "no doubled whitespace");
    assert!(
        normal.chars().all(|c| c == ' ' || !c.is_whitespace()),
        "whitespace is ASCII space"
    );
}

fn check_chunks(chunks: &[Chunk], input: &str, config: SegmenterConfig) {
    for (index, chunk) in chunks.iter().enumerate() {
        assert!(!chunk.text.is_empty(), "chunk {index} is empty");
        assert_eq!(chunk.text.trim(), chunk.text, "chunk {index} is trimmed");
        assert!(
            chunk.text.chars().count() <= config.max_chunk_chars,
            "chunk {index} has {} chars, limit {}",
            chunk.text.chars().count(),
            config.max_chunk_chars
        );
        assert_eq!(chunk.first, index == 0, "only the first chunk is first");
    }
    let spoken: String = chunks
        .iter()
        .flat_map(|chunk| chunk.text.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let expected: String = normalize_whitespace(input)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert_eq!(
        spoken, expected,
        "chunks carry every non-whitespace char once, in order"
    );
}
