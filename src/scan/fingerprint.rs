//! Fingerprints: which error lines are the same incident.
//!
//! Two error lines are the same incident when their *normalised* text is equal. The
//! normalised text of a line (its bytes, without the newline) keeps every PACT key match
//! (`PACT:[A-Za-z0-9_]+:[A-Za-z0-9_]+`, leftmost, non-overlapping: [`crate::scan::keys`])
//! verbatim, and rewrites each stretch between key matches (and before the first, and after
//! the last) on its own by three `regex::bytes` substitutions (Unicode off), each applied
//! with `replace_all` to the output of the previous one:
//!
//! 1. UUIDs `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`
//!    become `<uuid>`;
//! 2. hex runs `[0-9a-fA-F]{8,}` become `<hex>`;
//! 3. digit runs `[0-9]+` become `<n>`.
//!
//! So `PACT:svc_v1:get timeout after 30 ms` and `PACT:svc_v2:get timeout after 45 ms` are two
//! incidents (`PACT:svc_v1:get timeout after <n> ms` and `PACT:svc_v2:get …`): the digits of
//! a component id are part of its identity, never a variable part of the message. A line
//! whose key is given beside it (a webhook event's `log_key` / `pact_key` field) and not in
//! its text is fingerprinted as `<key> <line>` ([`Fingerprinter::fingerprint_keyed`]), so
//! that key is part of its identity too.
//!
//! The [`Fingerprint`] is the xxh3-64 hash of the whole normalised text; it is stable across
//! versions and machines (a golden test guards it).
//!
//! # One pass instead of three
//!
//! Keys are found by one `memmem` search for `PACT:` (usually none, or one key, per line);
//! each stretch between them is rewritten by one pass. [`normalize_into`] produces exactly
//! the bytes of the three substitutions of a stretch in one left-to-right pass, into a reused buffer, with no regex and no allocation once the buffer
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
//! substitutions applied between the key matches of a key regex.
//!
//! # Why the pass is fast
//!
//! Error lines range from 200-byte messages to 64 KiB JSON payloads whose base64 blobs put a
//! digit run every ten bytes, so the pass works on masks, not on bytes:
//!
//! - The line is read in windows of 64 bytes. [`classify`] turns a window into two `u64`
//!   masks, "hex digit" and "decimal digit": the byte tests are plain loops that LLVM
//!   vectorises with the x86_64 baseline (SSE2), and the flags are packed eight at a time
//!   with one multiply. (This file may not use `unsafe`, and `std::arch` intrinsics need it
//!   without a `#[target_feature]` context, so there is no `pmovmskb`.)
//! - Shifts and ands of the hex mask give the starts of hex runs of 8 or more, spread over
//!   their bytes to cover the runs. Those runs and the digit runs are the *spans* a token
//!   replaces; everything between spans is copied. A window decides its first 56 bytes; the
//!   last 8 are look-ahead, which is exactly enough to see whether a hex run starting at a
//!   decided byte reaches 8, and where a short digit run ends.
//! - Each span costs a few bit operations, one fixed-size copy of the literal before it
//!   (usually 16 bytes) and one 8-byte store of the token: copies write whole blocks into
//!   scratch space past the output's end and then advance by the real length, so there is
//!   no per-byte loop and no `memcpy` call. Indices are masked into fixed-size arrays so the
//!   bounds checks fold away. A window without spans costs only its masks; the bytes it
//!   skips are copied with the next literal.
//! - Only hex runs that a dash follows (where a UUID may start) or that leave the window go
//!   to the scalar code of the one-pass rule above; the window then resumes after them.
//!
//! The output buffer grows but is never shrunk or re-zeroed, so once it is warm a line costs
//! no allocation and no `memset`. Hashing stays a separate one-shot `xxh3_64` over the
//! output (about 24 GB/s): streaming it through `Xxh3::update` window by window hashes the
//! same bytes at about 8 GB/s.

