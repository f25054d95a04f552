//! Wyoming framing, as the `wyoming` Python package reads and writes it: one JSON header line
//! (`type`, optional `data`, `data_length`, `payload_length`, `version`), then `data_length` bytes of JSON
//! merged into `data`, then `payload_length` bytes of payload.
//!
//! Every length is checked before anything is allocated or awaited, and every read after the header's
//! first byte is bounded in time, so a header that never ends, an oversize length or a `payload_length`
//! that promises more than arrives ends that connection with an error, never the process.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// The protocol version written in every header: the `wyoming` package release this was matched to.
pub(crate) const VERSION: &str = "1.10.2";
/// Longest header line accepted.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) kind: String,
    pub(crate) data: Map<String, Value>,
    pub(crate) payload: Option<Vec<u8>>,
}

/// How long reads may take and how much they may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Waiting for the first byte of the next header.
    pub(crate) idle: Duration,
    /// The rest of an event once its header has begun.
    pub(crate) body: Duration,
    /// `data_length` and `payload_length` each.
    pub(crate) max_length: usize,
}

/// Why no event could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("no event for {0:?}")]
    Idle(Duration),
    #[error("the header line is longer than {MAX_HEADER_BYTES} bytes")]
    HeaderTooLong,
    #[error("{field} is {length} bytes; the limit is {limit}")]
    TooLong {
        field: &'static str,
        length: u64,
        limit: usize,
    },
    #[error("{field} promised {length} bytes, which did not arrive within {seconds} s")]
    Incomplete {
        field: &'static str,
        length: usize,
        seconds: u64,
    },
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// Size errors, as opposed to malformed or truncated events.
    pub(crate) fn is_too_long(&self) -> bool {
        matches!(self, ReadError::HeaderTooLong | ReadError::TooLong { .. })
    }
}

/// Reads the next event.
pub(crate) async fn read_event<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limits: Limits,
) -> Result<Event, ReadError> {
    // Wait for the header's first byte without a deadline tighter than the idle limit.
    match timeout(limits.idle, reader.fill_buf()).await {
        Err(_) => return Err(ReadError::Idle(limits.idle)),
        Ok(Ok([])) => return Err(ReadError::Closed),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(error.into()),
    }
    let seconds = limits.body.as_secs();
    let mut line = Vec::new();
    let read = timeout(
        limits.body,
        (&mut *reader)
            .take(MAX_HEADER_BYTES as u64 + 1)
            .read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| ReadError::Incomplete {
        field: "the header line",
        length: line.len(),
        seconds,
    })??;
    if line.last() != Some(&b'\n') {
        return Err(if read > MAX_HEADER_BYTES {
            ReadError::HeaderTooLong
        } else {
            ReadError::Closed
        });
    }
    let header: Value = serde_json::from_slice(&line).map_err(|e| ReadError::Malformed(e.to_string()))?;
    let Value::Object(mut header) = header else {
        return Err(ReadError::Malformed("the header is not a JSON object".into()));
    };
    let kind = match header.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(ReadError::Malformed("the header has no string \"type\"".into())),
    };
    let mut data = match header.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(ReadError::Malformed("\"data\" is not an object".into())),
    };
    let data_length = length(&header, "data_length", limits.max_length)?;
    let payload_length = length(&header, "payload_length", limits.max_length)?;
    if data_length > 0 {
        let bytes = read_exact(reader, "data_length", data_length, limits.body).await?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(extra)) => data.extend(extra),
            _ => return Err(ReadError::Malformed("the data block is not a JSON object".into())),
        }
    }
    let payload = if payload_length > 0 {
        Some(read_exact(reader, "payload_length", payload_length, limits.body).await?)
    } else {
        None
    };
    Ok(Event { kind, data, payload })
}

/// A length field: absent or null is 0; anything but a non-negative integer within `limit` is an error.
fn length(header: &Map<String, Value>, field: &'static str, limit: usize) -> Result<usize, ReadError> {
    match header.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(value) => {
            let length = value
                .as_u64()
                .ok_or_else(|| ReadError::Malformed(format!("{field} is not a non-negative integer")))?;
            if length > limit as u64 {
                return Err(ReadError::TooLong { field, length, limit });
            }
            Ok(length as usize)
        }
    }
}

