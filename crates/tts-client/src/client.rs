//! A streaming-protocol client that keeps its own clocks.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Something the server sent, as the client understood it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    SessionStart {
        session_id: String,
        voice: String,
        sample_rate: u64,
        frame_ms: u64,
    },
    /// One audio frame: its sequence number and its PCM bytes (base64-decoded or the binary payload).
    Audio {
        sequence: u64,
        pcm: Vec<u8>,
    },
    UtteranceEnd {
        utterance_id: u64,
        frames: u64,
        reason: String,
        underruns: u64,
    },
    SessionEnd {
        session_id: String,
        reason: String,
    },
    Error {
        code: String,
        message: String,
    },
    /// The server closed the connection.
    Closed,
    /// A JSON message of another type (kept whole).
    Other(Value),
}

/// An event and the client's clock when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub event: Event,
    pub at: Instant,
}

/// Why the client could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("cannot send: {0}")]
    Send(String),
    #[error("cannot receive: {0}")]
    Receive(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("nothing received within {0:?}")]
    Timeout(Duration),
}

/// One WebSocket session with a ttsd server.
pub struct StreamClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl StreamClient {
    /// Connects to a full URL such as `ws://127.0.0.1:8080/v1/stream?voice=espeak-en-us`.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        // TCP_NODELAY, as a realtime client would: STOP must not wait behind Nagle's algorithm.
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        Ok(Self { socket })
    }

    /// Connects to a `wss://` URL, trusting what `tls` trusts (e.g. a private CA's certificate).
    pub async fn connect_tls(
        url: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        Ok(Self { socket })
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str, is_final: bool) -> Result<Instant, ClientError> {
        self.send_json(json!({"type": "text", "text": text, "is_final": is_final}))
            .await
    }

    /// Sends a control command (`PAUSE`, `RESUME`, `STOP`).
    pub async fn send_control(&mut self, command: &str) -> Result<Instant, ClientError> {
        self.send_json(json!({"type": "control", "command": command}))
            .await
    }

    pub async fn send_json(&mut self, value: Value) -> Result<Instant, ClientError> {
        self.send_raw(Message::Text(value.to_string().into())).await
    }

    /// Sends any WebSocket message (for malformed-input tests); returns the instant just before it was
    /// handed to the socket. Stamped before, not after: a task resumed late after the write would start
    /// the client's clock after the server had already read the message, and a latency measured from it
    /// could come out shorter than the server's own.
    pub async fn send_raw(&mut self, message: Message) -> Result<Instant, ClientError> {
        let sent = Instant::now();
        self.socket
            .send(message)
            .await
            .map_err(|e| ClientError::Send(e.to_string()))?;
        Ok(sent)
    }

    /// The next event, waiting at most `limit`.
    pub async fn next(&mut self, limit: Duration) -> Result<Received, ClientError> {
        loop {
            let message = match tokio::time::timeout(limit, self.socket.next()).await {
                Err(_) => return Err(ClientError::Timeout(limit)),
                Ok(None) => {
                    return Ok(Received {
                        event: Event::Closed,
                        at: Instant::now(),
                    });
                }
                Ok(Some(Err(e))) => {
                    return match e {
                        tokio_tungstenite::tungstenite::Error::ConnectionClosed
                        | tokio_tungstenite::tungstenite::Error::AlreadyClosed => Ok(Received {
                            event: Event::Closed,
                            at: Instant::now(),
                        }),
                        other => Err(ClientError::Receive(other.to_string())),
                    };
                }
                Ok(Some(Ok(message))) => message,
            };
            let at = Instant::now();
            let event = match message {
                Message::Text(text) => parse_event(text.as_str())?,
                Message::Binary(bytes) => {
                    if bytes.len() < 8 {
                        return Err(ClientError::Protocol(format!(
                            "binary message of {} bytes",
                            bytes.len()
                        )));
                    }
                    let mut header = [0u8; 8];
                    header.copy_from_slice(&bytes[..8]);
                    Event::Audio {
                        sequence: u64::from_le_bytes(header),
                        pcm: bytes[8..].to_vec(),
                    }
                }
                Message::Close(_) => Event::Closed,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            return Ok(Received { event, at });
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

fn parse_event(text: &str) -> Result<Event, ClientError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ClientError::Protocol(format!("server sent bad JSON: {e}")))?;
    let str_of = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let u64_of = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or_default();
    Ok(match value.get("type").and_then(Value::as_str) {
        Some("session_start") => Event::SessionStart {
            session_id: str_of("session_id"),
            voice: str_of("voice"),
            sample_rate: u64_of("sample_rate"),
            frame_ms: u64_of("frame_ms"),
        },
        Some("audio") => {
            let pcm = base64::engine::general_purpose::STANDARD
                .decode(str_of("pcm"))
                .map_err(|e| ClientError::Protocol(format!("audio pcm is not base64: {e}")))?;
            Event::Audio {
                sequence: u64_of("sequence"),
                pcm,
            }
        }
        Some("utterance_end") => Event::UtteranceEnd {
            utterance_id: u64_of("utterance_id"),
            frames: u64_of("frames"),
            reason: str_of("reason"),
            underruns: u64_of("underruns"),
        },
        Some("session_end") => Event::SessionEnd {
            session_id: str_of("session_id"),
            reason: str_of("reason"),
        },
        Some("error") => Event::Error {
            code: str_of("code"),
            message: str_of("message"),
        },
        _ => Event::Other(value),
    })
}
