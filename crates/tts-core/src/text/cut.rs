//! Chooses where the next chunk ends, or says that it cannot be known yet.
//!
//! [`next_cut`] sees the buffered text from the start of the next chunk and returns a cut only when
//! no text still to come could move it: the same call on the whole utterance, made final, returns the
//! same cut. That is what makes streamed pieces segment exactly like one final push. It does not
//! normalise text or build chunks; `text.rs` does.

use super::SegmenterConfig;
use super::boundary::{Event, Kind, Scanner};

/// Where the next chunk ends: it is `text[..end]`, and `end >= 1` whenever `text` is not empty.
/// `None` means more text is needed (never returned when `is_final` and `text` is not empty).
///
/// `text` must be normalised and must not start with whitespace.
///
/// Rules, in order:
/// - A candidate is a sentence boundary, or (first chunk only) a clause boundary at or past
///   `first_chunk_min_chars`.
/// - A candidate with no alphanumeric char before it is skipped: punctuation-only text (`"..."`) is
///   carried into the chunk after it.
/// - A candidate is cut only once an alphanumeric char follows it. If the next candidate comes first,
///   the punctuation-only text between them is carried into this chunk instead, as long as that
///   keeps it within `max_chunk_chars`.
/// - A chunk that would pass `max_chunk_chars` is cut by [`over_long`].
pub(crate) fn next_cut(
    text: &[char],
    first: bool,
    is_final: bool,
    config: &SegmenterConfig,
) -> Option<usize> {
    if first && let Some(end) = early_cut(text, is_final, config) {
        return Some(end);
    }
    boundary_cut(text, first, is_final, config)
}

/// Words that must follow an early cut, so the rest of a sentence is never a word or two on its own.
pub(crate) const EARLY_CUT_TAIL_WORDS: usize = 3;

/// The early first chunk: when the first `first_chunk_max_words` words and the
/// [`EARLY_CUT_TAIL_WORDS`] after them hold no boundary that would end the first chunk, the chunk ends
/// after those first words. Decided only once the last tail word is complete (whitespace follows it,
/// or the text is final), so streamed pieces cut where one push does.
fn early_cut(text: &[char], is_final: bool, config: &SegmenterConfig) -> Option<usize> {
    let words = config.first_chunk_max_words;
    if words == 0 {
        return None;
    }
    let ends = word_ends(text, words + EARLY_CUT_TAIL_WORDS, is_final);
    let (&cut, &tail_end) = (ends.get(words - 1)?, ends.get(words + EARLY_CUT_TAIL_WORDS - 1)?);
    // A last tail word ending in punctuation (`dog.`) may end the sentence: leave it to the boundary rules.
    if !text[tail_end - 1].is_alphanumeric() {
        return None;
    }
    // Any boundary the scanner finds before the tail ends (a clause past the minimum, a CJK mark) wins.
    match boundary_cut(&text[..tail_end], true, true, config) {
        Some(end) if end == tail_end => Some(cut),
        _ => None,
    }
}

