//! `promtool check metrics`, the Prometheus project's own linter, on a scrape.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `text` (Prometheus text format 0.0.4); `Err` carries its findings, or
/// says that promtool is missing (`make test` installs it with Debian's `prometheus` package).
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run promtool ({error}); `make test-deps` installs it"))?;
    child
        .stdin
        .take()
        .ok_or("promtool has no stdin")?
        .write_all(text.as_bytes())
        .map_err(|error| format!("writing to promtool: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("waiting for promtool: {error}"))?;
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && findings.trim().is_empty() {
        Ok(())
    } else {
        Err(findings)
    }
}
