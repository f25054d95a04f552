//! Redaction of personal data and deployment paths from log field values.
//!
//! A hand-written scanner rather than regexes: the common case (nothing to redact) must cost one pass
//! over the bytes and no allocation, and the patterns are simple enough to read as code. Matches are
//! ASCII-delimited, so every cut lands on a UTF-8 character boundary.

use std::borrow::Cow;

const EMAIL: &str = "[email]";
const PHONE: &str = "[phone]";
const SSN: &str = "[ssn]";
const VOICE_PATH: &str = "[voice-path]";

/// Replaces e-mail addresses, phone numbers, US SSN-like numbers and paths to voice model files with
/// `[email]`, `[phone]`, `[ssn]` and `[voice-path]`.
///
/// - E-mail: `local@domain.tld`, the TLD alphabetic and at least two letters.
/// - Phone: `+` then 7 to 15 digits with optional spaces, dashes or parentheses; or a North-American number
///   written with separators: `555-123-4567`, `555.123.4567`, `555 123 4567`, `(555) 123-4567`,
///   `1-800-555-1234`, and the 7-digit `555-1234`.
/// - SSN: `ddd-dd-dddd`.
/// - Voice path: anything path-like (absolute or relative) ending in `.onnx` or `.onnx.json`.
///
/// Digit runs glued to letters, dashes or dots on either side are left alone, so durations (`123.4`),
/// counts (`1234567`), ISO timestamps and UUIDs pass through unchanged. Returns `Cow::Borrowed` when
/// nothing matches.
pub fn redact(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    if !might_match(bytes) {
        return Cow::Borrowed(text);
    }
    let mut found = Vec::new();
    find_emails(bytes, &mut found);
    find_voice_paths(bytes, &mut found);
    find_numbers(bytes, &mut found);
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    found.sort_by_key(|found| (found.start, std::cmp::Reverse(found.end)));
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for found in found {
        if found.start < copied {
            continue;
        }
        out.push_str(&text[copied..found.start]);
        out.push_str(found.replacement);
        copied = found.end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

struct Found {
    start: usize,
    end: usize,
    replacement: &'static str,
}

/// Cheap pre-filter: every pattern needs an `@`, a `.onnx`, or at least seven digits.
fn might_match(bytes: &[u8]) -> bool {
    let mut digits = 0;
    for (index, byte) in bytes.iter().enumerate() {
        match byte {
            b'0'..=b'9' => digits += 1,
            b'@' => return true,
            b'.' if starts_with_ignore_case(&bytes[index + 1..], b"onnx") => return true,
            _ => {}
        }
    }
    digits >= 7
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn find_emails(bytes: &[u8], found: &mut Vec<Found>) {
    let is_local = |byte: u8| byte.is_ascii_alphanumeric() || b"._%+-".contains(&byte);
    let is_domain = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-';
    for at in bytes
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'@')
        .map(|(index, _)| index)
    {
        let start = at
            - bytes[..at]
                .iter()
                .rev()
                .take_while(|byte| is_local(**byte))
                .count();
        let mut end = at
            + 1
            + bytes[at + 1..]
                .iter()
                .take_while(|byte| is_domain(**byte))
                .count();
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &bytes[at + 1..end];
        let Some(last_dot) = domain.iter().rposition(|byte| *byte == b'.') else {
            continue;
        };
        let tld = &domain[last_dot + 1..];
        let labels_ok = domain.split(|byte| *byte == b'.').all(|label| !label.is_empty());
        if start < at && labels_ok && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) {
            found.push(Found {
                start,
                end,
                replacement: EMAIL,
            });
        }
    }
}

fn find_voice_paths(bytes: &[u8], found: &mut Vec<Found>) {
    // Path-like: anything but whitespace, quotes and the punctuation that delimits values in logs.
    let is_path = |byte: u8| !byte.is_ascii_whitespace() && !b"\"'`=,;()[]{}<>|".contains(&byte);
    for dot in 0..bytes.len() {
        if bytes[dot] != b'.' || !starts_with_ignore_case(&bytes[dot + 1..], b"onnx") {
            continue;
        }
        let mut end = dot + 5;
        if starts_with_ignore_case(&bytes[end..], b".json") {
            end += 5;
        }
        if bytes
            .get(end)
            .is_some_and(|byte| byte.is_ascii_alphanumeric() || *byte == b'_' || *byte == b'-')
        {
            continue;
        }
        let start = dot
            - bytes[..dot]
                .iter()
                .rev()
                .take_while(|byte| is_path(**byte))
                .count();
        let stem = &bytes[start..dot];
        if stem.last().is_some_and(|byte| !matches!(byte, b'/' | b'\\')) {
            found.push(Found {
                start,
                end,
                replacement: VOICE_PATH,
            });
        }
    }
}

fn find_numbers(bytes: &[u8], found: &mut Vec<Found>) {
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let starts = byte.is_ascii_digit() || byte == b'(' || byte == b'+';
        if starts && left_boundary(bytes, index) {
            let matched = ssn(bytes, index)
                .map(|end| (end, SSN))
                .or_else(|| international(bytes, index).map(|end| (end, PHONE)))
                .or_else(|| north_american(bytes, index).map(|end| (end, PHONE)));
            if let Some((end, replacement)) = matched {
                found.push(Found {
                    start: index,
                    end,
                    replacement,
                });
                index = end;
                continue;
            }
        }
        index += 1;
    }
}