use std::fmt;
use std::str::FromStr;

/// How much normalised text callers keep beside the hash (e.g. as the incident's
/// representative), in bytes: a prefix of [`Fingerprinter::normalized`].
pub const NORMALIZED_KEEP_BYTES: usize = 512;

/// Length of a UUID in bytes.
const UUID_LEN: usize = 36;

/// Byte classes of the scalar parts of the pass.
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

/// Whether a UUID starts at `text[i]`: one word-at-a-time test of its 36 bytes.
#[inline]
fn is_uuid_at(text: &[u8], i: usize) -> bool {
    let Some(cand) = text.get(i..i.saturating_add(UUID_LEN)) else {
        return false;
    };
    let word = |k: usize| u64::from_le_bytes(cand[k..k + 8].try_into().expect("8 bytes"));
    let (a, b, c, d, e) = (word(0), word(8), word(16), word(24), word(28));
    // Bytes 8, 13, 18 and 23 are dashes: bytes 0 and 5 of `b`, 2 and 7 of `c`.
    const B_DASHES: u64 = 0xff | 0xff << 40;
    const C_DASHES: u64 = 0xff << 16 | 0xff << 56;
    const DASHES: u64 = LSB * b'-' as u64;
    let dashes = ((b ^ DASHES) & B_DASHES) | ((c ^ DASHES) & C_DASHES);
    let hex = (hex_bytes(a) & hex_bytes(d) & hex_bytes(e))
        & (hex_bytes(b) | (B_DASHES & MSB))
        & (hex_bytes(c) | (C_DASHES & MSB));
    dashes == 0 && hex == MSB
}

/// Bytes classified at once: one bit per byte in a `u64` mask.
const WINDOW: usize = 64;
/// Bytes a window decides; the other `WINDOW - STEP` are look-ahead. A hex run of 8 that
/// starts at a decided byte, and a digit run of at most 7 that starts at one, end inside the
/// window.
const STEP: usize = 56;
/// The first copy of a literal between two spans, in bytes: most are shorter (a base64 blob
/// has a digit every 6 bytes or so).
const SHORT_COPY: usize = 16;
/// The copy of a longer literal between two spans: they start and end in a window's first
/// `STEP` bytes, so they are shorter than this.
const LONG_COPY: usize = 64;
/// Bytes of input readable at a window start: a literal starts before `STEP` and its copy
/// reads `LONG_COPY` bytes.
const SRC: usize = 2 * WINDOW;
/// A bound on the bytes a window's spans write (at most 56 literal bytes and 28 tokens), a
/// power of two so that masking an offset with it proves the bound to the compiler.
const OUT_LIMIT: usize = 256;
/// Scratch a window's spans may write: `OUT_LIMIT` plus the overshoot of the last literal
/// copy and token store.
const OUT_WINDOW: usize = OUT_LIMIT + LONG_COPY + 8;
/// Longest literal [`Out::literal`] copies as one fixed-size block, and the scratch it needs
/// past the output's end.
const COPY_BLOCK: usize = 32;
/// `<hex>` and `<n>` as the low bytes of the word a token store writes.
const HEX_TOKEN: u64 = u64::from_le_bytes(*b"<hex>\0\0\0");
const N_TOKEN: u64 = u64::from_le_bytes(*b"<n>\0\0\0\0\0");

/// `0x01` in every byte of a `u64`.
const LSB: u64 = 0x0101_0101_0101_0101;
/// `0x80` in every byte of a `u64`.
const MSB: u64 = 0x8080_8080_8080_8080;

