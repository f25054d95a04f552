//! The built-in alert engine end to end: the real `ttsd` binary, a real Alertmanager (Debian
//! `prometheus-alertmanager`), real remote workers, over loopback sockets.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::time::Instant;
use tts_test_support::{Alertmanager, Scrape, ServerProcess, http_get, http_request};

const BIN: &str = env!("CARGO_BIN_EXE_ttsd");
/// Generous: the suite must pass on a machine three times slower.
const LIMIT: Duration = Duration::from_secs(90);

fn config_file(name: &str, body: &str) -> String {
    let path = temp_path(&format!("alerts-{name}.toml"));
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

fn get_json(base: &str, path: &str) -> Value {
    let response = http_get(base, path).unwrap();
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    serde_json::from_str(&response.body).unwrap()
}

fn send(method: &str, base: &str, path: &str, body: &str) -> (u16, Value) {
    let response = http_request(method, base, path, None, Some(body)).unwrap();
    let value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, value)
}

/// Polls `probe` every 200 ms until it gives `Some`, or fails after `LIMIT` saying `what`.
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + LIMIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn find<'a>(alerts: &'a Value, rule: &str) -> Option<&'a Value> {
    alerts.as_array()?.iter().find(|a| a["rule"] == rule)
}

fn in_alertmanager(am: &Alertmanager, name: &str) -> Option<Value> {
    am.alerts()
        .ok()?
        .into_iter()
        .find(|a| a["labels"]["alertname"] == name)
}

