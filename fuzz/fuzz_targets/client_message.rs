//! The WebSocket client message decoder, `tts_gateway::protocol::parse_client_message`.
//!
//! Invariants: it never panics; an accepted message re-encodes to JSON that decodes to the same message
//! (a round trip through the wire form); a rejection is `INVALID_MESSAGE` with a non-empty sentence whose
//! length is bounded by a constant plus a small multiple of the input (no amplification).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_gateway::protocol::{ClientMessage, parse_client_message};
use tts_gateway::{Command, ErrorCode};

/// A rejection may quote part of the input; it never grows past this many bytes.
const MAX_REJECTION_BYTES: usize = 512;

fuzz_target!(|data: &[u8]| {
    // WebSocket text messages are UTF-8 by the time they reach the decoder.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_message(text) {
        Ok(message) => {
            let again = parse_client_message(&encode(&message)).expect("a re-encoded message parses");
            assert_eq!(again, message, "round trip through the wire form");
        }
        Err(rejection) => {
            assert_eq!(rejection.code, ErrorCode::InvalidMessage);
            assert!(!rejection.message.is_empty());
            assert!(
                rejection.message.len() <= MAX_REJECTION_BYTES,
                "a {}-byte input got a {}-byte rejection: {:?}",
                text.len(),
                rejection.message.len(),
                rejection.message
            );
        }
    }
});

fn encode(message: &ClientMessage) -> String {
    let value = match message {
        ClientMessage::Text { text, is_final } => {
            serde_json::json!({"type": "text", "text": text, "is_final": is_final})
        }
        ClientMessage::Control(command) => {
            let command = match command {
                Command::Pause => "PAUSE",
                Command::Resume => "RESUME",
                Command::Stop => "STOP",
            };
            serde_json::json!({"type": "control", "command": command})
        }
        ClientMessage::Config { voice } => serde_json::json!({"type": "config", "voice": voice}),
    };
    value.to_string()
}
