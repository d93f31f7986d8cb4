//! Fingerprints: which error lines are the same incident.
//!
//! Two error lines are the same incident when their *normalised* text is equal. The
//! normalised text of a line (its bytes, without the newline) is defined by three
//! `regex::bytes` substitutions (Unicode off), each applied with `replace_all` to the output
//! of the previous one:
//!
//! 1. UUIDs `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`
//!    become `<uuid>`;
//! 2. hex runs `[0-9a-fA-F]{8,}` become `<hex>`;
//! 3. digit runs `[0-9]+` become `<n>`.
//!
//! The [`Fingerprint`] is the xxh3-64 hash of the whole normalised text; it is stable across
//! versions and machines (a golden test guards it).
//!
//! # One pass instead of three
//!
//! [`normalize_into`] produces exactly the bytes of the three substitutions in one
//! left-to-right pass, into a reused buffer, with no regex and no allocation once the buffer
//! is warm. Why that is equivalent:
//!
//! - Every UUID match has length 36 and leftmost-first matching resumes after each match,
//!   so step 1 is "is there a UUID at this position?" checked left to right.
//! - A UUID starts with 8 hex digits followed by `-`. So inside a maximal run of hex digits
//!   `[s, e)` a UUID can start only at `s` (if `e - s == 8`) or at `e - 8` (if
//!   `text[e] == '-'`). A UUID at `e - 8` cuts the run: step 2 sees `[s, e - 8)` followed by
//!   `<uuid>`.
//! - The tokens `<uuid>`, `<hex>` and `<n>` begin and end with non-hex bytes, so they never
//!   join adjacent hex or digit runs: the runs step 2 sees are the maximal hex runs of the
//!   input, cut at UUIDs, and the digit runs step 3 sees lie inside the hex runs step 2 left
//!   alone.
//! - A hex run of 8 or more becomes `<hex>`; a shorter one keeps its letters and has each of
//!   its digit runs replaced by `<n>`. Bytes that are not hex digits are copied.
//!
//! A differential property test and a fuzz target compare the pass with the three regex
//! substitutions.

use std::fmt;
use std::str::FromStr;

/// How much normalised text callers keep beside the hash (e.g. as the incident's
/// representative), in bytes: a prefix of [`Fingerprinter::normalized`].
pub const NORMALIZED_KEEP_BYTES: usize = 512;

/// Length of a UUID in bytes.
const UUID_LEN: usize = 36;

/// Byte classes for the pass.
const OTHER: u8 = 0;
const HEX_LETTER: u8 = 1;
const DIGIT: u8 = 2;

/// Class of every byte value.
static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'0'..=b'9' => DIGIT,
            b'a'..=b'f' | b'A'..=b'F' => HEX_LETTER,
            _ => OTHER,
        };
        b += 1;
    }
    t
};

#[inline]
fn is_hex(b: u8) -> bool {
    CLASS[usize::from(b)] != OTHER
}

#[inline]
fn is_digit(b: u8) -> bool {
    CLASS[usize::from(b)] == DIGIT
}

/// Whether a UUID starts at `text[i]`.
#[inline]
fn is_uuid_at(text: &[u8], i: usize) -> bool {
    let Some(cand) = text.get(i..i.saturating_add(UUID_LEN)) else {
        return false;
    };
    // The dashes first: they reject almost every candidate.
    cand[8] == b'-'
        && cand[13] == b'-'
        && cand[18] == b'-'
        && cand[23] == b'-'
        && [0..8, 9..13, 14..18, 19..23, 24..36]
            .into_iter()
            .all(|group| cand[group].iter().all(|&b| is_hex(b)))
}

