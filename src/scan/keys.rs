//! PACT key extraction, by hand over bytes.
//!
//! A PACT key names the component and method an error line belongs to:
//! `PACT:<component>:<method>`, where both parts are runs of `[A-Za-z0-9_]`. Extraction has
//! exactly the semantics of
//! `regex::bytes::Regex::new("PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+")?.find_iter(line)`: matches
//! are leftmost, non-overlapping and greedy. So `PACT:a:b.c` yields `PACT:a:b`, `PACT:abc` yields
//! nothing and `PACT:PACT:a:b` yields `PACT:PACT:a`.
//!
//! # Why not a regex
//!
//! Keys are extracted on error lines only, but those can come in bursts, and the grammar is
//! small enough to be matched by hand: one `memmem` search for `PACT:` (the [`Finder`] is built
//! once per process) followed by two word-character runs. Nothing allocates; [`distinct`]
//! deduplicates the keys of a line by comparing with earlier keys of the same line, which is
//! `O(k^2)` in the number of keys `k` of a line and therefore cheap in practice.
//!
//! Why greediness cannot fail: `:` is not a word character, so at a given start the component
//! is always the whole word run after `PACT:`, and the method is the whole word run after the
//! following `:`. If either run is empty or the `:` is missing, no key starts there, and the
//! search continues with the next occurrence of `PACT:` (which cannot overlap the previous one,
//! since `PACT:` has no proper border).

use std::iter::FusedIterator;
use std::sync::LazyLock;

use memchr::memmem::Finder;

/// The literal every key starts with.
const PREFIX: &[u8] = b"PACT:";

/// The searcher for [`PREFIX`], built once: building a `memmem` finder is much more expensive
/// than a search over one line.
static PREFIX_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(PREFIX));

/// One PACT key found in a line, borrowed from that line.
///
/// Equality and hashing compare the key bytes, not the position in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PactKey<'a> {
    raw: &'a [u8],
    component: &'a [u8],
    method: &'a [u8],
}

impl<'a> PactKey<'a> {
    /// The whole key, e.g. `PACT:billing:charge`.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The component part, e.g. `billing` (never empty).
    pub fn component(&self) -> &'a [u8] {
        self.component
    }

    /// The method part, e.g. `charge` (never empty).
    pub fn method(&self) -> &'a [u8] {
        self.method
    }
}

/// Iterator over the PACT keys of one line, leftmost first and non-overlapping.
///
/// ```
/// use sentinel::scan::keys::PactKeys;
///
/// let keys: Vec<&[u8]> = PactKeys::new(b"x PACT:a:b.c PACT:abc PACT:d_1:e").map(|k| k.as_bytes()).collect();
/// assert_eq!(keys, [&b"PACT:a:b"[..], b"PACT:d_1:e"]);
/// ```
#[derive(Debug, Clone)]
pub struct PactKeys<'a> {
    line: &'a [u8],
    /// Where the next search starts; `line.len()` once exhausted.
    pos: usize,
}

impl<'a> PactKeys<'a> {
    /// Iterates over the keys of `line`.
    ///
    /// `line` should be a single line, but nothing breaks if it is not: keys never contain a
    /// newline.
    pub fn new(line: &'a [u8]) -> Self {
        PactKeys { line, pos: 0 }
    }
}

impl<'a> Iterator for PactKeys<'a> {
    type Item = PactKey<'a>;

    fn next(&mut self) -> Option<PactKey<'a>> {
        let line = self.line;
        while self.pos < line.len() {
            let Some(found) = PREFIX_FINDER.find(&line[self.pos..]) else {
                self.pos = line.len();
                return None;
            };
            let start = self.pos + found;
            let comp_start = start + PREFIX.len();
            let comp_end = comp_start + word_run(&line[comp_start..]);
            if comp_end > comp_start && line.get(comp_end) == Some(&b':') {
                let meth_start = comp_end + 1;
                let meth_end = meth_start + word_run(&line[meth_start..]);
                if meth_end > meth_start {
                    self.pos = meth_end;
                    return Some(PactKey {
                        raw: &line[start..meth_end],
                        component: &line[comp_start..comp_end],
                        method: &line[meth_start..meth_end],
                    });
                }
            }
            // No key starts at `start`. The next `PACT:` cannot overlap this one, but
            // starting one byte later is the obviously correct choice and costs nothing.
            self.pos = start + 1;
        }
        None
    }
}

impl FusedIterator for PactKeys<'_> {}

/// The first (leftmost) PACT key of `line`, if any.
pub fn first_key(line: &[u8]) -> Option<PactKey<'_>> {
    PactKeys::new(line).next()
}

/// Iterates over the distinct keys of `line`: each key once, in order of first occurrence.
///
/// Allocates nothing; each key is compared with the keys before it in the same line.
///
/// ```
/// use sentinel::scan::keys::distinct;
///
/// let keys: Vec<&[u8]> = distinct(b"PACT:a:b PACT:c:d PACT:a:b").map(|k| k.as_bytes()).collect();
/// assert_eq!(keys, [&b"PACT:a:b"[..], b"PACT:c:d"]);
/// ```
pub fn distinct(line: &[u8]) -> DistinctKeys<'_> {
    DistinctKeys {
        line,
        inner: PactKeys::new(line),
    }
}

