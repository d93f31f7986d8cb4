//! The vectorised line kernel: one pass over a region that counts lines, detects over-long
//! lines and finds the lines containing a literal error pattern.
//!
//! This is the only module of the crate allowed to use `unsafe` (for `std::arch` intrinsics
//! and the raw loads that feed them). Every `unsafe` block carries a `// SAFETY:` comment, and
//! the oracle property tests in `matcher.rs` run every kernel the machine supports.
//!
//! # Algorithm
//!
//! The region is processed in blocks of 64 bytes. For each block the kernel computes two bit
//! masks (bit `i` stands for byte `i` of the block):
//!
//! - `nl`: the byte is `\n`;
//! - `cand`: a literal pattern may start here. The first one to three bytes of every pattern
//!   (its *prefix*) are compared with the data at offsets `i`, `i + 1` and `i + 2`, and the
//!   per-prefix masks are ORed. Prefixes of case-insensitive literals are folded with `| 0x20`
//!   and compared with the loaded bytes folded the same way (which maps ASCII upper case to
//!   lower case and merely mangles some other bytes: a superset test). Prefixes of
//!   case-sensitive literals are compared with the raw bytes, so that `error` or `trace`
//!   are no candidates for `ERROR` or `Traceback`. Equal prefixes are deduplicated, and a
//!   prefix whose matches are a subset of a shorter prefix's is dropped.
//!
//! The driver works on chunks of 16 blocks:
//!
//! 1. the masks of all blocks are computed in a loop without data-dependent branches, and the
//!    lines are counted on the way (population count of `nl`; the distance from the previous
//!    newline to the first newline of a block tells whether the line ending there is
//!    over-long, and lines that start and end inside one block are shorter than 64 bytes,
//!    which is why the scanner requires `max_line_bytes >= 64`);
//! 2. in the same loop, the candidate bits are flattened into a list of offsets (simdjson's
//!    `flatten_bits`), mostly branch-free;
//! 3. each candidate is verified against the literals whose first byte folds like its own,
//!    with one masked 16-byte compare per literal (exact, or ASCII-case-insensitive on
//!    letters only); a hit makes its line an error line, and the remaining candidates of that
//!    line are skipped. Line boundaries come from the `nl` masks; a line still open at the end
//!    of the chunk is reported once its end is seen (unless it turns out over-long).
//!
//! Separating the branch-free mask loop from the candidate loop matters: on log text with a
//! candidate in about every other block, branching per block on "any candidate?" mispredicts
//! so often that it costs as much as the vector work.
//!
//! The block loop runs while 66 bytes (block plus two bytes of look-ahead for the shifted
//! compares) are readable; the last few bytes are copied into a zero-padded stack buffer and
//! run through the same code, with masks cut to the valid length. Verification always reads
//! the region itself, with bounds checks, so padding can never produce a match.
//!
//! # Kernels
//!
//! - AVX2 (two 32-byte vectors per block), chosen at run time with
//!   `is_x86_feature_detected!` (AVX2 plus POPCNT, BMI1 and LZCNT, which every AVX2 CPU has
//!   and which make the bit manipulation cheap). With one or two prefixes it compares as
//!   described above; with more it computes the very same candidate mask with `vpshufb`
//!   nibble tables (one bucket bit per prefix, the "Teddy" technique), whose cost does not
//!   grow with the number of prefixes. On the default patterns (6 prefixes) and generated
//!   logs this took the AVX2 kernel from about 3.0 to 4.0 GB/s on a Zen 3 (measured
//!   side by side under the same load with `examples/scan_throughput.rs`);
//! - SSE2 (four 16-byte vectors per block, compares only: `pshufb` needs SSSE3), the x86_64
//!   baseline;
//! - a portable scalar kernel (SWAR for newlines; a bit set of possible first byte pairs,
//!   then the full prefix, for candidates), the only one on other architectures.
//!
//! A unit test checks that all mask implementations produce identical masks, and the oracle
//! tests in `matcher.rs` run the whole scanner under every kernel.
//!
//! AVX-512BW is deliberately not implemented: the machines Sentinel is developed and measured
//! on (AMD Zen 3) cannot execute it, so such a kernel could be neither tested against the
//! oracle nor shown to be faster. Adding one means one more [`Blocks`] implementation (one
//! 64-byte vector per block, `_mm512_cmpeq_epi8_mask` gives the masks directly), a variant in
//! `Kernel` and a run of the oracle tests on hardware that has it.
//!
//! A kernel can only be used through an [`Engine`], whose constructor checks CPU support;
//! that check is what makes calling the `#[target_feature]` functions sound.
#![allow(unsafe_code)]

use std::fmt;

/// Most distinct prefixes the prefilter compares per block. Beyond this the per-block cost
/// grows past what a regex with its own literal optimisations costs, so the scanner falls
/// back to one.
pub(crate) const MAX_PREFIXES: usize = 16;

/// Bytes per block: one bit per byte in a `u64` mask.
const BLOCK: usize = 64;
/// Bytes read past a block by the shifted compares (prefixes are at most three bytes).
const LOOKAHEAD: usize = 2;
/// Bytes that must be readable at a block start.
const WINDOW: usize = BLOCK + LOOKAHEAD;

/// Folding that maps ASCII upper case to lower case (and also mangles some non-letters,
/// which only costs false candidates).
const FOLD: u8 = 0x20;

/// A kernel whose CPU support has been checked. Only [`Engine::new`] creates one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Engine {
    kernel: Kernel,
}

impl Engine {
    /// The engine for `kernel`, or `None` if this CPU (or target) cannot run it.
    /// [`Kernel::Auto`] picks the best supported kernel and never fails.
    pub(crate) fn new(kernel: Kernel) -> Option<Engine> {
        let kernel = match kernel {
            Kernel::Auto => best(),
            k if is_supported(k) => k,
            _ => return None,
        };
        Some(Engine { kernel })
    }

    /// The kernel this engine runs (never [`Kernel::Auto`]).
    pub(crate) fn kernel(self) -> Kernel {
        self.kernel
    }
}

/// Which implementation of the block kernel a [`crate::scan::Scanner`] uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The fastest kernel this CPU supports (AVX2, else SSE2 on x86_64, else scalar).
    #[default]
    Auto,
    /// 2 x 32-byte AVX2 vectors per block (x86_64 with AVX2).
    Avx2,
    /// 4 x 16-byte SSE2 vectors per block (any x86_64).
    Sse2,
    /// Portable scalar code (any target).
    Scalar,
}

impl Kernel {
    /// Whether this CPU can run the kernel. [`Kernel::Auto`] always can.
    pub fn is_supported(self) -> bool {
        is_supported(self)
    }

