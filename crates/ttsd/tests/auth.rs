//! API keys on the public listener, end to end: the real `ttsd serve` binary over loopback sockets. A
//! refused WebSocket client gets 401 before any upgrade (no `session_start`, no session counted), the
//! OpenAI routes answer 401 in OpenAI's error shape, every check is counted by outcome, and no key ever
//! reaches the server's logs.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use tts_test_support::{Scrape, ServerProcess, http_get};

/// Distinctive, so a log line holding it cannot be a coincidence.
const KEY: &str = "ttsd-test-key-Qm9vcGxl";
const WRONG: &str = "ttsd-wrong-key-WnVycGxl";

fn write_config(name: &str, server_section: &str) -> String {
    let path = temp_path(&format!("auth-{name}.toml"));
    std::fs::write(
        &path,
        format!("[server]\n{server_section}\n[logging]\nformat = \"json\"\nfilter = \"debug\"\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn start_with_keys() -> ServerProcess {
    let keys = temp_path("auth-keys.txt");
    std::fs::write(
        &keys,
        format!("# keys for the auth test\nsome-other-key\n\n{KEY}\n"),
    )
    .unwrap();
    let config = write_config("keys", &format!("api_keys_file = {:?}", keys.to_str().unwrap()));
    start_espeak(&["--config", &config])
}

fn scrape(server: &ServerProcess) -> Scrape {
    Scrape::parse(&http_get(&server.admin_base, "/metrics").unwrap().body).unwrap()
}

fn auth_count(scrape: &Scrape, surface: &str, outcome: &str) -> f64 {
    scrape
        .get(
            "tts_auth_requests_total",
            &[("surface", surface), ("outcome", outcome)],
        )
        .unwrap_or_else(|| panic!("tts_auth_requests_total{{{surface},{outcome}}} is exported"))
}

/// One HTTP/1.1 request with extra headers; returns the status and the body.
fn request(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let host = base.trim_start_matches("ws://").trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A WebSocket handshake that must be refused: the 401 and its JSON body.
async fn refused(url: &str, bearer: Option<&str>) -> Value {
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401, "{url}");
            let body = response.body().clone().unwrap_or_default();
            serde_json::from_slice(&body).unwrap()
        }
        Err(other) => panic!("{url}: expected a 401, got {other}"),
        Ok(_) => panic!("{url}: upgraded without a valid key"),
    }
}

