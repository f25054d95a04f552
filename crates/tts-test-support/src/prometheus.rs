//! Starts a real Debian `prometheus` on loopback for tests, and asks it which PromQL expressions return
//! no data: pint's `promql/series` check, done against a server that scraped the real ttsd.
//!
//! Its own temporary storage directory and a free port; killed and cleaned up on drop.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::http::http_get;

/// The server binary, looked up on `PATH` (`scripts/install-deps.sh test` installs it).
const BINARY: &str = "prometheus";
/// How long a fresh server gets to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A `prometheus` child process on `127.0.0.1`.
pub struct PrometheusServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// What one expression returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// At least one series (or a scalar).
    Data(usize),
    /// A valid query with an empty result.
    NoData,
    /// Prometheus refused or failed the query; the message says why.
    Error(String),
}

impl PrometheusServer {
    /// Writes `config` (a whole `prometheus.yml`) into a temporary directory and starts Prometheus on
    /// it; waits until it is ready.
    pub fn start(config: &str) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "ttsd-prometheus-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, config)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log"))?)
            .spawn()?;
        let server = Self { child, port, dir };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if http_get(&self.base_url(), "/-/ready").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::other(format!(
            "prometheus did not become ready; its log:\n{}",
            self.log()
        )))
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Prometheus's own log (stderr), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Evaluates `expr` now through `/api/v1/query`.
    pub fn query(&self, expr: &str) -> Evaluation {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let response = match http_get(&self.base_url(), &path) {
            Ok(response) => response,
            Err(error) => return Evaluation::Error(error),
        };
        let body: serde_json::Value = match serde_json::from_str(&response.body) {
            Ok(body) => body,
            Err(error) => return Evaluation::Error(format!("{error}: {}", response.body)),
        };
        if body["status"] != "success" {
            return Evaluation::Error(body["error"].as_str().unwrap_or(&response.body).to_owned());
        }
        match &body["data"]["result"] {
            serde_json::Value::Array(series) if series.is_empty() => Evaluation::NoData,
            serde_json::Value::Array(series) => Evaluation::Data(series.len()),
            _ => Evaluation::Data(1),
        }
    }

    /// Evaluates every expression and returns those that returned no data or failed, with what
    /// happened: the check dashboards and rules share.
    pub fn without_data<'a>(&self, exprs: impl IntoIterator<Item = &'a str>) -> Vec<(String, Evaluation)> {
        exprs
            .into_iter()
            .map(|expr| (expr.to_owned(), self.query(expr)))
            .filter(|(_, result)| !matches!(result, Evaluation::Data(_)))
            .collect()
    }

    /// Polls `expr` until it returns data or `timeout` passes; true when it did.
    pub fn wait_for_data(&self, expr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(self.query(expr), Evaluation::Data(_)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The instant-vector selectors an expression names (`metric{matchers}`), each once, in order: what
/// must exist for the expression to mean anything. Function names, keywords, label lists after `by`,
/// `on`, `without`, `ignoring` and `group_left`/`group_right`, strings, numbers and durations are skipped.
pub fn selectors(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found: Vec<String> = Vec::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        i = match c {
            '"' | '\'' => skip_string(&chars, i),
            '[' => skip_past(&chars, i, ']'),
            '(' if skip_label_list => {
                skip_label_list = false;
                skip_past(&chars, i, ')')
            }
            _ if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                skip_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '.')
            }
            _ if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let end = skip_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                let word: String = chars[i..end].iter().collect();
                match Word::of(&word, chars[end..].iter().find(|c| !c.is_whitespace())) {
                    Word::LabelListKeyword => {
                        skip_label_list = true;
                        end
                    }
                    Word::Other => end,
                    Word::Metric => {
                        let close = if chars.get(end) == Some(&'{') {
                            matcher_end(&chars, end)
                        } else {
                            end
                        };
                        let selector: String = chars[i..close].iter().collect();
                        if !found.contains(&selector) {
                            found.push(selector);
                        }
                        close
                    }
                }
            }
            _ => i + 1,
        };
    }
    found
}

/// What an identifier in an expression is.
enum Word {
    /// `by`, `on`…: a parenthesised list of label names follows.
    LabelListKeyword,
    /// A metric name.
    Metric,
    /// A keyword, a function or an aggregation.
    Other,
}

impl Word {
    fn of(word: &str, next: Option<&char>) -> Self {
        const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
        const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];
        /// Aggregations may put `by (…)` between their name and their argument.
        const AGGREGATIONS: [&str; 12] = [
            "sum",
            "min",
            "max",
            "avg",
            "count",
            "stddev",
            "stdvar",
            "topk",
            "bottomk",
            "quantile",
            "count_values",
            "group",
        ];
        let lower = word.to_ascii_lowercase();
        if LABEL_LISTS.contains(&lower.as_str()) {
            Word::LabelListKeyword
        } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&word) || next == Some(&'(') {
            Word::Other
        } else {
            Word::Metric
        }
    }
}

fn skip_while(chars: &[char], start: usize, keep: impl Fn(char) -> bool) -> usize {
    chars[start..]
        .iter()
        .position(|&c| !keep(c))
        .map_or(chars.len(), |p| start + p)
}

/// Index just past the first `close` at or after `start`.
fn skip_past(chars: &[char], start: usize, close: char) -> usize {
    chars[start..]
        .iter()
        .position(|&c| c == close)
        .map_or(chars.len(), |p| start + p + 1)
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// Index just past the `}` closing the matchers that open at `start`, skipping quoted values.
fn matcher_end(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != '}' {
        i = if chars[i] == '"' || chars[i] == '\'' {
            skip_string(chars, i)
        } else {
            i + 1
        };
    }
    (i + 1).min(chars.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_found_and_everything_else_is_skipped() {
        let expr = "histogram_quantile(0.95, sum by (engine, le) (rate(tts_first_audio_seconds_bucket{engine=\"a}b\"}[5m]))) > 0.5\n\
                    and on (engine)\nsum by (engine) (increase(tts_first_audio_seconds_count{engine=\"espeak\"}[5m])) >= 20";
        assert_eq!(
            selectors(expr),
            [
                "tts_first_audio_seconds_bucket{engine=\"a}b\"}",
                "tts_first_audio_seconds_count{engine=\"espeak\"}"
            ]
        );
        assert_eq!(
            selectors("slo:sli_error:ratio_rate1h{slo=\"x\"} > (14.4 * 0.005) and up == 0 and vector(1)"),
            ["slo:sli_error:ratio_rate1h{slo=\"x\"}", "up"]
        );
        assert_eq!(selectors("tts_ready == 0"), ["tts_ready"]);
        assert_eq!(percent_encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
