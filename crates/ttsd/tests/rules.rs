//! The Prometheus rules and the Alertmanager configuration, checked with the real tools: `ttsd rules`
//! against the committed files, `promtool check rules`, `promtool test rules`, `amtool check-config`, and a
//! lint in the spirit of mixtool's (names, severities, annotations, runbooks).
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{root, temp_path};

const RULE_FILES: [&str; 2] = [
    "deploy/prometheus/rules/slo.yml",
    "deploy/prometheus/rules/ttsd.yml",
];

fn ttsd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ttsd"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

/// Runs a Debian tool (`make test` installs it) and returns (success, stdout + stderr).
fn tool(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .current_dir(root())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); `scripts/install-deps.sh test` installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn config_file(name: &str, body: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn committed_rules_are_what_ttsd_rules_renders_and_drift_is_named() {
    let check = ttsd(&["rules", "--check"]);
    assert!(
        check.status.success(),
        "the committed rules drifted: {}",
        text(&check)
    );
    // A copy with one edited file: --check names the file and the command that fixes it.
    let dir = temp_path("rules-drift");
    std::fs::create_dir_all(&dir).unwrap();
    for file in RULE_FILES {
        let name = Path::new(file).file_name().unwrap();
        std::fs::copy(root().join(file), dir.join(name)).unwrap();
    }
    let edited = std::fs::read_to_string(dir.join("ttsd.yml"))
        .unwrap()
        .replace("for: 5m", "for: 6m");
    std::fs::write(dir.join("ttsd.yml"), edited).unwrap();
    let drift = ttsd(&["rules", "--check", "--out", dir.to_str().unwrap()]);
    let message = text(&drift);
    assert!(!drift.status.success(), "an edited rule file passed --check");
    assert!(
        message.contains("ttsd.yml") && !message.contains("slo.yml") && message.contains("ttsd -- rules"),
        "{message}"
    );
    // Regenerating into the directory repairs it.
    assert!(ttsd(&["rules", "--out", dir.to_str().unwrap()]).status.success());
    assert!(
        ttsd(&["rules", "--check", "--out", dir.to_str().unwrap()])
            .status
            .success()
    );
}

#[test]
fn a_tier_that_can_never_fire_is_refused_with_every_one_named() {
    let config = config_file(
        "impossible.toml",
        "[slo.objectives]\nfirst_audio = 0.9\nbarge_in = 0.5\n",
    );
    let dir = temp_path("rules-impossible");
    let output = ttsd(&[
        "rules",
        "--config",
        config.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    let message = text(&output);
    assert!(!output.status.success(), "impossible tiers accepted: {message}");
    for tier in [
        "SLO first_audio tier page_1h",
        "SLO barge_in tier page_1h",
        "SLO barge_in tier page_6h",
        "SLO barge_in tier ticket_1d",
    ] {
        assert!(message.contains(tier), "{tier} not named in: {message}");
    }
    assert!(!message.contains("first_audio tier page_6h"), "{message}");
    assert!(!message.contains("barge_in tier ticket_3d"), "{message}");
    assert!(!dir.exists(), "nothing is written when a tier is refused");
}

#[test]
fn a_malformed_slo_section_is_rejected_with_every_error_at_once() {
    let config = config_file(
        "bad-slo.toml",
        "[slo]\nbarge_in_seconds = -1.0\nwindow_seconds = 0\n\
         [slo.first_audio_seconds]\npiper = 0.0\n\
         [slo.objectives]\navailability = 1.5\nunderruns = 0.0\n",
    );
    let output = ttsd(&["rules", "--check", "--config", config.to_str().unwrap()]);
    let message = text(&output);
    assert!(!output.status.success(), "{message}");
    for field in [
        "slo.barge_in_seconds",
        "slo.window_seconds",
        "slo.first_audio_seconds.piper",
        "slo.objectives.availability",
        "slo.objectives.underruns",
    ] {
        assert!(message.contains(field), "{field} missing from: {message}");
    }
    let typo = config_file("typo-slo.toml", "[slo.objectives]\navailabilty = 0.99\n");
    let message = text(&ttsd(&["rules", "--config", typo.to_str().unwrap()]));
    assert!(message.contains("availabilty"), "{message}");
}

#[test]
fn promtool_check_rules_is_clean() {
    let (ok, output) = tool("promtool", &["check", "rules", RULE_FILES[0], RULE_FILES[1]]);
    assert!(ok, "{output}");
    assert!(
        !output.contains("FAILED") && !output.to_lowercase().contains("warning:"),
        "{output}"
    );
}

/// Every alert has a firing case and a quiet case in `deploy/prometheus/tests/`, and they pass.
#[test]
fn promtool_rule_tests_pass_and_cover_every_alert() {
    let tests: Vec<String> = std::fs::read_dir(root().join("deploy/prometheus/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| p.strip_prefix(root()).unwrap().to_str().unwrap().to_owned())
        .collect();
    assert!(tests.len() >= 5, "{tests:?}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, output) = tool("promtool", &args);
    assert!(ok, "promtool test rules failed:\n{output}");
    // Which alerts are asserted to fire, and which to stay quiet, somewhere in the tests.
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in &tests {
        let body = std::fs::read_to_string(root().join(file)).unwrap();
        let mut lines = body.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(name) = line.trim().strip_prefix("alertname: ") {
                match lines.peek().map(|l| l.trim()) {
                    Some("exp_alerts: []") => quiet.insert(name.to_owned()),
                    Some("exp_alerts:") => firing.insert(name.to_owned()),
                    other => panic!("{file}: {name} followed by {other:?}"),
                };
            }
        }
    }
    for alert in alerts().keys() {
        assert!(firing.contains(alert), "no promtool test makes {alert} fire");
        assert!(quiet.contains(alert), "no promtool test keeps {alert} quiet");
    }
}

#[test]
fn amtool_accepts_the_alertmanager_config_and_routes_by_severity() {
    let config = "deploy/alertmanager/alertmanager.yml";
    let (ok, output) = tool("amtool", &["check-config", config]);
    assert!(ok && output.contains("SUCCESS"), "{output}");
    let body = std::fs::read_to_string(root().join(config)).unwrap();
    for secret in ["api_url:", "routing_key:", "service_key:", "auth_password:"] {
        assert!(!body.contains(secret), "a secret inline in {config}: {secret}");
    }
    for (labels, receivers) in [
        ("severity=warning", "default-webhook,slack"),
        ("severity=critical", "default-webhook,pagerduty,email,slack"),
        ("severity=info", "default-webhook"),
    ] {
        let (ok, output) = tool(
            "amtool",
            &[
                "config",
                "routes",
                "test",
                "--config.file",
                config,
                labels,
                "alertname=X",
            ],
        );
        assert!(ok, "{output}");
        let got = output
            .lines()
            .find(|l| !l.starts_with("Warning"))
            .unwrap_or("")
            .trim();
        assert_eq!(got, receivers, "{labels}");
    }
}

/// mixtool's lint rules (monitoring.mixins.dev), which are not packaged here: CamelCase names; severity
/// info, warning or critical; a summary that is a plain sentence; a description with the value; a
/// runbook that exists and says what to check and how to mitigate.
#[test]
fn every_alert_passes_the_mixin_lint_and_has_a_runbook() {
    let alerts = alerts();
    assert!(alerts.len() >= 20, "{:?}", alerts.keys());
    for (name, rules) in &alerts {
        assert!(
            name.chars().next().unwrap().is_ascii_uppercase()
                && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name} is not CamelCase"
        );
        for rule in rules {
            let field = |key: &str| rule.get(key).unwrap_or_else(|| panic!("{name} has no {key}"));
            assert!(
                ["info", "warning", "critical"].contains(&field("severity").as_str()),
                "{name}: severity {}",
                field("severity")
            );
            if let Some(priority) = rule.get("priority") {
                assert_eq!(
                    (priority.as_str(), field("severity").as_str()),
                    ("P0", "critical"),
                    "{name}"
                );
            }
            let summary = field("summary");
            assert!(
                !summary.contains("{{")
                    && summary.starts_with(|c: char| c.is_ascii_uppercase())
                    && summary.ends_with('.'),
                "{name}: summary {summary:?}"
            );
            assert!(
                field("description").contains("$value"),
                "{name}: description without the value"
            );
            assert_eq!(field("runbook_url"), &format!("docs/runbooks/{name}.md"));
        }
        let runbook = std::fs::read_to_string(root().join(format!("docs/runbooks/{name}.md")))
            .unwrap_or_else(|e| panic!("runbook of {name}: {e}"));
        assert!(
            runbook.starts_with(&format!("# {name}\n")),
            "{name}: runbook title"
        );
        for section in [
            "## What it means",
            "## First three things to check",
            "## Mitigate",
        ] {
            assert!(runbook.contains(section), "{name}: runbook lacks {section:?}");
        }
        assert!(
            runbook.contains("\n3. "),
            "{name}: fewer than three things to check"
        );
    }
    let runbooks: BTreeSet<String> = std::fs::read_dir(root().join("docs/runbooks"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .trim_end_matches(".md")
                .to_owned()
        })
        .collect();
    // The built-in alert engine's rules have runbooks too; `every_engine_rule_has_a_runbook` (in the
    // binary, which knows those rules) checks that no runbook belongs to no alert of either kind.
    let missing: Vec<&String> = alerts.keys().filter(|name| !runbooks.contains(*name)).collect();
    assert!(missing.is_empty(), "alerts without a runbook: {missing:?}");
}

/// Alerts in the rendered rule files: name → one map of labels and annotations per rule. The files are
/// `ttsd rules` output, whose shape is fixed: `- alert:` items with `labels:` and `annotations:` maps of
/// plain or double-quoted (JSON-compatible) scalars.
fn alerts() -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut alerts: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for file in RULE_FILES {
        let body = std::fs::read_to_string(root().join(file)).unwrap();
        let mut current: Option<(String, BTreeMap<String, String>)> = None;
        let mut in_map = false;
        for line in body.lines() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.starts_with("- ") {
                if let Some((name, fields)) = current.take() {
                    alerts.entry(name).or_default().push(fields);
                }
                if let Some(name) = trimmed.strip_prefix("- alert: ") {
                    current = Some((name.to_owned(), BTreeMap::new()));
                }
                in_map = false;
            } else if indent == 8 {
                in_map = trimmed == "labels:" || trimmed == "annotations:";
            } else if indent == 10
                && in_map
                && let (Some((_, fields)), Some((key, value))) = (current.as_mut(), trimmed.split_once(": "))
            {
                let value = if value.starts_with('"') {
                    serde_json::from_str::<String>(value).unwrap()
                } else {
                    value.to_owned()
                };
                fields.insert(key.to_owned(), value);
            }
        }
        if let Some((name, fields)) = current.take() {
            alerts.entry(name).or_default().push(fields);
        }
    }
    alerts
}