    /// The explicit kernels this CPU can run, fastest first (for tests and benchmarks).
    pub fn available() -> impl Iterator<Item = Kernel> {
        [Kernel::Avx2, Kernel::Sse2, Kernel::Scalar]
            .into_iter()
            .filter(|k| k.is_supported())
    }
}

/// Whether this CPU can run `kernel`. [`Kernel::Auto`] is always supported.
pub(crate) fn is_supported(kernel: Kernel) -> bool {
    match kernel {
        Kernel::Auto | Kernel::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 => true,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // Every AVX2 CPU (Haswell, Zen and later) also has these; the kernel's bit
            // manipulation needs them to be fast.
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
                && std::arch::is_x86_feature_detected!("bmi1")
                && std::arch::is_x86_feature_detected!("lzcnt")
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Sse2 | Kernel::Avx2 => false,
    }
}

fn best() -> Kernel {
    if is_supported(Kernel::Avx2) {
        Kernel::Avx2
    } else if is_supported(Kernel::Sse2) {
        Kernel::Sse2
    } else {
        Kernel::Scalar
    }
}

/// Bytes of a literal verified with one masked 16-byte compare.
const HEAD: usize = 16;

/// One literal pattern, as verified at a candidate position.
///
/// The first [`HEAD`] bytes are checked with one exact compare: `(data | fold) & mask == head`,
/// where `fold` has `0x20` at the positions of ASCII letters of a case-insensitive literal and
/// `head` holds those letters in lower case. At a letter position `data | 0x20 == l` holds iff
/// `data` is `l` or its upper case; everywhere else the compare is exact.
#[derive(Debug, Clone)]
struct Literal {
    head: u128,
    fold: u128,
    mask: u128,
    bytes: Box<[u8]>,
    /// ASCII case-insensitive.
    ci: bool,
}

impl Literal {
    fn new(bytes: &[u8], ci: bool) -> Literal {
        let mut head = [0u8; HEAD];
        let mut fold = [0u8; HEAD];
        let mut mask = [0u8; HEAD];
        for (i, &b) in bytes.iter().take(HEAD).enumerate() {
            let letter = ci && b.is_ascii_alphabetic();
            head[i] = if letter { b | FOLD } else { b };
            fold[i] = if letter { FOLD } else { 0 };
            mask[i] = 0xff;
        }
        Literal {
            head: u128::from_le_bytes(head),
            fold: u128::from_le_bytes(fold),
            mask: u128::from_le_bytes(mask),
            bytes: bytes.into(),
            ci,
        }
    }

    /// Whether the literal is a prefix of `rest`.
    #[inline(always)]
    fn matches_at(&self, rest: &[u8]) -> bool {
        match rest.first_chunk::<HEAD>() {
            Some(word) => {
                let data = u128::from_le_bytes(*word);
                (data | self.fold) & self.mask == self.head
                    && (self.bytes.len() <= HEAD || self.matches_slow(rest))
            }
            None => self.matches_slow(rest),
        }
    }

    #[cold]
    fn matches_slow(&self, rest: &[u8]) -> bool {
        let n = self.bytes.len();
        rest.len() >= n
            && if self.ci {
                rest[..n].eq_ignore_ascii_case(&self.bytes)
            } else {
                rest[..n] == *self.bytes
            }
    }
}

/// One distinct prefix compared by the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    /// Prefix bytes, little-endian in the low `len` bytes; folded iff `folded`.
    key: u32,
    /// `0xff` for each prefix byte.
    mask: u32,
    len: usize,
    /// Compared with folded data (for case-insensitive literals); otherwise compared with the
    /// raw bytes (case-sensitive literals), which keeps e.g. `error` from being a candidate
    /// for `ERROR`.
    folded: bool,
}

impl Group {
    fn bytes(&self) -> [u8; 4] {
        self.key.to_le_bytes()
    }

    /// Whether every position where `other` matches is also a candidate of `self`.
    fn covers(&self, other: &Group) -> bool {
        if self.len > other.len || (!self.folded && other.folded) {
            return false;
        }
        let (mine, theirs) = (self.bytes(), other.bytes());
        (0..self.len).all(|i| {
            let t = if self.folded {
                theirs[i] | FOLD
            } else {
                theirs[i]
            };
            mine[i] == t
        })
    }
}

/// The literal patterns of a scanner, arranged for the block kernel.
#[derive(Clone)]
pub(crate) struct Prefilter {
    /// The distinct prefixes compared by the kernels; at most [`MAX_PREFIXES`].
    groups: Vec<Group>,
    /// All literals, sorted by folded first byte.
    literals: Vec<Literal>,
    /// `by_first[b]` for a folded byte `b`: the range of `literals` whose first byte folds
    /// to `b`. A candidate is verified against exactly those (the exact compare makes a
    /// separate prefix check redundant).
    by_first: [(u32, u32); 256],
    /// Bit set of the byte pairs `(b0, b1)` (index `b0 | b1 << 8`) that can start a prefix
    /// match: the scalar kernel's first filter. Empty for [`Prefilter::EMPTY`].
    pairs: Vec<u64>,
    /// Nibble tables of the AVX2 lookup kernel, built once here rather than per scan.
    #[cfg(target_arch = "x86_64")]
    nibbles: NibbleTables,
}

/// Lookup tables for the nibble (Teddy-style) form of the prefix test: group `k` owns bit
/// `k % 8` of set `k / 8`; `lo[set][offset][n]` has the bits of the groups whose prefix
/// accepts a byte with low nibble `n` at `offset` (and `hi` likewise for the high nibble).
/// A raw prefix byte accepts one value, a folded one the two values that fold to it, and an
/// offset past the end of a prefix accepts every byte.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, Default)]
struct NibbleTables {
    lo: [[[u8; 16]; 3]; 2],
    hi: [[[u8; 16]; 3]; 2],
}

#[cfg(target_arch = "x86_64")]
impl NibbleTables {
    fn new(groups: &[Group]) -> NibbleTables {
        let mut t = NibbleTables::default();
        for (k, g) in groups.iter().enumerate() {
            let (set, bit) = (k / 8, 1u8 << (k % 8));
            for (offset, &want) in g.bytes().iter().enumerate().take(3) {
                for b in 0..=255u8 {
                    let accepted = offset >= g.len
                        || if g.folded {
                            b | FOLD == want
                        } else {
                            b == want
                        };
                    if accepted {
                        t.lo[set][offset][usize::from(b & 0x0f)] |= bit;
                        t.hi[set][offset][usize::from(b >> 4)] |= bit;
                    }
                }
            }
        }
        t
    }
}