async fn read_exact<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    field: &'static str,
    length: usize,
    limit: Duration,
) -> Result<Vec<u8>, ReadError> {
    let mut bytes = vec![0; length];
    match timeout(limit, reader.read_exact(&mut bytes)).await {
        Ok(Ok(_)) => Ok(bytes),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(ReadError::Incomplete {
            field,
            length,
            seconds: limit.as_secs(),
        }),
    }
}

/// Writes one event: the header line, the data block, the payload.
pub(crate) async fn write_event<W: AsyncWrite + Unpin>(
    writer: &mut W,
    kind: &str,
    data: Option<&Value>,
    payload: Option<&[u8]>,
) -> std::io::Result<()> {
    let data_bytes = match data {
        Some(data) if data.as_object().is_some_and(|d| !d.is_empty()) => Some(serde_json::to_vec(data)?),
        _ => None,
    };
    let mut header = serde_json::json!({"type": kind, "version": VERSION});
    if let Some(bytes) = &data_bytes {
        header["data_length"] = bytes.len().into();
    }
    if let Some(payload) = payload.filter(|p| !p.is_empty()) {
        header["payload_length"] = payload.len().into();
    }
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    out.extend(data_bytes.unwrap_or_default());
    out.extend_from_slice(payload.unwrap_or_default());
    writer.write_all(&out).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    const LIMITS: Limits = Limits {
        idle: Duration::from_secs(5),
        body: Duration::from_millis(200),
        max_length: 1024,
    };

    async fn read(bytes: &[u8]) -> Result<Event, ReadError> {
        read_event(&mut BufReader::new(bytes), LIMITS).await
    }

    #[tokio::test]
    async fn round_trips_what_it_writes() {
        let mut out = Vec::new();
        let data = serde_json::json!({"rate": 22050, "width": 2, "channels": 1});
        write_event(&mut out, "audio-chunk", Some(&data), Some(&[1, 2, 3, 4]))
            .await
            .unwrap();
        let event = read(&out).await.unwrap();
        assert_eq!(event.kind, "audio-chunk");
        assert_eq!(event.data["rate"], 22050);
        assert_eq!(event.payload.as_deref(), Some(&[1u8, 2, 3, 4][..]));
    }

    #[tokio::test]
    async fn merges_inline_data_with_the_data_block() {
        let block = br#"{"text":"hello"}"#;
        let mut bytes = format!(
            "{{\"type\":\"synthesize\",\"data\":{{\"voice\":{{\"name\":\"x\"}}}},\"data_length\":{}}}\n",
            block.len()
        )
        .into_bytes();
        bytes.extend_from_slice(block);
        let event = read(&bytes).await.unwrap();
        assert_eq!(event.data["text"], "hello");
        assert_eq!(event.data["voice"]["name"], "x");
    }

    #[tokio::test]
    async fn refuses_bad_framing() {
        let too_long = read(b"{\"type\":\"x\",\"payload_length\":4096}\n")
            .await
            .unwrap_err();
        assert!(too_long.is_too_long(), "{too_long}");
        let negative = read(b"{\"type\":\"x\",\"payload_length\":-1}\n")
            .await
            .unwrap_err();
        assert!(matches!(negative, ReadError::Malformed(_)), "{negative}");
        let not_json = read(b"hello\n").await.unwrap_err();
        assert!(matches!(not_json, ReadError::Malformed(_)), "{not_json}");
        let no_type = read(b"{\"data\":{}}\n").await.unwrap_err();
        assert!(matches!(no_type, ReadError::Malformed(_)), "{no_type}");
        let huge_header = vec![b' '; MAX_HEADER_BYTES + 10];
        assert!(read(&huge_header).await.unwrap_err().is_too_long());
    }

    #[tokio::test]
    async fn a_payload_that_never_arrives_times_out() {
        let (mut client, server) = tokio::io::duplex(4096);
        client
            .write_all(b"{\"type\":\"audio-chunk\",\"payload_length\":100}\n0123456789")
            .await
            .unwrap();
        let error = read_event(&mut BufReader::new(server), LIMITS).await.unwrap_err();
        assert!(matches!(error, ReadError::Incomplete { .. }), "{error}");
        drop(client);
    }
}
