//! The notifiers against real peers: a real Alertmanager (Debian `prometheus-alertmanager`) and a real
//! HTTP server for the webhook, over loopback sockets, on the real clock.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tts_alerts::{
    Direction, Dispatch, Engine, EngineConfig, Escalation, LevelThreshold, Links, Metrics, NotifierConfig,
    Sample, Scope, SendOutcome, ThresholdRule, Thresholds,
};
use tts_test_support::Alertmanager;

/// Generous: the suite must pass on a machine three times slower.
const DEADLINE: Duration = Duration::from_secs(60);

fn rule() -> ThresholdRule {
    ThresholdRule {
        name: "HighLatency".into(),
        signal: "latency_seconds".into(),
        scope_filter: Scope::new(),
        direction: Direction::HigherIsWorse,
        thresholds: Thresholds {
            warning: Some(LevelThreshold {
                trigger: 1.0,
                clear: 0.8,
            }),
            critical: None,
            emergency: Some(LevelThreshold {
                trigger: 4.0,
                clear: 3.0,
            }),
            for_seconds: 0.0,
        },
        summary: "Latency is high.".into(),
        description: "Latency is {value} s in {scope}.".into(),
    }
}

fn engine(notifiers: NotifierConfig) -> (Engine, Metrics) {
    let metrics = Metrics::default();
    let dispatch = Dispatch::start(&notifiers, &metrics);
    let config = EngineConfig {
        threshold_rules: vec![rule()],
        anomaly_rules: Vec::new(),
        health_rules: Vec::new(),
        cooldown: Duration::from_secs(1),
        repeat_interval: Duration::from_secs(600),
        escalation: Escalation::default(),
        history_capacity: 16,
        links: Links {
            service: "ttsd".into(),
            instance: "test:1".into(),
            runbook_base: "https://example.invalid/runbooks/".into(),
            admin_url: "http://127.0.0.1:8081".into(),
        },
    };
    (Engine::new(config, metrics.clone(), dispatch).unwrap(), metrics)
}

fn eval(engine: &Engine, voice: &str, value: f64) {
    engine.evaluate(
        &[Sample::new("latency_seconds", &[("voice", voice)], value)],
        Instant::now(),
    );
}

/// Polls Alertmanager until `predicate` holds for its alerts, evaluating `keep` meanwhile.
async fn wait_for(
    am: &Alertmanager,
    what: &str,
    mut keep: impl FnMut(),
    predicate: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        keep();
        let alerts = tokio::task::block_in_place(|| am.alerts()).unwrap_or_default();
        if predicate(&alerts) {
            return alerts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: Alertmanager has {alerts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn named<'a>(alerts: &'a [Value], voice: &str) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "HighLatency" && a["labels"]["voice"] == voice)
}

#[tokio::test(flavor = "multi_thread")]
async fn alertmanager_gets_fires_resends_after_a_restart_and_ends() {
    let mut am = Alertmanager::start().unwrap();
    let (engine, metrics) = engine(NotifierConfig {
        alertmanager_urls: vec![am.url()],
        resend_interval: Duration::from_secs(1),
        ..NotifierConfig::default()
    });
    let alerts = wait_for(
        &am,
        "firing",
        || eval(&engine, "a", 1.5),
        |a| named(a, "a").is_some(),
    )
    .await;
    let alert = named(&alerts, "a").unwrap();
    let id = engine.active()[0].id;
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["service"], "ttsd");
    assert_eq!(alert["labels"]["instance"], "test:1");
    assert!(alert["labels"].get("priority").is_none());
    assert_eq!(alert["annotations"]["summary"], "Latency is high.");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("1.5000")
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://example.invalid/runbooks/HighLatency.md"
    );
    assert_eq!(
        alert["generatorURL"],
        format!("http://127.0.0.1:8081/dashboard#alerts/{id}")
    );
    assert_eq!(alert["status"]["state"], "active");

    // Emergency: severity critical plus priority P0; the warning's label set ends.
    let alerts = wait_for(
        &am,
        "emergency",
        || eval(&engine, "a", 5.0),
        |a| named(a, "a").is_some_and(|x| x["labels"]["severity"] == "critical"),
    )
    .await;
    assert_eq!(named(&alerts, "a").unwrap()["labels"]["priority"], "P0");
    assert_eq!(alerts.iter().filter(|a| a["labels"]["voice"] == "a").count(), 1);

    // A restart loses every alert Alertmanager held; the resend brings it back.
    tokio::task::block_in_place(|| am.restart()).unwrap();
    assert!(named(&tokio::task::block_in_place(|| am.alerts()).unwrap(), "a").is_none());
    wait_for(
        &am,
        "re-sent after restart",
        || eval(&engine, "a", 5.0),
        |a| named(a, "a").is_some(),
    )
    .await;

    // Resolved: Alertmanager lists only alerts whose endsAt is still ahead, so it drops out.
    wait_for(
        &am,
        "ended",
        || eval(&engine, "a", 0.1),
        |a| named(a, "a").is_none(),
    )
    .await;
    assert_eq!(engine.history().len(), 1);
    assert!(metrics.sends("alertmanager", SendOutcome::Ok) >= 3);
    assert_eq!(metrics.sends("alertmanager", SendOutcome::Dropped), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_alertmanager_is_retried_counted_and_bounded() {
    // Accepts connections and never answers: every post times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (engine, metrics) = engine(NotifierConfig {
        alertmanager_urls: vec![format!("http://{}", silent.local_addr().unwrap())],
        resend_interval: Duration::from_secs(1),
        outbox_capacity: 10,
        request_timeout: Duration::from_millis(300),
        ..NotifierConfig::default()
    });
    for voice in 0..50 {
        eval(&engine, &format!("v{voice}"), 1.5);
    }
    let samples: Vec<Sample> = (0..50)
        .map(|v| Sample::new("latency_seconds", &[("voice", &format!("v{v}"))], 1.5))
        .collect();
    let deadline = std::time::Instant::now() + DEADLINE;
    while metrics.sends("alertmanager", SendOutcome::Retry) < 2 {
        assert!(std::time::Instant::now() < deadline, "no retries counted");
        engine.evaluate(&samples, Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(engine.active().len(), 50, "the engine goes on regardless");
    assert!(metrics.sends("alertmanager", SendOutcome::Error) >= 2);
    assert_eq!(metrics.sends("alertmanager", SendOutcome::Ok), 0);
    assert!(metrics.sends("alertmanager", SendOutcome::Dropped) >= 40);
    let depth = metrics.outbox_depth("alertmanager");
    assert!((1..=10).contains(&depth), "outbox depth {depth}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_gets_every_event_as_json() {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (engine, metrics) = engine(NotifierConfig {
        webhook_url: Some(url),
        ..NotifierConfig::default()
    });
    eval(&engine, "a", 1.5);
    eval(&engine, "a", 0.1);
    let deadline = std::time::Instant::now() + DEADLINE;
    while received.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "webhook got {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got[0]["event"], "firing");
    assert_eq!(got[1]["event"], "resolved");
    assert_eq!(got[0]["alert"]["labels"]["alertname"], "HighLatency");
    assert_eq!(got[1]["alert"]["state"], "resolved");
    assert_eq!(metrics.sends("webhook", SendOutcome::Ok), 2);
}
