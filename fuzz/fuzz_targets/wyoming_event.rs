//! The Wyoming event reader (`crates/tts-gateway/src/wyoming/codec.rs`, compiled in here unchanged because
//! the module is private to the gateway).
//!
//! The input is a byte stream as a client would send it; events are read until the reader fails.
//! Invariants: no panic and no allocation past the limits; errors are short; every event read, written
//! back with `write_event`, reads back as the same event (JSON numbers compared to within rounding).
#![no_main]
#![allow(dead_code, unreachable_pub)]

#[path = "../../crates/tts-gateway/src/wyoming/codec.rs"]
mod codec;

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const LIMITS: codec::Limits = codec::Limits {
    idle: Duration::from_secs(5),
    body: Duration::from_secs(5),
    max_length: 16 * 1024,
};
/// Events read from one input at most (each costs at least one header byte anyway).
const MAX_EVENTS: usize = 1_000;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut reader = data;
        for _ in 0..MAX_EVENTS {
            match codec::read_event(&mut reader, LIMITS).await {
                Ok(event) => round_trip(&event).await,
                Err(error) => {
                    let text = error.to_string();
                    assert!(text.len() <= 256, "a {}-byte error: {text}", text.len());
                    break;
                }
            }
        }
    });
});

async fn round_trip(event: &codec::Event) {
    if let Some(payload) = &event.payload {
        assert!(!payload.is_empty() && payload.len() <= LIMITS.max_length);
    }
    let data = Value::Object(event.data.clone());
    let mut wire = Vec::new();
    codec::write_event(&mut wire, &event.kind, Some(&data), event.payload.as_deref())
        .await
        .expect("writing to memory");
    let mut reader = wire.as_slice();
    let again = codec::read_event(&mut reader, LIMITS)
        .await
        .expect("a written event reads back");
    assert!(reader.is_empty(), "the reader consumed exactly the event");
    assert_eq!(again.kind, event.kind);
    assert_eq!(again.payload, event.payload);
    assert!(
        same(&Value::Object(again.data), &data),
        "data changed in a round trip: {data}"
    );
}

/// JSON equality, with numbers equal when they are within rounding of each other (serde_json's default
/// float parser is not correctly rounded in the last bit).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
