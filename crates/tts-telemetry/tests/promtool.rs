//! `promtool check metrics` on the admin router's real `/metrics` answer: the Prometheus text 0.0.4
//! output must parse and raise no lint findings for metrics that follow the naming rules.
//!
//! Skips, with a note on stderr, when `promtool` is not installed (Debian: `apt-get install prometheus`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::CounterWithExemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tower::ServiceExt as _;
use tts_telemetry::{
    AdminState, Heartbeat, StallMetrics, register_build_info, register_process_metrics, router,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabel {
    trace_id: String,
}

fn registry() -> Registry {
    let mut registry = Registry::default();
    let requests: Counter = Counter::default();
    requests.inc_by(3);
    registry.register("app_requests", "Requests served", requests);
    let busy: CounterWithExemplar<TraceLabel, f64> = CounterWithExemplar::default();
    busy.inc_by(
        1.5,
        Some(TraceLabel {
            trace_id: "4bf92f3577b34da6".into(),
        }),
        None,
    );
    registry.register_with_unit("app_busy", "Time spent busy", Unit::Seconds, busy);
    let sessions: Gauge = Gauge::default();
    sessions.set(2);
    registry.register("app_sessions", "Open sessions", sessions);
    let latency = Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new([0.1, 0.5, 1.0]));
    latency
        .get_or_create(&Labels {
            model: "a".into(),
            outcome: "ok".into(),
        })
        .observe(0.3);
    latency
        .get_or_create(&Labels {
            model: "quote\"back\\slash".into(),
            outcome: "error".into(),
        })
        .observe(2.0);
    registry.register("app_latency_seconds", "Latency from request to answer", latency);
    register_build_info(
        &mut registry,
        "app_build",
        "Build of this binary",
        &[("version", "0.1.0")],
    );
    register_process_metrics(&mut registry);
    drop(StallMetrics::register(&mut registry, "app"));
    registry
}

async fn scrape() -> String {
    let state = AdminState {
        registry: Arc::new(registry()),
        summary: Arc::new(|| serde_json::json!({})),
        checks: Vec::new(),
        heartbeats: vec![Heartbeat::new("runtime", Duration::from_secs(5))],
        log: None,
        profiling: None,
        access: tts_telemetry::AdminAccess::default(),
        started: Instant::now(),
    };
    let request = Request::get("/metrics")
        .header(header::ACCEPT, "text/plain")
        .body(Body::empty())
        .expect("a valid request");
    let response = router(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the whole body");
    String::from_utf8(body.to_vec()).expect("UTF-8 metrics")
}

#[tokio::test]
async fn promtool_accepts_the_prometheus_text_without_findings() {
    let text = scrape().await;
    if let Err(findings) = tts_test_support::promtool_check_metrics(&text) {
        panic!("promtool: {findings}\ninput:\n{text}");
    }
    for name in [
        "app_requests_total",
        "app_busy_seconds_total",
        "process_cpu_seconds_total",
        "app_build_info",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
}