/// `0x80` in each byte of `x` that is an ASCII hex digit, `0` in the others (SWAR: no carry
/// crosses a byte because every addend is at most `0x7f + 0x7f`).
#[inline]
fn hex_bytes(x: u64) -> u64 {
    // Digits become 0..=9 and a-f/A-F become 1..=6; the high bit of a sum means "too big".
    let d = x ^ (LSB * u64::from(b'0'));
    let digit = !(((d & !MSB) + LSB * (0x80 - 10)) | d);
    let l = (x | (LSB * 0x20)) ^ (LSB * 0x60);
    let l7 = l & !MSB;
    let letter = (l7 + LSB * 0x7f) & !(l7 + LSB * (0x80 - 7)) & !l;
    (digit | letter) & MSB
}

/// Bit `i` of the result is the high bit of byte `i` of `x`.
#[inline]
fn high_bits(x: u64) -> u64 {
    ((x & MSB).wrapping_mul(0x0002_0408_1020_4081)) >> 56
}

/// `(hex, digit)`: bit `i` is set when `win[i]` is an ASCII hex digit / a decimal digit.
///
/// The byte tests are plain loops over arrays, which LLVM vectorises (signed byte compares
/// are single SSE2 instructions); the flags are then packed eight at a time with a multiply.
#[inline]
fn classify(win: &[u8; WINDOW]) -> (u64, u64) {
    let mut hex = [0u8; WINDOW];
    let mut digit = [0u8; WINDOW];
    for ((&b, h), d) in win.iter().zip(&mut hex).zip(&mut digit) {
        // Digits map to -128..=-119, folded letters a-f to -128..=-123, all else higher.
        let is_digit = (b.wrapping_add(0x80 - b'0') as i8) < -118;
        let is_letter = ((b | 0x20).wrapping_add(0x80 - b'a') as i8) < -122;
        *d = u8::from(is_digit) << 7;
        *h = u8::from(is_digit | is_letter) << 7;
    }
    let mut masks = (0, 0);
    for (k, (h, d)) in hex.chunks_exact(8).zip(digit.chunks_exact(8)).enumerate() {
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("chunks of 8"));
        masks.0 |= high_bits(word(h)) << (8 * k);
        masks.1 |= high_bits(word(d)) << (8 * k);
    }
    masks
}

/// The end of the hex run that continues at `line[e]`: the first index at or after `e` that
/// is not a hex digit, or `line.len()`.
#[inline]
fn hex_run_end(line: &[u8], mut e: usize) -> usize {
    while let Some(chunk) = line.get(e..e + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let not_hex = !hex_bytes(x) & MSB;
        if not_hex != 0 {
            return e + not_hex.trailing_zeros() as usize / 8;
        }
        e += 8;
    }
    while e < line.len() && is_hex(line[e]) {
        e += 1;
    }
    e
}

/// The output of a pass: `buf[..len]` is written, the rest of `buf` is scratch that lets
/// copies write fixed-size blocks past `len`. `buf` only grows and is never re-zeroed.
struct Out<'a> {
    buf: &'a mut Vec<u8>,
    len: usize,
}

impl Out<'_> {
    /// Appends `line[from..to]`.
    #[inline]
    fn literal(&mut self, line: &[u8], from: usize, to: usize) {
        let n = to - from;
        if n <= COPY_BLOCK
            && let Some(src) = line.get(from..from + COPY_BLOCK)
            && let Some(dst) = self.buf.get_mut(self.len..self.len + COPY_BLOCK)
        {
            dst.copy_from_slice(src);
            self.len += n;
        } else {
            self.push(&line[from..to]);
        }
    }

    /// Appends `bytes`.
    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        let end = self.len + bytes.len();
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    /// Makes `buf` long enough to append `extra` bytes with block copies.
    #[inline]
    fn reserve(&mut self, extra: usize) {
        let need = self.len + extra + COPY_BLOCK;
        if need > self.buf.len() {
            self.grow(need);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, need: usize) {
        let len = need.max(2 * self.buf.len()).max(256);
        self.buf.resize(len, 0);
    }
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
    /// `buf[..len]` is the normalised text of the last line; the rest is scratch kept
    /// initialised so that the pass never has to zero it again (see [`Out`]).
    buf: Vec<u8>,
    len: usize,
}

