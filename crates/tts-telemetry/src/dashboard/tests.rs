use std::io::Write as _;
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::http::Request;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

use super::snapshot::select_series;
use super::*;

/// Every embedded asset, gzipped one by one as a server would send them, within 300 KB.
const GZIP_BUDGET_BYTES: usize = 300 * 1024;

fn admin_state() -> AdminState {
    let mut registry = Registry::default();
    let sessions: Gauge = Gauge::default();
    sessions.set(3);
    registry.register("tts_sessions_active", "Sessions open", sessions);
    let rtf =
        Family::<Vec<(String, String)>, Histogram>::new_with_constructor(|| Histogram::new([0.1, 0.5, 1.0]));
    rtf.get_or_create(&vec![("voice".to_owned(), "en \"q\"".to_owned())])
        .observe(0.2);
    registry.register("tts_real_time_factor_ratio", "RTF", rtf);
    AdminState {
        registry: Arc::new(registry),
        summary: Arc::new(|| json!({ "sessions_active": 3, "first_audio_p95_ms": 120.5 })),
        checks: Vec::new(),
        heartbeats: Vec::new(),
        log: None,
        profiling: None,
        access: crate::AdminAccess::default(),
        started: std::time::Instant::now(),
    }
}

async fn get(router: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 22).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[test]
fn assets_fit_the_size_budget() {
    let mut total = 0;
    for asset in &ASSETS {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(asset.body.as_bytes()).unwrap();
        total += gz.finish().unwrap().len();
    }
    assert!(total > 0 && total <= GZIP_BUDGET_BYTES, "{total} bytes gzipped");
}

#[test]
fn assets_name_no_other_origin() {
    for asset in &ASSETS {
        // The SVG namespace is an identifier, not a request.
        let body = asset.body.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "//fonts", "@import", "url("] {
            assert!(!body.contains(needle), "{:?} contains {needle}", asset.name);
        }
    }
    let page = ASSETS[0].body;
    for attribute in [" src=\"", " href=\""] {
        for (at, _) in page.match_indices(attribute) {
            let value = &page[at + attribute.len()..];
            assert!(
                value.starts_with("/dashboard/"),
                "{}",
                &value[..40.min(value.len())]
            );
        }
    }
}

#[tokio::test]
async fn page_and_assets_are_served_with_a_strict_policy() {
    let router = crate::admin::router(admin_state());
    let (status, headers, body) = get(&router, "/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'")
    );
    assert!(body.contains("<title>ttsd dashboard</title>"));
    for asset in ASSETS.iter().skip(1) {
        let (status, headers, body) = get(&router, &format!("/dashboard/{}", asset.name)).await;
        assert_eq!(status, StatusCode::OK, "{}", asset.name);
        assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
        assert_eq!(body, asset.body);
    }
    let (status, _, _) = get(&router, "/dashboard/secrets.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, help) = get(&router, "/nope").await;
    assert!(help.contains("/dashboard/events"), "{help}");
}

#[tokio::test]
async fn a_snapshot_carries_the_summary_the_health_and_the_series() {
    let router = crate::admin::router(admin_state());
    let (status, _, body) = get(&router, "/dashboard/snapshot").await;
    assert_eq!(status, StatusCode::OK);
    let snapshot: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snapshot["seq"], 1);
    assert!(snapshot["time_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(snapshot["summary"]["first_audio_p95_ms"], 120.5);
    assert!(snapshot["summary"]["uptime_seconds"].is_number());
    assert_eq!(snapshot["health"]["status"], "ok");
    assert_eq!(snapshot["series"]["tts_sessions_active"], json!([[{}, 3.0]]));
    assert_eq!(
        snapshot["series"]["tts_real_time_factor_ratio_count"],
        json!([[{ "voice": "en \"q\"" }, 1.0]])
    );
    assert!(
        snapshot["series"]
            .get("tts_real_time_factor_ratio_bucket")
            .is_none()
    );
    let (_, _, again) = get(&router, "/dashboard/snapshot").await;
    assert_eq!(serde_json::from_str::<Value>(&again).unwrap()["seq"], 2);
}

#[test]
fn series_selection_reads_prometheus_text() {
    let text = "# HELP tts_queue_depth Chunks.\n# TYPE tts_queue_depth gauge\ntts_queue_depth 4\n\
        tts_queue_wait_seconds_bucket{lane=\"first\",le=\"0.1\"} 2\n\
        tts_queue_wait_seconds_sum{lane=\"first\"} 0.25\n\
        tts_gpu_utilization_ratio{gpu=\"0\",name=\"a,b\\\\c\"} 0.5\n\
        tts_other_total 9\nprocess_cpu_seconds_total NaN\n";
    let series = select_series(text);
    assert_eq!(series["tts_queue_depth"], json!([[{}, 4.0]]));
    assert_eq!(
        series["tts_queue_wait_seconds_sum"],
        json!([[{ "lane": "first" }, 0.25]])
    );
    assert_eq!(
        series["tts_gpu_utilization_ratio"],
        json!([[{ "gpu": "0", "name": "a,b\\c" }, 0.5]])
    );
    assert_eq!(series.len(), 3, "{series:?}");
}

/// Opens `/dashboard/events` on a real socket and returns the stream after the response head.
async fn open_events(addr: std::net::SocketAddr, last_event_id: Option<u64>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET /dashboard/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads until `count` snapshot ids arrived (or 30 s passed) and returns them.
async fn read_ids(stream: &mut TcpStream, count: usize) -> (Vec<u64>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    let mut buffer = [0u8; 65536];
    loop {
        let ids: Vec<u64> = text
            .lines()
            .filter_map(|line| line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")))
            .filter_map(|id| id.trim().parse().ok())
            .collect();
        if ids.len() >= count || Instant::now() > deadline {
            return (ids, text);
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return (ids, text),
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_every_second_resume_and_stop_when_nobody_watches() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = crate::admin::router(admin_state());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let mut first = open_events(addr, None).await;
    let (ids, text) = read_ids(&mut first, 3).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{text}"
    );
    assert!(text.contains("event: snapshot"), "{text}");
    assert_eq!(ids.len(), 3, "{text}");
    assert!(ids.windows(2).all(|pair| pair[1] == pair[0] + 1), "{ids:?}");
    drop(first);

    // A reconnecting page gets what it missed, from the ring, then live snapshots.
    let mut resumed = open_events(addr, Some(ids[0])).await;
    let (again, text) = read_ids(&mut resumed, 3).await;
    assert_eq!(&again[..2], &ids[1..], "{text}");
    assert_eq!(again[2], ids[2] + 1, "{text}");
    drop(resumed);

    // With no page connected the sampler stops: only this request's own snapshot is taken.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seq = |body: String| {
        serde_json::from_str::<Value>(&body).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let base = format!("http://{addr}");
    let fetch = |base: String| async move {
        tokio::task::spawn_blocking(move || tts_test_support::http_get(&base, "/dashboard/snapshot"))
            .await
            .unwrap()
            .unwrap()
            .body
    };
    let before = seq(fetch(base.clone()).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = seq(fetch(base).await);
    assert_eq!(after, before + 1);
    server.abort();
}
