//! Finds sentence and clause boundaries in normalised text, and says where it cannot tell yet.
//!
//! The scanner reads a prefix of an utterance (the segmenter's buffer from the start of the next
//! chunk) and reports boundaries in order. It never guesses about text that has not arrived: when
//! the next char could still turn a position into a boundary or out of one (`"3."` before `"14"`,
//! `"U."` before `"S."`, a trailing space before a second newline), it stops with
//! [`Event::Undecided`]. Such a position is always within the last two chars of the text, which is
//! what lets the segmenter bound how far ahead it must look. It does not choose where to cut; that is
//! `cut.rs`.

use super::normalize::PARAGRAPH;

/// Words that end in a dot without ending a sentence, lowercase, without their final dot.
///
/// Dotted letter groups (`e.g`, `U.S`, `a.m`) are also recognised by shape in [`is_abbreviation`];
/// they are listed here too so the list reads as the documentation of the rule.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "approx", "no",
    "inc", "ltd", "co", "corp", "dept", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "mt", "ave", "rd", "u.s", "u.k", "a.m", "p.m", "ph.d", "lt", "col", "gen", "sgt",
    "capt", "vol",
];

/// Longer words cannot be abbreviations; stops the backward look at the word before a dot.
const MAX_ABBREVIATION_CHARS: usize = 8;

/// What kind of break a boundary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `.` `!` `?` `…` (runs too), CJK `。！？`, or a paragraph break.
    Sentence,
    /// `,` `;` `:`, CJK `，、；：`, or a spaced `—` / `–`.
    Clause,
}

/// One step of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A boundary: the chunk before it is `text[..end]`, punctuation and closing quotes included.
    Boundary { end: usize, kind: Kind },
    /// More text is needed before anything past this point can be classified. Any boundary still to
    /// come ends at `text.len() - 1` or later.
    Undecided,
    /// The text is final and ends at `end` (trailing whitespace excluded).
    End { end: usize },
}

/// Yields [`Event`]s in order, each with whether an alphanumeric char came since the previous event.
/// The last event is always [`Event::Undecided`] (while not final) or [`Event::End`] (when final).
pub(crate) struct Scanner<'a> {
    text: &'a [char],
    i: usize,
    is_final: bool,
    alnum: bool,
    done: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a [char], is_final: bool) -> Self {
        Self {
            text,
            i: 0,
            is_final,
            alnum: false,
            done: false,
        }
    }

    fn step(&mut self) -> Event {
        let text = self.text;
        let len = text.len();
        while self.i < len {
            let i = self.i;
            let c = text[i];
            self.i += 1;
            if c.is_alphanumeric() {
                self.alnum = true;
                continue;
            }
            let found = if is_terminator(c) {
                self.terminator(i)
            } else if is_spaced_clause(text, i) {
                self.spaced_punctuation(i)
            } else if matches!(c, '，' | '、' | '；' | '：') {
                self.cjk_clause(i)
            } else if c.is_whitespace() {
                self.whitespace(i)
            } else {
                None
            };
            if let Some(event) = found {
                return event;
            }
        }
        self.done = true;
        if self.is_final {
            let trailing = text.iter().rev().take_while(|c| c.is_whitespace()).count();
            Event::End { end: len - trailing }
        } else {
            Event::Undecided
        }
    }

    /// What to report when a decision needs a char past the end: while final there is none, so the
    /// position is no boundary and the scan runs on to its end.
    fn past_end(&mut self) -> Option<Event> {
        self.i = self.text.len();
        if self.is_final {
            None
        } else {
            Some(Event::Undecided)
        }
    }

    /// `.` `!` `?` `…` and CJK marks, as a run with closing quotes and brackets after it.
    fn terminator(&mut self, i: usize) -> Option<Event> {
        let text = self.text;
        let marks_end = i + text[i..].iter().take_while(|&&c| is_terminator(c)).count();
        let end = marks_end + text[marks_end..].iter().take_while(|&&c| is_closer(c)).count();
        self.i = end;
        let Some(&next) = text.get(end) else {
            return self.past_end();
        };
        if text[i..marks_end].iter().any(|&c| is_cjk_terminator(c)) {
            // CJK text puts no space between sentences; the mark alone is enough.
            if next.is_whitespace() {
                self.i = end + 1;
            }
            return Some(Event::Boundary {
                end,
                kind: Kind::Sentence,
            });
        }
        if !next.is_whitespace() {
            // `3.14`, `v1.2.3`, `example.com`, `"Hi."he`: not a sentence end.
            return None;
        }
        if end + 1 == text.len() {
            // The word after is needed to be sure, and a trailing space may yet become a paragraph.
            return self.past_end();
        }
        if marks_end - i == 1 && text[i] == '.' && is_abbreviation(text, i) {
            return None;
        }
        self.i = end + 1;
        Some(Event::Boundary {
            end,
            kind: Kind::Sentence,
        })
    }

    /// `,` `;` `:` and dashes, which count only with whitespace after them (`1,000`, `12:30` do not).
    fn spaced_punctuation(&mut self, i: usize) -> Option<Event> {
        let text = self.text;
        let Some(&next) = text.get(i + 1) else {
            return self.past_end();
        };
        if !next.is_whitespace() {
            return None;
        }
        if i + 2 == text.len() {
            return self.past_end();
        }
        self.i = i + 2;
        let kind = if next == PARAGRAPH {
            Kind::Sentence
        } else {
            Kind::Clause
        };
        Some(Event::Boundary { end: i + 1, kind })
    }

    /// CJK clause marks need no space after them. Whitespace after one is left to [`Self::whitespace`]
    /// so that a paragraph break there still reads as a sentence boundary.
    fn cjk_clause(&mut self, i: usize) -> Option<Event> {
        if i + 1 == self.text.len() {
            return self.past_end();
        }
        Some(Event::Boundary {
            end: i + 1,
            kind: Kind::Clause,
        })
    }

    fn whitespace(&mut self, i: usize) -> Option<Event> {
        if i + 1 == self.text.len() {
            return self.past_end();
        }
        (self.text[i] == PARAGRAPH).then_some(Event::Boundary {
            end: i,
            kind: Kind::Sentence,
        })
    }
}