/// A stable 64-bit hash of a line's normalised text (xxh3-64). Displayed and parsed as 16
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a string is not a [`Fingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseFingerprintError {
    /// The string is not 16 bytes long.
    #[error("a fingerprint has 16 hex digits, got {0} bytes")]
    Length(usize),
    /// The string has a byte that is not a hex digit.
    #[error("a fingerprint has only hex digits (0-9, a-f)")]
    Digit,
}

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    /// Parses exactly 16 hex digits (either case; no sign, no prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(ParseFingerprintError::Length(s.len()));
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseFingerprintError::Digit);
        }
        u64::from_str_radix(s, 16)
            .map(Fingerprint)
            .map_err(|_| ParseFingerprintError::Digit)
    }
}

/// Computes fingerprints with a reusable buffer: no allocation per line once warm.
///
/// ```
/// use sentinel::scan::fingerprint::Fingerprinter;
///
/// let mut fp = Fingerprinter::new();
/// let a = fp.fingerprint(b"timeout after 350 ms for req 0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c");
/// assert_eq!(fp.normalized(), b"timeout after <n> ms for req <uuid>");
/// let b = fp.fingerprint(b"timeout after 12 ms for req 7c9e6679-7425-40de-944b-e07fc1f90ae7");
/// assert_eq!(a, b);
/// ```
#[derive(Debug, Default)]
pub struct Fingerprinter {
    /// The normalised text of the last line.
    buf: Vec<u8>,
}

impl Fingerprinter {
    /// A fingerprinter with an empty buffer.
    pub fn new() -> Self {
        Fingerprinter {
            buf: Vec::with_capacity(256),
        }
    }

    /// Normalises `line` (its bytes without the newline) into the buffer and hashes it.
    pub fn fingerprint(&mut self, line: &[u8]) -> Fingerprint {
        normalize_into(line, &mut self.buf);
        Fingerprint(xxhash_rust::xxh3::xxh3_64(&self.buf))
    }

    /// The full normalised text of the last call (empty before the first). Callers keeping
    /// it beside the hash keep at most [`NORMALIZED_KEEP_BYTES`] of it.
    pub fn normalized(&self) -> &[u8] {
        &self.buf
    }
}

/// Clears `out`, then writes the normalised text of `line` into it (see the
/// [module docs](self)).
pub fn normalize_into(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let n = line.len();
    // `line[lit..i]` is copied as is when the next replacement (or the end) comes.
    let mut lit = 0;
    let mut i = 0;
    while i < n {
        if !is_hex(line[i]) {
            i += 1;
            continue;
        }
        // `i` starts a hex run of the step-1 output: find its end in the input.
        let mut e = i + 1;
        while e < n && is_hex(line[e]) {
            e += 1;
        }
        if e - i == 8 && is_uuid_at(line, i) {
            out.extend_from_slice(&line[lit..i]);
            out.extend_from_slice(b"<uuid>");
            i += UUID_LEN;
            lit = i;
            continue;
        }
        let run_end = if e - i > 8 && is_uuid_at(line, e - 8) {
            e - 8
        } else {
            e
        };
        if run_end - i >= 8 {
            out.extend_from_slice(&line[lit..i]);
            out.extend_from_slice(b"<hex>");
            lit = run_end;
        } else {
            let mut j = i;
            while j < run_end {
                if is_digit(line[j]) {
                    let mut k = j + 1;
                    while k < run_end && is_digit(line[k]) {
                        k += 1;
                    }
                    out.extend_from_slice(&line[lit..j]);
                    out.extend_from_slice(b"<n>");
                    lit = k;
                    j = k;
                } else {
                    j += 1;
                }
            }
        }
        i = run_end;
    }
    out.extend_from_slice(&line[lit..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::bytes::Regex;
    use std::sync::LazyLock;

    /// The definition: three regex substitutions in order.
    fn oracle(line: &[u8]) -> Vec<u8> {
        static RES: LazyLock<[Regex; 3]> = LazyLock::new(|| {
            [
                r"(?-u)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                r"(?-u)[0-9a-fA-F]{8,}",
                r"(?-u)[0-9]+",
            ]
            .map(|re| Regex::new(re).expect("valid regex"))
        });
        let [uuid, hex, num] = &*RES;
        let t1 = uuid.replace_all(line, &b"<uuid>"[..]);
        let t2 = hex.replace_all(&t1, &b"<hex>"[..]);
        num.replace_all(&t2, &b"<n>"[..]).into_owned()
    }

    fn one_pass(line: &[u8]) -> Vec<u8> {
        let mut out = b"stale".to_vec();
        normalize_into(line, &mut out);
        out
    }

    const U: &str = "0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c";

    #[test]
    fn hand_written_cases() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"abc", b"abc"),
            (b"id=12345 ok", b"id=<n> ok"),
            (b"deadbeef", b"<hex>"),
            (b"deadbee", b"deadbee"),
            (b"dead123", b"dead<n>"),
            (b"1a2b3c4", b"<n>a<n>b<n>c<n>"),
            (b"1234567", b"<n>"),
            (b"12345678", b"<hex>"),
            (b"DEADBEEF00 x", b"<hex> x"),
            (U.as_bytes(), b"<uuid>"),
            (b"req=0B8F6A3C-1D2E-4F5A-8B9C-0D1E2F3A4B5C;", b"req=<uuid>;"),
            (b"abc0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c", b"abc<uuid>"),
            (b"a1c0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c", b"a<n>c<uuid>"),
            (
                b"1234567890b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c",
                b"<hex><uuid>",
            ),
            (b"0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5cabc", b"<uuid>abc"),
            (
                b"0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c12345678",
                b"<uuid><hex>",
            ),
            (
                b"0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c-1d2e",
                b"<uuid>-<n>d<n>e",
            ),
            // 35 chars: not a UUID.
            (
                b"12345678-1234-1234-1234-12345678901",
                b"<hex>-<n>-<n>-<n>-<hex>",
            ),
            // A UUID right after another one's trailing hex.
            (
                b"0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c",
                b"<uuid><uuid>",
            ),
            (b"<n> <hex> <uuid> 7", b"<n> <hex> <uuid> <n>"),
            (b"\xff12\xfe\x00ab", b"\xff<n>\xfe\x00ab"),
            (
                b"port 8080 pid 4242 at 0x7ffd5a2b3c4d",
                b"port <n> pid <n> at <n>x<hex>",
            ),
            (b"ERROR failed", b"ERROR failed"),
        ];
        for (input, want) in cases {
            let got = one_pass(input);
            assert_eq!(
                got.escape_ascii().to_string(),
                want.escape_ascii().to_string(),
                "input {}",
                input.escape_ascii()
            );
            assert_eq!(
                oracle(input),
                *want,
                "oracle disagrees on {}",
                input.escape_ascii()
            );
        }
    }

    /// `n <= 32` hex digits from the nibbles of `bits`, uppercased where `case` has a 1.
    /// (Cheaper to generate in debug builds than a strategy per character.)
    fn hex_chars(bits: u128, case: u32, n: usize) -> Vec<u8> {
        (0..n)
            .map(|k| {
                let c = b"0123456789abcdef"[usize::from((bits >> (4 * k)) as u8 & 15)];
                if case >> k & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    fn hex_run(len: impl Strategy<Value = usize>) -> impl Strategy<Value = Vec<u8>> {
        (len, any::<u128>(), any::<u32>()).prop_map(|(n, bits, case)| hex_chars(bits, case, n))
    }

    fn uuid() -> impl Strategy<Value = Vec<u8>> {
        (any::<u128>(), any::<u32>()).prop_map(|(bits, case)| {
            let h = hex_chars(bits, case, 32);
            let mut u = Vec::with_capacity(36);
            for (k, group) in [0..8, 8..12, 12..16, 16..20, 20..32]
                .into_iter()
                .enumerate()
            {
                if k > 0 {
                    u.push(b'-');
                }
                u.extend_from_slice(&h[group]);
            }
            u
        })
    }

    fn atom() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => uuid(),
            // Truncated UUIDs.
            2 => (uuid(), 1usize..36).prop_map(|(u, n)| u[..n].to_vec()),
            // UUIDs with one byte changed.
            1 => (uuid(), 0usize..36, any::<u8>()).prop_map(|(mut u, k, b)| {
                u[k] = b;
                u
            }),
            3 => hex_run(prop_oneof![Just(7usize), Just(8), Just(9)]),
            2 => hex_run(1usize..20),
            2 => proptest::collection::vec(b'0'..=b'9', 1..12),
            3 => prop_oneof![
                Just(b"-".to_vec()),
                Just(b" ".to_vec()),
                Just(b"<".to_vec()),
                Just(b">".to_vec()),
                Just(b"=".to_vec()),
                Just(b"<n>".to_vec()),
                Just(b"<hex>".to_vec()),
                Just(b"<uuid>".to_vec()),
                Just(b"uuid".to_vec()),
                Just(b"x".to_vec()),
                Just(b"0x".to_vec()),
            ],
            1 => proptest::collection::vec(b'g'..=b'z', 1..5),
            1 => proptest::collection::vec(any::<u8>(), 1..4),
        ]
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(atom(), 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn one_pass_equals_three_substitutions(line in line()) {
            prop_assert_eq!(one_pass(&line), oracle(&line));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn one_pass_equals_three_substitutions_on_any_bytes(
            line in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            prop_assert_eq!(one_pass(&line), oracle(&line));
        }

        #[test]
        fn one_pass_equals_three_substitutions_on_a_small_alphabet(
            line in proptest::collection::vec(
                prop_oneof![Just(b'0'), Just(b'9'), Just(b'a'), Just(b'F'), Just(b'-'), Just(b'x')],
                0..120,
            ),
        ) {
            prop_assert_eq!(one_pass(&line), oracle(&line));
        }

        #[test]
        fn display_parse_round_trip(v in any::<u64>()) {
            let fp = Fingerprint(v);
            let s = fp.to_string();
            prop_assert_eq!(s.len(), 16);
            prop_assert_eq!(s.parse::<Fingerprint>(), Ok(fp));
            prop_assert_eq!(s.to_uppercase().parse::<Fingerprint>(), Ok(fp));
        }
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert_eq!(Fingerprint(0).to_string(), "0000000000000000");
        assert_eq!(Fingerprint(u64::MAX).to_string(), "ffffffffffffffff");
        assert_eq!(
            "".parse::<Fingerprint>(),
            Err(ParseFingerprintError::Length(0))
        );
        assert_eq!(
            "0123456789abcdef0".parse::<Fingerprint>(),
            Err(ParseFingerprintError::Length(17))
        );
        assert_eq!(
            "+123456789abcdef".parse::<Fingerprint>(),
            Err(ParseFingerprintError::Digit)
        );
        assert_eq!(
            "0123456789abcdeg".parse::<Fingerprint>(),
            Err(ParseFingerprintError::Digit)
        );
        // 16 bytes, but not 16 ASCII characters.
        assert_eq!(
            "é123456789abcde".parse::<Fingerprint>(),
            Err(ParseFingerprintError::Digit)
        );
    }

    #[test]
    fn hash_is_stable() {
        let mut fp = Fingerprinter::new();
        // xxh3-64 of the empty input, a published constant.
        assert_eq!(fp.fingerprint(b""), Fingerprint(0x2d06_8005_38d3_94c2));
        let line = b"2024-05-01T12:00:00Z ERROR PACT:auth_module:login request \
            0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c failed after 350ms (token deadbeefcafe)";
        let got = fp.fingerprint(line);
        assert_eq!(
            fp.normalized(),
            &b"<n>-<n>-<n>T<n>:<n>:<n>Z ERROR PACT:auth_module:login request \
            <uuid> failed after <n>ms (token <hex>)"[..]
        );
        assert_eq!(got, Fingerprint(GOLDEN));
        assert_eq!(got.to_string(), format!("{GOLDEN:016x}"));
    }

    /// xxh3-64 of the normalised line in `hash_is_stable`. Changing it breaks every stored
    /// incident key.
    const GOLDEN: u64 = 0x39f3baf70b58b85b;

    #[test]
    fn same_incident_different_ids() {
        let mut fp = Fingerprinter::new();
        let a = fp.fingerprint(b"user 17 not found (req 0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c)");
        let b = fp.fingerprint(b"user 4242 not found (req 7C9E6679-7425-40DE-944B-E07FC1F90AE7)");
        let c = fp.fingerprint(b"group 17 not found (req 0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c)");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn buffer_is_reused() {
        let mut fp = Fingerprinter::new();
        let long = vec![b'z'; 1000];
        fp.fingerprint(&long);
        let cap = fp.buf.capacity();
        let ptr = fp.buf.as_ptr();
        for _ in 0..100 {
            fp.fingerprint(b"timeout after 350 ms");
            fp.fingerprint(&long);
        }
        assert_eq!(fp.buf.capacity(), cap);
        assert_eq!(fp.buf.as_ptr(), ptr);
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Fingerprint>();
        assert_send_sync::<Fingerprinter>();
        assert_send_sync::<ParseFingerprintError>();
    }
}