impl fmt::Debug for Prefilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefixes: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let bytes = g.bytes()[..g.len].escape_ascii().to_string();
                if g.folded {
                    format!("(?i){bytes}")
                } else {
                    bytes
                }
            })
            .collect();
        f.debug_struct("Prefilter")
            .field("prefixes", &prefixes)
            .field("literals", &self.literals.len())
            .finish_non_exhaustive()
    }
}

impl Prefilter {
    /// No patterns: the kernel only counts lines.
    const EMPTY: Prefilter = Prefilter {
        groups: Vec::new(),
        literals: Vec::new(),
        by_first: [(0, 0); 256],
        pairs: Vec::new(),
        #[cfg(target_arch = "x86_64")]
        nibbles: NibbleTables {
            lo: [[[0; 16]; 3]; 2],
            hi: [[[0; 16]; 3]; 2],
        },
    };

    /// Arranges `literals` (bytes, ASCII-case-insensitive?) for the kernel, or `None` if they
    /// have more than [`MAX_PREFIXES`] distinct prefixes. Empty literals are ignored; callers
    /// must also leave out literals containing `\n`, which can never match inside a line.
    pub(crate) fn new<'a, I>(literals: I) -> Option<Prefilter>
    where
        I: IntoIterator<Item = (&'a [u8], bool)>,
    {
        let mut lits: Vec<(&[u8], bool)> = literals
            .into_iter()
            .filter(|(bytes, _)| !bytes.is_empty())
            .collect();
        let mut candidates: Vec<Group> = lits
            .iter()
            .map(|&(bytes, ci)| {
                let len = bytes.len().min(3);
                let mut key = [0u8; 4];
                let mut mask = [0u8; 4];
                for i in 0..len {
                    key[i] = if ci { bytes[i] | FOLD } else { bytes[i] };
                    mask[i] = 0xff;
                }
                Group {
                    key: u32::from_le_bytes(key),
                    mask: u32::from_le_bytes(mask),
                    len,
                    folded: ci,
                }
            })
            .collect();
        // Shortest first, folded before raw, so that a group is created before the groups it
        // covers are considered.
        candidates.sort_by_key(|g| (g.len, !g.folded, g.key));
        let mut groups: Vec<Group> = Vec::new();
        for g in candidates {
            if groups.iter().any(|have| have.covers(&g)) {
                continue;
            }
            if groups.len() == MAX_PREFIXES {
                return None;
            }
            groups.push(g);
        }
        lits.sort_by_key(|(bytes, _)| bytes[0] | FOLD);
        let mut by_first = [(0u32, 0u32); 256];
        for (i, (bytes, _)) in lits.iter().enumerate() {
            let i = u32::try_from(i).ok()?;
            let slot = &mut by_first[usize::from(bytes[0] | FOLD)];
            if slot.1 == 0 {
                slot.0 = i;
            }
            slot.1 = i + 1;
        }
        let literals = lits
            .into_iter()
            .map(|(bytes, ci)| Literal::new(bytes, ci))
            .collect();
        let mut pairs = vec![0u64; (1 << 16) / 64];
        for g in &groups {
            let key = g.bytes();
            // The byte values that match prefix byte `i` (any byte past the prefix).
            let matching = |i: usize| {
                (0..=255u8).filter(move |&b| {
                    i >= g.len
                        || if g.folded {
                            b | FOLD == key[i]
                        } else {
                            b == key[i]
                        }
                })
            };
            for b0 in matching(0) {
                for b1 in matching(1) {
                    let pair = usize::from(b0) | usize::from(b1) << 8;
                    pairs[pair / 64] |= 1 << (pair % 64);
                }
            }
        }
        Some(Prefilter {
            #[cfg(target_arch = "x86_64")]
            nibbles: NibbleTables::new(&groups),
            groups,
            literals,
            by_first,
            pairs,
        })
    }

    /// Whether some literal matches `region` at `pos`.
    #[inline(always)]
    fn verify(&self, region: &[u8], pos: usize) -> bool {
        let Some(rest) = region.get(pos..) else {
            return false;
        };
        let Some(&b0) = rest.first() else {
            return false;
        };
        let (from, to) = self.by_first[usize::from(b0 | FOLD)];
        let Some(lits) = self.literals.get(from as usize..to as usize) else {
            return false;
        };
        lits.iter().any(|lit| lit.matches_at(rest))
    }

    /// The prefixes of exactly `len` bytes compared with folded (or raw) data.
    #[cfg(target_arch = "x86_64")]
    fn prefixes(&self, len: usize, folded: bool) -> impl Iterator<Item = [u8; 4]> + '_ {
        self.groups
            .iter()
            .filter(move |g| g.len == len && g.folded == folded)
            .map(Group::bytes)
    }

    /// Whether some prefix matches the 3-byte window `raw` (`folded` is the same window
    /// folded); for the scalar kernel.
    #[inline(always)]
    fn any_prefix(&self, raw: u32, folded: u32) -> bool {
        self.groups.iter().any(|g| {
            let w = if g.folded { folded } else { raw };
            w & g.mask == g.key
        })
    }
}

/// What a kernel run found out about a region (or the part of it before a stop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) lines: u64,
    pub(crate) long_lines: u64,
    /// The emit callback asked to stop; the counts are then incomplete.
    pub(crate) stopped: bool,
}

/// Runs the kernel over `region`: counts lines and over-long lines, and calls
/// `emit(start, end)` for every line that is not over-long and contains a literal of
/// `prefilter`, in order (`end` is the position of the line's `\n`, or `region.len()`).
/// Stops as soon as `emit` returns `false`.
pub(crate) fn scan<F>(
    engine: Engine,
    prefilter: &Prefilter,
    region: &[u8],
    max_line_bytes: usize,
    emit: &mut F,
) -> Tally
where
    F: FnMut(usize, usize) -> bool,
{
    debug_assert!(max_line_bytes >= BLOCK);
    match engine.kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: an `Engine` with `Kernel::Avx2` is only created after
            // `is_supported` detected AVX2, POPCNT, BMI1 and LZCNT.
            unsafe { x86::scan_avx2(prefilter, region, max_line_bytes, emit) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 => {
            // SAFETY: SSE2 is part of the x86_64 baseline (and `Engine::new` checked it).
            unsafe { x86::scan_sse2(prefilter, region, max_line_bytes, emit) }
        }
        _ => {
            let blocks = ScalarBlocks::new(prefilter);
            run(&blocks, prefilter, region, max_line_bytes, emit)
        }
    }
}

/// Counts the lines and over-long lines of `region` (the kernel with no patterns).
pub(crate) fn count(engine: Engine, region: &[u8], max_line_bytes: usize) -> (u64, u64) {
    let tally = scan(
        engine,
        &Prefilter::EMPTY,
        region,
        max_line_bytes,
        &mut |_, _| true,
    );
    (tally.lines, tally.long_lines)
}

