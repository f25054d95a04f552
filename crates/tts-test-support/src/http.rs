//! A minimal blocking HTTP/1.1 client for loopback admin endpoints (no TLS, no redirects).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Status code and body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    /// The body as text (lossy for binary bodies; use `bytes` for those).
    pub body: String,
    pub bytes: Vec<u8>,
}

/// `GET base + path`, e.g. `http_request("GET", "http://127.0.0.1:8081", "/metrics", None, None)`.
pub fn http_request(
    method: &str,
    base: &str,
    path: &str,
    accept: Option<&str>,
    body: Option<&str>,
) -> Result<Response, String> {
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {base}"))?;
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(accept) = accept {
        request.push_str(&format!("Accept: {accept}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header/body separator")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let bytes = if chunked { dechunk(rest) } else { rest.to_vec() };
    Ok(Response {
        status,
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
    })
}

pub fn http_get(base: &str, path: &str) -> Result<Response, String> {
    http_request("GET", base, path, None, None)
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { break };
        let tail = &rest[line_end + 2..];
        if size == 0 || tail.len() < size {
            break;
        }
        out.extend_from_slice(&tail[..size]);
        rest = tail[size..].strip_prefix(b"\r\n").unwrap_or(&tail[size..]);
    }
    out
}
