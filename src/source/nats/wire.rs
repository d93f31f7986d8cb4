//! What a Sentinel edge publishes (`format: sentinel`): one message holds error lines of one
//! edge source for one partition, in the order they were read.
//!
//! ```json
//! {"v":1,"edge":"web-1/app/…","lines":[{"at":1234,"t":1700000000000,"fp":"9f…","key":"PACT:a:b","line":"ERROR …"}]}
//! ```
//!
//! `edge` names where the lines were read (host, source, file identity); `at` is each
//! line's position there (the byte offset just after it), increasing within one `edge`.
//! An aggregator applies a line only when `at` is beyond the last position it applied for
//! that `edge` in that partition (committed with the counts), so a republish after an edge's
//! crash — even one outside the server's duplicate window — counts nothing twice. `fp` is
//! the fingerprint the edge computed (it chose the partition, `fp mod partitions`); `key`
//! the PACT key it found. The aggregator derives both again from `line` with the same code,
//! so that its own manifest attributes the line.

use serde::{Deserialize, Serialize};

/// The format version this build writes and reads.
pub const VERSION: u8 = 1;

/// One published message. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeMessage {
    /// Format version ([`VERSION`]).
    pub v: u8,
    /// The edge source's identity (host, source, file).
    pub edge: String,
    /// The lines have no position at their edge source (webhook events, CloudWatch events,
    /// a command's output or standard input that an edge forwarded):
    /// each is applied once with its message (the stream sequence), without the position
    /// check; `key` is then the event's key field, used when the line carries none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpositioned: bool,
    /// The error lines, in read order.
    pub lines: Vec<EdgeLine>,
}

/// One forwarded error line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeLine {
    /// The position just after the line at its edge source (increasing within `edge`).
    pub at: u64,
    /// When the edge read it, milliseconds since the epoch.
    #[serde(default)]
    pub t: i64,
    /// The fingerprint the edge computed, 16 hex digits.
    #[serde(default)]
    pub fp: String,
    /// The PACT key the edge found, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The line (without its newline; not valid UTF-8 is replaced).
    pub line: String,
}

/// The partition of a fingerprint among `partitions`.
pub fn partition_of(fingerprint: u64, partitions: u32) -> u32 {
    (fingerprint % u64::from(partitions.max(1))) as u32
}

impl EdgeMessage {
    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an EdgeMessage always serialises")
    }

    /// Reads a body.
    ///
    /// # Errors
    ///
    /// Not JSON of this shape, or a newer format version.
    pub fn decode(body: &[u8]) -> Result<EdgeMessage, String> {
        let m: EdgeMessage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if m.v > VERSION {
            return Err(format!(
                "format version {} is newer than this build's {VERSION}",
                m.v
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_newer_versions() {
        let m = EdgeMessage {
            v: VERSION,
            edge: "h/app/1".into(),
            unpositioned: false,
            lines: vec![EdgeLine {
                at: 10,
                t: 5,
                fp: "00ff".into(),
                key: Some("PACT:a:b".into()),
                line: "ERROR x [PACT:a:b]".into(),
            }],
        };
        assert_eq!(EdgeMessage::decode(&m.encode()).unwrap(), m);
        let mut newer = m.clone();
        newer.v = VERSION + 1;
        assert!(EdgeMessage::decode(&newer.encode()).is_err());
        assert!(EdgeMessage::decode(b"{").is_err());
        assert_eq!(partition_of(17, 16), 1);
        assert_eq!(partition_of(17, 0), 0);
    }
}
