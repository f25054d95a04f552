//! TLS end to end with the real binary over loopback sockets and certificates made at test time: a
//! WebSocket session over `wss://` streams audio while plain clients knocking on the TLS port are turned
//! away without disturbing it; SIGHUP swaps the certificate for new connections while an open session
//! keeps streaming, and a broken file keeps the old one and is counted; gateway and worker speak gRPC
//! over TLS with the shared token, and a gateway that does not trust the worker's certificate says why.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;
#[path = "support/tls.rs"]
mod tls;

use std::process::Command;
use std::time::Duration;

use common::*;
use tls::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tts_test_support::{Event, Scrape, ServerProcess, StreamClient, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_ttsd");

fn write_config(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `[server]` lines for a listener's certificate and key.
fn tls_lines(prefix: &str, leaf: &Leaf) -> String {
    format!(
        "{prefix}tls_cert_file = {:?}\n{prefix}tls_key_file = {:?}\n",
        leaf.cert_file, leaf.key_file
    )
}

async fn tls_session(server: &ServerProcess, ca: &TestCa) -> StreamClient {
    let mut client = StreamClient::connect_tls(&server.url("/v1/stream"), ca.client())
        .await
        .expect("a wss:// session opens");
    let start = client.next(WAIT).await.unwrap().event;
    assert!(matches!(start, Event::SessionStart { .. }), "{start:?}");
    client
}

/// Waits for `count` frames of the utterance in progress.
async fn frames(client: &mut StreamClient, count: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    while frames.len() < count {
        let received = client.next(WAIT).await.unwrap();
        if let Event::Audio { sequence, pcm } = received.event {
            frames.push(Frame {
                sequence,
                pcm,
                at: received.at,
            });
        }
    }
    frames
}

/// The rest of an utterance after `before`: it completes, and with `before` every frame arrived once,
/// in order.
async fn finish(client: &mut StreamClient, mut before: Vec<Frame>) -> Vec<Frame> {
    let rest = read_utterance(client).await;
    let Some(Event::UtteranceEnd { frames, reason, .. }) = rest.end else {
        panic!("the utterance ends: {:?}", rest.end)
    };
    assert_eq!(reason, "completed");
    before.extend(rest.frames);
    assert_frames_well_formed(&before, before[0].sequence);
    assert_eq!(frames as usize, before.len(), "no frame lost");
    before
}

fn sighup(server: &ServerProcess) {
    let sent = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut probe: impl FnMut() -> F) {
    let until = Instant::now() + WAIT;
    while !probe().await {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP upgrade request sent to a TLS port: the server answers nothing HTTP and closes.
async fn plain_knock(addr: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw)).await;
    assert!(
        read.is_ok(),
        "the server closes a plain connection to its TLS port"
    );
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wss_session_streams_while_plain_clients_are_turned_away() {
    let dir = cert_dir("tls-wss");
    let ca = TestCa::new(&dir, "main");
    let public = ca.leaf(&dir, "public", 1);
    let admin = ca.leaf(&dir, "admin", 2);
    let config = write_config(
        &dir,
        "wss",
        &format!(
            "[server]\n{}{}",
            tls_lines("", &public),
            tls_lines("admin_", &admin)
        ),
    );
    let server = start_espeak(&["--config", &config]);
    assert!(server.ws_base.starts_with("wss://"), "{}", server.ws_base);
    assert!(server.admin_base.starts_with("https://"), "{}", server.admin_base);

    let mut bystander = tls_session(&server, &ca).await;
    bystander.send_text(LONG_TEXT, true).await.unwrap();
    let first = frames(&mut bystander, 5).await;

    // Plain clients on the TLS ports: no HTTP answer, no upgrade, the connection closed.
    let addr = host(&server.ws_base).to_owned();
    for _ in 0..3 {
        let answer = plain_knock(&addr).await;
        assert!(
            !answer.contains("HTTP/1.1"),
            "no HTTP answer in plain text: {answer:?}"
        );
    }
    let plain_ws = StreamClient::connect(&server.url("/v1/stream").replace("wss://", "ws://")).await;
    assert!(plain_ws.is_err(), "ws:// to a TLS port fails");
    let plain_admin = http_get(&server.admin_base.replace("https://", "http://"), "/metrics");
    assert!(
        plain_admin.map_or(true, |r| r.status == 0 || !r.body.contains("tts_")),
        "plain HTTP to the TLS admin port gets no metrics"
    );

    // The bystander never noticed: every frame, in order, to the end.
    finish(&mut bystander, first).await;

    // The HTTP API and the admin server over TLS, and the refusals counted.
    let (status, voices) = https_get(&server.ws_base, "/v1/voices", ca.client()).await;
    assert_eq!(status, 200);
    assert!(voices.contains(ESPEAK), "{voices}");
    let (status, metrics) = https_get(&server.admin_base, "/metrics", ca.client()).await;
    assert_eq!(status, 200);
    let scrape = Scrape::parse(&metrics).unwrap();
    let refused = |listener| {
        scrape
            .get(
                "tts_server_connections_rejected_total",
                &[("listener", listener), ("reason", "tls_handshake")],
            )
            .unwrap_or(0.0)
    };
    assert!(
        refused("public") >= 4.0,
        "3 knocks and a ws:// client: {}",
        refused("public")
    );
    assert!(
        refused("admin") >= 1.0,
        "the plain admin scrape: {}",
        refused("admin")
    );
    bystander.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_sessions() {
    let dir = cert_dir("tls-reload");
    let ca = TestCa::new(&dir, "main");
    let first_cert = ca.leaf(&dir, "first", 1);
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::copy(&first_cert.cert_file, &cert_file).unwrap();
    std::fs::copy(&first_cert.key_file, &key_file).unwrap();
    let config = write_config(
        &dir,
        "reload",
        &format!("[server]\ntls_cert_file = {cert_file:?}\ntls_key_file = {key_file:?}\n"),
    );
    let server = start_espeak(&["--config", &config]);
    let addr = host(&server.ws_base).to_owned();
    assert_eq!(presented_leaf(&addr, ca.client()).await, first_cert.der);

    let mut open = tls_session(&server, &ca).await;
    open.send_text(LONG_TEXT, true).await.unwrap();
    let mut heard = frames(&mut open, 5).await;

    // A new certificate in the same files, then SIGHUP: new connections get it.
    let second = ca.leaf(&dir, "second", 2);
    std::fs::copy(&second.cert_file, &cert_file).unwrap();
    std::fs::copy(&second.key_file, &key_file).unwrap();
    sighup(&server);
    eventually("new connections see the new certificate", || {
        let client = ca.client();
        let addr = addr.clone();
        let expected = second.der.clone();
        async move { presented_leaf(&addr, client).await == expected }
    })
    .await;
    heard.extend(frames(&mut open, 5).await);

    // A broken certificate file: the reload fails, the second certificate stays, the failure counts.
    std::fs::write(
        &cert_file,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n",
    )
    .unwrap();
    sighup(&server);
    let reloads = |outcome: &'static str| {
        let base = server.admin_base.clone();
        move || {
            let body = http_get(&base, "/metrics").unwrap().body;
            Scrape::parse(&body)
                .unwrap()
                .get(
                    "tts_tls_reloads_total",
                    &[("listener", "public"), ("outcome", outcome)],
                )
                .unwrap_or(0.0)
        }
    };
    eventually("the failed reload is counted", || {
        let failures = reloads("failure");
        async move { failures() == 1.0 }
    })
    .await;
    assert_eq!(reloads("success")(), 1.0);
    assert_eq!(presented_leaf(&addr, ca.client()).await, second.der);
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("TLS certificate reload failed") && logs.contains("server.pem"),
        "the failure is logged with the file: {logs}"
    );

    // The session opened under the first certificate played its utterance to the end.
    finish(&mut open, heard).await;
    let mut fresh = tls_session(&server, &ca).await;
    fresh.send_text("Still here.", true).await.unwrap();
    let first = frames(&mut fresh, 1).await;
    finish(&mut fresh, first).await;
}

fn secret(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn tls_gateway(
    dir: &std::path::Path,
    name: &str,
    worker: &ServerProcess,
    workers_section: &str,
) -> ServerProcess {
    let config = write_config(
        dir,
        name,
        &format!("[workers]\nhealth_interval_seconds = 0.2\n{workers_section}"),
    );
    let args = [
        "--voice",
        ESPEAK,
        "--workers",
        &worker.grpc_addr,
        "--config",
        &config,
    ];
    ServerProcess::start(BIN, &root(), &args).expect("ttsd serve starts")
}

fn ready(gateway: &ServerProcess) -> bool {
    http_get(&gateway.admin_base, "/readiness").unwrap().status == 200
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_worker_speak_grpc_over_tls_with_the_token() {
    const TOKEN: &str = "worker-token-dGxzdG9rZW4";
    let dir = cert_dir("tls-grpc");
    let ca = TestCa::new(&dir, "workers");
    let leaf = ca.leaf(&dir, "worker", 7);
    let token = secret(&dir, "token", TOKEN);
    let worker_config = write_config(
        &dir,
        "worker",
        &format!(
            "[engine]\nthreads = 1\n\n[worker]\ntoken_file = {token:?}\n{}",
            tls_lines("", &leaf)
        ),
    );
    let worker = ServerProcess::start_worker(BIN, &root(), &["--voice", ESPEAK, "--config", &worker_config])
        .expect("ttsd worker starts");

    let ca_file = ca.pem_file.to_str().unwrap();
    let trusting = tls_gateway(
        &dir,
        "trusting",
        &worker,
        &format!("token_file = {token:?}\ntls_ca_file = {ca_file:?}\n"),
    );
    eventually("the trusting gateway sees the worker ready", || {
        let ok = ready(&trusting);
        async move { ok }
    })
    .await;
    let (mut client, _) = connect(&trusting, "/v1/stream").await;
    client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let first = frames(&mut client, 1).await;
    let heard = finish(&mut client, first).await;
    assert!(
        heard.len() > 50,
        "a sentence of audio came through: {} frames",
        heard.len()
    );

    // Another CA: the gateway refuses the worker's certificate, says why, and is not ready.
    let other = TestCa::new(&dir, "other");
    let other_file = other.pem_file.to_str().unwrap();
    let doubting = tls_gateway(
        &dir,
        "doubting",
        &worker,
        &format!("token_file = {token:?}\ntls_ca_file = {other_file:?}\n"),
    );
    let mut logs = String::new();
    eventually("the untrusting gateway logs the certificate problem", || {
        logs.push_str(&doubting.logs().join("\n"));
        let found = logs.contains("Worker health check failed") && logs.contains("UnknownIssuer");
        async move { found }
    })
    .await;
    assert!(
        !ready(&doubting),
        "a worker it cannot trust is not a ready worker"
    );
    assert!(ready(&trusting), "the trusting gateway is unaffected");
}
