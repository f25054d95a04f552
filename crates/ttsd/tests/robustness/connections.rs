//! Hostile connections: silent and slow readers, half-open sockets, slow headers, sessions that never
//! speak, floods of sessions, bytes that are not HTTP, unauthenticated upgrades and admin calls.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tts_test_support::{Event, ServerProcess, StreamClient, http_request};

use crate::common::{ESPEAK, LONG_TEXT, MEDIUM_TEXT, WAIT, connect, root};
use crate::harness::{self, Stand};
use crate::speaks;

fn host(server: &ServerProcess) -> String {
    server.ws_base.trim_start_matches("ws://").to_owned()
}

/// Raw bytes in, whatever the server answers within `limit` out (empty when it said nothing).
async fn exchange(server: &ServerProcess, bytes: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(host(server)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_readers_cost_only_themselves() {
    let config = "[gateway]\nslow_client_timeout_seconds = 2\n";
    let stand = Stand::start("readers", config, &[]).await;
    stand
        .attack("silent and slow readers", async {
            // A client that never reads, with a small receive buffer: the server's writes stall and the
            // session is dropped after slow_client_timeout_seconds.
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let stream = socket
                .connect(host(&stand.server).parse().unwrap())
                .await
                .unwrap();
            let url = stand.server.url("/v1/stream");
            let (mut silent, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
            let long = [LONG_TEXT; 4].join(" ");
            let text = serde_json::json!({"type": "text", "text": long}).to_string();
            silent
                .send(tungstenite::Message::Text(text.into()))
                .await
                .unwrap();
            let started = Instant::now();
            stand
                .counter_reaches("tts_sessions_ended_total", &[("reason", "slow_client")], 1.0)
                .await;
            eprintln!("silent reader dropped after {:?}", started.elapsed());
            stand.wait_for_log(&["Session ended.", "slow_client"]).await;

            // A client that reads a message every 30 ms (a third slower than real time): it gets every
            // frame, in order, at its own pace.
            let (mut slow, _) = connect(&stand.server, "/v1/stream").await;
            slow.send_text(MEDIUM_TEXT, true).await.unwrap();
            let mut sequences = Vec::new();
            let end = loop {
                tokio::time::sleep(Duration::from_millis(30)).await;
                match slow.next(WAIT).await.unwrap().event {
                    Event::Audio { sequence, .. } => sequences.push(sequence),
                    Event::UtteranceEnd { frames, reason, .. } => break (frames, reason),
                    other => panic!("slow reader: {other:?}"),
                }
            };
            assert_eq!(end.1, "completed");
            assert_eq!(end.0, sequences.len() as u64);
            assert!(sequences.iter().copied().eq(1..=end.0), "contiguous");
            drop(silent);
        })
        .await;
    assert_eq!(
        stand
            .scrape()
            .sum("tts_sessions_ended_total", &[("reason", "slow_client")]),
        1.0,
        "only the silent reader was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_sockets_slow_headers_junk_bytes_and_silent_sessions_cost_only_themselves() {
    let config = "[gateway]\nidle_timeout_seconds = 2\n";
    let stand = Stand::start("half-open", config, &[]).await;
    stand
        .attack("half-open connections and junk", async {
            // 100 TCP connections that never send a byte, held through the rest of the attack.
            let mut idle = Vec::new();
            for _ in 0..100 {
                idle.push(TcpStream::connect(host(&stand.server)).await.unwrap());
            }
            // 20 upgrade requests whose headers trickle in, a byte every 100 ms.
            let mut trickles = Vec::new();
            for _ in 0..20 {
                let host = host(&stand.server);
                trickles.push(tokio::spawn(async move {
                    let mut stream = TcpStream::connect(&host).await.unwrap();
                    let head = format!("GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
                    stream.write_all(head.as_bytes()).await.unwrap();
                    for _ in 0..20 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if stream.write_all(b"a").await.is_err() {
                            return false;
                        }
                    }
                    true
                }));
            }
            // Bytes that are not HTTP (a TLS ClientHello, then noise): 400 and the connection closes.
            let junk = exchange(
                &stand.server,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03junk\r\n\r\n",
                WAIT,
            )
            .await;
            eprintln!("junk bytes: {junk:?}");
            assert!(junk.starts_with("HTTP/1.1 400"), "{junk:?}");
            // A plain GET of the WebSocket endpoint, no upgrade headers.
            let plain = http_request(
                "GET",
                &stand.server.ws_base.replace("ws://", "http://"),
                "/v1/stream",
                None,
                None,
            )
            .unwrap();
            eprintln!("plain GET: {} {}", plain.status, plain.body);
            assert!((400..500).contains(&plain.status), "{}", plain.status);
            // A session that never says anything ends at idle_timeout_seconds, with the reason.
            let (mut silent, _) = connect(&stand.server, "/v1/stream").await;
            let end = silent.next(WAIT).await.unwrap().event;
            assert!(
                matches!(&end, Event::SessionEnd { reason, .. } if reason == "idle_timeout"),
                "{end:?}"
            );
            // With all of that going on, a new session is served.
            let (mut fresh, _) = connect(&stand.server, "/v1/stream").await;
            speaks(&mut fresh, "beside half-open connections").await;
            let mut held = 0;
            for trickle in trickles {
                held += usize::from(trickle.await.unwrap());
            }
            eprintln!("{held} of 20 slow-header connections were still open after 2 s");
            // The half-open sockets: still connected, nothing sent to them.
            let mut silent_sockets = 0;
            for stream in &idle {
                let mut byte = [0u8; 1];
                if let Err(tokio::io::ErrorKind::WouldBlock) =
                    stream.try_read(&mut byte).map_err(|e| e.kind())
                {
                    silent_sockets += 1;
                }
            }
            eprintln!("{silent_sockets} of 100 half-open sockets still open");
        })
        .await;
    assert_eq!(
        stand
            .scrape()
            .sum("tts_sessions_ended_total", &[("reason", "idle_timeout")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sessions_past_max_sessions_is_refused_with_overloaded() {
    let config = "[gateway]\nmax_sessions = 16\n";
    let stand = Stand::start("session-flood", config, &[]).await;
    const FLOOD: usize = 60;
    let (admitted, refused) = stand
        .attack("a flood of sessions", async {
            let url = stand.server.url("/v1/stream");
            let attempts = (0..FLOOD).map(|_| async {
                let mut client = StreamClient::connect(&url).await.unwrap();
                let first = client.next(WAIT).await.unwrap().event;
                match first {
                    Event::SessionStart { .. } => (Some(client), false),
                    Event::Error { code, .. } => {
                        assert_eq!(code, "OVERLOADED");
                        let end = client.next(WAIT).await.unwrap().event;
                        assert!(
                            matches!(&end, Event::SessionEnd { reason, .. } if reason == "overloaded"),
                            "{end:?}"
                        );
                        (None, true)
                    }
                    other => panic!("{other:?}"),
                }
            });
            let results = futures_util::future::join_all(attempts).await;
            let refused = results.iter().filter(|(_, refused)| *refused).count();
            let mut admitted: Vec<StreamClient> = results.into_iter().filter_map(|(c, _)| c).collect();
            // The admitted ones are real sessions: one of them speaks.
            if let Some(client) = admitted.first_mut() {
                speaks(client, "a session admitted in the flood").await;
            }
            let count = admitted.len();
            for client in admitted {
                client.close().await;
            }
            (count, refused)
        })
        .await;
    assert_eq!(admitted + refused, FLOOD);
    assert_eq!(admitted, 15, "16 sessions with the bystander");
    assert_eq!(
        stand
            .scrape()
            .sum("tts_sessions_refused_total", &[("reason", "overloaded")]),
        refused as f64
    );
    let warned = stand.log_lines(&["Refused a session: at an admission limit."]);
    assert_eq!(warned.len(), refused, "one WARN per refusal");
}

const KEY: &str = "robustness-key-R2F0ZWtlZXBlcg";
const WRONG: &str = "robustness-wrong-key-Tm9wZQ";

/// An upgrade that must be refused with 401: the body's message.
async fn unauthorized(url: &str, bearer: Option<&str>) -> String {
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = bearer {
        let value = format!("Bearer {key}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401, "{url}");
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["code"], "UNAUTHORIZED", "{body}");
            body["message"].as_str().unwrap().to_owned()
        }
        Err(other) => panic!("{url}: expected 401, got {other}"),
        Ok(_) => panic!("{url}: upgraded without a valid key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_without_a_valid_api_key_are_refused_before_any_session() {
    let keys = crate::common::temp_path("robustness-keys.txt");
    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    let config = format!("[server]\napi_keys_file = {:?}\n", keys.to_str().unwrap());
    let stand = Stand::start("keys", &config, &[])
        .await
        .bystander_query(&format!("&token={KEY}"));
    stand
        .attack("unauthenticated upgrades", async {
            let url = stand.server.url("/v1/stream");
            assert!(unauthorized(&url, None).await.contains("Missing API key"));
            assert!(unauthorized(&url, Some(WRONG)).await.contains("Invalid API key"));
            let wrong_token = stand.server.url(&format!("/v1/stream?token={WRONG}"));
            assert!(unauthorized(&wrong_token, None).await.contains("Invalid API key"));
            // A flood of unauthenticated upgrades: each refused, none admitted.
            let flood = (0..100).map(|_| unauthorized(&url, None));
            futures_util::future::join_all(flood).await;
        })
        .await;
    let scrape = stand.scrape();
    let auth = |outcome: &str| {
        scrape.sum(
            "tts_auth_requests_total",
            &[("surface", "ws"), ("outcome", outcome)],
        )
    };
    assert_eq!(auth("missing"), 101.0);
    assert_eq!(auth("invalid"), 2.0);
    assert_eq!(auth("ok"), 2.0, "the two bystanders");
    assert_eq!(scrape.sum("tts_sessions_started_total", &[]), 2.0);
    let leaked = stand.log_lines(&[WRONG]);
    assert!(leaked.is_empty(), "a key reached the logs: {leaked:?}");
}

/// `ttsd serve` with its admin port on every interface (off loopback) and `config`.
fn off_loopback(name: &str, config: &str) -> ServerProcess {
    let path = crate::common::temp_path(&format!("robustness-{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "0.0.0.0:0",
        "--voice",
        ESPEAK,
        "--config",
        path.to_str().unwrap(),
    ];
    ServerProcess::start_with_args(env!("CARGO_BIN_EXE_ttsd"), &root(), &args).unwrap()
}

/// `method path` on the admin port with an optional bearer token: status and body.
async fn admin_call(
    server: &ServerProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let host = server
        .admin_base
        .trim_start_matches("http://")
        .replace("0.0.0.0", "127.0.0.1");
    let mut stream = TcpStream::connect(&host).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        raw.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

const MUTATIONS: [(&str, &str, &str); 3] = [
    ("PUT", "/admin/log-level", "debug"),
    ("POST", "/admin/alerts/1/ack", ""),
    ("PUT", "/admin/alerts/thresholds", "{}"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mutations_off_loopback_need_the_admin_token() {
    let token = crate::common::temp_path("robustness-admin-token.txt");
    std::fs::write(&token, "robustness-admin-token\n").unwrap();
    let stand = Stand::on(harness::turn().await, || off_loopback("admin-open", ""));
    let guarded = off_loopback(
        "admin-token",
        &format!("[server]\nadmin_token_file = {:?}\n", token.to_str().unwrap()),
    );
    stand
        .attack("admin mutations without a token", async {
            for (method, path, body) in MUTATIONS {
                let (status, reply) = admin_call(&stand.server, method, path, None, body).await;
                assert_eq!(status, 403, "{method} {path} with no token configured: {reply}");
                let (status, reply) = admin_call(&guarded, method, path, None, body).await;
                assert_eq!(status, 401, "{method} {path} without the token: {reply}");
                let (status, reply) = admin_call(&guarded, method, path, Some("guess"), body).await;
                assert_eq!(status, 401, "{method} {path} with a wrong token: {reply}");
            }
            // The right token and a filter that is not one: 400, the level unchanged.
            let (status, reply) = admin_call(
                &guarded,
                "PUT",
                "/admin/log-level",
                Some("robustness-admin-token"),
                "info,[[[",
            )
            .await;
            eprintln!("bad filter: {status} {reply}");
            assert_eq!(status, 400, "{reply}");
            // Reads stay open.
            let (status, _) = admin_call(&stand.server, "GET", "/metrics", None, "").await;
            assert_eq!(status, 200);
        })
        .await;
    let scrape = tts_test_support::Scrape::parse(
        &http_request(
            "GET",
            &guarded.admin_base.replace("0.0.0.0", "127.0.0.1"),
            "/metrics",
            None,
            None,
        )
        .unwrap()
        .body,
    )
    .unwrap();
    let auth = |outcome: &str| {
        scrape.sum(
            "tts_auth_requests_total",
            &[("surface", "admin"), ("outcome", outcome)],
        )
    };
    assert_eq!(auth("missing"), 3.0);
    assert_eq!(auth("invalid"), 3.0);
}