fn chunked_json(body: &str) -> Value {
    // Small JSON bodies come whole or as one chunk: find the object.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |i| i + 1);
    serde_json::from_str(&body[start..end]).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_before_the_upgrade_counted_and_never_logged() {
    let server = start_with_keys();

    let missing = refused(&server.url("/v1/stream"), None).await;
    assert_eq!(missing["code"], "UNAUTHORIZED");
    assert!(
        missing["message"].as_str().unwrap().contains("Missing API key"),
        "{missing}"
    );
    let legacy = refused(&server.url("/"), None).await;
    assert_eq!(legacy["code"], "UNAUTHORIZED");
    let wrong = refused(&server.url(&format!("/v1/stream?token={WRONG}")), None).await;
    assert!(
        wrong["message"].as_str().unwrap().contains("Invalid API key"),
        "{wrong}"
    );
    refused(&server.url("/v1/stream"), Some(WRONG)).await;

    let before = scrape(&server);
    assert_eq!(
        before.sum("tts_sessions_started_total", &[]),
        0.0,
        "no refused client got a session"
    );
    assert_eq!(before.get("tts_sessions_active", &[]), Some(0.0));

    // The header upgrades.
    let mut upgrade = server.url("/v1/stream").into_client_request().unwrap();
    upgrade
        .headers_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(upgrade).await.unwrap();
    assert_eq!(response.status(), 101);
    drop(socket);

    // The query parameter, and the session speaks.
    let (mut client, _) = connect(&server, &format!("/v1/stream?token={KEY}")).await;
    client.send_text("Authorised.", true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    assert!(!utterance.frames.is_empty(), "an authorised session gets audio");
    drop(client);

    // The OpenAI routes: 401 in OpenAI's error shape, 200 with the key.
    let speech = r#"{"model":"tts-1","input":"Hello.","voice":"alloy","response_format":"pcm"}"#;
    let json = [("Content-Type", "application/json")];
    let (status, body) = request(&server.ws_base, "POST", "/v1/audio/speech", &json, speech);
    assert_eq!(status, 401, "{body}");
    let error = chunked_json(&body);
    assert_eq!(error["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Missing API key"),
        "{body}"
    );
    let wrong_bearer = format!("Bearer {WRONG}");
    let with_wrong = [
        ("Content-Type", "application/json"),
        ("Authorization", wrong_bearer.as_str()),
    ];
    let (status, body) = request(&server.ws_base, "POST", "/v1/audio/speech", &with_wrong, speech);
    assert_eq!(status, 401, "{body}");
    assert!(
        chunked_json(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid API key")
    );
    let bearer = format!("Bearer {KEY}");
    let with_key = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let (status, _) = request(&server.ws_base, "POST", "/v1/audio/speech", &with_key, speech);
    assert_eq!(status, 200);
    for path in ["/v1/models", "/v1/audio/voices"] {
        let (status, body) = request(&server.ws_base, "GET", path, &[], "");
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(
            chunked_json(&body)["error"]["code"],
            "invalid_api_key",
            "{path}: {body}"
        );
        let (status, body) = request(
            &server.ws_base,
            "GET",
            path,
            &[("Authorization", bearer.as_str())],
            "",
        );
        assert_eq!(status, 200, "{path}: {body}");
    }

    let after = scrape(&server);
    assert_eq!(after.sum("tts_sessions_started_total", &[]), 2.0);
    for (surface, outcome, count) in [
        ("ws", "missing", 2.0),
        ("ws", "invalid", 2.0),
        ("ws", "ok", 2.0),
        ("http", "missing", 3.0),
        ("http", "invalid", 1.0),
        ("http", "ok", 3.0),
        ("admin", "ok", 0.0),
    ] {
        assert_eq!(auth_count(&after, surface, outcome), count, "{surface} {outcome}");
    }

    // Debug logs of everything above: plenty of lines, none with a key, right or wrong.
    std::thread::sleep(Duration::from_millis(500));
    let logs = server.logs();
    assert!(
        logs.len() > 10,
        "the debug log was captured: {} lines",
        logs.len()
    );
    assert!(
        logs.iter().any(|line| line.contains("API keys loaded")),
        "the start-up line says keys are on"
    );
    for secret in [KEY, WRONG] {
        let leaked: Vec<&String> = logs.iter().filter(|line| line.contains(secret)).collect();
        assert!(leaked.is_empty(), "a key reached the logs: {leaked:?}");
    }
}

/// Runs `ttsd serve` expecting it to exit with an error; returns what it wrote to stderr.
fn failed_start(extra: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ttsd"))
        .current_dir(root())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ttsd kept running without usable keys");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    stderr
}

#[test]
fn a_missing_or_empty_keys_file_stops_the_server_and_is_named() {
    let absent = temp_path("auth-no-such-keys.txt");
    let _ = std::fs::remove_file(&absent);
    let empty = temp_path("auth-empty-keys.txt");
    std::fs::write(&empty, "# only a comment\n\n").unwrap();
    for (name, path) in [("absent", &absent), ("empty", &empty)] {
        let config = write_config(name, &format!("api_keys_file = {:?}", path.to_str().unwrap()));
        let error = failed_start(&["--voice", ESPEAK, "--config", &config]);
        assert!(error.contains("server.api_keys_file"), "{name}: {error}");
        assert!(error.contains(path.to_str().unwrap()), "{name}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_public_routes_stay_open_and_nothing_is_counted() {
    let server = start_espeak(&[]);
    let (_client, _) = connect(&server, "/v1/stream").await;
    let (status, _) = request(&server.ws_base, "GET", "/v1/models", &[], "");
    assert_eq!(status, 200);
    let metrics = scrape(&server);
    for outcome in ["ok", "missing", "invalid"] {
        assert_eq!(auth_count(&metrics, "ws", outcome), 0.0);
        assert_eq!(auth_count(&metrics, "http", outcome), 0.0);
    }
}

/// Waits up to `WAIT` for `probe`, polling every 100 ms.
async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + WAIT;
    while !probe() {
        assert!(std::time::Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn secret_file(name: &str, token: &str) -> String {
    let path = temp_path(&format!("auth-{name}.txt"));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn token_gateway(name: &str, worker: &ServerProcess, token: &str) -> ServerProcess {
    let config = temp_path(&format!("auth-gateway-{name}.toml"));
    let token_file = secret_file(&format!("gateway-{name}-token"), token);
    std::fs::write(
        &config,
        format!("[workers]\nhealth_interval_seconds = 0.2\ntoken_file = {token_file:?}\n"),
    )
    .unwrap();
    start_espeak(&[
        "--config",
        config.to_str().unwrap(),
        "--workers",
        &worker.grpc_addr,
    ])
}

/// Speaks on a new session; returns the error codes seen and whether audio came.
async fn try_speak(gateway: &ServerProcess) -> (Vec<String>, bool) {
    let mut client = tts_test_support::StreamClient::connect(&gateway.url("/v1/stream"))
        .await
        .unwrap();
    let mut codes = Vec::new();
    let mut audio = false;
    let until = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < until {
        match client.next(WAIT).await.unwrap().event {
            tts_test_support::Event::SessionStart { .. } => {
                client.send_text("Token check.", true).await.unwrap();
            }
            tts_test_support::Event::Audio { .. } => audio = true,
            tts_test_support::Event::Error { code, .. } => codes.push(code),
            tts_test_support::Event::UtteranceEnd { .. }
            | tts_test_support::Event::SessionEnd { .. }
            | tts_test_support::Event::Closed => break,
            _ => {}
        }
    }
    (codes, audio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_take_calls_only_with_the_shared_token_and_guard_model_admin() {
    const WORKER_TOKEN: &str = "worker-token-ZmFrZXRva2Vu";
    const ADMIN_TOKEN: &str = "admin-token-YWRtaW50b2tlbg";
    let worker_config = temp_path("auth-worker.toml");
    std::fs::write(
        &worker_config,
        format!(
            "[server]\nadmin_token_file = {:?}\n\n[worker]\ntoken_file = {:?}\n\n[engine]\nthreads = 1\n",
            secret_file("admin-token", ADMIN_TOKEN),
            secret_file("worker-token", WORKER_TOKEN),
        ),
    )
    .unwrap();
    let worker = ServerProcess::start_worker(
        env!("CARGO_BIN_EXE_ttsd"),
        &root(),
        &[
            "--name",
            "auth-w",
            "--voice",
            ESPEAK,
            "--config",
            worker_config.to_str().unwrap(),
        ],
    )
    .expect("ttsd worker starts");

    // The right token: the worker is ready for the gateway and a session gets audio.
    let good = token_gateway("good", &worker, WORKER_TOKEN);
    eventually("the gateway with the right token sees the worker ready", || {
        http_get(&good.admin_base, "/readiness").unwrap().status == 200
    })
    .await;
    let (codes, audio) = try_speak(&good).await;
    assert!(codes.is_empty() && audio, "codes {codes:?}, audio {audio}");

    // A wrong token: every call is refused, the worker is unavailable to that gateway.
    let bad = token_gateway("bad", &worker, "not-the-worker-token");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(http_get(&bad.admin_base, "/readiness").unwrap().status, 503);
    let (codes, audio) = try_speak(&bad).await;
    assert!(!audio, "no audio through a refused worker");
    assert!(codes.iter().any(|c| c == "WORKER_UNAVAILABLE"), "{codes:?}");
    let seen = Scrape::parse(&http_get(&worker.admin_base, "/metrics").unwrap().body).unwrap();
    assert!(auth_count(&seen, "grpc", "ok") > 0.0);
    assert!(auth_count(&seen, "grpc", "invalid") > 0.0);
    let gateway_view = Scrape::parse(&http_get(&bad.admin_base, "/metrics").unwrap().body).unwrap();
    assert_eq!(
        gateway_view.get("tts_worker_up", &[("worker", &worker.grpc_addr)]),
        Some(0.0)
    );

    // The worker's model admin: the admin token is required (loopback too, once configured).
    let load = format!("/admin/models/{ESPEAK}/load");
    let (status, body) = request(&worker.admin_base, "POST", &load, &[], "");
    assert_eq!(status, 401, "{body}");
    assert!(
        chunked_json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("Missing admin token"),
        "{body}"
    );
    let wrong = format!("Bearer {WORKER_TOKEN}");
    let (status, _) = request(
        &worker.admin_base,
        "POST",
        &load,
        &[("Authorization", &wrong)],
        "",
    );
    assert_eq!(status, 401);
    let right = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = request(
        &worker.admin_base,
        "POST",
        &load,
        &[("Authorization", &right)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let seen = Scrape::parse(&http_get(&worker.admin_base, "/metrics").unwrap().body).unwrap();
    assert_eq!(auth_count(&seen, "admin", "missing"), 1.0);
    assert_eq!(auth_count(&seen, "admin", "invalid"), 1.0);
    assert_eq!(auth_count(&seen, "admin", "ok"), 1.0);
    for secret in [WORKER_TOKEN, ADMIN_TOKEN] {
        for (who, logs) in [("worker", worker.logs()), ("gateway", good.logs())] {
            assert!(!logs.iter().any(|l| l.contains(secret)), "{who} logged a token");
        }
    }
}
