//! No dead selectors: a real Prometheus scrapes a real `ttsd serve` through
//! `deploy/prometheus/prometheus.yml` (adapted to the test's ports), evaluates the generated rules, and
//! every rule expression, and every series selector in it, is asked for through `/api/v1/query`.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use tts_test_support::{Evaluation, PrometheusServer, selectors};

/// Metrics that a gateway running synthesis in-process (this test's `ttsd serve`) never exports, with
/// why; each is catalogued in docs/telemetry.md under the part that does (checked below).
const ELSEWHERE: [(&str, &str); 7] = [
    (
        "tts_worker_up",
        "remote: only a gateway with --workers or --redis, one series per worker",
    ),
    (
        "tts_worker_failovers_total",
        "remote: only a gateway with remote workers, created per worker",
    ),
    (
        "tts_worker_rpc_errors_total",
        "remote: per worker, method and gRPC code, created by the first failed RPC",
    ),
    (
        "tts_model_load_failures_total",
        "worker: only `ttsd worker` has a model manager",
    ),
    (
        "tts_redis_command_errors_total",
        "remote, worker: only with a Redis registry",
    ),
    (
        "tts_gpu_memory_used_bytes",
        "gpu: NVML only; this machine may have no GPU",
    ),
    (
        "tts_gpu_memory_total_bytes",
        "gpu: NVML only; this machine may have no GPU",
    ),
];

/// `deploy/prometheus/prometheus.yml` with 1 s intervals, the gateway's admin port, no worker job
/// target, the repository's rule files and an Alertmanager port nobody listens on. Every edit must
/// apply, so a change to the file that this adaptation no longer fits fails here.
fn adapted_config(admin: &str) -> String {
    let original = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap();
    let rules = root().join("deploy/prometheus/rules").canonicalize().unwrap();
    let mut config = original.clone();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        ("evaluation_interval: 15s", "evaluation_interval: 1s".to_owned()),
        ("- rules/*.yml", format!("- {}/*.yml", rules.display())),
        ("\"127.0.0.1:8081\"", format!("\"{admin}\"")),
        ("targets: [\"127.0.0.1:7081\"]", "targets: []".to_owned()),
        ("\"127.0.0.1:9093\"", "\"127.0.0.1:9\"".to_owned()),
    ] {
        assert!(config.contains(from), "prometheus.yml no longer has {from:?}");
        config = config.replace(from, &to);
    }
    config
}

/// Every `expr:` of the generated rule files, unfolded from literal blocks, with its rule's name.
fn rule_expressions() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in ["slo.yml", "ttsd.yml"] {
        let body = std::fs::read_to_string(root().join("deploy/prometheus/rules").join(file)).unwrap();
        let mut name = String::new();
        let mut lines = body.lines().peekable();
        while let Some(line) = lines.next() {
            let trimmed = line.trim();
            if let Some(rule) = trimmed
                .strip_prefix("- alert: ")
                .or_else(|| trimmed.strip_prefix("- record: "))
            {
                name = rule.to_owned();
            } else if trimmed == "expr: |-" {
                let mut expr = Vec::new();
                while lines.peek().is_some_and(|l| l.starts_with("          ")) {
                    expr.push(lines.next().unwrap().trim());
                }
                found.push((name.clone(), expr.join("\n")));
            } else if let Some(expr) = trimmed.strip_prefix("expr: ") {
                let expr = if expr.starts_with('"') {
                    serde_json::from_str::<String>(expr).unwrap()
                } else {
                    expr.to_owned()
                };
                found.push((name.clone(), expr));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_expression_and_selector_has_data_from_a_real_ttsd() {
    let server = start_espeak(&[]);
    let admin = server.admin_base.strip_prefix("http://").unwrap().to_owned();
    let prometheus =
        PrometheusServer::start(&adapted_config(&admin)).expect("prometheus starts (CI installs it)");
    assert!(
        prometheus.wait_for_data("up{job=\"ttsd-gateway\"} == 1", Duration::from_secs(30)),
        "the gateway was never scraped:\n{}",
        prometheus.log()
    );

    // Load: sessions with utterances, one of them stopped mid-utterance.
    let (mut a, _) = connect(&server, "/v1/stream").await;
    let (mut b, _) = connect(&server, "/v1/stream").await;
    for text in ["The first sentence.", "A second, slightly longer sentence."] {
        a.send_text(text, true).await.unwrap();
        read_utterance(&mut a).await;
    }
    b.send_text(LONG_TEXT, true).await.unwrap();
    while !matches!(
        b.next(WAIT).await.unwrap().event,
        tts_test_support::Event::Audio { .. }
    ) {}
    b.send_control("STOP").await.unwrap();
    read_utterance(&mut b).await;
    // A Piper voice too: first-audio rules exist per engine.
    let (mut c, _) = connect(&server, &format!("/v1/stream?voice={PIPER}")).await;
    c.send_text("Piper speaks as well.", true).await.unwrap();
    read_utterance(&mut c).await;
    a.close().await;
    b.close().await;
    c.close().await;

    let exprs = rule_expressions();
    assert!(
        exprs.len() > 100,
        "rule files not found or too small: {}",
        exprs.len()
    );
    // The recording rules run every second; wait until the last one of the file has been written.
    assert!(
        prometheus.wait_for_data("slo:objective:ratio{slo=\"underruns\"}", Duration::from_secs(30)),
        "the recording rules never ran:\n{}",
        prometheus.log()
    );
    // And until the load's events have been scraped.
    assert!(
        prometheus.wait_for_data(
            "sum(tts_slo_events_total{slo=\"barge_in\"}) > 0",
            Duration::from_secs(30)
        ),
        "the STOP never reached Prometheus"
    );

    let mut problems = Vec::new();
    let mut checked = 0;
    for (rule, expr) in &exprs {
        // The whole expression must be valid; an alert that is not firing legitimately returns nothing.
        if let Evaluation::Error(error) = prometheus.query(expr) {
            problems.push(format!("{rule}: expression fails: {error}\n{expr}"));
        }
        for selector in selectors(expr) {
            let metric = selector.split('{').next().unwrap();
            if ELSEWHERE.iter().any(|(name, _)| *name == metric) {
                continue;
            }
            checked += 1;
            let count = format!("count({selector})");
            if !matches!(prometheus.query(&count), Evaluation::Data(_)) {
                problems.push(format!("{rule}: no series for {selector}"));
            }
        }
    }
    assert!(checked > 150, "only {checked} selectors checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The allow-list is honest: each entry is catalogued for another part, and really absent here.
    let rows = catalogue_rows();
    for (name, why) in ELSEWHERE {
        let status = rows
            .iter()
            .find(|(row, _)| row == name)
            .map(|(_, status)| status.clone())
            .unwrap_or_else(|| panic!("{name} is not in docs/telemetry.md"));
        assert!(
            status != "implemented" && why.starts_with(status.split(", ").next().unwrap()),
            "{name}: catalogued as {status:?} but allowed because {why:?}"
        );
        // A GPU machine has GPU series; everything else is absent from an in-process gateway.
        if status != "gpu" {
            assert_eq!(
                prometheus.query(&format!("count({name})")),
                Evaluation::NoData,
                "{name} exists here after all: check it like the others"
            );
        }
    }
}
