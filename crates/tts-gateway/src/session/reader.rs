//! The reader half of a session: reads the socket, enforces per-message limits, parses, and forwards to
//! the driver in order. STOP also bumps the session's cancel generation here, the moment it is read, so
//! engines stop before the driver even sees it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tts_core::pool::CancelSource;

use crate::config::GatewayConfig;
use crate::metrics::{GatewayMetrics, MessageIn};
use crate::protocol::{ClientMessage, Command, Rejection, SessionError, parse_client_message};

/// What the reader hands the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A valid message and when it was read from the socket (the start of first-audio and barge-in clocks).
    Message {
        message: ClientMessage,
        read_at: Instant,
    },
    /// A message the client got wrong; the session goes on.
    Rejected(Rejection),
    /// Too many bad messages in the window: the session ends.
    Abuse,
    /// The client closed the connection or it broke.
    Closed,
    /// The client broke the WebSocket protocol: the connection is closed with this code.
    Violation(Violation),
}

/// A WebSocket protocol violation by the client and the close code it gets (RFC 6455, section 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

impl Violation {
    /// What the WebSocket layer's read error means for the client; `None` when the connection simply
    /// went away (reset, closed without a close frame).
    pub(crate) fn of(error: &tungstenite::Error) -> Option<Violation> {
        use tungstenite::error::ProtocolError;
        let (code, reason) = match error {
            // The client went away without a close frame: a disconnect, not a violation to answer.
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
            tungstenite::Error::Capacity(_) => (1009, "message too big"),
            tungstenite::Error::Utf8(_) => (1007, "invalid UTF-8 in a text message"),
            tungstenite::Error::Protocol(_) => (1002, "WebSocket protocol error"),
            _ => return None,
        };
        Some(Violation { code, reason })
    }
}

pub(crate) async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    tx: mpsc::Sender<Inbound>,
    cancel: CancelSource,
    config: GatewayConfig,
    metrics: Arc<GatewayMetrics>,
) {
    let window = Duration::from_secs(config.bad_message_window_seconds);
    let mut recent_bad: VecDeque<Instant> = VecDeque::new();
    while let Some(next) = stream.next().await {
        let read_at = Instant::now();
        let item = match next {
            Ok(Message::Text(text)) => check_text(text.as_str(), read_at, &config),
            Ok(Message::Binary(bytes)) if bytes.len() > config.max_message_bytes => {
                Inbound::Rejected(too_large(bytes.len(), &config))
            }
            Ok(Message::Binary(_)) => Inbound::Rejected(SessionError::BinaryMessage.into()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => break,
            Err(error) => {
                let inner = error.into_inner();
                match inner.downcast_ref::<tungstenite::Error>().and_then(Violation::of) {
                    Some(violation) => {
                        metrics.message_received(MessageIn::Invalid);
                        let _ = tx.send(Inbound::Violation(violation)).await;
                        return;
                    }
                    None => break,
                }
            }
        };
        if let Inbound::Message {
            message: ClientMessage::Control(Command::Stop),
            ..
        } = &item
        {
            cancel.cancel_all();
        }
        metrics.message_received(match &item {
            Inbound::Message {
                message: ClientMessage::Text { .. },
                ..
            } => MessageIn::Text,
            Inbound::Message {
                message: ClientMessage::Control(_),
                ..
            } => MessageIn::Control,
            Inbound::Message {
                message: ClientMessage::Config { .. },
                ..
            } => MessageIn::Config,
            _ => MessageIn::Invalid,
        });
        if matches!(item, Inbound::Rejected(_)) {
            while recent_bad
                .front()
                .is_some_and(|t| read_at.duration_since(*t) > window)
            {
                recent_bad.pop_front();
            }
            recent_bad.push_back(read_at);
            if recent_bad.len() > config.max_bad_messages as usize {
                let _ = tx.send(item).await;
                let _ = tx.send(Inbound::Abuse).await;
                return;
            }
        }
        if tx.send(item).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Inbound::Closed).await;
}

fn too_large(bytes: usize, config: &GatewayConfig) -> Rejection {
    SessionError::MessageTooLarge {
        bytes,
        limit: config.max_message_bytes,
    }
    .into()
}

fn check_text(text: &str, read_at: Instant, config: &GatewayConfig) -> Inbound {
    if text.len() > config.max_message_bytes {
        return Inbound::Rejected(too_large(text.len(), config));
    }
    match parse_client_message(text) {
        Ok(ClientMessage::Text { text, .. }) if text.chars().count() > config.max_text_chars => {
            Inbound::Rejected(
                SessionError::TextTooLong {
                    chars: text.chars().count(),
                    limit: config.max_text_chars,
                }
                .into(),
            )
        }
        Ok(message) => Inbound::Message { message, read_at },
        Err(rejection) => Inbound::Rejected(rejection),
    }
}

#[cfg(test)]
mod tests {
    use super::Violation;
    use tungstenite::error::{CapacityError, ProtocolError};

    fn code(error: tungstenite::Error) -> Option<u16> {
        Violation::of(&error).map(|violation| violation.code)
    }

    #[test]
    fn protocol_violations_get_their_close_codes_and_disconnects_get_none() {
        let too_big = CapacityError::MessageTooLong { size: 9, max_size: 8 };
        assert_eq!(code(tungstenite::Error::Capacity(too_big)), Some(1009));
        assert_eq!(code(tungstenite::Error::Utf8("bad".to_owned())), Some(1007));
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::UnexpectedContinueFrame
            )),
            Some(1002)
        );
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            None
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(code(tungstenite::Error::Io(reset)), None);
        assert_eq!(code(tungstenite::Error::ConnectionClosed), None);
    }
}
