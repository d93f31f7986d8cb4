//! Where a CloudWatch source stopped in one log group: the timestamp of the newest event
//! counted and the ids of the events counted at that very millisecond. Stored in the
//! store's `source_positions` table by the same transaction as the counts of the events
//! before it (see [`crate::store::IngestBatch::source_positions`]).
//!
//! `FilterLogEvents` answers in timestamp order, so after a restart a query from that
//! millisecond returns every event not counted yet, plus the ones at that millisecond
//! already counted, which the ids tell apart. A `nextToken` is never stored: it expires.

/// The format byte of an encoded [`GroupPosition`].
const FORMAT: u8 = 1;

/// Event ids remembered at one millisecond at most (more is a flood at one instant; the
/// oldest are forgotten, and such events could be counted twice after a restart).
pub const MAX_IDS_AT_ONE_MS: usize = 100_000;

/// A log group's position. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPosition {
    /// Milliseconds since the epoch of the newest event counted (or where to start).
    pub timestamp: i64,
    /// xxh3 of `stream name \0 event id` of the events counted at `timestamp`, sorted.
    pub seen: Vec<u64>,
}

impl GroupPosition {
    /// A position before any event at `timestamp`.
    pub fn at(timestamp: i64) -> GroupPosition {
        GroupPosition {
            timestamp: timestamp.max(0),
            seen: Vec::new(),
        }
    }

    /// The identity of an event within its group (moto numbers events per stream, AWS per
    /// group: the stream name makes both unique).
    pub fn event_hash(stream: &str, event_id: &str) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(stream.as_bytes());
        h.update(&[0]);
        h.update(event_id.as_bytes());
        h.digest()
    }

    /// Whether the event `hash` at `timestamp` was counted (as far as this position knows:
    /// only events at its own millisecond are remembered).
    pub fn has(&self, timestamp: i64, hash: u64) -> bool {
        timestamp == self.timestamp && self.seen.binary_search(&hash).is_ok()
    }

    /// Records an event counted. Events come in timestamp order; an older one (should the
    /// service ever answer out of order) is counted but does not move the position.
    pub fn record(&mut self, timestamp: i64, hash: u64) {
        if timestamp > self.timestamp {
            self.timestamp = timestamp;
            self.seen.clear();
            self.seen.push(hash);
        } else if timestamp == self.timestamp
            && let Err(i) = self.seen.binary_search(&hash)
        {
            if self.seen.len() >= MAX_IDS_AT_ONE_MS {
                self.seen.remove(0);
                self.seen.insert(i.saturating_sub(1), hash);
            } else {
                self.seen.insert(i, hash);
            }
        }
    }

    /// The stored encoding: format byte, timestamp (i64 LE), count (u32 LE), hashes (u64 LE).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13 + 8 * self.seen.len());
        v.push(FORMAT);
        v.extend_from_slice(&self.timestamp.to_le_bytes());
        v.extend_from_slice(&(self.seen.len() as u32).to_le_bytes());
        for h in &self.seen {
            v.extend_from_slice(&h.to_le_bytes());
        }
        v
    }

    /// Decodes [`GroupPosition::encode`]'s output.
    ///
    /// # Errors
    ///
    /// What is wrong (unknown format, truncated).
    pub fn decode(b: &[u8]) -> Result<GroupPosition, String> {
        match b.first() {
            Some(&FORMAT) => {}
            Some(f) => return Err(format!("unknown format {f}")),
            None => return Err("empty record".into()),
        }
        if b.len() < 13 {
            return Err(format!("truncated record ({} bytes)", b.len()));
        }
        let timestamp = i64::from_le_bytes(b[1..9].try_into().unwrap_or([0; 8]));
        let n = u32::from_le_bytes(b[9..13].try_into().unwrap_or([0; 4])) as usize;
        let rest = &b[13..];
        if rest.len() != n * 8 {
            return Err(format!("{n} ids announced, {} bytes follow", rest.len()));
        }
        let mut seen: Vec<u64> = rest
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        Ok(GroupPosition { timestamp, seen })
    }
}

/// The `source_positions` key of a source's log group.
pub fn key(source: &str, group: &str) -> String {
    format!("{KEY_PREFIX}{source}\u{1f}{group}")
}

/// The prefix of every CloudWatch key.
pub const KEY_PREFIX: &str = "cloudwatch\u{1f}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tells_counted_events_apart() {
        let mut p = GroupPosition::at(1000);
        p.record(1000, 5);
        p.record(1000, 3);
        p.record(1000, 5);
        assert_eq!(p.seen, [3, 5]);
        assert!(p.has(1000, 3) && !p.has(1000, 4) && !p.has(999, 3));
        let back = GroupPosition::decode(&p.encode()).unwrap();
        assert_eq!(back, p);
        p.record(1001, 9);
        assert_eq!((p.timestamp, p.seen.as_slice()), (1001, &[9][..]));
        p.record(900, 1);
        assert_eq!(p.timestamp, 1001, "an older event does not move it back");
        assert!(GroupPosition::decode(&[1, 0]).is_err());
        assert!(GroupPosition::decode(&[2; 13]).is_err());
        // The golden store's row (store/golden.rs) decodes.
        let golden = [
            1, 0x10, 0x27, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            GroupPosition::decode(&golden).unwrap(),
            GroupPosition {
                timestamp: 10_000,
                seen: vec![7]
            }
        );
    }
}
