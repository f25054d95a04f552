//! Whitespace normalisation, both in one shot ([`normalize_whitespace`]) and incrementally
//! ([`Appender`]), which the segmenter uses so that its buffer is always normalised text.
//!
//! Both agree on what whitespace is (`char::is_whitespace`, the Unicode `White_Space` property) and
//! on what a control character is (`char::is_control`, category `Cc`, minus whitespace). Control
//! characters are dropped before runs are collapsed, so `"a \u{0} b"` becomes `"a b"`, not `"a  b"`.
//! Format characters such as ZWJ (U+200D) are kept: emoji sequences need them.

/// Stands in the segmenter's buffer for a whitespace run holding a paragraph break (two or more line
/// breaks). Every other run is a single ASCII space. It is turned back into a space in chunk text.
pub(crate) const PARAGRAPH: char = '\n';

/// Collapses every run of Unicode whitespace (incl. newlines, tabs, NBSP) to one ASCII space and trims
/// the ends; also removes control characters.
pub fn normalize_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space_pending = false;
    for c in text.chars() {
        if c.is_whitespace() {
            // A run before any text is leading whitespace: trimmed by never emitting it.
            space_pending = !out.is_empty();
        } else if !c.is_control() {
            if space_pending {
                out.push(' ');
                space_pending = false;
            }
            out.push(c);
        }
    }
    out
}

/// Appends raw text to a normalised buffer, one piece at a time.
///
/// The buffer never starts with whitespace and holds at most one whitespace char per run: a space, or
/// [`PARAGRAPH`] once the run has seen two line breaks. A run at the end of the buffer stays open, so
/// `"Hello "` + `" world"` and `"a\n"` + `"\nb"` come out the same as in one piece.
#[derive(Debug, Default, Clone)]
pub(crate) struct Appender {
    /// Line breaks in the run of whitespace that ends the buffer, if it ends in one.
    line_breaks: u8,
}

impl Appender {
    pub(crate) fn append(&mut self, buf: &mut Vec<char>, text: &str) {
        buf.reserve(text.len());
        for c in text.chars() {
            if c.is_whitespace() {
                let Some(&last) = buf.last() else {
                    continue;
                };
                let breaks = line_breaks(c);
                if last.is_whitespace() {
                    self.line_breaks = self.line_breaks.saturating_add(breaks);
                } else {
                    buf.push(' ');
                    self.line_breaks = breaks;
                }
                if self.line_breaks >= 2
                    && let Some(last) = buf.last_mut()
                {
                    *last = PARAGRAPH;
                }
            } else if !c.is_control() {
                buf.push(c);
            }
        }
    }

    /// Forgets the open run; call it whenever the buffer is emptied.
    pub(crate) fn reset(&mut self) {
        self.line_breaks = 0;
    }
}

/// How many line breaks a whitespace char counts for. `\r` counts for none so that a Windows `\r\n`
/// is one break, not a paragraph.
fn line_breaks(c: char) -> u8 {
    match c {
        '\n' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' => 1,
        '\u{2029}' => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn appended(pieces: &[&str]) -> String {
        let mut buf = Vec::new();
        let mut appender = Appender::default();
        for piece in pieces {
            appender.append(&mut buf, piece);
        }
        buf.into_iter().collect()
    }

    #[test]
    fn collapses_runs_and_trims() {
        assert_eq!(
            normalize_whitespace("  Hello \t\n world\u{A0}! \r\n"),
            "Hello world !"
        );
        assert_eq!(normalize_whitespace(""), "");
        assert_eq!(normalize_whitespace(" \n\t "), "");
    }

    #[test]
    fn control_characters_are_removed_before_collapsing() {
        assert_eq!(normalize_whitespace("a\u{0}b"), "ab");
        assert_eq!(normalize_whitespace("a \u{7} b"), "a b");
        assert_eq!(normalize_whitespace("\u{1B}[0m hi"), "[0m hi");
        // U+0085 is both a control and whitespace: whitespace wins.
        assert_eq!(normalize_whitespace("a\u{85}b"), "a b");
    }

    #[test]
    fn zero_width_joiner_is_kept() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(normalize_whitespace(family), family);
    }

    #[test]
    fn appender_keeps_runs_open_across_pieces() {
        assert_eq!(appended(&["Hello", " world"]), "Hello world");
        assert_eq!(appended(&["Hello ", " world"]), "Hello world");
        assert_eq!(appended(&["  ", "Hello", "\t"]), "Hello ");
    }

    #[test]
    fn appender_marks_paragraph_breaks() {
        assert_eq!(appended(&["a\n\nb"]), "a\nb");
        assert_eq!(appended(&["a\n", " \n", "b"]), "a\nb");
        assert_eq!(appended(&["a\r\nb"]), "a b");
        assert_eq!(appended(&["a\r\n\r\nb"]), "a\nb");
        assert_eq!(appended(&["a\u{2029}b"]), "a\nb");
    }

    proptest! {
        #[test]
        fn normalized_text_is_a_fixed_point(text in any::<String>()) {
            let once = normalize_whitespace(&text);
            prop_assert_eq!(normalize_whitespace(&once), once.clone());
            prop_assert!(!once.contains("  "));
            prop_assert_eq!(once.trim(), once.as_str());
        }

        #[test]
        fn appender_agrees_with_normalize_whatever_the_split(
            text in any::<String>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let chars: Vec<char> = text.chars().collect();
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(chars.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for to in at.into_iter().chain([chars.len()]) {
                pieces.push(chars[from..to].iter().collect::<String>());
                from = to;
            }
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let buffered = appended(&refs).replace(PARAGRAPH, " ");
            prop_assert_eq!(buffered.trim_end(), normalize_whitespace(&text));
        }
    }
}
