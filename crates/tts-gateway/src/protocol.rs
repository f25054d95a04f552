//! The WebSocket wire protocol: client messages in, server messages out, error codes.
//!
//! `docs/protocol.md` is the reference for clients; this module is the one place that turns wire bytes
//! into typed messages and typed events back into wire bytes. Parsing never panics and every failure names
//! what was wrong, so a bad message costs its session one `error` message and nothing else.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tts_core::audio::{FRAME_BYTES, Frame};

mod error;

pub use error::SessionError;

/// How audio frames travel to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON `audio` messages with base64 PCM (the original protocol).
    #[default]
    Base64,
    /// Binary messages: 8-byte little-endian sequence number, then 1920 bytes of PCM.
    Binary,
}

/// Bytes of the header in front of the PCM in a binary audio message.
pub const BINARY_HEADER_BYTES: usize = 8;

/// A control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Pause,
    Resume,
    Stop,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Pause => "PAUSE",
            Command::Resume => "RESUME",
            Command::Stop => "STOP",
        }
    }
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Text { text: String, is_final: bool },
    Control(Command),
    Config { voice: String },
}

/// Error codes sent in `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidMessage,
    TextTooLong,
    MessageTooLarge,
    UnknownVoice,
    SynthesisFailed,
    WorkerUnavailable,
    Overloaded,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidMessage,
        ErrorCode::TextTooLong,
        ErrorCode::MessageTooLarge,
        ErrorCode::UnknownVoice,
        ErrorCode::SynthesisFailed,
        ErrorCode::WorkerUnavailable,
        ErrorCode::Overloaded,
        ErrorCode::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::TextTooLong => "TEXT_TOO_LONG",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::UnknownVoice => "UNKNOWN_VOICE",
            ErrorCode::SynthesisFailed => "SYNTHESIS_FAILED",
            ErrorCode::WorkerUnavailable => "WORKER_UNAVAILABLE",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// A message the client got wrong, as it goes on the wire: the code and a sentence naming the problem.
/// Made only from a [`SessionError`], whose variant decides the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl From<SessionError> for Rejection {
    fn from(error: SessionError) -> Self {
        Self {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

impl Rejection {
    fn invalid(message: impl Into<String>) -> Self {
        SessionError::Malformed(message.into()).into()
    }
}

/// Parses one text message from the client.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::invalid(format!("message is not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Rejection::invalid(
            "message must be a JSON object with a \"type\" field",
        ));
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(Rejection::invalid("\"type\" must be a string")),
        None => return Err(Rejection::invalid("message has no \"type\" field")),
    };
    match kind {
        "text" => {
            let text = match object.get("text") {
                Some(Value::String(text)) => text.clone(),
                Some(_) => return Err(Rejection::invalid("\"text\" must be a string")),
                None => return Err(Rejection::invalid("text message has no \"text\" field")),
            };
            let is_final = match object.get("is_final") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(Rejection::invalid("\"is_final\" must be true or false")),
            };
            Ok(ClientMessage::Text { text, is_final })
        }
        "control" => match object.get("command").and_then(Value::as_str) {
            Some("PAUSE") => Ok(ClientMessage::Control(Command::Pause)),
            Some("RESUME") => Ok(ClientMessage::Control(Command::Resume)),
            Some("STOP") => Ok(ClientMessage::Control(Command::Stop)),
            Some(other) => Err(Rejection::invalid(format!(
                "unknown control command {}; expected PAUSE, RESUME or STOP",
                quote(other)
            ))),
            None => Err(Rejection::invalid("control message needs a string \"command\"")),
        },
        "config" => match object.get("voice") {
            Some(Value::String(voice)) => Ok(ClientMessage::Config { voice: voice.clone() }),
            _ => Err(Rejection::invalid("config message needs a string \"voice\"")),
        },
        other => Err(Rejection::invalid(format!(
            "unknown message type {}; expected \"text\", \"control\" or \"config\"",
            quote(other)
        ))),
    }
}

/// Chars of a client's value quoted back in a rejection at most; longer values are cut, so a rejection
/// never grows with the message (escaped, a control char takes five bytes for one).
const QUOTED_CHARS: usize = 40;

/// `value` quoted and escaped for a rejection, cut after [`QUOTED_CHARS`] chars with `…` outside the quotes.
fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Why an utterance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UtteranceEndReason {
    Completed,
    Stopped,
    Failed,
}

impl UtteranceEndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UtteranceEndReason::Completed => "completed",
            UtteranceEndReason::Stopped => "stopped",
            UtteranceEndReason::Failed => "failed",
        }
    }
}

