//! Cuts streaming text into the chunks an engine synthesises: the first clause of an utterance as
//! early as possible (first audio), then whole sentences.
//!
//! Text arrives in pieces through [`Segmenter::push`]. Pieces are concatenated raw and normalised as
//! they arrive ([`normalize_whitespace`]: whitespace runs become one space, control characters go),
//! so a piece boundary inside a word or a whitespace run changes nothing. A chunk is released only
//! when no later piece could move its end, which makes streamed pieces give exactly the chunks that
//! one final push of the whole text gives.
//!
//! # Boundaries
//! - **Sentence**: `.` `!` `?` `…` or a run of them (`?!`, `...`), optionally followed by closing
//!   quotes or brackets (`"` `'` `”` `’` `)` `]` `»` `」` `』` `）` `】` `》`), then whitespace. A
//!   paragraph break (a whitespace run with two line breaks) is one too. CJK `。！？` need no
//!   whitespace after them.
//! - **Clause**: `,` `;` `:` followed by whitespace, a dash `—` or `–` with whitespace on both
//!   sides, CJK `，、；：`, and every sentence boundary.
//! - **Not a boundary**: a dot followed by a non-space (`3.14`, `v1.2.3`, `1,000`, `12:30` likewise);
//!   a single dot after an abbreviation (a case-insensitive list: Mr, Mrs, Ms, Dr, Prof, Sr, Jr, St,
//!   vs, etc, e.g, i.e, approx, No, Inc, Ltd, Co, Corp, short months, Mt, Ave, Rd, U.S, a.m, p.m and
//!   a few more), after letters joined by dots (`U.S.A.`), or after a single capital letter, taken
//!   as an initial (`J. R. R. Tolkien`, `John F. Kennedy`).
//!
//! Known trade-offs of that list: a sentence that really ends in an abbreviation (`... and so on,
//! etc. Then`, `at 5 p.m. Then`, `the answer is No. Then`) or in a capital letter (`plan B. Then`)
//! is not split there; the chunk just runs on to the next boundary. `I.` is not taken as an initial.
//! No lowercase-next-word heuristic is applied: `Wait... what` is split after `...`.
//!
//! # Chunks
//! - The first chunk of an utterance ends at the first sentence boundary, or at the first clause
//!   boundary at or past [`SegmenterConfig::first_chunk_min_chars`], whichever comes first. Later
//!   chunks end at sentence boundaries only.
//! - The early first chunk: when neither boundary comes within the first
//!   [`SegmenterConfig::first_chunk_max_words`] words (runs of non-whitespace) and the three after
//!   them, and the last of those does not end in punctuation, the first chunk ends after those words.
//!   A neural engine's first run then covers a few words, not a whole long sentence.
//! - No chunk is longer than [`SegmenterConfig::max_chunk_chars`] (treated as at least 1): an
//!   over-long one is cut at its last clause boundary within the limit, else at its last space, else
//!   hard at the limit (between chars, possibly inside a grapheme cluster).
//! - Punctuation-only text (no alphanumeric char, e.g. `"..."` or an emoji) is never a chunk of its
//!   own when it can join the chunk before or after it within the limit; an utterance of nothing
//!   but punctuation is still emitted.
//! - Chunks keep their punctuation. Joined with single spaces, the chunks of an utterance equal the
//!   normalised input, except that no space is added back where a cut fell with no whitespace (after
//!   CJK marks, or a hard cut inside an over-long word).
//!
//! # Streaming
//! While the utterance is not final, a chunk is released only once an alphanumeric char has arrived
//! after its boundary: the word after a dot decides abbreviations and initials (`U.` + `S.`), a digit
//! decides decimals (`3.` + `14`), and a following `...` would still be carried into the chunk. CJK
//! marks need no whitespace but wait the same way. (This is stricter than "certain at once" for CJK,
//! so that a closing `」` arriving in the next piece still lands in the right chunk.) A chunk is also
//! released once the buffer passes the limit, so pending text stays under `max_chunk_chars + 2`
//! chars and a push costs O(new text + pending).
//!
//! This module does not know about engines, sessions or languages beyond the punctuation above; it
//! does no number expansion, SSML or text cleanup besides whitespace.