impl Fingerprinter {
    /// A fingerprinter with an empty buffer.
    pub fn new() -> Self {
        Fingerprinter {
            buf: Vec::with_capacity(256),
            len: 0,
        }
    }

    /// Normalises `line` (its bytes without the newline) into the buffer and hashes it.
    pub fn fingerprint(&mut self, line: &[u8]) -> Fingerprint {
        self.len = normalize_keyed(line, &mut self.buf, 0);
        Fingerprint(xxhash_rust::xxh3::xxh3_64(self.normalized()))
    }

    /// Fingerprints a line whose PACT key may be given beside it (`key`, the whole key
    /// `PACT:<component>:<method>`): when `line` carries no key of its own, the identity is
    /// that of `<key> <line>`, so the key is part of it. With no `key`, or a line that has a
    /// key, this is [`Fingerprinter::fingerprint`].
    ///
    /// ```
    /// use sentinel::scan::fingerprint::Fingerprinter;
    ///
    /// let mut fp = Fingerprinter::new();
    /// let a = fp.fingerprint_keyed(b"login failed after 3 tries", Some(b"PACT:auth_v1:login"));
    /// assert_eq!(fp.normalized(), b"PACT:auth_v1:login login failed after <n> tries");
    /// assert_eq!(a, fp.fingerprint(b"PACT:auth_v1:login login failed after 5 tries"));
    /// assert_ne!(a, fp.fingerprint_keyed(b"login failed after 3 tries", Some(b"PACT:auth_v2:login")));
    /// ```
    pub fn fingerprint_keyed(&mut self, line: &[u8], key: Option<&[u8]>) -> Fingerprint {
        match key {
            Some(key) if crate::scan::keys::first_key(line).is_none() => {
                let mut out = Out {
                    buf: &mut self.buf,
                    len: 0,
                };
                out.push(key);
                out.push(b" ");
                let len = out.len;
                self.len = normalize_keyed(line, &mut self.buf, len);
                Fingerprint(xxhash_rust::xxh3::xxh3_64(self.normalized()))
            }
            _ => self.fingerprint(line),
        }
    }

