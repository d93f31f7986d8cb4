//! The versioned value encoding of the stored records (incidents, events, fix jobs, fixes):
//! one format byte, then the value — its JSON ([`encode`]), or for the hot records
//! (incidents and events since format 2) a compact binary body ([`encode_bin`]: postcard,
//! varint integers and length-prefixed strings, no field names). A reader refuses a format
//! byte newer than it knows (a newer Sentinel wrote it) instead of misreading it; a new format
//! is a new byte and a decoder for the old one.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A stored value that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An empty value.
    #[error("empty value")]
    Empty,
    /// Written by a newer Sentinel: (found, the newest this one knows).
    #[error("value format {0} is newer than this Sentinel understands ({1})")]
    Newer(u8, u8),
    /// Not a valid record.
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// `format` then the JSON of `value`.
pub(crate) fn encode<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(format);
    // Plain data (no maps with non-string keys, no failing Serialize impls) always serialises.
    if serde_json::to_writer(&mut out, value).is_err() {
        out.truncate(1);
    }
    out
}

/// `format` then the postcard encoding of `value` (a plain struct: no `skip_serializing_if`,
/// no untagged or flattened fields, which a format without field names cannot express).
pub(crate) fn encode_bin<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(format);
    match postcard::to_extend(value, out) {
        Ok(out) => out,
        // Plain data always serialises; an empty body decodes as invalid, never as wrong.
        Err(_) => vec![format],
    }
}

/// Decodes the body (after the format byte) of an [`encode_bin`] value: the whole body must
/// be one `T`.
///
/// # Errors
///
/// [`DecodeError::Invalid`] when it is not.
pub(crate) fn decode_bin<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(DecodeError::Invalid(format!(
            "{} bytes after the record",
            rest.len()
        ))),
        Err(e) => Err(DecodeError::Invalid(e.to_string())),
    }
}

/// Decodes [`encode`]'s output, written with format byte `format`.
///
/// # Errors
///
/// [`DecodeError`]: empty, a newer format, or not a valid `T`.
pub(crate) fn decode<T: DeserializeOwned>(format: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&f, body)) if f == format => {
            serde_json::from_slice(body).map_err(|e| DecodeError::Invalid(e.to_string()))
        }
        Some((&f, _)) if f > format => Err(DecodeError::Newer(f, format)),
        Some((&f, _)) => Err(DecodeError::Invalid(format!("unknown format byte {f}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let bytes = encode(3, &vec!["a", "b"]);
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Vec<String>>(3, &bytes).unwrap(), ["a", "b"]);
        let mut newer = bytes.clone();
        newer[0] = 4;
        assert_eq!(
            decode::<Vec<String>>(3, &newer),
            Err(DecodeError::Newer(4, 3))
        );
        newer[0] = 2;
        assert!(matches!(
            decode::<Vec<String>>(3, &newer),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode::<Vec<String>>(3, &bytes[..3]),
            Err(DecodeError::Invalid(_))
        ));
        assert_eq!(decode::<Vec<String>>(3, &[]), Err(DecodeError::Empty));
    }
}