mod boundary;
mod cut;
mod normalize;

pub use normalize::normalize_whitespace;

/// Default for [`SegmenterConfig::first_chunk_min_chars`].
pub const DEFAULT_FIRST_CHUNK_MIN_CHARS: usize = 24;
/// Default for [`SegmenterConfig::first_chunk_max_words`].
pub const DEFAULT_FIRST_CHUNK_MAX_WORDS: usize = 5;
/// Default for [`SegmenterConfig::max_chunk_chars`].
pub const DEFAULT_MAX_CHUNK_CHARS: usize = 400;

/// Limits and tuning for cutting an utterance's text into synthesis chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// The first chunk of an utterance is cut at the first clause boundary at or past this many
    /// characters.
    pub first_chunk_min_chars: usize,
    /// When no boundary ends the first chunk within this many words and the three after them, it is
    /// cut after this many words (a word boundary), so the engine's first run is short; 0 turns it off.
    pub first_chunk_max_words: usize,
    /// No chunk is longer than this; an over-long sentence is cut at its last clause boundary, else
    /// at its last space, else hard.
    pub max_chunk_chars: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            first_chunk_min_chars: DEFAULT_FIRST_CHUNK_MIN_CHARS,
            first_chunk_max_words: DEFAULT_FIRST_CHUNK_MAX_WORDS,
            max_chunk_chars: DEFAULT_MAX_CHUNK_CHARS,
        }
    }
}

/// One piece of text handed to an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Whitespace-normalised, trimmed, never empty.
    pub text: String,
    /// True for the first chunk of its utterance.
    pub first: bool,
}

/// Streaming segmenter for one session. Text arrives in pieces (`is_final == false`) and
/// accumulates; chunks are released as soon as a boundary is certain; `is_final == true` flushes the
/// rest and ends the utterance.
#[derive(Debug, Clone)]
pub struct Segmenter {
    config: SegmenterConfig,
    /// Normalised pending text (see `normalize::Appender`): never starts with whitespace, holds one
    /// char per whitespace run. Chars rather than a `String` so positions are char counts.
    buffer: Vec<char>,
    appender: normalize::Appender,
    /// Whether the current utterance has released a chunk.
    released: bool,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            config,
            buffer: Vec::new(),
            appender: normalize::Appender::default(),
            released: false,
        }
    }

    /// Appends `text` and returns every chunk that is now complete, in order.
    /// With `is_final`, everything left is returned and the next push starts a new utterance (its
    /// first chunk gets `first: true` again).
    pub fn push(&mut self, text: &str, is_final: bool) -> Vec<Chunk> {
        self.appender.append(&mut self.buffer, text);
        let mut chunks = Vec::new();
        // Cut from an offset and drain once, so many chunks in one push do not shift the buffer each.
        let mut start = 0;
        while start < self.buffer.len() {
            let rest = &self.buffer[start..];
            let Some(end) = cut::next_cut(rest, !self.released, is_final, &self.config) else {
                break;
            };
            // `next_cut` always advances; clamping keeps this loop finite and in bounds even if it did not.
            let end = end.clamp(1, rest.len());
            let text = chunk_text(&rest[..end]);
            start += end;
            start += self.buffer[start..]
                .iter()
                .take_while(|c| c.is_whitespace())
                .count();
            if !text.is_empty() {
                chunks.push(Chunk {
                    text,
                    first: !self.released,
                });
                self.released = true;
            }
        }
        self.buffer.drain(..start);
        if self.buffer.is_empty() {
            self.appender.reset();
        }
        if is_final {
            self.clear();
        }
        chunks
    }

    /// Characters (chars, not bytes) buffered and not yet released, counted after whitespace
    /// normalisation and without a trailing space.
    pub fn pending_chars(&self) -> usize {
        let trailing = self.buffer.last().is_some_and(|c| c.is_whitespace());
        self.buffer.len() - usize::from(trailing)
    }

    /// True while the current utterance has released at least one chunk but has not seen
    /// `is_final`.
    pub fn in_utterance(&self) -> bool {
        self.released
    }

    /// Drops buffered text and starts a new utterance (barge-in).
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.appender.reset();
        self.released = false;
    }
}

