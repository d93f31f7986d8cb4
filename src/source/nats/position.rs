//! Where a `type: nats` source stopped, in the store's `source_positions` table, written by
//! the same transaction as the counts (see [`crate::store::IngestBatch::source_positions`]):
//!
//! | key | value |
//! |---|---|
//! | `nats␟<source>␟<partition>␟` | the last stream sequence applied in that partition |
//! | `nats␟<source>␟<partition>␟<edge>` | the last position applied of that edge source (`format: sentinel`) |
//!
//! Values are a format byte and a u64 (little endian).

/// The format byte of a stored value.
const FORMAT: u8 = 1;

/// The prefix of every key of source `source`.
pub fn source_prefix(source: &str) -> String {
    format!("{KEY_PREFIX}{source}\u{1f}")
}

/// The prefix of every key of one partition (its sequence key is exactly this).
pub fn partition_key(source: &str, partition: &str) -> String {
    format!("{KEY_PREFIX}{source}\u{1f}{partition}\u{1f}")
}

/// The key of an edge source's position in one partition.
pub fn edge_key(partition_key: &str, edge: &str) -> String {
    format!("{partition_key}{edge}")
}

/// The prefix of every NATS key.
pub const KEY_PREFIX: &str = "nats\u{1f}";

/// Encodes a sequence or a position.
pub fn encode(n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(FORMAT);
    v.extend_from_slice(&n.to_le_bytes());
    v
}

/// Decodes [`encode`]'s output.
///
/// # Errors
///
/// An unknown format byte or a wrong length.
pub fn decode(b: &[u8]) -> Result<u64, String> {
    match b {
        [FORMAT, rest @ ..] if rest.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(rest);
            Ok(u64::from_le_bytes(a))
        }
        [FORMAT, ..] => Err(format!("{} bytes, expected 9", b.len())),
        [f, ..] => Err(format!("unknown format {f}")),
        [] => Err("empty record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keys_do_not_overlap() {
        assert_eq!(decode(&encode(u64::MAX - 3)).unwrap(), u64::MAX - 3);
        assert!(decode(&[]).is_err() && decode(&[2; 9]).is_err() && decode(&[1, 0]).is_err());
        let p1 = partition_key("agg", "1");
        let p10 = partition_key("agg", "10");
        assert!(
            !p10.starts_with(&p1),
            "partition 1's prefix must not cover partition 10"
        );
        assert!(edge_key(&p1, "web/app").starts_with(&p1));
        assert!(p1.starts_with(&source_prefix("agg")));
    }
}
