//! A standalone OTLP/gRPC trace receiver on loopback, for benchmarks that need somewhere to export to.
//! Prints `otlp sink: http://127.0.0.1:PORT` once listening and the number of spans received every second;
//! exits after `--seconds` (default 600).

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let sink = tts_test_support::OtlpSink::start().await?;
    println!("otlp sink: {}", sink.endpoint());
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("spans received: {}", sink.spans().len());
    }
    Ok(())
}