/// Computes the masks of one block.
trait Blocks {
    /// Returns `(nl, cand)` for the 64-byte block at `ptr`: bit `i` of `nl` is set iff
    /// `ptr[i] == b'\n'`; bit `i` of `cand` is set iff some prefix matches the folded bytes at
    /// `ptr + i` (it may also be set elsewhere, never missing a match).
    ///
    /// # Safety
    ///
    /// `ptr .. ptr + WINDOW` must be readable, and the CPU must support the instructions of
    /// the implementation.
    unsafe fn masks(&self, ptr: *const u8) -> (u64, u64);
}

/// Blocks per chunk. The driver computes the masks of a whole chunk in a branch-free loop,
/// then counts lines and verifies candidates; 1 KiB chunks stay in L1 for verification.
const CHUNK_BLOCKS: usize = 16;
const CHUNK: usize = CHUNK_BLOCKS * BLOCK;

/// The line state carried from chunk to chunk.
#[derive(Debug, Default)]
struct State {
    /// Start of the line the next chunk continues.
    line_start: usize,
    /// Start of an error line whose end has not been seen yet (it is reported, unless
    /// over-long, once its end is found).
    pending: Option<usize>,
    lines: u64,
    long_lines: u64,
}

/// All bits at positions `< n` (`n <= 64`).
#[inline(always)]
fn below(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Scratch space for one chunk.
struct Chunk {
    nl: [u64; CHUNK_BLOCKS],
    /// Candidate offsets within the chunk, in order; the slack absorbs the unconditional
    /// writes of [`Chunk::push`].
    pos: [u16; CHUNK + 4],
}

impl Chunk {
    /// Stores the masks of block `b` and appends its candidate offsets to `pos[n..]`;
    /// returns the new number of candidates. Mostly branch-free (simdjson's
    /// `flatten_bits`): four positions are written whatever the count, and only blocks with
    /// more candidates loop.
    #[inline(always)]
    fn push(&mut self, b: usize, nl: u64, cand: u64, n: usize) -> usize {
        self.nl[b] = nl;
        let mut m = cand;
        let count = m.count_ones() as usize;
        let base = (b * BLOCK) as u16;
        let mut at = n;
        for _ in 0..4 {
            // `trailing_zeros` of 0 is 64: a harmless value past the block.
            self.pos[at] = base + m.trailing_zeros() as u16;
            m &= m.wrapping_sub(1);
            at += 1;
        }
        if count > 4 {
            while m != 0 {
                self.pos[at] = base + m.trailing_zeros() as u16;
                m &= m - 1;
                at += 1;
            }
        }
        n + count
    }

    /// The start of the line containing chunk offset `rel` (`carried` if it started before the
    /// chunk).
    #[inline]
    fn line_start(&self, chunk_base: usize, rel: usize, carried: usize) -> usize {
        let b = rel / BLOCK;
        let m = self.nl[b] & below(rel % BLOCK);
        if m != 0 {
            return chunk_base + b * BLOCK + (64 - m.leading_zeros() as usize);
        }
        for k in (0..b).rev() {
            let m = self.nl[k];
            if m != 0 {
                return chunk_base + k * BLOCK + (64 - m.leading_zeros() as usize);
            }
        }
        carried
    }

    /// The position of the first newline at or after chunk offset `rel`, if in the chunk.
    #[inline]
    fn line_end(&self, chunk_base: usize, rel: usize, blocks: usize) -> Option<usize> {
        let b = rel / BLOCK;
        let m = self.nl[b] & !below(rel % BLOCK);
        if m != 0 {
            return Some(chunk_base + b * BLOCK + m.trailing_zeros() as usize);
        }
        (b + 1..blocks).find_map(|k| {
            let m = self.nl[k];
            (m != 0).then(|| chunk_base + k * BLOCK + m.trailing_zeros() as usize)
        })
    }
}

impl State {
    /// Counts the newlines `nl` of the block at `block_base`, branch-free. Only the first
    /// newline of a block can end an over-long line: lines inside one block are shorter than
    /// 64 <= max bytes.
    #[inline(always)]
    fn count(&mut self, block_base: usize, nl: u64, max: usize) {
        let has = nl != 0;
        let first = block_base + nl.trailing_zeros() as usize;
        self.lines += u64::from(nl.count_ones());
        self.long_lines += u64::from(has & (first - self.line_start > max));
        self.line_start = if has {
            block_base + (64 - nl.leading_zeros() as usize)
        } else {
            self.line_start
        };
    }
}

/// Verifies and reports one chunk whose masks are in `chunk` (`blocks` blocks at `base`),
/// after [`State::count`] ran on its blocks; `carried` is the start of the line the chunk
/// continues. Returns `false` if `emit` asked to stop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn process<F>(
    st: &mut State,
    chunk: &mut Chunk,
    base: usize,
    blocks: usize,
    carried: usize,
    candidates: usize,
    pf: &Prefilter,
    region: &[u8],
    max: usize,
    emit: &mut F,
) -> bool
where
    F: FnMut(usize, usize) -> bool,
{
    // Candidates before this offset lie in a line already known to be an error line.
    let mut skip_until = 0;
    if let Some(start) = st.pending {
        match chunk.line_end(base, 0, blocks) {
            Some(end) => {
                st.pending = None;
                if end - start <= max && !emit(start, end) {
                    return false;
                }
                skip_until = end - base;
            }
            None => return true,
        }
    }
    for k in 0..candidates {
        let rel = usize::from(chunk.pos[k]);
        if rel < skip_until || !pf.verify(region, base + rel) {
            continue;
        }
        let start = chunk.line_start(base, rel, carried);
        match chunk.line_end(base, rel, blocks) {
            Some(end) => {
                if end - start <= max && !emit(start, end) {
                    return false;
                }
                skip_until = end - base;
            }
            None => {
                // The line goes on into the next chunk; so do all later candidates here.
                st.pending = Some(start);
                break;
            }
        }
    }
    true
}