/// Ends of the first `count` complete words (runs of non-whitespace): a word is complete when
/// whitespace follows it, or when it ends a final text.
fn word_ends(text: &[char], count: usize, is_final: bool) -> Vec<usize> {
    let mut ends = Vec::with_capacity(count);
    let mut in_word = false;
    for (i, c) in text.iter().enumerate() {
        if c.is_whitespace() {
            if in_word {
                ends.push(i);
                if ends.len() == count {
                    return ends;
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    if in_word && is_final {
        ends.push(text.len());
    }
    ends
}

fn boundary_cut(text: &[char], first: bool, is_final: bool, config: &SegmenterConfig) -> Option<usize> {
    // A zero limit would cut nothing forever; one char is the least a chunk can hold.
    let max = config.max_chunk_chars.max(1);
    let mut candidate: Option<usize> = None;
    let mut spoken_before = false;
    let mut last_clause: Option<usize> = None;
    for (event, alnum) in Scanner::new(text, is_final) {
        if candidate.is_some() && alnum {
            return candidate;
        }
        spoken_before |= alnum;
        match event {
            Event::Boundary { end, .. } if end > max => {
                return candidate.or_else(|| Some(over_long(text, max, last_clause)));
            }
            Event::Boundary { end, kind } => {
                if !spoken_before {
                    continue;
                }
                last_clause = Some(end);
                if kind == Kind::Sentence || (first && end >= config.first_chunk_min_chars) {
                    candidate = Some(end);
                }
            }
            Event::End { end } => {
                if end == 0 {
                    return None;
                }
                if end <= max {
                    return Some(end);
                }
                return candidate.or_else(|| Some(over_long(text, max, last_clause)));
            }
            Event::Undecided => {
                // Every boundary still to come ends at `text.len() - 1` or later, so once that is past
                // the limit nothing can be carried into the candidate and no boundary can come
                // within the limit: both decisions below are final.
                if text.len() >= max + 2 {
                    return candidate.or_else(|| Some(over_long(text, max, last_clause)));
                }
                return None;
            }
        }
    }
    None
}

/// Cuts a chunk that has no acceptable end within `max` chars: at its last clause (or sentence)
/// boundary within the limit, else at its last space, else hard at `max` chars. Requires
/// `text.len() > max`.
fn over_long(text: &[char], max: usize, last_clause: Option<usize>) -> usize {
    if let Some(end) = last_clause {
        return end;
    }
    let last_space = (1..=max.min(text.len() - 1))
        .rev()
        .find(|&i| text[i].is_whitespace());
    last_space.unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: SegmenterConfig = SegmenterConfig {
        first_chunk_min_chars: 10,
        first_chunk_max_words: 0,
        max_chunk_chars: 30,
    };

    fn cut(text: &str, first: bool, is_final: bool) -> Option<String> {
        let text: Vec<char> = text.chars().collect();
        next_cut(&text, first, is_final, &CONFIG).map(|end| text[..end].iter().collect())
    }

    #[test]
    fn waits_for_a_word_after_the_boundary() {
        assert_eq!(cut("Hi there.", false, false), None);
        assert_eq!(cut("Hi there. ", false, false), None);
        assert_eq!(cut("Hi there. ...", false, false), None);
        assert_eq!(cut("Hi there. Y", false, false).as_deref(), Some("Hi there."));
        assert_eq!(cut("Hi there.", false, true).as_deref(), Some("Hi there."));
    }

    #[test]
    fn first_chunk_takes_a_clause_past_the_minimum() {
        assert_eq!(
            cut("Well, I think so, yes", true, false).as_deref(),
            Some("Well, I think so,")
        );
        assert_eq!(cut("Well, I think so, yes", false, false), None);
    }

    #[test]
    fn punctuation_only_text_joins_a_neighbour() {
        assert_eq!(cut("... Hi. Bye", false, false).as_deref(), Some("... Hi."));
        assert_eq!(cut("Hi. ... Bye", false, false).as_deref(), Some("Hi. ..."));
        assert_eq!(cut("Hi. !!", false, true).as_deref(), Some("Hi. !!"));
        assert_eq!(cut("...", false, true).as_deref(), Some("..."));
    }

    #[test]
    fn over_long_chunks_cut_at_clause_then_space_then_hard() {
        let clause = "one two, three four five six seven eight";
        assert_eq!(cut(clause, false, false).as_deref(), Some("one two,"));
        let spaces = "one two three four five six seven eight";
        assert_eq!(
            cut(spaces, false, false).as_deref(),
            Some("one two three four five six")
        );
        let word = "x".repeat(40);
        assert_eq!(cut(&word, false, false), Some("x".repeat(30)));
        assert_eq!(cut(&"x".repeat(31), false, false), None);
        assert_eq!(cut(&"x".repeat(31), false, true), Some("x".repeat(30)));
    }

    fn early(text: &str, is_final: bool) -> Option<String> {
        let config = SegmenterConfig {
            first_chunk_min_chars: 24,
            first_chunk_max_words: 4,
            max_chunk_chars: 400,
        };
        let text: Vec<char> = text.chars().collect();
        next_cut(&text, true, is_final, &config).map(|end| text[..end].iter().collect())
    }

    #[test]
    fn a_long_first_clause_is_cut_after_a_few_words_once_three_more_follow() {
        let fox = "The quick brown fox jumps over the lazy dog.";
        assert_eq!(early(fox, true).as_deref(), Some("The quick brown fox"));
        // Streaming: undecided until the third tail word is complete, then the same cut.
        assert_eq!(early("The quick brown fox jumps over the", false), None);
        assert_eq!(
            early("The quick brown fox jumps over the ", false).as_deref(),
            Some("The quick brown fox")
        );
        // Later chunks are never cut early.
        let text: Vec<char> = fox.chars().collect();
        let config = SegmenterConfig {
            first_chunk_max_words: 4,
            ..SegmenterConfig::default()
        };
        assert_eq!(next_cut(&text, false, true, &config), Some(text.len()));
    }

    #[test]
    fn a_boundary_within_the_first_words_or_their_tail_wins() {
        // The sentence ends within the tail: the whole sentence is the chunk.
        assert_eq!(
            early("Please hold while I check it. Then", false).as_deref(),
            Some("Please hold while I check it.")
        );
        assert_eq!(
            early("One two three four five six.", true).as_deref(),
            Some("One two three four five six.")
        );
        // A clause boundary past the minimum within the tail wins too.
        assert_eq!(
            early("Tomorrow morning we will, as planned, go out", false).as_deref(),
            Some("Tomorrow morning we will,")
        );
        // Too few words: the boundary rules decide.
        assert_eq!(
            early("Hi there you all", true).as_deref(),
            Some("Hi there you all")
        );
        // Text without spaces (CJK) has no words to cut after.
        assert_eq!(
            early("今日は良い天気です。明日", false).as_deref(),
            Some("今日は良い天気です。")
        );
    }

    #[test]
    fn empty_text_has_no_cut() {
        assert_eq!(cut("", true, true), None);
        assert_eq!(cut("", true, false), None);
    }
}