impl Iterator for Scanner<'_> {
    type Item = (Event, bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let event = self.step();
        if !matches!(event, Event::Boundary { .. }) {
            self.done = true;
        }
        Some((event, std::mem::take(&mut self.alnum)))
    }
}

/// `,` `;` `:` anywhere, and dashes only with whitespace before them (`well-known`, `1990–2000`).
fn is_spaced_clause(text: &[char], i: usize) -> bool {
    match text[i] {
        ',' | ';' | ':' => true,
        '—' | '–' => i > 0 && text[i - 1].is_whitespace(),
        _ => false,
    }
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…') || is_cjk_terminator(c)
}

fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '｡')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '”' | '’' | ')' | ']' | '»' | '」' | '』' | '）' | '】' | '》'
    )
}

/// Whether the dot at `text[dot]` ends an abbreviation or an initial rather than a sentence.
fn is_abbreviation(text: &[char], dot: usize) -> bool {
    let is_word_char = |c: &char| c.is_alphabetic() || *c == '.';
    let len = text[..dot]
        .iter()
        .rev()
        .take(MAX_ABBREVIATION_CHARS + 1)
        .take_while(|c| is_word_char(c))
        .count();
    let start = dot - len;
    if len == 0 || len > MAX_ABBREVIATION_CHARS || (start > 0 && text[start - 1].is_alphanumeric()) {
        // No word, too long a word, or a word glued to digits (`v1.`, `A4.`).
        return false;
    }
    let word = &text[start..dot];
    if let [letter] = word {
        // An initial (`J. R. R. Tolkien`). Not `I`, which ends sentences far more often.
        return letter.is_uppercase() && *letter != 'I';
    }
    if is_dotted_letters(word) {
        return true;
    }
    let lower: String = word.iter().flat_map(|c| c.to_lowercase()).collect();
    ABBREVIATIONS.contains(&lower.as_str())
}

