#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

use super::*;
use crate::engine::tests::{build, config, latency_rule};
use crate::{AlertState, Sample};

fn firing_engine() -> Arc<Engine> {
    let (engine, _rx) = build(config(vec![latency_rule(0.0)]));
    engine.evaluate(
        &[Sample::new("latency_seconds", &[("voice", "a")], 1.5)],
        Instant::now(),
    );
    Arc::new(engine)
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn loopback(engine: Arc<Engine>) -> Router {
    let section: Section = Arc::new(|| json!({ "sessions_active": 3 }));
    router(
        engine,
        AdminAccess::new(None, true),
        vec![("metrics".to_owned(), section)],
    )
}

#[tokio::test]
async fn list_ack_resolve_and_export() {
    let engine = firing_engine();
    let app = loopback(engine.clone());
    let (status, body) = call(&app, "GET", "/admin/alerts", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let id = body["active"][0]["id"].as_u64().unwrap();
    assert_eq!(body["active"][0]["state"], "firing");

    let (status, body) = call(
        &app,
        "POST",
        "/admin/alerts/999/ack",
        None,
        r#"{"who":"a","why":"b"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(
        &app,
        "POST",
        &format!("/admin/alerts/{id}/ack"),
        None,
        r#"{"who":"a"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("why"), "{body}");
    let path = format!("/admin/alerts/{id}/ack");
    let (status, body) = call(&app, "POST", &path, None, r#"{"who":"alice","why":"on it"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ack"]["who"], "alice");

    let (_, export) = call(&app, "GET", "/admin/export", None, "").await;
    assert_eq!(export["alerts"]["active"][0]["ack"]["why"], "on it");
    assert_eq!(export["metrics"]["sessions_active"], 3);
    assert!(export["thresholds"]["HighLatency"]["warning"]["trigger"].is_number());
    assert!(export["baselines"].is_array());
    assert!(export["generated_at"].is_string());

    let path = format!("/admin/alerts/{id}/resolve");
    let (status, body) = call(&app, "POST", &path, None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resolved_by"], "manual:admin-api");
    let (status, _) = call(&app, "POST", &path, None, "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(engine.history()[0].state, AlertState::Resolved);
    let (status, _) = call(&app, "GET", "/admin/alerts/x/resolve", None, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "mutations are POST only");
}

#[tokio::test]
async fn thresholds_round_trip_and_every_problem_is_listed() {
    let app = loopback(firing_engine());
    let (status, current) = call(&app, "GET", "/admin/alerts/thresholds", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["HighLatency"]["direction"], "higher_is_worse");
    let (status, body) = call(&app, "PUT", "/admin/alerts/thresholds", None, "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("thresholds document"));
    let bad = r#"{"HighLatency":{"warning":{"trigger":1,"clear":2},"for_seconds":-1},
                 "Missing":{"warning":{"trigger":1,"clear":0}}}"#;
    let (status, body) = call(&app, "PUT", "/admin/alerts/thresholds", None, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["problems"].as_array().unwrap().len(), 3, "{body}");
    let good = r#"{"HighLatency":{"warning":{"trigger":0.3,"clear":0.2},"for_seconds":2}}"#;
    let (status, body) = call(&app, "PUT", "/admin/alerts/thresholds", None, good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["HighLatency"]["warning"]["trigger"], 0.3);
    assert_eq!(body["HighLatency"]["for_seconds"], 2.0);
}

#[tokio::test]
async fn mutations_off_loopback_need_the_token() {
    let engine = firing_engine();
    let id = engine.active()[0].id;
    let ack = format!("/admin/alerts/{id}/ack");
    let body = r#"{"who":"a","why":"b"}"#;
    let open = router(engine.clone(), AdminAccess::new(None, false), Vec::new());
    let (status, reply) = call(&open, "POST", &ack, None, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(reply["error"].as_str().unwrap().contains("admin_token_file"));

    let access = AdminAccess::new(Some("s3cret".into()), false);
    assert!(!format!("{access:?}").contains("s3cret"));
    let guarded = router(engine, access, Vec::new());
    let (status, _) = call(&guarded, "POST", &ack, None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&guarded, "POST", &ack, Some("wrong!"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&guarded, "PUT", "/admin/alerts/thresholds", None, "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = call(&guarded, "POST", "/admin/alerts/1/resolve", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        reply["error"].as_str().unwrap().contains("Missing admin token"),
        "{reply}"
    );
    let (status, reply) = call(&guarded, "POST", "/admin/alerts/1/resolve", Some("s3cre"), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        reply["error"].as_str().unwrap().contains("Invalid admin token"),
        "{reply}"
    );
    let (status, _) = call(&guarded, "POST", &ack, Some("s3cret"), body).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&guarded, "GET", "/admin/alerts", None, "").await;
    assert_eq!(status, StatusCode::OK, "reads need no token");
}