/// Iterator returned by [`distinct`].
#[derive(Debug, Clone)]
pub struct DistinctKeys<'a> {
    line: &'a [u8],
    inner: PactKeys<'a>,
}

impl<'a> Iterator for DistinctKeys<'a> {
    type Item = PactKey<'a>;

    fn next(&mut self) -> Option<PactKey<'a>> {
        'keys: for key in self.inner.by_ref() {
            // Earlier keys of the line are exactly those yielded before `key`, i.e. those
            // whose bytes start before it (keys never overlap).
            for earlier in PactKeys::new(self.line) {
                if std::ptr::eq(earlier.raw.as_ptr(), key.raw.as_ptr()) {
                    return Some(key);
                }
                if earlier.raw == key.raw {
                    continue 'keys;
                }
            }
            // Unreachable in practice: `key` itself is among the keys of the line.
            return Some(key);
        }
        None
    }
}

impl FusedIterator for DistinctKeys<'_> {}

/// Length of the run of `[A-Za-z0-9_]` at the start of `bytes`.
#[inline]
fn word_run(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::bytes::Regex;

    fn oracle(line: &[u8]) -> Vec<Vec<u8>> {
        let re = Regex::new("PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+").expect("valid regex");
        re.find_iter(line).map(|m| m.as_bytes().to_vec()).collect()
    }

    fn keys(line: &[u8]) -> Vec<Vec<u8>> {
        PactKeys::new(line).map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn grammar_edge_cases() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"", &[]),
            (b"PACT:", &[]),
            (b"PACT:a", &[]),
            (b"PACT:abc", &[]),
            (b"PACT:a:", &[]),
            (b"PACT::b", &[]),
            (b"PACT:a:b", &[b"PACT:a:b"]),
            (b"PACT:a:b.c", &[b"PACT:a:b"]),
            (b"PACT:PACT:a:b", &[b"PACT:PACT:a"]),
            (b"PACT:a:b:c", &[b"PACT:a:b"]),
            (b"PACT:a:bPACT:c:d", &[b"PACT:a:bPACT"]),
            (b"PACT:a:b PACT:c:d", &[b"PACT:a:b", b"PACT:c:d"]),
            (b"PACT:a.PACT:c_9:D_e", &[b"PACT:c_9:D_e"]),
            (b"pact:a:b PACT:a-b:c", &[]),
            (b"PPACT:x:y", &[b"PACT:x:y"]),
            (b"PACT:\xffa:b PACT:a:\xc3b", &[]),
            (b"PACT:a:b\r", &[b"PACT:a:b"]),
            (b"PACT:PACT::a:b", &[]),
            (b"PACT:PACT:PACT:a:b", &[b"PACT:PACT:PACT"]),
        ];
        for &(line, want) in cases {
            let got = keys(line);
            let want: Vec<Vec<u8>> = want.iter().map(|k| k.to_vec()).collect();
            assert_eq!(got, want, "line {:?}", line.escape_ascii().to_string());
            assert_eq!(got, oracle(line), "oracle disagrees on {line:?}");
        }
    }

    #[test]
    fn parts() {
        let k = first_key(b"x PACT:billing_2:charge_card!").expect("a key");
        assert_eq!(k.as_bytes(), b"PACT:billing_2:charge_card");
        assert_eq!(k.component(), b"billing_2");
        assert_eq!(k.method(), b"charge_card");
        assert!(first_key(b"PACT:x").is_none());
    }

    #[test]
    fn distinct_keeps_first_occurrence_order() {
        let line = b"PACT:a:b PACT:c:d PACT:a:b PACT:e:f PACT:c:d PACT:a:bb";
        let got: Vec<&[u8]> = distinct(line).map(|k| k.as_bytes()).collect();
        assert_eq!(
            got,
            [&b"PACT:a:b"[..], b"PACT:c:d", b"PACT:e:f", b"PACT:a:bb"]
        );
        assert_eq!(distinct(b"no keys").count(), 0);
    }

    #[test]
    fn fused() {
        let mut it = PactKeys::new(b"PACT:a:b");
        assert!(it.next().is_some());
        assert!(it.next().is_none());
        assert!(it.next().is_none());
    }

    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        let frag = prop_oneof![
            Just(b"PACT:".to_vec()),
            Just(b"PACT".to_vec()),
            Just(b":".to_vec()),
            Just(b"_".to_vec()),
            Just(b"a".to_vec()),
            Just(b"Z9".to_vec()),
            Just(b" ".to_vec()),
            Just(b".".to_vec()),
            Just(b"\xff".to_vec()),
            Just(b"P".to_vec()),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(frag, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn matches_regex_oracle(line in line_strategy()) {
            prop_assert_eq!(keys(&line), oracle(&line));
            let mut want: Vec<Vec<u8>> = Vec::new();
            for k in oracle(&line) {
                if !want.contains(&k) {
                    want.push(k);
                }
            }
            let got: Vec<Vec<u8>> = distinct(&line).map(|k| k.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
