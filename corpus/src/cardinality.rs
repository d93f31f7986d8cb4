//! High-cardinality corpora: error lines of one key whose messages are all different (six
//! words and a random tag, no digit the normaliser could fold), or the same number of lines
//! repeating a few messages: the two sides of `scan`'s cardinality measurement.
//!
//! Every line is `2026-12-06T10:00:00Z ERROR [<key>] <six words> tag=<eight letters>`; the
//! words come from a list of 64 and the tag's letters from `g`-`z` (never a hex run), so
//! two lines share a fingerprint only when they are equal. The ground truth is therefore
//! simple: `lines` error lines of `key`, and `distinct` fingerprints (all of them, or
//! `messages`), which [`write()`] returns.

use std::io::{self, Write};

const WORDS: [&str; 64] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "basil", "cedar", "dune",
    "ember", "fern", "grove", "heath", "iris", "jasper", "kelp", "lotus", "moss", "nettle",
    "olive", "pine", "quartz", "reed", "sage", "thyme", "umber", "vale", "willow", "yarrow",
    "zinnia", "anvil", "bolt", "cog", "drill", "gear", "hinge", "lever", "nail", "pulley", "rivet",
    "spring", "torque", "winch",
];

/// What [`write()`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes.
    pub bytes: u64,
    /// Error lines (every line is one).
    pub lines: u64,
    /// Distinct messages, hence fingerprints.
    pub distinct: u64,
}

/// Writes `lines` error lines of `key` (`PACT:noisy:emit`, say): all different when
/// `messages` is `None`, else cycling through that many messages in a seeded order.
///
/// # Errors
///
/// Any error of `out`.
pub fn write<W: Write>(
    seed: u64,
    lines: u64,
    messages: Option<u64>,
    key: &str,
    mut out: W,
) -> io::Result<Written> {
    let mut state = seed ^ 0xC0FF_EE00_D15C_0123;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let message = |r: u64, line: &mut Vec<u8>| {
        let mut r = r;
        for i in 0..6 {
            if i > 0 {
                line.push(b' ');
            }
            line.extend_from_slice(WORDS[(r & 63) as usize].as_bytes());
            r >>= 6;
        }
        line.extend_from_slice(b" tag=");
        // 8 letters from g..z (20 letters): 28 more bits of the draw.
        let mut t = r;
        for _ in 0..8 {
            line.push(b'g' + (t % 20) as u8);
            t /= 20;
        }
    };
    let fixed: Vec<u64> = match messages {
        Some(m) => (0..m.max(1)).map(|_| next()).collect(),
        None => Vec::new(),
    };
    let mut line = Vec::with_capacity(128);
    let mut bytes = 0u64;
    for _ in 0..lines {
        line.clear();
        line.extend_from_slice(b"2026-12-06T10:00:00Z ERROR [");
        line.extend_from_slice(key.as_bytes());
        line.extend_from_slice(b"] ");
        let r = if fixed.is_empty() {
            next()
        } else {
            fixed[(next() % fixed.len() as u64) as usize]
        };
        message(r, &mut line);
        line.push(b'\n');
        out.write_all(&line)?;
        bytes += line.len() as u64;
    }
    out.flush()?;
    Ok(Written {
        bytes,
        lines,
        distinct: if fixed.is_empty() {
            lines
        } else {
            fixed.len().min(lines as usize) as u64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_lines_are_distinct_and_repeats_repeat() {
        let mut a = Vec::new();
        let w = write(1, 2000, None, "PACT:noisy:emit", &mut a).unwrap();
        assert_eq!(w.bytes, a.len() as u64);
        let lines: std::collections::HashSet<&[u8]> = a.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 2001, "2000 distinct lines and the empty tail");
        assert!(
            !a.split(|&b| b == b'\n')
                .any(|l| l.len() > 20 && l[20..].iter().any(u8::is_ascii_digit))
        );
        let mut b = Vec::new();
        let w = write(1, 2000, Some(50), "PACT:noisy:emit", &mut b).unwrap();
        assert_eq!(w.distinct, 50);
        let lines: std::collections::HashSet<&[u8]> = b.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 51);
    }
}
