//! A small YAML writer for Prometheus rule files: exactly the shapes a rule file has (groups of rules with
//! string fields and string maps), quoting every scalar that YAML would read as anything but that string.

use std::fmt::Write as _;

/// A rule group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) rules: Vec<Rule>,
}

/// A recording or an alerting rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub(crate) kind: Kind,
    pub(crate) expr: String,
    pub(crate) for_: Option<&'static str>,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) annotations: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Record(String),
    Alert(String),
}

impl Rule {
    pub(crate) fn record(name: impl Into<String>, expr: impl Into<String>) -> Self {
        Self {
            kind: Kind::Record(name.into()),
            expr: expr.into(),
            for_: None,
            labels: Vec::new(),
            annotations: Vec::new(),
        }
    }

    pub(crate) fn label(mut self, key: &str, value: impl Into<String>) -> Self {
        self.labels.push((key.to_owned(), value.into()));
        self
    }
}

/// The whole file: `header` as comment lines, then `groups:`.
pub(crate) fn render(header: &str, groups: &[Group]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str("groups:\n");
    for group in groups {
        let _ = writeln!(out, "  - name: {}", scalar(&group.name));
        out.push_str("    rules:\n");
        for rule in &group.rules {
            write_rule(&mut out, rule);
        }
    }
    out
}

fn write_rule(out: &mut String, rule: &Rule) {
    let indent = "        ";
    match &rule.kind {
        Kind::Record(name) => {
            let _ = writeln!(out, "      - record: {}", scalar(name));
        }
        Kind::Alert(name) => {
            let _ = writeln!(out, "      - alert: {}", scalar(name));
        }
    }
    write_field(out, indent, "expr", &rule.expr);
    if let Some(duration) = rule.for_ {
        write_field(out, indent, "for", duration);
    }
    for (key, map) in [("labels", &rule.labels), ("annotations", &rule.annotations)] {
        if map.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{indent}{key}:");
        for (name, value) in map {
            write_field(out, &format!("{indent}  "), name, value);
        }
    }
}

/// `key: value`, as a literal block (`|-`) when the value spans lines.
fn write_field(out: &mut String, indent: &str, key: &str, value: &str) {
    if value.contains('\n') && value.lines().all(|l| l == l.trim_end()) && !value.starts_with(' ') {
        let _ = writeln!(out, "{indent}{key}: |-");
        for line in value.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "{indent}  {line}");
            }
        }
    } else {
        let _ = writeln!(out, "{indent}{key}: {}", scalar(value));
    }
}

/// `value` as a YAML scalar that reads back as exactly this string: plain when that is unambiguous,
/// else double-quoted with escapes.
pub(crate) fn scalar(value: &str) -> String {
    if plain_is_safe(value) {
        value.to_owned()
    } else {
        quoted(value)
    }
}

fn plain_is_safe(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || " _.,:/()=<>+*-'%".contains(c);
    let keyword = matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    );
    (first.is_ascii_alphabetic() || first.is_ascii_digit() && is_duration(value))
        && value.chars().all(allowed)
        && value == value.trim()
        && !value.contains(": ")
        && !value.ends_with(':')
        && !keyword
}

/// `5m`, `1h`, `30d`: Prometheus durations that YAML reads as strings.
fn is_duration(value: &str) -> bool {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &value[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w" | "y")
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        for (input, expected) in [
            ("critical", "critical"),
            ("1h", "1h"),
            ("slo:sli_error:ratio_rate5m", "slo:sli_error:ratio_rate5m"),
            ("An SLO burns its budget.", "An SLO burns its budget."),
            ("true", "\"true\""),
            ("No", "\"No\""),
            ("14.4", "\"14.4\""),
            ("1:30", "\"1:30\""),
            ("", "\"\""),
            ("a: b", "\"a: b\""),
            ("value {{ $value }}", "\"value {{ $value }}\""),
            ("say \"hi\" \\ now", "\"say \\\"hi\\\" \\\\ now\""),
            ("- item", "\"- item\""),
            ("# comment", "\"# comment\""),
            (" padded", "\" padded\""),
            ("x #y", "\"x #y\""),
        ] {
            assert_eq!(scalar(input), expected, "{input:?}");
        }
    }

    #[test]
    fn multi_line_expressions_are_literal_blocks() {
        let rule = Rule {
            kind: Kind::Alert("A".into()),
            expr: "a > 1\nand\nb{x=\"y\"} > 2".into(),
            for_: Some("5m"),
            labels: vec![("severity".into(), "warning".into())],
            annotations: vec![("summary".into(), "A thing.".into())],
        };
        let text = render(
            "header",
            &[Group {
                name: "g".into(),
                rules: vec![rule],
            }],
        );
        assert_eq!(
            text,
            "# header\ngroups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |-\n          a > 1\n          and\n          b{x=\"y\"} > 2\n        for: 5m\n        labels:\n          severity: warning\n        annotations:\n          summary: A thing.\n"
        );
    }
}