    /// The full normalised text of the last call (empty before the first). Callers keeping
    /// it beside the hash keep at most [`NORMALIZED_KEEP_BYTES`] of it.
    pub fn normalized(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Clears `out`, then writes the normalised text of `line` into it (see the
/// [module docs](self)): PACT keys verbatim, the stretches between them rewritten.
pub fn normalize_into(line: &[u8], out: &mut Vec<u8>) {
    let len = normalize_keyed(line, out, 0);
    out.truncate(len);
}

/// Clears `out`, then writes the three substitutions of `text` into it, keys or not: the
/// rewriting of one stretch between keys. (For tests and the fuzz target.)
pub fn normalize_stretch_into(text: &[u8], out: &mut Vec<u8>) {
    let len = normalize_to(text, out, 0);
    out.truncate(len);
}

/// Writes the normalised text of `line` to `buf[start..len]` and returns `len`: each PACT key
/// copied, each stretch between keys rewritten by [`normalize_to`].
fn normalize_keyed(line: &[u8], buf: &mut Vec<u8>, start: usize) -> usize {
    let mut len = start;
    let mut from = 0;
    let base = line.as_ptr() as usize;
    for key in crate::scan::keys::PactKeys::new(line) {
        let k = key.as_bytes();
        let s = k.as_ptr() as usize - base;
        len = normalize_to(&line[from..s], buf, len);
        let mut out = Out { buf, len };
        out.push(k);
        len = out.len;
        from = s + k.len();
    }
    normalize_to(&line[from..], buf, len)
}

/// Writes the three substitutions of `line` (one stretch: keys are not special here) to
/// `buf[start..len]` and returns `len`. Whatever `buf` held from `start` on is overwritten
/// or left after `len`; `buf` never shrinks.
fn normalize_to(line: &[u8], buf: &mut Vec<u8>, start: usize) -> usize {
    let n = line.len();
    let mut out = Out { buf, len: start };
    // `line[..lit]` is written. `pos` is the current window start; everything before it is
    // decided, and so is everything before `lit`.
    let mut lit: usize = 0;
    let mut pos = 0;
    // The last `SRC` bytes of the line (or all of it) followed by `SRC` zero bytes, filled
    // when a window first reaches past the line: `line[pos..]` padded to `SRC` bytes is
    // `tail[pos - tail_at..][..SRC]`. Zeros are not hex digits, so they end runs exactly as
    // the end of the line does.
    let mut tail = [0u8; 2 * SRC];
    let tail_at = n.saturating_sub(SRC);
    let mut tail_ready = false;
    'windows: while pos < n {
        let src: &[u8; SRC] = match line.get(pos..pos + SRC) {
            Some(src) => src.try_into().expect("SRC bytes"),
            None => {
                if !tail_ready {
                    tail[..n - tail_at].copy_from_slice(&line[tail_at..]);
                    tail_ready = true;
                }
                tail[pos - tail_at..][..SRC].try_into().expect("SRC bytes")
            }
        };
        let (hex, digit) = classify(src[..WINDOW].try_into().expect("WINDOW bytes"));
        let h2 = hex & (hex >> 1);
        let h4 = h2 & (h2 >> 2);
        // Bit `i`: `src[i..i + 8]` are hex digits (exact for `i <= WINDOW - 8`).
        let h8 = h4 & (h4 >> 4);
        // Bits below `from` are decided: the tail of a span the previous window replaced, or
        // what `long_run` handled. A hex run that starts at `from` starts a step-1 run even
        // if hex digits precede it (they were part of a UUID).
        let mut from = lit.saturating_sub(pos);
        loop {
            let fresh = u64::MAX << from;
            // The first `h8` bit of a run is its start: a hex byte before it would carry an
            // `h8` bit too. Spreading the bits over the next 7 bytes covers whole runs.
            let long = h8 & fresh;
            let c1 = long | (long << 1);
            let c2 = c1 | (c1 << 2);
            let cover = c2 | (c2 << 4);
            // Digit runs inside a long run merge into it: the spans are the replaced runs.
            let spans = (digit & fresh) | cover;
            // A long run that reaches the window's last byte (it may go on) or that a dash
            // follows (a UUID may start in it) is `long_run`'s; the first one ends the spans
            // decided here.
            let mut limit = STEP;
            if long != 0 {
                let mut last = cover & !(cover >> 1);
                while last != 0 {
                    let x = last.trailing_zeros() as usize;
                    if x == WINDOW - 1 || src[x + 1] == b'-' {
                        let run_starts = long & !(long << 1) & (u64::MAX >> (63 - x));
                        limit = STEP.min(63 - run_starts.leading_zeros() as usize);
                        break;
                    }
                    last &= last - 1;
                }
            }
            let mut starts = spans & !(spans << 1) & ((1 << limit) - 1);
            if starts != 0 {
                out.reserve(pos - pos.min(lit) + OUT_WINDOW);
                if lit < pos {
                    out.literal(line, lit, pos);
                    lit = pos;
                }
                // The last byte of every span, in step with `starts`. Spans that start in
                // the window end in it: a digit run has at most 7 digits here, and a long
                // run reaching the last byte is `long_run`'s.
                let mut ends = spans & !(spans >> 1);
                let start = out.len;
                let dst: &mut [u8; OUT_WINDOW] = (&mut out.buf[start..start + OUT_WINDOW])
                    .try_into()
                    .expect("reserved above");
                // `w` bytes written to `dst`; `r`: `src[..r]` written. Masking with powers of
                // two changes neither (w < OUT_LIMIT, r <= s < WINDOW) but bounds them.
                let mut w = 0;
                let mut r = lit - pos;
                loop {
                    let s = starts.trailing_zeros() as usize;
                    let e = ends.trailing_zeros() as usize + 1;
                    debug_assert!(r <= s && s < e && w < OUT_LIMIT, "span bookkeeping");
                    let wi = w & (OUT_LIMIT - 1);
                    let ri = r & (WINDOW - 1);
                    let k = s.wrapping_sub(r) & (WINDOW - 1);
                    dst[wi..wi + SHORT_COPY].copy_from_slice(&src[ri..ri + SHORT_COPY]);
                    if k > SHORT_COPY {
                        dst[wi + SHORT_COPY..wi + LONG_COPY]
                            .copy_from_slice(&src[ri + SHORT_COPY..ri + LONG_COPY]);
                    }
                    let is_hex = (cover >> s) & 1;
                    let token = N_TOKEN ^ ((HEX_TOKEN ^ N_TOKEN) & is_hex.wrapping_neg());
                    dst[wi + k..wi + k + 8].copy_from_slice(&token.to_le_bytes());
                    w += k + 3 + 2 * is_hex as usize;
                    r = e;
                    starts &= starts - 1;
                    ends &= ends - 1;
                    if starts == 0 {
                        break;
                    }
                }
                out.len = start + w;
                lit = pos + r;
            }
            if limit == STEP {
                break;
            }
            let next = long_run(line, pos + limit, &mut lit, &mut out);
            if next >= pos + STEP {
                pos = next;
                continue 'windows;
            }
            from = next - pos;
        }
        pos += STEP;
    }
    if lit < n {
        out.push(&line[lit..]);
    }
    out.len
}

/// Handles the step-1 hex run that starts at `i`, where `line[i..i + 8]` are hex digits, and
/// returns where the next decision starts: after a UUID, or at the end of the run (or at the
/// UUID that cuts it).
fn long_run(line: &[u8], i: usize, lit: &mut usize, out: &mut Out<'_>) -> usize {
    let e = hex_run_end(line, i + 8);
    if e - i == 8 && is_uuid_at(line, i) {
        out.literal(line, *lit, i);
        out.push(b"<uuid>");
        *lit = i + UUID_LEN;
        return *lit;
    }
    let run_end = if e - i > 8 && is_uuid_at(line, e - 8) {
        e - 8
    } else {
        e
    };
    if run_end - i >= 8 {
        out.literal(line, *lit, i);
        out.push(b"<hex>");
        *lit = run_end;
    } else {
        // A short run cut by a UUID: replace its digit runs.
        let mut j = i;
        while j < run_end {
            if is_digit(line[j]) {
                let mut k = j + 1;
                while k < run_end && is_digit(line[k]) {
                    k += 1;
                }
                out.literal(line, *lit, j);
                out.push(b"<n>");
                *lit = k;
                j = k;
            } else {
                j += 1;
            }
        }
    }
    run_end
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::bytes::Regex;
    use std::sync::LazyLock;

    /// The definition: PACT key matches kept, and three regex substitutions in order on
    /// each stretch between them.
    fn oracle(line: &[u8]) -> Vec<u8> {
        static KEY: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"(?-u)PACT:[A-Za-z0-9_]+:[A-Za-z0-9_]+").unwrap());
        let mut out = Vec::new();
        let mut from = 0;
        for m in KEY.find_iter(line) {
            out.extend(substitutions(&line[from..m.start()]));
            out.extend_from_slice(m.as_bytes());
            from = m.end();
        }
        out.extend(substitutions(&line[from..]));
        out
    }

