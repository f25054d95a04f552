use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use prometheus_client::metrics::counter::Counter;
use tower::ServiceExt as _;

use super::*;
use crate::logging::{LogFormat, build_subscriber};

struct FixedCheck {
    name: &'static str,
    required: bool,
    ok: bool,
}

impl HealthCheck for FixedCheck {
    fn name(&self) -> &str {
        self.name
    }

    fn required_for_readiness(&self) -> bool {
        self.required
    }

    fn check(&self) -> CheckResult {
        if self.ok {
            CheckResult::pass("fine")
        } else {
            CheckResult::fail("down")
        }
    }
}

fn state(checks: Vec<Arc<dyn HealthCheck>>, heartbeats: Vec<Arc<Heartbeat>>) -> AdminState {
    let mut registry = Registry::default();
    let counter: Counter = Counter::default();
    counter.inc();
    registry.register("demo_events", "Events seen", counter);
    AdminState {
        registry: Arc::new(registry),
        summary: Arc::new(|| json!({ "p95_seconds": 0.25 })),
        checks,
        heartbeats,
        log: None,
        profiling: None,
        access: AdminAccess::new(None, true),
        started: Instant::now() - Duration::from_secs(3),
    }
}

fn check(name: &'static str, required: bool, ok: bool) -> Arc<dyn HealthCheck> {
    Arc::new(FixedCheck { name, required, ok })
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn send(router: &Router, method: &str, uri: &str, accept: Option<&str>, body: &str) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    Reply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn metrics_negotiates_the_format() {
    let router = router(state(vec![], vec![]));
    let plain = send(&router, "GET", "/metrics", None, "").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        plain
            .body
            .contains("# TYPE demo_events_total counter\ndemo_events_total 1\n"),
        "{}",
        plain.body
    );
    assert!(!plain.body.contains("# EOF"));

    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let open = send(&router, "GET", "/metrics", Some(accept), "").await;
    assert_eq!(
        open.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        open.body.contains("# TYPE demo_events counter\n"),
        "{}",
        open.body
    );
    assert!(open.body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn summary_adds_uptime() {
    let reply = send(
        &router(state(vec![], vec![])),
        "GET",
        "/metrics/summary",
        None,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, "application/json");
    let body = reply.json();
    assert_eq!(body["p95_seconds"], 0.25);
    assert!(body["uptime_seconds"].as_f64().unwrap() >= 3.0);
}

#[tokio::test]
async fn health_reports_every_check_and_heartbeat() {
    let heartbeat = Heartbeat::new("runtime", Duration::from_secs(60));
    let healthy = router(state(vec![check("engine", true, true)], vec![heartbeat.clone()]));
    for path in ["/health", "/healthz"] {
        let reply = send(&healthy, "GET", path, None, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let body = reply.json();
        assert_eq!(body["status"], "ok");
        assert_eq!(
            body["checks"]["engine"],
            json!({"ok": true, "detail": "fine", "required_for_readiness": true})
        );
        assert_eq!(body["heartbeats"]["runtime"]["alive"], true);
    }

    let failing = router(state(vec![check("disk", false, false)], vec![heartbeat]));
    let reply = send(&failing, "GET", "/health", None, "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["status"], "failing");
    assert_eq!(reply.json()["checks"]["disk"]["detail"], "down");
}

#[tokio::test]
async fn readiness_fails_only_on_required_checks() {
    let informational_down = router(state(
        vec![check("engine", true, true), check("disk", false, false)],
        vec![],
    ));
    for path in ["/readiness", "/readyz"] {
        let reply = send(&informational_down, "GET", path, None, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.json()["ready"], true);
        assert!(reply.json()["checks"].get("disk").is_none());
    }

    let required_down = router(state(
        vec![check("engine", true, false), check("warmup", true, true)],
        vec![],
    ));
    let reply = send(&required_down, "GET", "/readyz", None, "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = reply.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["failing"], json!(["engine"]));
}

#[tokio::test]
async fn liveness_fails_once_a_frozen_heartbeat_ages_past_its_limit() {
    let runtime = Heartbeat::new("runtime", Duration::from_millis(50));
    let other = Heartbeat::new("scheduler", Duration::from_secs(60));
    let router = router(state(vec![], vec![runtime.clone(), other]));
    let reply = send(&router, "GET", "/liveness", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["alive"], true);

    runtime.freeze();
    tokio::time::sleep(Duration::from_millis(80)).await;
    runtime.beat();
    let reply = send(&router, "GET", "/livez", None, "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = reply.json();
    assert_eq!(body["alive"], false);
    assert_eq!(body["stale"][0]["name"], "runtime");
    assert!(body["stale"][0]["age_seconds"].as_f64().unwrap() >= 0.05);
    assert_eq!(body["stale"].as_array().unwrap().len(), 1);
    assert_eq!(body["heartbeats"]["scheduler"]["alive"], true);
}

#[tokio::test]
async fn log_level_can_be_read_and_changed() {
    let (_dispatch, handle) = build_subscriber(LogFormat::Json, "info", std::io::sink).unwrap();
    let mut with_log = state(vec![], vec![]);
    with_log.log = Some(handle.clone());
    let router = router(with_log);

    assert_eq!(
        send(&router, "GET", "/admin/log-level", None, "").await.body,
        "info\n"
    );
    let reply = send(
        &router,
        "PUT",
        "/admin/log-level",
        None,
        "info,tts_gateway=debug\n",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "info,tts_gateway=debug\n");
    assert_eq!(handle.current_filter(), "info,tts_gateway=debug");

    let reply = send(&router, "PUT", "/admin/log-level", None, "info,x=loud").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.starts_with("invalid log filter \"info,x=loud\": "),
        "{}",
        reply.body
    );
    assert_eq!(handle.current_filter(), "info,tts_gateway=debug");
}

#[tokio::test]
async fn recent_traces_and_logs_are_served_with_their_filters() {
    let (dispatch, handle) = build_subscriber(LogFormat::Json, "info", std::io::sink).unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        for session_id in ["ws-1", "ws-2"] {
            let span = tracing::info_span!("session", session_id);
            span.in_scope(|| {
                tracing::info_span!("utterance").in_scope(|| tracing::info!("Spoken."));
                tracing::warn!("Slow client.");
            });
        }
    });
    let mut with_log = state(vec![], vec![]);
    with_log.log = Some(handle);
    let router = router(with_log);

    let reply = send(&router, "GET", "/admin/traces?session_id=ws-2", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let traces = body["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{body}");
    assert_eq!(traces[0]["session_id"], "ws-2");
    let names: Vec<&str> = traces[0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["session", "utterance"]);
    assert_eq!(body["buffer"]["records"], 4);
    let trace_id = traces[0]["trace_id"].as_str().unwrap().to_owned();

    let reply = send(
        &router,
        "GET",
        &format!("/admin/logs?trace_id={trace_id}"),
        None,
        "",
    )
    .await;
    let logs = reply.json()["logs"].as_array().unwrap().clone();
    assert_eq!(logs.len(), 2);
    assert!(
        logs.iter()
            .all(|l| l["session_id"] == "ws-2" && l["trace_id"] == trace_id.as_str())
    );
    let reply = send(&router, "GET", "/admin/logs?level=warn&limit=1", None, "").await;
    let logs = reply.json()["logs"].as_array().unwrap().clone();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["message"], "Slow client.");
    assert_eq!(logs[0]["session_id"], "ws-2");

    let reply = send(&router, "GET", "/admin/traces?trace_id=nope", None, "").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("32 hexadecimal digits"), "{}", reply.body);
    let reply = send(&router, "GET", "/admin/logs?colour=red", None, "").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let without = router_without_log();
    assert_eq!(
        send(&without, "GET", "/admin/traces", None, "").await.status,
        StatusCode::NOT_IMPLEMENTED
    );
}

fn router_without_log() -> Router {
    router(state(vec![], vec![]))
}

async fn put_with(router: &Router, bearer: Option<&str>, body: &str) -> (StatusCode, String) {
    let mut request = Request::put("/admin/log-level");
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn log_level_off_loopback_needs_the_admin_token() {
    let (_dispatch, handle) = build_subscriber(LogFormat::Json, "info", std::io::sink).unwrap();
    let mut registry = Registry::default();
    let auth = AuthMetrics::register(&mut registry);
    let mut open = state(vec![], vec![]);
    open.log = Some(handle.clone());
    open.access = AdminAccess::new(None, false);
    let (status, body) = put_with(&router(open), Some("anything"), "debug").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("admin_token_file"), "{body}");
    assert_eq!(handle.current_filter(), "info");

    let mut guarded = state(vec![], vec![]);
    guarded.log = Some(handle.clone());
    guarded.access = AdminAccess::new(Some("s3cret".into()), false).counted(&auth);
    let guarded = router(guarded);
    let (status, body) = put_with(&guarded, None, "debug").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("Missing admin token"), "{body}");
    for wrong in ["s3cre", "s3cret!", "S3CRET", ""] {
        let (status, body) = put_with(&guarded, Some(wrong), "debug").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}: {body}");
    }
    assert_eq!(
        handle.current_filter(),
        "info",
        "no refused request changed the filter"
    );
    let (status, body) = put_with(&guarded, Some("s3cret"), "debug").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(handle.current_filter(), "debug");

    let text = crate::encode(&registry, crate::Exposition::PrometheusText).unwrap();
    for (outcome, count) in [("ok", 1), ("missing", 1), ("invalid", 4)] {
        let line = format!("tts_auth_requests_total{{surface=\"admin\",outcome=\"{outcome}\"}} {count}\n");
        assert!(text.contains(&line), "{line} in {text}");
    }
    assert!(text.contains("tts_auth_requests_total{surface=\"ws\",outcome=\"invalid\"} 0\n"));
}