/// The kernel driver, generic over the mask computation. `#[inline(always)]` so that each
/// `#[target_feature]` entry point gets its own copy compiled with its features.
#[inline(always)]
fn run<B, F>(blocks: &B, pf: &Prefilter, region: &[u8], max: usize, emit: &mut F) -> Tally
where
    B: Blocks,
    F: FnMut(usize, usize) -> bool,
{
    let len = region.len();
    let ptr = region.as_ptr();
    let mut st = State::default();
    let stopped = Tally {
        stopped: true,
        ..Tally::default()
    };
    let mut chunk = Chunk {
        nl: [0; CHUNK_BLOCKS],
        pos: [0; CHUNK + 4],
    };
    let mut base = 0;
    // Whole chunks, then whole blocks, straight from the region.
    while len - base >= WINDOW {
        let n = ((len - base - LOOKAHEAD) / BLOCK).min(CHUNK_BLOCKS);
        let carried = st.line_start;
        let mut candidates = 0;
        for b in 0..n {
            // SAFETY: `base + b * BLOCK + WINDOW <= base + n * BLOCK + LOOKAHEAD <= len`, so
            // the window is inside `region`; the caller of `run` chose `blocks` for a CPU that
            // supports it.
            let (nl, cand) = unsafe { blocks.masks(ptr.add(base + b * BLOCK)) };
            st.count(base + b * BLOCK, nl, max);
            candidates = chunk.push(b, nl, cand, candidates);
        }
        if !process(
            &mut st, &mut chunk, base, n, carried, candidates, pf, region, max, emit,
        ) {
            return stopped;
        }
        base += n * BLOCK;
    }
    // The tail (at most WINDOW - 1 bytes) from a zero-padded copy: padding contains no
    // newline, candidate bits past the end are cleared, and verification reads the region,
    // so padding cannot create lines or matches.
    let rest = len - base;
    if rest > 0 {
        let mut buf = [0u8; 2 * BLOCK + LOOKAHEAD];
        buf[..rest].copy_from_slice(&region[base..]);
        let n = rest.div_ceil(BLOCK);
        let carried = st.line_start;
        let mut candidates = 0;
        for b in 0..n {
            // SAFETY: `b * BLOCK <= BLOCK` (rest < WINDOW), so the window lies in `buf`.
            let (nl, cand) = unsafe { blocks.masks(buf.as_ptr().add(b * BLOCK)) };
            let keep = below(rest - b * BLOCK);
            st.count(base + b * BLOCK, nl & keep, max);
            candidates = chunk.push(b, nl & keep, cand & keep, candidates);
        }
        if !process(
            &mut st, &mut chunk, base, n, carried, candidates, pf, region, max, emit,
        ) {
            return stopped;
        }
    }
    // A last line without `\n`.
    if st.line_start < len {
        st.lines += 1;
        if len - st.line_start > max {
            st.long_lines += 1;
        } else if st.pending.is_some() && !emit(st.line_start, len) {
            return stopped;
        }
    }
    Tally {
        lines: st.lines,
        long_lines: st.long_lines,
        stopped: false,
    }
}

/// The portable kernel: SWAR for newlines; for candidates a bit set of possible first byte
/// pairs, then a check of the full prefix.
struct ScalarBlocks<'a> {
    pf: &'a Prefilter,
}

impl<'a> ScalarBlocks<'a> {
    fn new(pf: &'a Prefilter) -> Self {
        ScalarBlocks { pf }
    }
}

impl Blocks for ScalarBlocks<'_> {
    #[inline(always)]
    unsafe fn masks(&self, ptr: *const u8) -> (u64, u64) {
        // SAFETY: the caller guarantees that `WINDOW` bytes at `ptr` are readable; `u8` has
        // no alignment or validity requirements.
        let w: &[u8; WINDOW] = unsafe { &*ptr.cast::<[u8; WINDOW]>() };
        let mut nl = 0u64;
        for (i, chunk) in w[..BLOCK].chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            nl |= u64::from(newline_bits(u64::from_le_bytes(word))) << (8 * i);
        }
        let mut cand = 0u64;
        let pairs = &self.pf.pairs;
        if !pairs.is_empty() {
            for i in 0..BLOCK {
                let pair = usize::from(w[i]) | usize::from(w[i + 1]) << 8;
                if pairs[pair / 64] & (1 << (pair % 64)) != 0 {
                    let raw = u32::from_le_bytes([w[i], w[i + 1], w[i + 2], 0]);
                    let folded = raw | u32::from_le_bytes([FOLD, FOLD, FOLD, 0]);
                    cand |= u64::from(self.pf.any_prefix(raw, folded)) << i;
                }
            }
        }
        (nl, cand)
    }
}