    /// The three regex substitutions in order, on one stretch.
    fn substitutions(line: &[u8]) -> Vec<u8> {
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

    /// Pieces that make and unmake PACT keys next to runs the substitutions replace.
    const KEY_PIECES: &[&[u8]] = &[
        b"PACT:",
        b"P",
        b"ACT",
        b":",
        b"_",
        b"1",
        b"a",
        b"-",
        b" ",
        b"deadbeef",
        b"0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c",
    ];

    #[test]
    fn keys_are_kept_verbatim() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"PACT:svc_v1:get 12", b"PACT:svc_v1:get <n>"),
            (b"x PACT:comp17:m2 y", b"x PACT:comp17:m2 y"),
            (
                b"[PACT:0b8f6a:s3_uploader] 42",
                b"[PACT:0b8f6a:s3_uploader] <n>",
            ),
            (b"12PACT:a1:b2 34", b"<n>PACT:a1:b2 <n>"),
            (b"PACT:a:deadbeef-1234", b"PACT:a:deadbeef-<n>"),
            (b"PACT:1:2PACT:3:4", b"PACT:1:2PACT:<n>:<n>"),
            (b"PACT:PACT:a1:b", b"PACT:PACT:a1:b"),
            (b"PACT:12 PACT:3:x", b"PACT:<n> PACT:3:x"),
            (b"deadbeefPACT:x9:y9deadbeef", b"<hex>PACT:x9:y9deadbeef"),
        ];
        for (line, want) in cases {
            assert_eq!(one_pass(line), *want, "{}", line.escape_ascii());
            assert_eq!(oracle(line), *want, "{}", line.escape_ascii());
        }
        let mut fp = Fingerprinter::new();
        let v1 = fp.fingerprint(b"ERROR [PACT:svc_v1:get] timeout after 30 ms");
        let v2 = fp.fingerprint(b"ERROR [PACT:svc_v2:get] timeout after 30 ms");
        let v1_again = fp.fingerprint(b"ERROR [PACT:svc_v1:get] timeout after 45 ms");
        assert_ne!(v1, v2);
        assert_eq!(v1, v1_again);
    }

    #[test]
    fn a_key_beside_the_line_is_part_of_its_identity() {
        let mut fp = Fingerprinter::new();
        let a = fp.fingerprint_keyed(b"charge failed 12", Some(b"PACT:pay_v1:charge"));
        assert_eq!(fp.normalized(), b"PACT:pay_v1:charge charge failed <n>");
        let b = fp.fingerprint_keyed(b"charge failed 13", Some(b"PACT:pay_v2:charge"));
        assert_ne!(a, b);
        // A line with a key of its own keeps its own identity.
        let own = fp.fingerprint(b"PACT:x:y charge failed 1");
        assert_eq!(
            fp.fingerprint_keyed(b"PACT:x:y charge failed 2", Some(b"PACT:pay_v1:charge")),
            own
        );
        assert_eq!(
            fp.fingerprint_keyed(b"charge failed 12", None),
            fp.fingerprint(b"charge failed 9")
        );
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
                Just(b"PACT:".to_vec()),
                Just(b":".to_vec()),
                Just(b"_".to_vec()),
                Just(b"PACT:svc_v1:get".to_vec()),
                Just(b"PACT:comp17:m2".to_vec()),
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

        #[test]
        fn one_pass_equals_the_definition_around_keys(
            line in proptest::collection::vec(
                proptest::sample::select(KEY_PIECES),
                0..40,
            ).prop_map(|v| v.concat()),
        ) {
            prop_assert_eq!(one_pass(&line), oracle(&line));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Lines of several windows, so that runs straddle window boundaries.
        #[test]
        fn one_pass_equals_three_substitutions_on_long_lines(
            line in proptest::collection::vec(atom(), 16..160).prop_map(|v| v.concat()),
        ) {
            prop_assert_eq!(one_pass(&line), oracle(&line));
        }
    }

    /// The word-at-a-time byte tests against their definitions, for every byte value at
    /// every position.
    #[test]
    fn swar_tests_match_byte_tests() {
        for k in 0..8 {
            for b in 0..=255u8 {
                let mut bytes = *b"0aF9zz-x";
                bytes[k] = b;
                let got = hex_bytes(u64::from_le_bytes(bytes));
                for (j, &c) in bytes.iter().enumerate() {
                    assert_eq!(got >> (8 * j + 7) & 1 == 1, c.is_ascii_hexdigit());
                }
                let mut win = [b'x'; WINDOW];
                win[k * 7] = b;
                let (hex, digit) = classify(&win);
                assert_eq!(hex, u64::from(b.is_ascii_hexdigit()) << (k * 7));
                assert_eq!(digit, u64::from(b.is_ascii_digit()) << (k * 7));
            }
        }
        let naive = |c: &[u8]| {
            c.len() >= UUID_LEN
                && c[..UUID_LEN].iter().enumerate().all(|(k, &b)| {
                    if [8, 13, 18, 23].contains(&k) {
                        b == b'-'
                    } else {
                        b.is_ascii_hexdigit()
                    }
                })
        };
        for k in 0..UUID_LEN {
            for b in 0..=255u8 {
                let mut line = format!("x{U}").into_bytes();
                line[1 + k] = b;
                assert_eq!(
                    is_uuid_at(&line, 1),
                    naive(&line[1..]),
                    "{}",
                    line.escape_ascii()
                );
                assert!(!is_uuid_at(&line[..line.len() - 1], 1));
            }
        }
    }

    /// Every interesting token at every offset of the first windows, between fillers that
    /// do or do not extend its runs.
    #[test]
    fn tokens_at_every_offset() {
        let needles: &[&[u8]] = &[
            U.as_bytes(),
            b"0B8F6A3C-1D2E-4F5A-8B9C-0D1E2F3A4B5C",
            b"ab0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c",
            b"0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c",
            b"0b8f6a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5",
            b"deadbeef",
            b"deadbeef-",
            b"deadbeef9",
            b"dead1234-x",
            b"1234567",
            b"12345678",
            b"123456789",
            b"1",
            b"a1b2c3",
            b"cafe",
            b"0123456789abcdef0123456789ABCDEF",
            b"0123456789abcdef0123456789ABCDEF-1234",
        ];
        let fillers: &[u8] = b"x-aZ7";
        for needle in needles {
            for &fill in fillers {
                for offset in 0..=2 * WINDOW + 8 {
                    for tail in [0, 1, 7, 8, 9, 70] {
                        let mut line = vec![fill; offset];
                        line.extend_from_slice(needle);
                        line.extend(std::iter::repeat_n(fill, tail));
                        assert_eq!(
                            one_pass(&line).escape_ascii().to_string(),
                            oracle(&line).escape_ascii().to_string(),
                            "needle {} at {offset}, filler {}, tail {tail}",
                            needle.escape_ascii(),
                            fill.escape_ascii(),
                        );
                    }
                }
            }
        }
    }

    /// Long pseudo-random lines over an alphabet dense in hex digits, digits and dashes,
    /// with UUIDs dropped in (like base64 blobs and hex dumps in JSON payloads).
    #[test]
    fn long_dense_lines_equal_three_substitutions() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"0123456789abcdefABCDEFxyz-- \"";
        let mut fp = Fingerprinter::new();
        for _ in 0..300 {
            let len = (next() % 5000) as usize;
            let mut line: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for _ in 0..next() % 8 {
                let at = (next() % (line.len() as u64 + 1)) as usize;
                line.splice(at..at, U.bytes());
            }
            let want = oracle(&line);
            assert_eq!(one_pass(&line), want, "line {}", line.escape_ascii());
            fp.fingerprint(&line);
            assert_eq!(fp.normalized(), &want[..]);
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
            assert_eq!(fp.normalized(), b"timeout after <n> ms");
            fp.fingerprint(&long);
            assert_eq!(fp.normalized(), &long[..]);
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