/// The text of a chunk: paragraph markers back to spaces, and no trailing whitespace (a hard cut may
/// end on it).
fn chunk_text(chars: &[char]) -> String {
    let text: String = chars
        .iter()
        .map(|&c| if c == normalize::PARAGRAPH { ' ' } else { c })
        .collect();
    text.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn segmenter(first_chunk_min_chars: usize, max_chunk_chars: usize) -> Segmenter {
        with_words(first_chunk_min_chars, 0, max_chunk_chars)
    }

    fn with_words(
        first_chunk_min_chars: usize,
        first_chunk_max_words: usize,
        max_chunk_chars: usize,
    ) -> Segmenter {
        Segmenter::new(SegmenterConfig {
            first_chunk_min_chars,
            first_chunk_max_words,
            max_chunk_chars,
        })
    }

    /// The defaults without the early first chunk: the boundary rules alone.
    fn boundaries_only() -> SegmenterConfig {
        SegmenterConfig {
            first_chunk_max_words: 0,
            ..SegmenterConfig::default()
        }
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    /// Pushes `pieces` (the last one final) and returns every chunk released.
    fn stream(seg: &mut Segmenter, pieces: &[&str]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for (k, piece) in pieces.iter().enumerate() {
            chunks.extend(seg.push(piece, k + 1 == pieces.len()));
        }
        chunks
    }

    fn whole(text: &str) -> Vec<String> {
        Segmenter::new(boundaries_only())
            .push(text, true)
            .into_iter()
            .map(|c| c.text)
            .collect()
    }

    #[test]
    fn defaults() {
        let config = SegmenterConfig::default();
        assert_eq!(config.first_chunk_min_chars, 24);
        assert_eq!(config.first_chunk_max_words, 5);
        assert_eq!(config.max_chunk_chars, 400);
    }

    #[test]
    fn first_chunk_is_cut_at_a_clause_past_the_minimum() {
        let text = "Well, I think that we should go to the park, and then we can eat. After that we rest.";
        assert_eq!(
            whole(text),
            vec![
                "Well, I think that we should go to the park,",
                "and then we can eat.",
                "After that we rest."
            ]
        );
    }

    #[test]
    fn a_long_first_sentence_is_cut_after_five_words_by_default() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        let chunks = seg.push(
            "Observability means you can answer new questions without shipping new code. It helps.",
            true,
        );
        assert_eq!(
            texts(&chunks),
            vec![
                "Observability means you can answer",
                "new questions without shipping new code.",
                "It helps."
            ]
        );
        assert!(chunks[0].first && !chunks[1].first);
        // Short first sentences and early clauses are untouched.
        let chunks = seg.push("The quick brown fox jumps over it. Then more.", true);
        assert_eq!(
            texts(&chunks),
            vec!["The quick brown fox jumps over it.", "Then more."]
        );
        let chunks = seg.push(
            "Now then, I think that we should go to the park, and then eat.",
            true,
        );
        assert_eq!(texts(&chunks)[0], "Now then, I think that");
    }

    #[test]
    fn first_chunk_is_released_before_the_sentence_ends() {
        let mut seg = Segmenter::new(boundaries_only());
        assert!(
            seg.push("Well, I think that we should go to the park, and", false)
                .len()
                == 1
        );
        assert!(seg.in_utterance());
        assert_eq!(seg.pending_chars(), 3);
    }

    #[test]
    fn short_first_sentence_is_its_own_chunk() {
        let chunks = Segmenter::new(boundaries_only()).push("Hi there. How are you today, my friend?", true);
        assert_eq!(texts(&chunks), vec!["Hi there.", "How are you today, my friend?"]);
        assert_eq!(
            chunks.iter().map(|c| c.first).collect::<Vec<_>>(),
            vec![true, false]
        );
    }

    #[test]
    fn later_chunks_are_whole_sentences() {
        let text = "This first sentence is long enough. Then, after a comma, another one; with more: \
                    clauses. Last!";
        assert_eq!(
            whole(text),
            vec![
                "This first sentence is long enough.",
                "Then, after a comma, another one; with more: clauses.",
                "Last!"
            ]
        );
    }

    #[test]
    fn abbreviations_decimals_and_initials_do_not_split() {
        let text = "Mr. Smith met Dr. Jones in the U.S. on Jan. 5, e.g. at 3.14 p.m. with v1.2.3 and \
                    J. R. R. Tolkien and John F. Kennedy. The end.";
        assert_eq!(
            whole(text),
            vec![
                "Mr. Smith met Dr. Jones in the U.S. on Jan. 5,",
                "e.g. at 3.14 p.m. with v1.2.3 and J. R. R. Tolkien and John F. Kennedy.",
                "The end."
            ]
        );
    }

    #[test]
    fn pieces_split_mid_word_and_mid_abbreviation_match_one_push() {
        let text = "Mr. Smith paid $3.50 in the U.S. today. Was it cheap? Yes!";
        let expected = whole(text);
        assert_eq!(
            expected,
            vec!["Mr. Smith paid $3.50 in the U.S. today.", "Was it cheap?", "Yes!"]
        );
        let mut seg = Segmenter::new(boundaries_only());
        let pieces = [
            "Mr",
            ". Smi",
            "th paid $3",
            ".",
            "50 in the U",
            ".",
            "S",
            ". today",
            ". ",
            "Was it cheap?",
            " ",
            "Yes!",
        ];
        let chunks = stream(&mut seg, &pieces);
        assert_eq!(texts(&chunks), expected);
    }

    #[test]
    fn a_boundary_waits_for_the_next_word() {
        let mut seg = Segmenter::new(boundaries_only());
        assert!(seg.push("Hi there.", false).is_empty());
        assert!(seg.push(" ", false).is_empty());
        assert_eq!(texts(&seg.push("How", false)), vec!["Hi there."]);
        assert_eq!(seg.pending_chars(), 3);
        assert_eq!(texts(&seg.push(" are you?", true)), vec!["How are you?"]);
        assert_eq!(seg.pending_chars(), 0);
        assert!(!seg.in_utterance());
    }

    #[test]
    fn whitespace_is_normalised_across_pieces() {
        let mut seg = Segmenter::new(boundaries_only());
        assert_eq!(
            texts(&stream(&mut seg, &["Hello", " world"])),
            vec!["Hello world"]
        );
        assert_eq!(
            texts(&stream(&mut seg, &["Hello ", " world"])),
            vec!["Hello world"]
        );
        assert_eq!(
            texts(&stream(&mut seg, &[" \tHello\u{A0}\u{0}\n", "world\r\n"])),
            vec!["Hello world"]
        );
    }

    #[test]
    fn paragraph_breaks_end_sentences() {
        let mut seg = Segmenter::new(boundaries_only());
        assert_eq!(
            texts(&stream(&mut seg, &["A title\n", "\nThe body text"])),
            vec!["A title", "The body text"]
        );
        assert_eq!(whole("one\ntwo"), vec!["one two"]);
    }

    #[test]
    fn cjk_marks_end_sentences_without_spaces() {
        assert_eq!(
            whole("你好。今天天气很好！「是的。」好"),
            vec!["你好。", "今天天气很好！", "「是的。」", "好"]
        );
    }

    #[test]
    fn over_long_sentences_respect_the_limit() {
        let mut seg = segmenter(5, 20);
        let chunks = seg.push(
            "alpha beta gamma, delta epsilon zeta eta theta iota kappa. Done.",
            true,
        );
        assert_eq!(
            texts(&chunks),
            vec![
                "alpha beta gamma,",
                "delta epsilon zeta",
                "eta theta iota",
                "kappa.",
                "Done."
            ]
        );
        let word = "ab".repeat(25);
        let chunks = seg.push(&word, true);
        assert_eq!(texts(&chunks), vec![&word[..20], &word[20..40], &word[40..]]);
    }

    #[test]
    fn over_long_text_is_released_while_streaming() {
        let mut seg = segmenter(5, 20);
        let mut released = Vec::new();
        for _ in 0..10 {
            released.extend(seg.push("word ", false));
            assert!(seg.pending_chars() < 22);
        }
        assert_eq!(
            texts(&released),
            vec!["word word word word", "word word word word"]
        );
    }

    #[test]
    fn punctuation_only_text_stays_attached() {
        assert_eq!(
            whole("Hello there friend. ... And then."),
            vec!["Hello there friend. ...", "And then."]
        );
        assert_eq!(
            whole("... Hello there friend. Bye."),
            vec!["... Hello there friend.", "Bye."]
        );
        assert_eq!(
            whole("Hello there friend! 😀😀"),
            vec!["Hello there friend! 😀😀"]
        );
        assert_eq!(whole("... !!! ?"), vec!["... !!! ?"]);
    }

    #[test]
    fn empty_and_whitespace_pushes() {
        let mut seg = Segmenter::new(boundaries_only());
        assert!(seg.push("", true).is_empty());
        assert!(seg.push("   \n ", false).is_empty());
        assert_eq!(seg.pending_chars(), 0);
        assert!(seg.push("", true).is_empty());
        assert!(seg.push("Hi", false).is_empty());
        assert_eq!(texts(&seg.push("", true)), vec!["Hi"]);
    }

    #[test]
    fn first_flag_is_reset_per_utterance() {
        let mut seg = Segmenter::new(boundaries_only());
        let one = seg.push("Hi. Yes. No.", true);
        let two = seg.push("Again. More.", true);
        let flags = |c: &[Chunk]| c.iter().map(|c| c.first).collect::<Vec<_>>();
        assert_eq!(flags(&one), vec![true, false, false]);
        assert_eq!(flags(&two), vec![true, false]);
    }

    #[test]
    fn clear_drops_text_and_resets_first() {
        let mut seg = Segmenter::new(boundaries_only());
        assert_eq!(seg.push("Hi. Then some more", false).len(), 1);
        assert!(seg.in_utterance());
        seg.clear();
        assert_eq!(seg.pending_chars(), 0);
        assert!(!seg.in_utterance());
        let chunks = seg.push("Fresh start.", true);
        assert_eq!(
            chunks,
            vec![Chunk {
                text: "Fresh start.".into(),
                first: true
            }]
        );
    }

    #[test]
    fn unicode_is_counted_in_chars() {
        let mut seg = segmenter(0, 3);
        let chunks = seg.push("e\u{301}e\u{301}😀👍🏽", true);
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 3));
        assert_eq!(texts(&chunks).concat(), "e\u{301}e\u{301}😀👍🏽");
    }

    /// Splits `text` at the given char positions.
    fn split(text: &str, cuts: &[prop::sample::Index]) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(chars.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([chars.len()]) {
            pieces.push(chars[from..to].iter().collect());
            from = to;
        }
        pieces
    }

    /// Text made of the things the rules care about, so properties hit boundaries, abbreviations,
    /// closers and punctuation-only runs often. Words are at most 15 chars and there are no CJK marks,
    /// so with a limit of 16 or more every cut falls on whitespace.
    fn prose() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "Hello", "world", "a", "I", "J", "Mr", "U", "S", "e", "g", "3", "14", "1,000", "😀", "é",
            "x\u{301}", ".", ".", ",", "!", "?", "...", "…", ";", ":", "—", "\"", "'", ")", "(",
        ]);
        let word = prop::collection::vec(token, 1..4).prop_map(|tokens| tokens.concat());
        let space = prop::sample::select(vec![
            " ", " ", " ", "\n", "\n\n", "\t", "\u{A0}", "\r\n", " \u{0} ",
        ]);
        prop::collection::vec((space, word), 0..40).prop_map(|words| {
            words
                .into_iter()
                .flat_map(|(space, word)| [space.to_owned(), word])
                .collect()
        })
    }

    /// Like [`prose`] plus CJK marks and brackets, with no limit on word length: exercises cuts that
    /// fall without whitespace.
    fn rich() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "Hello", "Mr", "U", "S", "3", "😀", "x\u{301}", ".", ",", "!", "...", "—", "\"", ")", "你好",
            "。", "！", "？", "，", "、", "「", "」", " ", " ", "\n", "\n\n", "\u{0}",
        ]);
        prop::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
    }

    /// Every chunk is non-empty, trimmed, single-spaced and within the limit, and only the first of
    /// an utterance is marked first.
    fn check_chunks(chunks: &[Chunk], max: usize) -> Result<(), TestCaseError> {
        for (k, chunk) in chunks.iter().enumerate() {
            prop_assert!(!chunk.text.is_empty());
            prop_assert_eq!(chunk.text.trim(), chunk.text.as_str());
            prop_assert_eq!(normalize_whitespace(&chunk.text), chunk.text.clone());
            prop_assert!(chunk.text.chars().count() <= max.max(1));
            prop_assert_eq!(chunk.first, k == 0);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// With prose whose every cut falls on whitespace, the chunks joined with spaces are the
        /// normalised input, and any split into pieces gives exactly the chunks of one final push.
        #[test]
        fn streamed_prose_matches_one_push(
            text in prose(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            min in 0usize..40,
            words in 0usize..8,
            max in 16usize..80,
        ) {
            let pieces = split(&text, &cuts);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let streamed = stream(&mut with_words(min, words, max), &refs);
            let one_push = with_words(min, words, max).push(&text, true);
            check_chunks(&streamed, max)?;
            prop_assert_eq!(texts(&streamed).join(" "), normalize_whitespace(&text));
            prop_assert_eq!(streamed, one_push);
        }

        /// For arbitrary Unicode and limits, nothing panics, streaming still equals one push, and the
        /// chunks are the normalised input with a space or nothing between them (nothing where a cut
        /// fell without whitespace: CJK marks, hard cuts).
        #[test]
        fn any_text_any_split(
            text in prop_oneof![any::<String>(), rich()],
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            min in 0usize..40,
            words in 0usize..8,
            max in 0usize..40,
        ) {
            let pieces = split(&text, &cuts);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let streamed = stream(&mut with_words(min, words, max), &refs);
            let one_push = with_words(min, words, max).push(&text, true);
            check_chunks(&streamed, max)?;
            let normalized = normalize_whitespace(&text);
            let mut rest = normalized.as_str();
            for chunk in &streamed {
                rest = rest.strip_prefix(' ').unwrap_or(rest);
                rest = rest.strip_prefix(chunk.text.as_str()).ok_or_else(|| {
                    TestCaseError::fail(format!("{:?} is not next in {rest:?}", chunk.text))
                })?;
            }
            prop_assert_eq!(rest, "");
            prop_assert_eq!(streamed, one_push);
        }

        /// Pending text stays bounded however long a sentence runs, so a push never rescans more
        /// than the limit plus the new piece.
        #[test]
        fn pending_text_stays_under_the_limit(text in prose(), max in 12usize..40) {
            let mut seg = segmenter(0, max);
            for c in text.chars() {
                seg.push(&c.to_string(), false);
                prop_assert!(seg.pending_chars() < max + 2);
            }
        }
    }
}