/// `e.g`, `U.S`, `U.S.A`: single letters joined by dots.
fn is_dotted_letters(word: &[char]) -> bool {
    word.len() >= 3
        && word.len() % 2 == 1
        && word
            .iter()
            .enumerate()
            .all(|(k, c)| if k % 2 == 0 { c.is_alphabetic() } else { *c == '.' })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chars(text: &str) -> Vec<char> {
        text.chars().collect()
    }

    fn events(text: &str, is_final: bool) -> Vec<Event> {
        Scanner::new(&chars(text), is_final)
            .map(|(event, _)| event)
            .collect()
    }

    fn ends(text: &str) -> Vec<(usize, Kind)> {
        events(text, true)
            .into_iter()
            .filter_map(|e| match e {
                Event::Boundary { end, kind } => Some((end, kind)),
                _ => None,
            })
            .collect()
    }

    fn abbreviation(text: &str) -> bool {
        let text = chars(text);
        let dot = text.len() - 1;
        is_abbreviation(&text, dot)
    }

    #[test]
    fn sentence_ends_with_their_closers() {
        assert_eq!(
            ends("Hi. Yes?! \"Go.\" (Now.) Wait… ok"),
            vec![
                (3, Kind::Sentence),
                (9, Kind::Sentence),
                (15, Kind::Sentence),
                (22, Kind::Sentence),
                (28, Kind::Sentence),
            ]
        );
    }

    #[test]
    fn clauses_need_whitespace_after() {
        assert_eq!(
            ends("a, b; c: d 1,000 12:30 e — f – g—h"),
            vec![
                (2, Kind::Clause),
                (5, Kind::Clause),
                (8, Kind::Clause),
                (26, Kind::Clause),
                (30, Kind::Clause),
            ]
        );
    }

    #[test]
    fn paragraph_breaks_are_sentence_boundaries() {
        assert_eq!(ends("a\nb"), vec![(1, Kind::Sentence)]);
        // A clause mark before a paragraph break is upgraded rather than reported twice.
        assert_eq!(ends("a,\nb"), vec![(2, Kind::Sentence)]);
        assert_eq!(ends("a.\nb"), vec![(2, Kind::Sentence)]);
    }

    #[test]
    fn cjk_marks_need_no_space() {
        assert_eq!(
            ends("你好。世界，再见！」x"),
            vec![(3, Kind::Sentence), (6, Kind::Clause), (10, Kind::Sentence)]
        );
    }

    #[test]
    fn dots_inside_numbers_and_words_are_not_boundaries() {
        assert!(ends("pi is 3.14 and v1.2.3 at example.com now").is_empty());
    }

    #[test]
    fn abbreviations_and_initials_are_not_boundaries() {
        for text in [
            "Mr. Smith",
            "ask Dr. Who",
            "e.g. this",
            "the U.S. Army",
            "at 5 p.m. Then",
            "J. R. R. Tolkien",
            "John F. Kennedy",
            "(approx. ten)",
            "NO. 5",
            "Ph.D. thesis",
        ] {
            assert_eq!(ends(text), vec![], "{text}");
        }
    }

    #[test]
    fn abbreviation_shapes() {
        assert!(abbreviation("Mrs."));
        assert!(abbreviation("U.S.A."));
        assert!(abbreviation("x etc."));
        assert!(!abbreviation("I."));
        assert!(!abbreviation("a."));
        assert!(!abbreviation("v1."));
        assert!(!abbreviation("Mister."));
        assert!(!abbreviation("disco."));
        assert!(!abbreviation("."));
        assert!(!abbreviation("approximately."));
    }

    #[test]
    fn waits_when_the_next_char_matters() {
        for text in [
            "Pi is 3.", "Hi. ", "the U.", "Hello,", "Hello, ", "a —", "a — ", "a ", "Hi", "Wow!!",
        ] {
            assert_eq!(events(text, false).last(), Some(&Event::Undecided), "{text}");
        }
        assert_eq!(events("Hi. ", true), vec![Event::End { end: 3 }]);
        assert_eq!(
            events("Hi. T", false),
            vec![
                Event::Boundary {
                    end: 3,
                    kind: Kind::Sentence
                },
                Event::Undecided
            ]
        );
    }

    #[test]
    fn reports_alphanumerics_per_segment() {
        let text = chars("... Hi. !!! x");
        let alnum: Vec<bool> = Scanner::new(&text, true).map(|(_, alnum)| alnum).collect();
        assert_eq!(alnum, vec![false, true, false, true]);
    }

    proptest! {
        #[test]
        fn boundaries_are_increasing_and_in_range(text in any::<String>(), is_final in any::<bool>()) {
            let text = chars(&text);
            let mut last = 0;
            for (event, _) in Scanner::new(&text, is_final) {
                if let Event::Boundary { end, .. } | Event::End { end } = event {
                    prop_assert!(end >= last && end <= text.len());
                    last = end;
                }
            }
        }
    }
}