/// Messages from the server, other than audio.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    SessionStart {
        session_id: &'a str,
        sample_rate: u32,
        frame_ms: u32,
        voice: &'a str,
        encoding: Encoding,
    },
    UtteranceEnd {
        utterance_id: u64,
        frames: u64,
        reason: UtteranceEndReason,
        underruns: u64,
    },
    SessionEnd {
        session_id: &'a str,
        reason: &'a str,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; an empty object would still be valid JSON.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// An audio frame as a JSON text message.
pub fn audio_json(frame: &Frame, sequence: u64) -> String {
    let mut out = String::with_capacity(2_660);
    out.push_str(r#"{"type":"audio","pcm":""#);
    base64::engine::general_purpose::STANDARD.encode_string(frame.bytes(), &mut out);
    out.push_str(r#"","sample_rate":48000,"frame_ms":20,"sequence":"#);
    out.push_str(&sequence.to_string());
    out.push('}');
    out
}

/// An audio frame as a binary message: sequence (u64 LE) then the PCM.
pub fn audio_binary(frame: &Frame, sequence: u64) -> bytes::Bytes {
    let mut out = Vec::with_capacity(BINARY_HEADER_BYTES + FRAME_BYTES);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(frame.bytes());
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_message_types() {
        assert_eq!(
            parse_client_message(r#"{"type":"text","text":"Hi.","is_final":false}"#).unwrap(),
            ClientMessage::Text {
                text: "Hi.".into(),
                is_final: false
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"text","text":"Hi."}"#).unwrap(),
            ClientMessage::Text {
                text: "Hi.".into(),
                is_final: true
            },
            "is_final defaults to true, as in the original protocol"
        );
        assert_eq!(
            parse_client_message(r#"{"type":"control","command":"STOP"}"#).unwrap(),
            ClientMessage::Control(Command::Stop)
        );
        assert_eq!(
            parse_client_message(r#"{"type":"config","voice":"espeak-en-us"}"#).unwrap(),
            ClientMessage::Config {
                voice: "espeak-en-us".into()
            }
        );
    }

    #[test]
    fn rejections_name_the_problem() {
        for (input, needle) in [
            ("{not json", "not valid JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"text":"x"}"#, "no \"type\""),
            (r#"{"type":"dance"}"#, "unknown message type \"dance\""),
            (
                r#"{"type":"control","command":"JUMP"}"#,
                "unknown control command \"JUMP\"",
            ),
            (r#"{"type":"text","text":5}"#, "\"text\" must be a string"),
            (r#"{"type":"text","text":"a","is_final":"yes"}"#, "is_final"),
            (r#"{"type":"stop"}"#, "unknown message type \"stop\";"),
        ] {
            let err = parse_client_message(input).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidMessage);
            assert!(err.message.contains(needle), "{input}: {}", err.message);
        }
    }

    /// The `client_message` fuzz target's bound on rejections: an unknown type or command used to be
    /// quoted back whole and escaped, so a message of control chars got a rejection five times its size.
    #[test]
    fn rejections_quote_at_most_a_few_chars_of_the_input() {
        let long = "\u{1}".repeat(10_000);
        for input in [
            serde_json::json!({"type": long}).to_string(),
            serde_json::json!({"type": "control", "command": long}).to_string(),
        ] {
            let err = parse_client_message(&input).unwrap_err();
            assert!(
                err.message.len() < 300,
                "{} bytes: {}",
                err.message.len(),
                err.message
            );
            assert!(err.message.contains("\\u{1}\\u{1}\"…"), "{}", err.message);
        }
        let err = parse_client_message(r#"{"type":"control","command":"ÉTÉ"}"#).unwrap_err();
        assert!(
            err.message.contains("\"ÉTÉ\";"),
            "short values are quoted whole: {}",
            err.message
        );
    }

    #[test]
    fn audio_json_carries_exactly_one_frame() {
        let frame = Frame::from_samples(&[7i16; tts_core::audio::FRAME_SAMPLES]);
        let json: Value = serde_json::from_str(&audio_json(&frame, 42)).unwrap();
        assert_eq!(json["type"], "audio");
        assert_eq!(json["sequence"], 42);
        let pcm = base64::engine::general_purpose::STANDARD
            .decode(json["pcm"].as_str().unwrap())
            .unwrap();
        assert_eq!(pcm.len(), FRAME_BYTES);
        assert_eq!(&pcm[..2], &7i16.to_le_bytes());
        let binary = audio_binary(&frame, 42);
        assert_eq!(binary.len(), BINARY_HEADER_BYTES + FRAME_BYTES);
        assert_eq!(u64::from_le_bytes(binary[..8].try_into().unwrap()), 42);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(input in ".{0,200}") {
            let _ = parse_client_message(&input);
        }

        #[test]
        fn text_round_trips(text in ".{0,100}", is_final: bool) {
            let json = serde_json::json!({"type": "text", "text": text, "is_final": is_final}).to_string();
            prop_assert_eq!(parse_client_message(&json).unwrap(), ClientMessage::Text { text, is_final });
        }
    }
}