/// Bit `i` set iff byte `i` (little-endian) of `word` is `\n`; exact, no false positives.
#[inline(always)]
fn newline_bits(word: u64) -> u8 {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ u64::from_ne_bytes([b'\n'; 8]);
    // High bit of each byte set iff that byte of `x` is zero.
    let zero = !(((x & LO7) + LO7) | x | LO7);
    // Gather the eight high bits into one byte.
    ((zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, Blocks, FOLD, MAX_PREFIXES, Prefilter, Tally, run};
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8, _mm256_setzero_si256,
        _mm256_shuffle_epi8, _mm256_srli_epi16,
    };

    /// The few vector operations the kernel needs, for one register width.
    ///
    /// Every method is `unsafe`: the caller must make sure the CPU supports the instruction
    /// set of the implementation (and, for `load`, that the bytes are readable).
    trait Vector: Copy {
        /// Bytes per vector.
        const BYTES: usize;
        unsafe fn splat(byte: u8) -> Self;
        /// # Safety
        ///
        /// `Self::BYTES` bytes at `ptr` must be readable.
        unsafe fn load(ptr: *const u8) -> Self;
        unsafe fn or(self, other: Self) -> Self;
        unsafe fn and(self, other: Self) -> Self;
        unsafe fn eq(self, other: Self) -> Self;
        /// One bit per byte: its high bit.
        unsafe fn movemask(self) -> u64;
    }

    impl Vector for __m256i {
        const BYTES: usize = 32;
        #[inline(always)]
        unsafe fn splat(byte: u8) -> Self {
            // SAFETY: the caller guarantees AVX2.
            unsafe { _mm256_set1_epi8(byte as i8) }
        }
        #[inline(always)]
        unsafe fn load(ptr: *const u8) -> Self {
            // SAFETY: the caller guarantees AVX2 and 32 readable bytes; `loadu` has no
            // alignment requirement.
            unsafe { _mm256_loadu_si256(ptr.cast()) }
        }
        #[inline(always)]
        unsafe fn or(self, other: Self) -> Self {
            // SAFETY: the caller guarantees AVX2.
            unsafe { _mm256_or_si256(self, other) }
        }
        #[inline(always)]
        unsafe fn and(self, other: Self) -> Self {
            // SAFETY: the caller guarantees AVX2.
            unsafe { _mm256_and_si256(self, other) }
        }
        #[inline(always)]
        unsafe fn eq(self, other: Self) -> Self {
            // SAFETY: the caller guarantees AVX2.
            unsafe { _mm256_cmpeq_epi8(self, other) }
        }
        #[inline(always)]
        unsafe fn movemask(self) -> u64 {
            // SAFETY: the caller guarantees AVX2.
            u64::from(unsafe { _mm256_movemask_epi8(self) } as u32)
        }
    }

    impl Vector for __m128i {
        const BYTES: usize = 16;
        #[inline(always)]
        unsafe fn splat(byte: u8) -> Self {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            unsafe { _mm_set1_epi8(byte as i8) }
        }
        #[inline(always)]
        unsafe fn load(ptr: *const u8) -> Self {
            // SAFETY: the caller guarantees 16 readable bytes; `loadu` has no alignment
            // requirement.
            unsafe { _mm_loadu_si128(ptr.cast()) }
        }
        #[inline(always)]
        unsafe fn or(self, other: Self) -> Self {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            unsafe { _mm_or_si128(self, other) }
        }
        #[inline(always)]
        unsafe fn and(self, other: Self) -> Self {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            unsafe { _mm_and_si128(self, other) }
        }
        #[inline(always)]
        unsafe fn eq(self, other: Self) -> Self {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            unsafe { _mm_cmpeq_epi8(self, other) }
        }
        #[inline(always)]
        unsafe fn movemask(self) -> u64 {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            u64::from(unsafe { _mm_movemask_epi8(self) } as u16)
        }
    }

    /// Broadcast prefix bytes of one comparison mode (raw or folded), by prefix length.
    struct PrefixSet<V> {
        p3: [[V; 3]; MAX_PREFIXES],
        n3: usize,
        p2: [[V; 2]; MAX_PREFIXES],
        n2: usize,
        p1: [V; MAX_PREFIXES],
        n1: usize,
    }

    impl<V: Vector> PrefixSet<V> {
        /// # Safety
        ///
        /// The CPU must support `V`.
        #[inline(always)]
        unsafe fn new(pf: &Prefilter, folded: bool) -> Self {
            // SAFETY: the caller guarantees support for `V`.
            let splat = |b: u8| unsafe { V::splat(b) };
            let zero = splat(0);
            let mut p = PrefixSet {
                p3: [[zero; 3]; MAX_PREFIXES],
                n3: 0,
                p2: [[zero; 2]; MAX_PREFIXES],
                n2: 0,
                p1: [zero; MAX_PREFIXES],
                n1: 0,
            };
            for k in pf.prefixes(3, folded) {
                p.p3[p.n3] = [splat(k[0]), splat(k[1]), splat(k[2])];
                p.n3 += 1;
            }
            for k in pf.prefixes(2, folded) {
                p.p2[p.n2] = [splat(k[0]), splat(k[1])];
                p.n2 += 1;
            }
            for k in pf.prefixes(1, folded) {
                p.p1[p.n1] = splat(k[0]);
                p.n1 += 1;
            }
            p
        }

        fn is_empty(&self) -> bool {
            self.n1 + self.n2 + self.n3 == 0
        }

        /// ORs into `acc[j]` the positions where a prefix matches `x[j]` (at `i`), `y[j]` (the
        /// bytes at `i + 1`) and `z[j]` (at `i + 2`). The prefix loop is the outer one, so
        /// that each broadcast prefix byte is loaded once per block, not once per vector.
        ///
        /// # Safety
        ///
        /// The CPU must support `V`.
        #[inline(always)]
        unsafe fn accumulate<const N: usize>(
            &self,
            acc: &mut [V; N],
            x: &[V; N],
            y: &[V; N],
            z: &[V; N],
        ) {
            // SAFETY: the caller guarantees support for `V`.
            unsafe {
                for &[a, b, c] in &self.p3[..self.n3] {
                    for j in 0..N {
                        acc[j] = acc[j].or(x[j].eq(a).and(y[j].eq(b)).and(z[j].eq(c)));
                    }
                }
                for &[a, b] in &self.p2[..self.n2] {
                    for j in 0..N {
                        acc[j] = acc[j].or(x[j].eq(a).and(y[j].eq(b)));
                    }
                }
                for &a in &self.p1[..self.n1] {
                    for j in 0..N {
                        acc[j] = acc[j].or(x[j].eq(a));
                    }
                }
            }
        }
    }

    /// The block kernel for vectors `V`, `N` of them per block.
    struct VectorBlocks<V, const N: usize> {
        newline: V,
        fold: V,
        raw: PrefixSet<V>,
        folded: PrefixSet<V>,
    }

    impl<V: Vector, const N: usize> VectorBlocks<V, N> {
        const FILLS_BLOCK: () = assert!(N * V::BYTES == BLOCK);

        /// # Safety
        ///
        /// The CPU must support `V`.
        #[inline(always)]
        unsafe fn new(pf: &Prefilter) -> Self {
            let () = Self::FILLS_BLOCK;
            // SAFETY: the caller guarantees support for `V`.
            unsafe {
                let raw = PrefixSet::new(pf, false);
                let folded = PrefixSet::new(pf, true);
                VectorBlocks {
                    newline: V::splat(b'\n'),
                    fold: V::splat(FOLD),
                    raw,
                    folded,
                }
            }
        }
    }

    impl<V: Vector, const N: usize> Blocks for VectorBlocks<V, N> {
        #[inline(always)]
        unsafe fn masks(&self, ptr: *const u8) -> (u64, u64) {
            // SAFETY: the caller guarantees `WINDOW` readable bytes at `ptr`, so loads of
            // `V::BYTES` at `ptr + j * V::BYTES + {0, 1, 2}` for `j < N` are in bounds
            // (`N * V::BYTES == BLOCK`), and support for `V`. (The closures are part of this
            // block.)
            unsafe {
                let load = |offset: usize| -> [V; N] {
                    std::array::from_fn(|j| V::load(ptr.add(j * V::BYTES + offset)))
                };
                let x = load(0);
                let mut nl = 0u64;
                for (j, v) in x.iter().enumerate() {
                    nl |= v.eq(self.newline).movemask() << (j * V::BYTES);
                }
                let (y, z) = (load(1), load(2));
                let mut acc = [V::splat(0); N];
                self.raw.accumulate(&mut acc, &x, &y, &z);
                if !self.folded.is_empty() {
                    let f = self.fold;
                    let (fx, fy, fz) = (x.map(|v| v.or(f)), y.map(|v| v.or(f)), z.map(|v| v.or(f)));
                    self.folded.accumulate(&mut acc, &fx, &fy, &fz);
                }
                let mut cand = 0u64;
                for (j, v) in acc.iter().enumerate() {
                    cand |= v.movemask() << (j * V::BYTES);
                }
                (nl, cand)
            }
        }
    }

    /// The block kernel without patterns (line counting only): no prefix tables to set up.
    struct LineBlocks<V, const N: usize> {
        newline: V,
    }

    impl<V: Vector, const N: usize> LineBlocks<V, N> {
        /// # Safety
        ///
        /// The CPU must support `V`.
        #[inline(always)]
        unsafe fn new() -> Self {
            let () = VectorBlocks::<V, N>::FILLS_BLOCK;
            LineBlocks {
                // SAFETY: the caller guarantees support for `V`.
                newline: unsafe { V::splat(b'\n') },
            }
        }
    }

    impl<V: Vector, const N: usize> Blocks for LineBlocks<V, N> {
        #[inline(always)]
        unsafe fn masks(&self, ptr: *const u8) -> (u64, u64) {
            let mut nl = 0u64;
            for j in 0..N {
                // SAFETY: the caller guarantees `WINDOW` readable bytes at `ptr` (and
                // `N * V::BYTES == BLOCK`) and support for `V`.
                nl |= unsafe { V::load(ptr.add(j * V::BYTES)).eq(self.newline).movemask() }
                    << (j * V::BYTES);
            }
            (nl, 0)
        }
    }

    /// Prefix sets up to this size use [`VectorBlocks`] under AVX2 (a compare, two ANDs and an
    /// OR per prefix byte and vector); larger ones use [`NibbleBlocks`], whose cost does not
    /// grow with the number of prefixes up to 8 (and doubles up to 16).
    const AVX2_MAX_COMPARED_PREFIXES: usize = 2;

    /// The prefix compares of [`VectorBlocks`] done with table lookups (the "Teddy" technique
    /// of aho-corasick's packed searcher). Each prefix owns one bit ("bucket") of an 8-bit
    /// lane value; for each of the three offsets two `vpshufb` lookups in the
    /// [`NibbleTables`](super::NibbleTables), indexed by the low and the high nibble of the
    /// data byte, give the buckets whose prefix accepts that nibble there. ANDing the two
    /// lookups, then the three offsets, leaves exactly the buckets whose prefix matches at the
    /// position: one bucket holds one prefix, a raw prefix byte accepts one value and a folded
    /// one the two values that fold to it (they differ in bit 5 only, i.e. in one bit of the
    /// high nibble, while the low nibble is the same), and positions past a short prefix accept
    /// any byte. So the candidate mask is bit for bit that of the compare kernel.
    struct NibbleBlocks {
        newline: __m256i,
        low_nibble: __m256i,
        /// 1 or 2 (for up to 8 or 16 prefixes).
        sets: usize,
        /// `lo[set][offset]` and `hi[set][offset]`: 16-byte tables, repeated in both lanes.
        lo: [[__m256i; 3]; 2],
        hi: [[__m256i; 3]; 2],
    }

    impl NibbleBlocks {
        #[target_feature(enable = "avx2")]
        fn new(pf: &Prefilter) -> Self {
            // Each 16-byte table, repeated in both 128-bit lanes (`vpshufb` works per lane).
            let load = |t: &[u8; 16]| {
                let mut both = [0u8; 32];
                both[..16].copy_from_slice(t);
                both[16..].copy_from_slice(t);
                // SAFETY: `both` has 32 readable bytes; AVX2 is enabled in this function.
                unsafe { _mm256_loadu_si256(both.as_ptr().cast()) }
            };
            let t = &pf.nibbles;
            NibbleBlocks {
                newline: _mm256_set1_epi8(b'\n' as i8),
                low_nibble: _mm256_set1_epi8(0x0f),
                sets: pf.groups.len().div_ceil(8),
                lo: t.lo.map(|set| set.each_ref().map(load)),
                hi: t.hi.map(|set| set.each_ref().map(load)),
            }
        }

        /// The buckets of `set` whose prefix byte at `offset` accepts the bytes of `v`.
        ///
        /// # Safety
        ///
        /// AVX2 supported; `set < 2`, `offset < 3`.
        #[inline(always)]
        unsafe fn lookup(&self, set: usize, offset: usize, lo: __m256i, hi: __m256i) -> __m256i {
            // SAFETY: the caller guarantees AVX2.
            unsafe {
                _mm256_and_si256(
                    _mm256_shuffle_epi8(self.lo[set][offset], lo),
                    _mm256_shuffle_epi8(self.hi[set][offset], hi),
                )
            }
        }
    }

    impl Blocks for NibbleBlocks {
        #[inline(always)]
        unsafe fn masks(&self, ptr: *const u8) -> (u64, u64) {
            let mut nl = 0u64;
            let mut cand = 0u64;
            for half in 0..2 {
                let shift = half * 32;
                // SAFETY: the caller guarantees `WINDOW` readable bytes at `ptr`, so 32-byte
                // loads at `ptr + shift + {0, 1, 2}` are in bounds, and AVX2 support. The
                // closure is part of this block.
                unsafe {
                    let p = ptr.add(shift);
                    let x = _mm256_loadu_si256(p.cast());
                    let n = _mm256_movemask_epi8(_mm256_cmpeq_epi8(x, self.newline)) as u32;
                    nl |= u64::from(n) << shift;
                    let nibbles = |v: __m256i| {
                        (
                            _mm256_and_si256(v, self.low_nibble),
                            _mm256_and_si256(_mm256_srli_epi16::<4>(v), self.low_nibble),
                        )
                    };
                    let (x_lo, x_hi) = nibbles(x);
                    let (y_lo, y_hi) = nibbles(_mm256_loadu_si256(p.add(1).cast()));
                    let (z_lo, z_hi) = nibbles(_mm256_loadu_si256(p.add(2).cast()));
                    let mut acc = _mm256_setzero_si256();
                    for set in 0..self.sets {
                        let m = _mm256_and_si256(
                            _mm256_and_si256(
                                self.lookup(set, 0, x_lo, x_hi),
                                self.lookup(set, 1, y_lo, y_hi),
                            ),
                            self.lookup(set, 2, z_lo, z_hi),
                        );
                        acc = _mm256_or_si256(acc, m);
                    }
                    let none = _mm256_cmpeq_epi8(acc, _mm256_setzero_si256());
                    let c = !(_mm256_movemask_epi8(none) as u32);
                    cand |= u64::from(c) << shift;
                }
            }
            (nl, cand)
        }
    }

    /// The AVX2 kernel.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, POPCNT, BMI1 and LZCNT.
    #[target_feature(enable = "avx2,popcnt,bmi1,lzcnt")]
    pub(super) unsafe fn scan_avx2<F>(
        pf: &Prefilter,
        region: &[u8],
        max: usize,
        emit: &mut F,
    ) -> Tally
    where
        F: FnMut(usize, usize) -> bool,
    {
        if pf.groups.is_empty() {
            // SAFETY: the caller guarantees AVX2.
            let blocks = unsafe { LineBlocks::<__m256i, 2>::new() };
            run(&blocks, pf, region, max, emit)
        } else if pf.groups.len() <= AVX2_MAX_COMPARED_PREFIXES {
            // SAFETY: the caller guarantees AVX2.
            let blocks = unsafe { VectorBlocks::<__m256i, 2>::new(pf) };
            run(&blocks, pf, region, max, emit)
        } else {
            let blocks = NibbleBlocks::new(pf);
            run(&blocks, pf, region, max, emit)
        }
    }

    /// The SSE2 kernel.
    ///
    /// # Safety
    ///
    /// The CPU must support SSE2, which every x86_64 CPU does.
    #[target_feature(enable = "sse2")]
    pub(super) unsafe fn scan_sse2<F>(
        pf: &Prefilter,
        region: &[u8],
        max: usize,
        emit: &mut F,
    ) -> Tally
    where
        F: FnMut(usize, usize) -> bool,
    {
        if pf.groups.is_empty() {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            let blocks = unsafe { LineBlocks::<__m128i, 4>::new() };
            run(&blocks, pf, region, max, emit)
        } else {
            // SAFETY: SSE2 is part of the x86_64 baseline.
            let blocks = unsafe { VectorBlocks::<__m128i, 4>::new(pf) };
            run(&blocks, pf, region, max, emit)
        }
    }

    /// The masks of the 64-byte block at `window` from every x86 implementation this CPU
    /// supports, for tests comparing them.
    #[cfg(test)]
    pub(super) fn all_masks(pf: &Prefilter, window: &[u8; super::WINDOW]) -> Vec<(u64, u64)> {
        let ptr = window.as_ptr();
        let mut out = Vec::new();
        // SAFETY: `window` has `WINDOW` readable bytes; SSE2 is baseline.
        unsafe {
            out.push(VectorBlocks::<__m128i, 4>::new(pf).masks(ptr));
        }
        if super::is_supported(super::Kernel::Avx2) {
            // SAFETY: as above, and AVX2 was detected.
            unsafe {
                out.push(VectorBlocks::<__m256i, 2>::new(pf).masks(ptr));
                out.push(all_masks_avx2(pf, window));
            }
        }
        out
    }

    #[cfg(test)]
    #[target_feature(enable = "avx2")]
    fn all_masks_avx2(pf: &Prefilter, window: &[u8; super::WINDOW]) -> (u64, u64) {
        let blocks = NibbleBlocks::new(pf);
        // SAFETY: `window` has `WINDOW` readable bytes; AVX2 is enabled here.
        unsafe { blocks.masks(window.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines() -> Vec<Engine> {
        [Kernel::Avx2, Kernel::Sse2, Kernel::Scalar]
            .into_iter()
            .filter_map(Engine::new)
            .collect()
    }

    #[test]
    fn newline_bits_is_exact() {
        for i in 0..8 {
            let mut w = [b'\n' ^ 0x80; 8];
            w[i] = b'\n';
            assert_eq!(newline_bits(u64::from_le_bytes(w)), 1 << i);
        }
        assert_eq!(newline_bits(u64::from_le_bytes([b'\n'; 8])), 0xff);
        assert_eq!(newline_bits(u64::from_le_bytes([0x0b; 8])), 0);
        assert_eq!(newline_bits(u64::from_le_bytes([0x8a; 8])), 0);
        let mixed = [0, b'\n', 0x09, b'\n', 0xff, 0x0b, b'\n', 0x8a];
        assert_eq!(newline_bits(u64::from_le_bytes(mixed)), 0b0100_1010);
    }

    #[test]
    fn prefixes_dedupe_and_merge() {
        let lits: [(&[u8], bool); 5] = [
            (b"ERROR", false),
            (b"error", true),
            (b"E", false),
            (b"Fa", true),
            (b"FATAL", false),
        ];
        let pf = Prefilter::new(lits).expect("few prefixes");
        // Raw "E" covers raw "ERR"; folded "fa" covers raw "FAT"; folded "err" stays.
        let groups: Vec<(usize, bool, Vec<u8>)> = pf
            .groups
            .iter()
            .map(|g| (g.len, g.folded, g.bytes()[..g.len].to_vec()))
            .collect();
        assert_eq!(
            groups,
            [
                (1, false, b"E".to_vec()),
                (2, true, b"fa".to_vec()),
                (3, true, b"err".to_vec())
            ]
        );
        let many: Vec<Vec<u8>> = (0..=MAX_PREFIXES)
            .map(|i| vec![b'a' + i as u8; 3])
            .collect();
        assert!(Prefilter::new(many.iter().map(|l| (l.as_slice(), false))).is_none());
        assert!(Prefilter::new(many[1..].iter().map(|l| (l.as_slice(), false))).is_some());
    }

    /// Every mask implementation computes exactly the same candidates as the scalar one
    /// (itself a direct transcription of the definition).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn mask_implementations_agree() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let alphabet = b"eErRoO\"lLaAtTpP\n\r\x00\xff \x02\x0a*";
        let window = proptest::collection::vec(prop::sample::select(&alphabet[..]), WINDOW);
        let literal = (
            proptest::collection::vec(prop::sample::select(&alphabet[..]), 1..5),
            any::<bool>(),
        );
        let literals = proptest::collection::vec(literal, 1..20);
        let mut runner = TestRunner::new(Config::with_cases(2000));
        runner
            .run(&(window, literals), |(window, literals)| {
                let Some(pf) = Prefilter::new(literals.iter().map(|(l, ci)| (l.as_slice(), *ci)))
                else {
                    return Ok(());
                };
                let window: [u8; WINDOW] = window.try_into().expect("WINDOW bytes");
                // SAFETY: `window` has `WINDOW` readable bytes.
                let want = unsafe { ScalarBlocks::new(&pf).masks(window.as_ptr()) };
                for got in x86::all_masks(&pf, &window) {
                    prop_assert_eq!(got, want, "{:?}", pf);
                }
                Ok(())
            })
            .expect("all mask implementations agree");
    }

    #[test]
    fn counts_lines_on_every_kernel() {
        let mut region = Vec::new();
        for i in 0..300 {
            region.extend(std::iter::repeat_n(b'x', i % 97));
            region.push(b'\n');
        }
        region.extend_from_slice(b"tail");
        for engine in engines() {
            for cut in [0, 1, 63, 64, 65, 66, 67, 130, region.len()] {
                let part = &region[..cut];
                let want_lines = part.split(|&b| b == b'\n').count() as u64
                    - u64::from(part.is_empty() || part.ends_with(b"\n"));
                let want_long = part.split(|&b| b == b'\n').filter(|l| l.len() > 64).count() as u64;
                assert_eq!(
                    count(engine, part, 64),
                    (want_lines, want_long),
                    "{engine:?} {cut}"
                );
            }
        }
    }
}