#[test]
fn a_configured_token_is_checked_on_loopback_too() {
    let access = AdminAccess::for_listener("127.0.0.1:9".parse().unwrap(), Some("t".into()));
    let mut headers = HeaderMap::new();
    assert_eq!(access.authorize(&headers), Err(AdminRefusal::MissingToken));
    headers.insert(header::AUTHORIZATION, "Bearer u".parse().unwrap());
    assert_eq!(access.authorize(&headers), Err(AdminRefusal::InvalidToken));
    headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
    assert_eq!(access.authorize(&headers), Ok(()));
    let secret = AdminAccess::new(Some("hunter2-token".into()), true);
    assert!(!format!("{secret:?}").contains("hunter2"), "{secret:?}");
    let open = AdminAccess::for_listener("[::1]:9".parse().unwrap(), None);
    assert_eq!(open.authorize(&HeaderMap::new()), Ok(()));
    let remote = AdminAccess::for_listener("10.0.0.1:9".parse().unwrap(), None);
    assert_eq!(remote.authorize(&headers), Err(AdminRefusal::NoTokenConfigured));
}

#[test]
fn constant_time_eq_agrees_with_equality() {
    for (a, b) in [
        ("", ""),
        ("a", ""),
        ("", "a"),
        ("abc", "abc"),
        ("abc", "abd"),
        ("abc", "ab"),
        ("ab", "abc"),
        ("abcabc", "abc"),
        ("xyz", "abc"),
    ] {
        let expected = a == b && !b.is_empty();
        assert_eq!(
            constant_time_eq(a.as_bytes(), b.as_bytes()),
            expected,
            "{a:?} vs {b:?}"
        );
    }
}

