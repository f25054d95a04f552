//! The Grafana dashboards' queries (deploy/grafana/dashboards/*.json): each one, with Grafana's variables
//! substituted as Grafana would, is PromQL that Prometheus's own parser accepts (promtool, on a rule file
//! made of them), and each panel says what must run for it to return data (deploy/grafana/needs.json).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// One query of one panel, ready for Prometheus.
#[derive(Debug)]
struct Query {
    dashboard: String,
    panel: u64,
    title: String,
    expr: String,
    needs: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Grafana's variables as Grafana expands them for a query: the interval variables to a duration (the
/// scrape interval is 15 s, so `$__rate_interval` is at least 1m), a multi-value variable set to All to
/// its `allValue`.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
}

fn queries() -> Vec<Query> {
    let dir = root().join("deploy/grafana/dashboards");
    let needs: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/needs.json")).unwrap())
            .unwrap();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let uid = board["uid"].as_str().unwrap().to_owned();
        for panel in board["panels"].as_array().unwrap() {
            let id = panel["id"].as_u64().unwrap();
            let panel_needs: Vec<String> = needs[&uid][id.to_string()]
                .as_array()
                .unwrap_or_else(|| panic!("deploy/grafana/needs.json has no entry for {uid} panel {id}"))
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            for target in panel["targets"].as_array().unwrap() {
                out.push(Query {
                    dashboard: uid.clone(),
                    panel: id,
                    title: panel["title"].as_str().unwrap().to_owned(),
                    expr: substitute(target["expr"].as_str().unwrap()),
                    needs: panel_needs.clone(),
                });
            }
        }
    }
    out
}

#[test]
fn every_query_is_promql_that_prometheus_parses() {
    let queries = queries();
    assert!(queries.len() >= 40, "only {} queries found", queries.len());
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (n, query) in queries.iter().enumerate() {
        assert!(
            !query.expr.contains('$'),
            "{} panel {}: a variable is left after substitution: {}",
            query.dashboard,
            query.panel,
            query.expr
        );
        // JSON strings are valid YAML double-quoted scalars.
        rules.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: {}\n",
            serde_json::to_string(&query.expr).unwrap()
        ));
    }
    let file = std::env::temp_dir().join(format!("ttsd-dashboard-queries-{}.yml", std::process::id()));
    std::fs::write(&file, &rules).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs (scripts/install-deps.sh test installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "promtool rejected a dashboard query:\n{text}"
    );
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{text}"
    );
}

#[test]
fn every_panel_names_what_it_needs_and_uses_known_parts() {
    const PARTS: [&str; 8] = [
        "gateway", "worker", "remote", "redis", "gpu", "node", "rules", "slo",
    ];
    let queries = queries();
    for query in &queries {
        assert!(!query.needs.is_empty(), "{query:?}");
        for need in &query.needs {
            assert!(
                PARTS.contains(&need.as_str()),
                "{} panel {} ({}): unknown need {need}",
                query.dashboard,
                query.panel,
                query.title
            );
        }
        // A GPU or node-exporter series in a panel not marked so would fail on machines without them.
        if query.expr.contains("tts_gpu_") {
            assert!(query.needs.iter().any(|n| n == "gpu"), "{query:?}");
        }
        if query.expr.contains("node_") {
            assert!(query.needs.iter().any(|n| n == "node"), "{query:?}");
        }
        if query.expr.contains("slo:") {
            assert!(query.needs.iter().any(|n| n == "rules"), "{query:?}");
        }
        if query.expr.contains("tts_slo_events_total") {
            assert!(query.needs.iter().any(|n| n == "slo"), "{query:?}");
        }
    }
}
