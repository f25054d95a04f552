//! No dead selectors: a real Prometheus scrapes a real `ttsd serve` (and, in the remote test, a real
//! `ttsd worker` found through a real Redis) through `deploy/prometheus/prometheus.yml` adapted to the
//! test's ports, evaluates the generated rules, and every rule expression, and every series selector in
//! it, is asked for through `/api/v1/query`.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use tts_test_support::{Evaluation, PrometheusServer, selectors};

/// Metrics that a gateway running synthesis in-process (the first test's `ttsd serve`) never exports,
/// with why; each is catalogued in docs/telemetry.md under the part that does (checked below), and the
/// remote test checks those that a gateway with a worker and Redis has before any failure.
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

/// `deploy/prometheus/prometheus.yml` with 1 s intervals, the gateway's and (if any) the worker's admin
/// ports, the repository's rule files and an Alertmanager port nobody listens on. Every edit must
/// apply, so a change to the file that this adaptation no longer fits fails here.
fn adapted_config(admin: &str, worker_admin: Option<&str>) -> String {
    let original = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap();
    let rules = root().join("deploy/prometheus/rules").canonicalize().unwrap();
    let mut config = original.clone();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        ("evaluation_interval: 15s", "evaluation_interval: 1s".to_owned()),
        ("- rules/*.yml", format!("- {}/*.yml", rules.display())),
        ("\"127.0.0.1:8081\"", format!("\"{admin}\"")),
        (
            "targets: [\"127.0.0.1:7081\"]",
            worker_admin.map_or("targets: []".to_owned(), |w| format!("targets: [\"{w}\"]")),
        ),
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

/// Queries every expression (it must be valid; an alert that is not firing legitimately returns nothing)
/// and `count()` of every selector in it, except those of `allowed` metrics; returns how many selectors
/// were checked.
fn assert_every_selector_has_data(
    prometheus: &PrometheusServer,
    exprs: &[(String, String)],
    allowed: &[(&str, &str)],
) -> usize {
    let mut problems = Vec::new();
    let mut counts: Vec<(String, String)> = Vec::new();
    for (rule, expr) in exprs {
        if let Evaluation::Error(error) = prometheus.query(expr) {
            problems.push(format!("{rule}: expression fails: {error}\n{expr}"));
        }
        for selector in selectors(expr) {
            let metric = selector.split('{').next().unwrap();
            if !allowed.iter().any(|(name, _)| *name == metric) {
                counts.push((rule.clone(), format!("count({selector})")));
            }
        }
    }
    let empty = prometheus.without_data(counts.iter().map(|(_, count)| count.as_str()));
    for (count, result) in &empty {
        let rule = &counts.iter().find(|(_, c)| c == count).unwrap().0;
        problems.push(format!("{rule}: no series for {count} ({result:?})"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    counts.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_expression_and_selector_has_data_from_a_real_ttsd() {
    let server = start_espeak(&[]);
    let admin = server.admin_base.strip_prefix("http://").unwrap().to_owned();
    let prometheus =
        PrometheusServer::start(&adapted_config(&admin, None)).expect("prometheus starts (CI installs it)");
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

    let checked = assert_every_selector_has_data(&prometheus, &exprs, &ELSEWHERE);
    assert!(checked > 150, "only {checked} selectors checked");

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

/// Series that exist on a gateway with remote workers and on a worker only after something failed.
const ON_FIRST_FAILURE: [(&str, &str); 4] = [
    (
        "tts_worker_rpc_errors_total",
        "per worker, method and gRPC code, created by the first failed RPC",
    ),
    (
        "tts_redis_command_errors_total",
        "per command and reason, created by the first failed command",
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

/// The remote part of the rules: a gateway finding a worker through Redis, both scraped. The series the
/// in-process test allows as absent (workers, failovers, model loads) must exist here.
#[tokio::test(flavor = "multi_thread")]
async fn remote_rule_selectors_have_data_from_a_gateway_a_worker_and_redis() {
    let redis = tts_test_support::RedisServer::start().expect("redis-server starts (CI installs it)");
    let url = redis.url();
    let bin = env!("CARGO_BIN_EXE_ttsd");
    let worker = tts_test_support::ServerProcess::start_worker(
        bin,
        &root(),
        &["--name", "w1", "--voice", ESPEAK, "--redis", &url],
    )
    .expect("ttsd worker starts");
    let server = start(&["--voice", ESPEAK, "--redis", &url]);
    let admin = server.admin_base.strip_prefix("http://").unwrap().to_owned();
    let worker_admin = worker.admin_base.strip_prefix("http://").unwrap().to_owned();
    let prometheus = PrometheusServer::start(&adapted_config(&admin, Some(&worker_admin)))
        .expect("prometheus starts (CI installs it)");
    assert!(
        prometheus.wait_for_data("tts_worker_up{worker=\"w1\"} == 1", Duration::from_secs(60)),
        "the gateway never saw w1 up:\n{}",
        prometheus.log()
    );
    let (mut client, _) = connect(&server, "/v1/stream").await;
    client.send_text("Through the worker.", true).await.unwrap();
    read_utterance(&mut client).await;
    client.close().await;
    assert!(
        prometheus.wait_for_data(
            "sum(tts_slo_events_total{slo=\"first_audio\"}) > 0",
            Duration::from_secs(30)
        ),
        "the utterance never reached Prometheus"
    );
    assert!(prometheus.wait_for_data("up{job=\"ttsd-worker\"} == 1", Duration::from_secs(30)));
    let remote: Vec<(String, String)> = rule_expressions()
        .into_iter()
        .filter(|(_, expr)| {
            selectors(expr).iter().any(|s| {
                ELSEWHERE
                    .iter()
                    .any(|(name, _)| s.split('{').next() == Some(*name))
            })
        })
        .collect();
    assert!(remote.len() >= 5, "{remote:?}");
    let checked = assert_every_selector_has_data(&prometheus, &remote, &ON_FIRST_FAILURE);
    assert!(checked >= 3, "only {checked} selectors checked");
}