#[tokio::test]
async fn log_level_without_a_handle_is_not_implemented() {
    let router = router(state(vec![], vec![]));
    assert_eq!(
        send(&router, "PUT", "/admin/log-level", None, "debug")
            .await
            .status,
        StatusCode::NOT_IMPLEMENTED
    );
    assert_eq!(
        send(&router, "GET", "/admin/log-level", None, "").await.status,
        StatusCode::NOT_IMPLEMENTED
    );
}

#[tokio::test]
async fn extra_routes_are_served_and_listed() {
    let extra = Router::new().route("/admin/extra", axum::routing::post(|| async { "done" }));
    let router = router_with(
        state(vec![], vec![]),
        extra,
        "  POST /admin/extra   an extra route\n",
    );
    let reply = send(&router, "POST", "/admin/extra", None, "").await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "done"));
    let reply = send(&router, "GET", "/nowhere", None, "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.body.contains("GET /metrics") && reply.body.contains("POST /admin/extra"));
    assert_eq!(
        send(&router, "GET", "/metrics", None, "").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_routes_list_the_routes() {
    let reply = send(&router(state(vec![], vec![])), "GET", "/nope", None, "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.body.contains("/readiness") && reply.body.contains("PUT /admin/log-level"),
        "{}",
        reply.body
    );
}

mod pprof {
    use super::*;
    use crate::profiling::{ProfilerSlot, TEST_SAMPLER};

    struct Binary {
        status: StatusCode,
        headers: axum::http::HeaderMap,
        body: Vec<u8>,
    }

    impl Binary {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        fn header(&self, name: header::HeaderName) -> &str {
            self.headers.get(name).unwrap().to_str().unwrap()
        }
    }

    fn profiled(access: Option<AdminAccess>) -> Router {
        router(AdminState {
            profiling: access,
            ..state(vec![], vec![])
        })
    }

    fn remote(token: Option<&str>) -> Option<AdminAccess> {
        Some(AdminAccess::for_listener(
            "0.0.0.0:8081".parse().unwrap(),
            token.map(str::to_owned),
        ))
    }

    async fn get(router: &Router, uri: &str, bearer: Option<&str>) -> Binary {
        let mut request = Request::get(uri);
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 64 << 20).await.unwrap();
        Binary {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    #[tokio::test]
    async fn disabled_routes_say_how_to_enable_them() {
        let router = profiled(None);
        for uri in ["/debug/pprof/profile?seconds=1", "/debug/pprof/heap"] {
            let reply = get(&router, uri, None).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
            assert!(reply.text().contains("ENABLE_PROFILING=true"), "{}", reply.text());
        }
    }

    #[tokio::test]
    async fn a_remote_admin_needs_the_bearer_token() {
        let _serial = TEST_SAMPLER.lock().await;
        let router = profiled(remote(Some("s3cret")));
        for bearer in [None, Some("wrong"), Some("s3cre")] {
            let reply = get(&router, "/debug/pprof/profile?seconds=1", bearer).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
            assert_eq!(reply.header(header::WWW_AUTHENTICATE), "Bearer");
        }

        let reply = get(&router, "/debug/pprof/profile?seconds=1", Some("s3cret")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header(header::CONTENT_TYPE), "application/octet-stream");
        assert_eq!(
            reply.header(header::CONTENT_DISPOSITION),
            "attachment; filename=\"cpu.pb.gz\""
        );
        assert_eq!(&reply.body[..2], &[0x1f, 0x8b], "gzip magic");

        let svg = get(
            &router,
            "/debug/pprof/profile?seconds=1&frequency=250&format=flamegraph",
            Some("s3cret"),
        )
        .await;
        assert_eq!(svg.status, StatusCode::OK, "{}", svg.text());
        assert_eq!(svg.header(header::CONTENT_TYPE), "image/svg+xml");
        assert!(svg.text().contains("<svg"), "{}", svg.text());
    }

    #[tokio::test]
    async fn a_remote_admin_without_a_token_refuses() {
        let router = profiled(remote(None));
        for uri in ["/debug/pprof/profile?seconds=1", "/debug/pprof/heap"] {
            let reply = get(&router, uri, Some("anything")).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}");
            assert!(reply.text().contains("PROFILE_TOKEN"), "{}", reply.text());
        }
    }

    #[tokio::test]
    async fn a_token_is_required_on_loopback_too_once_configured() {
        let access = AdminAccess::for_listener("127.0.0.1:0".parse().unwrap(), Some("t".into()));
        assert!(access.loopback_only);
        let reply = get(&profiled(Some(access)), "/debug/pprof/heap", None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_heap_without_jemalloc_is_not_implemented_and_says_why() {
        let loopback = AdminAccess::for_listener("[::1]:0".parse().unwrap(), None);
        let reply = get(&profiled(Some(loopback)), "/debug/pprof/heap", None).await;
        assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
        assert!(reply.text().contains("jemalloc"), "{}", reply.text());
    }

    #[tokio::test]
    async fn a_profile_while_the_sampler_is_taken_conflicts() {
        let _serial = TEST_SAMPLER.lock().await;
        let router = profiled(Some(AdminAccess::new(None, true)));
        let slot = ProfilerSlot::try_acquire().unwrap();
        let reply = get(&router, "/debug/pprof/profile?seconds=1", None).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
        drop(slot);
    }

    #[tokio::test]
    async fn bad_parameters_are_bad_requests() {
        let router = profiled(Some(AdminAccess::new(None, true)));
        for uri in [
            "/debug/pprof/profile?seconds=soon",
            "/debug/pprof/profile?frequency=-",
            "/debug/pprof/profile?seconds=1&format=png",
        ] {
            let reply = get(&router, uri, None).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}: {}", reply.text());
        }
    }
}

#[tokio::test]
async fn the_guard_layer_applies_the_rule_to_every_route_it_covers() {
    let guarded = |access: AdminAccess| {
        Router::new()
            .route(
                "/admin/models/{voice}/load",
                axum::routing::post(|| async { "loaded\n" }),
            )
            .route_layer(axum::middleware::from_fn_with_state(access, admin_guard))
    };
    let call = |router: Router, bearer: Option<&'static str>| async move {
        let mut request = Request::post("/admin/models/v/load");
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    let open = guarded(AdminAccess::new(None, false));
    let (status, body) = call(open, Some("x")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let remote = guarded(AdminAccess::new(Some("k3y".into()), false));
    assert_eq!(call(remote.clone(), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(remote.clone(), Some("k3")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(remote, Some("k3y")).await,
        (StatusCode::OK, "loaded\n".to_owned())
    );
    let local = guarded(AdminAccess::new(None, true));
    assert_eq!(call(local, None).await.0, StatusCode::OK);
}
