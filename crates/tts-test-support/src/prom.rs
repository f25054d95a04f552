//! Reads the Prometheus text exposition format, so tests can check `/metrics` against what they saw.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: samples plus the families declared by `# TYPE` lines.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Family name → type, as declared.
    pub families: BTreeMap<String, String>,
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    scrape.families.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            scrape
                .samples
                .push(parse_sample(line).ok_or_else(|| format!("cannot parse sample line: {line}"))?);
        }
        Ok(scrape)
    }

    /// Sum of the samples named `name` whose labels include every pair in `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Like `sum`, but `None` when no sample matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self.matching(name, labels).peekable();
        matching.peek()?;
        Some(matching.map(|s| s.value).sum())
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name_and_labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..=close], &line[close + 1..])
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], &line[space..])
        }
    };
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match name_and_labels.find('{') {
        Some(open) => (
            &name_and_labels[..open],
            parse_labels(&name_and_labels[open + 1..name_and_labels.len() - 1])?,
        ),
        None => (name_and_labels, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        rest = after[end? + 1..].trim_start_matches(',').trim();
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_labels_and_types() {
        let scrape = Scrape::parse(
            "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\",e=\"q\\\"x\"} 3\na_total{k=\"w\"} 4\nb 1.5\nc_bucket{le=\"+Inf\"} 2\n",
        )
        .unwrap();
        assert_eq!(scrape.sum("a_total", &[]), 7.0);
        assert_eq!(scrape.sum("a_total", &[("k", "v")]), 3.0);
        assert_eq!(scrape.get("b", &[]), Some(1.5));
        assert_eq!(scrape.get("missing", &[]), None);
        assert_eq!(
            scrape.families.get("a_total").map(String::as_str),
            Some("counter")
        );
        assert_eq!(
            scrape.samples[0].labels.get("e").map(String::as_str),
            Some("q\"x")
        );
    }
}
