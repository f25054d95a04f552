//! Just enough of the protobuf wire format to take an ONNX model apart and put pieces of it back
//! together without decoding what it does not need.
//!
//! A message is read as a list of [`Field`]s, each keeping its exact bytes (tag included), so a field
//! that is copied is copied byte for byte: nothing the model holds (initializers, opsets, attributes,
//! value_info, metadata, fields of a newer ONNX) can be lost in a round trip, which a schema-based
//! decoder that drops unknown fields could not promise.

/// One field of a message as it sits on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) struct Field<'a> {
    pub(super) number: u32,
    /// The whole field: tag, length prefix (if any) and payload.
    pub(super) raw: &'a [u8],
    /// The payload of a length-delimited field (a string, bytes or a nested message); empty otherwise.
    pub(super) payload: &'a [u8],
    /// The wire type (the tag's low three bits).
    kind: u8,
}

impl<'a> Field<'a> {
    pub(super) fn as_str(&self) -> Result<&'a str, String> {
        std::str::from_utf8(self.payload).map_err(|_| format!("field {} is not UTF-8", self.number))
    }

    /// The integers of a (repeated) integer field: its value when it is a varint, every value when it is
    /// packed.
    pub(super) fn uints(&self) -> Result<Vec<u64>, String> {
        let (bytes, mut at) = match self.kind {
            VARINT => {
                let mut at = 0;
                varint(self.raw, &mut at)?; // the tag
                (self.raw, at)
            }
            LEN => (self.payload, 0),
            other => {
                return Err(format!(
                    "field {} has wire type {other}, not an integer",
                    self.number
                ));
            }
        };
        let mut out = Vec::new();
        while at < bytes.len() {
            out.push(varint(bytes, &mut at)?);
        }
        Ok(out)
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The first field numbered `number` as a string ("" when there is none, as protobuf reads a missing
/// string).
pub(super) fn str_field<'a>(fields: &[Field<'a>], number: u32) -> Result<&'a str, String> {
    Ok(fields
        .iter()
        .find(|f| f.number == number)
        .map(Field::as_str)
        .transpose()?
        .unwrap_or(""))
}

/// The first integer of the first field numbered `number` (`None` when there is no such field).
pub(super) fn first_uint(fields: &[Field<'_>], number: u32) -> Result<Option<u64>, String> {
    Ok(fields
        .iter()
        .find(|f| f.number == number)
        .map(Field::uints)
        .transpose()?
        .and_then(|v| v.first().copied()))
}

/// Splits a message into its fields, in wire order.
pub(super) fn fields(bytes: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let tag = varint(bytes, &mut at)?;
        let number = u32::try_from(tag >> 3).map_err(|_| "field number out of range")?;
        let kind = (tag & 7) as u8;
        let (payload_start, end) = match kind {
            VARINT => {
                varint(bytes, &mut at)?;
                (at, at)
            }
            FIXED64 => (at + 8, at + 8),
            FIXED32 => (at + 4, at + 4),
            LEN => {
                let len = usize::try_from(varint(bytes, &mut at)?).map_err(|_| "length out of range")?;
                (at, at.checked_add(len).ok_or("length out of range")?)
            }
            other => return Err(format!("unsupported wire type {other} (field {number})")),
        };
        if end > bytes.len() {
            return Err(format!("field {number} runs past the end of its message"));
        }
        let payload = if payload_start == end {
            &[][..]
        } else {
            &bytes[payload_start..end]
        };
        out.push(Field {
            number,
            raw: &bytes[start..end],
            payload,
            kind,
        });
        at = end;
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length-delimited field.
pub(super) fn put_len(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(LEN));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends a varint field.
pub(super) fn put_uint(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, (u64::from(number) << 3) | u64::from(VARINT));
    put_varint(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_exact_bytes_and_round_trip() {
        let mut message = Vec::new();
        put_uint(&mut message, 1, 300);
        put_len(&mut message, 2, b"hello");
        message.extend_from_slice(&[(3 << 3) | 5, 1, 2, 3, 4]);
        message.extend_from_slice(&[(4 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        let parsed = fields(&message).unwrap();
        assert_eq!(
            parsed.iter().map(|f| f.number).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(parsed[1].as_str().unwrap(), "hello");
        assert_eq!(parsed[0].uints().unwrap(), vec![300]);
        assert!(parsed[2].uints().is_err());
        let mut packed = Vec::new();
        put_len(&mut packed, 8, &[1, 0xac, 0x02, 7]);
        assert_eq!(fields(&packed).unwrap()[0].uints().unwrap(), vec![1, 300, 7]);
        let rebuilt: Vec<u8> = parsed.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(rebuilt, message);
    }

    #[test]
    fn truncated_and_unsupported_input_is_an_error() {
        assert!(fields(&[(2 << 3) | 2, 10, b'a']).is_err());
        assert!(fields(&[0x80]).is_err());
        assert!(fields(&[(1 << 3) | 3]).is_err());
    }
}