/// A number may start here: not glued to a word, or to a longer dashed, dotted or signed number.
fn left_boundary(bytes: &[u8], index: usize) -> bool {
    index == 0 || !(bytes[index - 1].is_ascii_alphanumeric() || b"_-.+".contains(&bytes[index - 1]))
}

/// A number may end here: no letter, digit or `_` follows, nor a `-` or `.` that continues with a digit.
fn accept_end(bytes: &[u8], end: usize) -> Option<usize> {
    let glued = match bytes.get(end) {
        None => false,
        Some(byte) if byte.is_ascii_alphanumeric() || *byte == b'_' => true,
        Some(b'-' | b'.') => bytes.get(end + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => false,
    };
    (!glued).then_some(end)
}

/// `n` digits at `index`: the index after them.
fn digits(bytes: &[u8], index: usize, n: usize) -> Option<usize> {
    let group = bytes.get(index..index + n)?;
    group.iter().all(u8::is_ascii_digit).then_some(index + n)
}

/// One separator from `set` at `index`: the index after it and the separator.
fn separator(bytes: &[u8], index: usize, set: &[u8]) -> Option<(usize, u8)> {
    let byte = *bytes.get(index)?;
    set.contains(&byte).then_some((index + 1, byte))
}

fn ssn(bytes: &[u8], index: usize) -> Option<usize> {
    let at = digits(bytes, index, 3)?;
    let (at, _) = separator(bytes, at, b"-")?;
    let at = digits(bytes, at, 2)?;
    let (at, _) = separator(bytes, at, b"-")?;
    accept_end(bytes, digits(bytes, at, 4)?)
}

/// `+` and 7 to 15 digits, with spaces, dashes and parentheses between them (no dots: `+123.45` is a
/// signed decimal, not a phone number).
fn international(bytes: &[u8], index: usize) -> Option<usize> {
    if bytes[index] != b'+' || !bytes.get(index + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let (mut count, mut end, mut separators_in_a_row) = (0, index + 1, 0);
    for (offset, byte) in bytes[index + 1..].iter().enumerate() {
        if byte.is_ascii_digit() {
            count += 1;
            end = index + 1 + offset + 1;
            separators_in_a_row = 0;
        } else if b" -()".contains(byte) && separators_in_a_row < 2 {
            separators_in_a_row += 1;
        } else {
            break;
        }
    }
    if (7..=15).contains(&count) {
        accept_end(bytes, end)
    } else {
        None
    }
}

fn north_american(bytes: &[u8], index: usize) -> Option<usize> {
    let with_country_code = || {
        if bytes[index] != b'1' {
            return None;
        }
        let (at, _) = separator(bytes, index + 1, b"-. ")?;
        ten_digit(bytes, at)
    };
    let local = || {
        let at = digits(bytes, index, 3)?;
        let (at, _) = separator(bytes, at, b"-")?;
        accept_end(bytes, digits(bytes, at, 4)?)
    };
    with_country_code()
        .or_else(|| ten_digit(bytes, index))
        .or_else(local)
}

/// `(ddd) ddd-dddd`, `(ddd)ddd-dddd`, or `ddd?ddd?dddd` with the same separator (`-`, `.` or space) twice.
fn ten_digit(bytes: &[u8], index: usize) -> Option<usize> {
    let (at, first) = if bytes.get(index) == Some(&b'(') {
        let at = digits(bytes, index + 1, 3)?;
        if bytes.get(at) != Some(&b')') {
            return None;
        }
        (
            if bytes.get(at + 1) == Some(&b' ') {
                at + 2
            } else {
                at + 1
            },
            None,
        )
    } else {
        let at = digits(bytes, index, 3)?;
        let (at, first) = separator(bytes, at, b"-. ")?;
        (at, Some(first))
    };
    let at = digits(bytes, at, 3)?;
    let (at, second) = separator(bytes, at, b"-. ")?;
    if first.is_some_and(|first| first != second) {
        return None;
    }
    accept_end(bytes, digits(bytes, at, 4)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, want: &str) {
        assert_eq!(redact(input), want, "input: {input:?}");
    }

    #[test]
    fn emails() {
        check("contact jane.doe+tts@example.co.uk now", "contact [email] now");
        check("<a@b.io>", "<[email]>");
        check("user@example.com.", "[email].");
        check(
            "not an email: a@b, @handle, x@localhost, y@host.c0m",
            "not an email: a@b, @handle, x@localhost, y@host.c0m",
        );
    }

    #[test]
    fn phones() {
        check("call +1 (555) 123-4567 today", "call [phone] today");
        check("+44 20 7946 0958", "[phone]");
        check("+4915112345678", "[phone]");
        check("555-123-4567", "[phone]");
        check("555.123.4567", "[phone]");
        check("555 123 4567", "[phone]");
        check("(555) 123-4567", "[phone]");
        check("(555)123-4567", "[phone]");
        check("1-800-555-1234", "[phone]");
        check("tel:555-1234.", "tel:[phone].");
        check("a=555-123-4567,b=2", "a=[phone],b=2");
    }

    #[test]
    fn ssns() {
        check("ssn 123-45-6789 on file", "ssn [ssn] on file");
        check("123-45-6789", "[ssn]");
    }

    #[test]
    fn voice_paths() {
        check(
            "loaded /opt/voices/en_US-lessac-medium.onnx in 2 s",
            "loaded [voice-path] in 2 s",
        );
        check(
            "config=voices/en_US-lessac-medium.onnx.json",
            "config=[voice-path]",
        );
        check("\"C:\\voices\\de.ONNX\"", "\"[voice-path]\"");
        check("model.onnx", "[voice-path]");
        check("./x.onnx: not found", "[voice-path]: not found");
    }

    #[test]
    fn ordinary_numbers_and_ids_pass_through_borrowed() {
        for text in [
            "synthesis took 123.4 ms",
            "frames=1234567 bytes=98765432",
            "at 2024-01-15T10:20:30.123456Z",
            "2024-01-15 10:20:30",
            "session 550e8400-e29b-41d4-a716-446655440000",
            "request 12345678-1234-5678-1234-567812345678",
            "ip 10.123.456.7890 and 192.168.100.200",
            "rtf 0.0123456 +123.45 -555-123-4567x",
            "version 1.2.3-555.1234",
            "the onnx runtime, file.onnxruntime, no stem: .onnx",
            "plain text with no digits",
            "",
        ] {
            assert!(
                matches!(redact(text), Cow::Borrowed(_)),
                "{text:?} became {:?}",
                redact(text)
            );
        }
    }

    #[test]
    fn several_kinds_in_one_string() {
        check(
            "a@b.com 555-123-4567 123-45-6789 /v/x.onnx end",
            "[email] [phone] [ssn] [voice-path] end",
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_handled_and_redaction_is_stable(text in "[a-z0-9@.+()/ _-]{0,40}|\\PC{0,40}") {
            let once = redact(&text).into_owned();
            proptest::prop_assert_eq!(redact(&once), once.as_str());
        }

        #[test]
        fn text_without_markers_or_seven_digits_is_borrowed(text in "[a-wA-W .,:=-]{0,60}[0-9]{0,6}") {
            proptest::prop_assert!(matches!(redact(&text), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn non_ascii_text_is_cut_on_character_boundaries() {
        check("é-mail: ünïcode@example.com ✓", "é-mail: ünï[email] ✓");
        check("声音 /模型/语音.onnx 好", "声音 [voice-path] 好");
    }
}