/// Speaks utterances on one session until `stop` is set.
fn start_load(server: &ServerProcess, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    let url = server.url("/v1/stream");
    tokio::spawn(async move {
        let mut client = tts_test_support::StreamClient::connect(&url).await.unwrap();
        client.next(WAIT).await.unwrap();
        let mut spoken = 0;
        while !stop.load(Ordering::Relaxed) && spoken < 1000 {
            client.send_text(MEDIUM_TEXT, true).await.unwrap();
            read_utterance(&mut client).await;
            spoken += 1;
        }
        spoken
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_threshold_fires_reaches_alertmanager_is_acked_and_resolves() {
    let mut am = Alertmanager::start().expect("Alertmanager starts (scripts/install-deps.sh test)");
    // A short SLO window, so the first-audio window empties soon after the load stops.
    let config = config_file(
        "fire",
        "[slo]\nwindow_seconds = 6\n\n[alerts]\nevaluation_interval_seconds = 0.5\n\
         resend_interval_seconds = 1.0\ncooldown_seconds = 1.0\n",
    );
    let server = start_espeak(&["--config", &config, "--alertmanager-url", &am.url()]);
    let admin = server.admin_base.clone();

    // A malformed PUT changes nothing and lists every problem at once.
    let bad = r#"{"HighFirstAudioLatency":{"warning":{"trigger":1,"clear":2},"for_seconds":-1},"Nope":{}}"#;
    let (status, body) = send("PUT", &admin, "/admin/alerts/thresholds", bad);
    assert_eq!(status, 400, "{body}");
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let (status, body) = send("PUT", &admin, "/admin/alerts/thresholds", "{\"x\":");
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("EOF"), "{body}");

    // Lowered at run time: any first audio now breaches the warning level.
    let lowered =
        r#"{"HighFirstAudioLatency":{"warning":{"trigger":0.000001,"clear":0.0000005},"for_seconds":0}}"#;
    let (status, body) = send("PUT", &admin, "/admin/alerts/thresholds", lowered);
    assert_eq!(status, 200, "{body}");
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&server, stop.clone());

    let alert = eventually("the alert in Alertmanager", || {
        in_alertmanager(&am, "HighFirstAudioLatency")
    })
    .await;
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["engine"], "espeak");
    assert_eq!(alert["labels"]["service"], "ttsd");
    assert!(
        alert["labels"]["instance"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(alert["annotations"]["summary"], "First audio is slow.");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("espeak")
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "docs/runbooks/HighFirstAudioLatency.md"
    );
    assert_eq!(alert["status"]["state"], "active");

    let active = get_json(&admin, "/admin/alerts")["active"].clone();
    let ours = find(&active, "HighFirstAudioLatency").unwrap().clone();
    let id = ours["id"].as_u64().unwrap();
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/dashboard#alerts/{id}"))
    );

    // Acknowledge through ttsd; it shows in the list and the export.
    let (status, body) = send(
        "POST",
        &admin,
        &format!("/admin/alerts/{id}/ack"),
        r#"{"who":"oncall","why":"looking at the engine"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        "POST",
        &admin,
        "/admin/alerts/424242/ack",
        r#"{"who":"a","why":"b"}"#,
    );
    assert_eq!(status, 404);
    let listed = get_json(&admin, "/admin/alerts");
    assert_eq!(
        find(&listed["active"], "HighFirstAudioLatency").unwrap()["ack"]["who"],
        "oncall"
    );
    let export = get_json(&admin, "/admin/export");
    assert_eq!(
        find(&export["alerts"]["active"], "HighFirstAudioLatency").unwrap()["ack"]["why"],
        "looking at the engine"
    );
    assert_eq!(
        export["thresholds"]["HighFirstAudioLatency"]["warning"]["trigger"],
        0.000001
    );
    assert!(export["metrics"]["synthesis_total"].as_u64().unwrap() > 0);
    assert!(export["baselines"].is_array());

    // An Alertmanager restart loses its alerts; ttsd re-sends.
    tokio::task::block_in_place(|| am.restart()).unwrap();
    eventually("the alert re-sent after a restart", || {
        in_alertmanager(&am, "HighFirstAudioLatency")
    })
    .await;

    // The load stops: the window empties, the alert resolves, Alertmanager sees it end.
    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
    eventually("resolved in ttsd", || {
        let listed = get_json(&admin, "/admin/alerts");
        find(&listed["history"], "HighFirstAudioLatency").cloned()
    })
    .await;
    eventually("ended in Alertmanager", || {
        in_alertmanager(&am, "HighFirstAudioLatency")
            .is_none()
            .then_some(())
    })
    .await;
    let history = get_json(&admin, "/admin/alerts")["history"].clone();
    let resolved = find(&history, "HighFirstAudioLatency").unwrap();
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolved_by"], "condition");
    assert_eq!(resolved["ack"]["who"], "oncall", "the ack stays on the record");
    let metrics = Scrape::parse(&http_get(&admin, "/metrics").unwrap().body).unwrap();
    let sent = |outcome| {
        metrics.sum(
            "tts_alerts_notifier_sends_total",
            &[("notifier", "alertmanager"), ("outcome", outcome)],
        )
    };
    assert!(sent("ok") >= 2.0);
    assert_eq!(sent("dropped"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_fires_its_health_alert_and_recovers() {
    let worker_config = config_file(
        "worker",
        "[worker]\nheartbeat_interval_seconds = 0.2\nregistration_ttl_seconds = 1.0\n\n\
         [engine]\nthreads = 1\n",
    );
    let mut worker =
        ServerProcess::start_worker(BIN, &root(), &["--voice", ESPEAK, "--config", &worker_config])
            .expect("ttsd worker starts");
    // Nothing listens on this port: the gateway's Alertmanager posts fail, are retried and counted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gateway_config = config_file(
        "gateway",
        "[workers]\nhealth_interval_seconds = 0.2\nrpc_timeout_seconds = 1.0\n\n\
         [alerts]\nevaluation_interval_seconds = 0.2\nhealth_interval_seconds = 0.2\n\
         health_failure_threshold = 2\nhealth_recovery_threshold = 2\nresend_interval_seconds = 1.0\n",
    );
    let address = worker.grpc_addr.clone();
    let gateway = ServerProcess::start(
        BIN,
        &root(),
        &[
            "--voice",
            ESPEAK,
            "--workers",
            &address,
            "--config",
            &gateway_config,
            "--alertmanager-url",
            &unreachable,
        ],
    )
    .expect("ttsd serve starts");
    let admin = gateway.admin_base.clone();
    let unavailable = |listed: &Value| {
        find(&listed["active"], "WorkerUnavailable")
            .filter(|a| a["state"] == "firing" && a["scope"]["worker"] == address.as_str())
            .cloned()
    };
    // Healthy first: the check passes, nothing fires.
    eventually("the worker serving", || {
        // 503 until the worker is up.
        let body = http_get(&gateway.admin_base, "/health").unwrap().body;
        let health: Value = serde_json::from_str(&body).unwrap_or_default();
        health["checks"]["workers"]["ok"].as_bool().filter(|ok| *ok)
    })
    .await;
    assert!(unavailable(&get_json(&admin, "/admin/alerts")).is_none());

    worker.kill();
    let fired = eventually("WorkerUnavailable firing", || {
        unavailable(&get_json(&admin, "/admin/alerts"))
    })
    .await;
    assert_eq!(fired["kind"], "health");
    assert_eq!(fired["labels"]["severity"], "critical");
    assert!(fired["description"].as_str().unwrap().contains("not serving"));

    let _back = ServerProcess::start_worker_on(
        BIN,
        &root(),
        &address,
        &["--voice", ESPEAK, "--config", &worker_config],
    )
    .expect("the worker comes back on its address");
    let recovered = eventually("WorkerUnavailable resolved", || {
        let listed = get_json(&admin, "/admin/alerts");
        if unavailable(&listed).is_some() {
            return None;
        }
        find(&listed["history"], "WorkerUnavailable").cloned()
    })
    .await;
    assert_eq!(recovered["resolved_by"], "condition");

    let errors = eventually("failed Alertmanager posts counted", || {
        let scrape = Scrape::parse(&http_get(&admin, "/metrics").unwrap().body).unwrap();
        let errors = scrape.sum(
            "tts_alerts_notifier_sends_total",
            &[("notifier", "alertmanager"), ("outcome", "error")],
        );
        let retries = scrape.sum(
            "tts_alerts_notifier_sends_total",
            &[("notifier", "alertmanager"), ("outcome", "retry")],
        );
        (errors >= 1.0 && retries >= 1.0).then_some(scrape)
    })
    .await;
    let depth = errors.sum("tts_alerts_outbox_alerts", &[("notifier", "alertmanager")]);
    assert!((0.0..=1000.0).contains(&depth), "outbox bounded: {depth}");
    // The audio path goes on regardless.
    let (mut client, _) = connect(&gateway, "/v1/stream").await;
    client.send_text("Still speaking.", true).await.unwrap();
    assert!(!read_utterance(&mut client).await.frames.is_empty());
}

#[test]
fn a_malformed_alerts_section_lists_every_problem_at_once() {
    let config = config_file(
        "bad",
        "[alerts]\nevaluation_interval_seconds = -1\nalertmanager_urls = [\"ftp://x\"]\n\
         history_size = 0\n[alerts.anomaly]\nalpha = 2.0\n\
         [alerts.thresholds.SessionQueueBackup]\nwarning = { trigger = 10, clear = 20 }\n",
    );
    let output = std::process::Command::new(BIN)
        .current_dir(root())
        .args(["serve", "--voice", ESPEAK, "--config", &config])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "alerts.evaluation_interval_seconds",
        "ftp://x",
        "alerts.history_size",
        "alerts.anomaly.alpha",
        "alerts.thresholds.SessionQueueBackup.warning",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from: {stderr}");
    }
}

/// The anomaly detector on a real server: a short warm-up (20 points), then `POST /test/slow-engine`
/// (the `--test-hooks` hook) adds 300 ms before every chunk. Prints the detection delay; asserts only that
/// a new `FirstAudioAnomaly` fires after the step.
#[tokio::test(flavor = "multi_thread")]
async fn a_slowed_engine_is_detected_as_an_anomaly() {
    let config = config_file(
        "anomaly",
        "[slo]\nwindow_seconds = 5\n\n[alerts]\nevaluation_interval_seconds = 0.25\n\
         [alerts.anomaly]\nalpha = 0.1\nmin_points = 20\nconsecutive = 3\nz_threshold = 3.5\n",
    );
    let server = start_espeak(&["--config", &config, "--test-hooks"]);
    let admin = server.admin_base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&server, stop.clone());
    let ids = |admin: &str| -> Vec<u64> {
        let listed = get_json(admin, "/admin/alerts");
        let mut ids = Vec::new();
        for list in ["active", "history"] {
            for alert in listed[list].as_array().unwrap() {
                if alert["rule"] == "FirstAudioAnomaly" {
                    ids.push(alert["id"].as_u64().unwrap());
                }
            }
        }
        ids
    };
    eventually("the baseline warmed up", || {
        let export = get_json(&admin, "/admin/export");
        export["baselines"].as_array()?.iter().find(|b| {
            b["rule"] == "FirstAudioAnomaly" && b["baseline"]["points"].as_u64().unwrap_or(0) >= 40
        })?;
        Some(())
    })
    .await;
    let before = ids(&admin);
    let (status, _) = send("POST", &admin, "/test/slow-engine", "300");
    assert_eq!(status, 200);
    let stepped = Instant::now();
    let fired = eventually("FirstAudioAnomaly after the step", || {
        ids(&admin).into_iter().find(|id| !before.contains(id))
    })
    .await;
    println!(
        "anomaly detector on ttsd serve (espeak): {} firings during warm-up, a +300 ms step detected \
         after {:.1} s (alert {fired})",
        before.len(),
        stepped.elapsed().as_secs_f64()
    );
    send("POST", &admin, "/test/slow-engine", "0");
    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
}
