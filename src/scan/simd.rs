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
//! - `cand`: a literal pattern may start here. Bytes are folded with `| 0x20` (which maps ASCII
//!   upper case to lower case and leaves other bytes merely mangled), and the folded first one
//!   to three bytes of every pattern (its *prefix*) are compared at offsets `i`, `i + 1` and
//!   `i + 2`. Equal prefixes are deduplicated, and a prefix that starts with a shorter prefix
//!   is merged into it. Folding both sides makes this a superset test for case-sensitive and
//!   ASCII-case-insensitive patterns alike.
//!
//! Most blocks have neither bit set and cost a handful of instructions. Otherwise a small
//! scalar state machine ([`State`]) walks the candidate bits with `trailing_zeros`, verifies
//! each candidate against the patterns of its prefix group (exact or ASCII-case-insensitive
//! compare, after a one-word quick reject) and, as soon as a line is known to be an error
//! line, drops the remaining candidates of that line. Newline bits give line boundaries, the
//! population count gives the line count, and the distance from the previous newline to the
//! first newline of a block tells whether the line that ends there is over-long. Lines that
//! start and end inside one block are shorter than 64 bytes, which is why the scanner requires
//! `max_line_bytes >= 64`.
//!
//! The main loop runs while 66 bytes (block plus two bytes of look-ahead for the shifted
//! compares) are readable; the last few bytes are copied into a zero-padded stack buffer and
//! run through the same block code, with masks cut to the valid length. Verification always
//! reads the region itself, with bounds checks, so padding can never produce a match.
//!
//! # Kernels
//!
//! - AVX2 (two 32-byte vectors per block), chosen at run time with
//!   `is_x86_feature_detected!("avx2")`;
//! - SSE2 (four 16-byte vectors per block), the x86_64 baseline;
//! - a portable scalar kernel (SWAR for newlines, a first-byte table for candidates), the only
//!   one on other architectures.
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

use super::matcher::Kernel;

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

/// Whether this CPU can run `kernel`. [`Kernel::Auto`] is always supported.
pub(crate) fn is_supported(kernel: Kernel) -> bool {
    match kernel {
        Kernel::Auto | Kernel::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 => true,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
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

/// One literal pattern, as verified at a candidate position.
#[derive(Debug, Clone)]
struct Literal {
    bytes: Box<[u8]>,
    /// ASCII case-insensitive.
    ci: bool,
    /// The first up-to-8 bytes, folded, little-endian: a quick reject before the full compare.
    head: u64,
    head_mask: u64,
}

impl Literal {
    #[inline]
    fn matches_at(&self, rest: &[u8]) -> bool {
        let n = self.bytes.len();
        if rest.len() < n {
            return false;
        }
        if let Some(word) = rest.first_chunk::<8>() {
            let folded = u64::from_le_bytes(*word) | u64::from_ne_bytes([FOLD; 8]);
            if folded & self.head_mask != self.head {
                return false;
            }
        }
        let hay = &rest[..n];
        if self.ci {
            hay.eq_ignore_ascii_case(&self.bytes)
        } else {
            *hay == *self.bytes
        }
    }
}

/// The literals sharing one (folded) prefix.
#[derive(Debug, Clone)]
struct Group {
    /// Folded prefix bytes, little-endian in the low `len` bytes.
    key: u32,
    /// `0xff` for each prefix byte.
    mask: u32,
    len: usize,
    literals: Vec<Literal>,
}

/// The literal patterns of a scanner, arranged for the block kernel.
#[derive(Debug, Clone)]
pub(crate) struct Prefilter {
    /// Sorted by prefix length, shortest first; at most [`MAX_PREFIXES`].
    groups: Vec<Group>,
    /// `first[b]` for a folded byte `b`: some prefix starts with `b` (scalar kernel).
    first: [bool; 256],
}

impl Prefilter {
    /// No patterns: the kernel only counts lines.
    const EMPTY: Prefilter = Prefilter {
        groups: Vec::new(),
        first: [false; 256],
    };

    /// Arranges `literals` (bytes, ASCII-case-insensitive?) for the kernel, or `None` if they
    /// have more than [`MAX_PREFIXES`] distinct prefixes. Empty literals are ignored; callers
    /// must also leave out literals containing `\n`, which can never match inside a line.
    pub(crate) fn new<'a, I>(literals: I) -> Option<Prefilter>
    where
        I: IntoIterator<Item = (&'a [u8], bool)>,
    {
        let mut lits: Vec<(Vec<u8>, Literal)> = literals
            .into_iter()
            .filter(|(bytes, _)| !bytes.is_empty())
            .map(|(bytes, ci)| {
                let prefix = bytes.iter().take(3).map(|b| b | FOLD).collect();
                (prefix, literal(bytes, ci))
            })
            .collect();
        // Shortest prefixes first, so that a longer prefix finds the shorter one it extends.
        lits.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
        let mut groups: Vec<Group> = Vec::new();
        for (prefix, lit) in lits {
            if let Some(group) = groups.iter_mut().find(|g| {
                let key = g.key.to_le_bytes();
                prefix.starts_with(&key[..g.len])
            }) {
                group.literals.push(lit);
                continue;
            }
            if groups.len() == MAX_PREFIXES {
                return None;
            }
            let mut key = [0u8; 4];
            key[..prefix.len()].copy_from_slice(&prefix);
            let mut mask = [0u8; 4];
            mask[..prefix.len()].fill(0xff);
            groups.push(Group {
                key: u32::from_le_bytes(key),
                mask: u32::from_le_bytes(mask),
                len: prefix.len(),
                literals: vec![lit],
            });
        }
        let mut first = [false; 256];
        for g in &groups {
            first[usize::from(g.key.to_le_bytes()[0])] = true;
        }
        Some(Prefilter { groups, first })
    }

    /// Whether some literal matches `region` at `pos` (`pos < region.len()`).
    #[inline]
    fn verify(&self, region: &[u8], pos: usize) -> bool {
        let rest = &region[pos..];
        let key = fold3(rest);
        self.groups
            .iter()
            .any(|g| key & g.mask == g.key && g.literals.iter().any(|lit| lit.matches_at(rest)))
    }

    /// The prefixes of exactly `len` bytes, in group order.
    fn prefixes(&self, len: usize) -> impl Iterator<Item = [u8; 4]> + '_ {
        self.groups
            .iter()
            .filter(move |g| g.len == len)
            .map(|g| g.key.to_le_bytes())
    }
}

fn literal(bytes: &[u8], ci: bool) -> Literal {
    let mut head = [0u8; 8];
    let mut head_mask = [0u8; 8];
    for (i, &b) in bytes.iter().take(8).enumerate() {
        head[i] = b | FOLD;
        head_mask[i] = 0xff;
    }
    Literal {
        bytes: bytes.into(),
        ci,
        head: u64::from_le_bytes(head),
        head_mask: u64::from_le_bytes(head_mask),
    }
}

/// The first up-to-three bytes of `rest`, folded, little-endian; missing bytes are zero (and
/// a folded byte never is, so a missing byte never matches a prefix byte).
#[inline]
fn fold3(rest: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    for (dst, &b) in w.iter_mut().zip(rest.iter().take(3)) {
        *dst = b | FOLD;
    }
    u32::from_le_bytes(w)
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
            // `is_x86_feature_detected!("avx2")` returned true.
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

/// The line state carried from block to block.
#[derive(Debug, Default)]
struct State {
    /// Start of the line the next block continues.
    line_start: usize,
    /// The line starting at `line_start` has a verified literal.
    cur_err: bool,
    lines: u64,
    long_lines: u64,
}

/// All bits at positions `<= i` (`i < 64`).
#[inline(always)]
fn through(i: usize) -> u64 {
    u64::MAX >> (63 - i)
}

/// All bits at positions `< n` (`n <= 64`).
#[inline(always)]
fn below(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Handles one block at `base` whose valid bytes end at `block_end`. Returns `false` if
/// `emit` asked to stop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<F>(
    st: &mut State,
    base: usize,
    block_end: usize,
    nl: u64,
    mut cand: u64,
    pf: &Prefilter,
    region: &[u8],
    max: usize,
    emit: &mut F,
) -> bool
where
    F: FnMut(usize, usize) -> bool,
{
    if nl == 0 {
        // The carried line goes on. Look at candidates only if the line is not already known
        // to be an error line or certain to end up over-long.
        if cand != 0 && !st.cur_err && block_end - st.line_start <= max {
            while cand != 0 {
                let p = cand.trailing_zeros() as usize;
                if pf.verify(region, base + p) {
                    st.cur_err = true;
                    break;
                }
                cand &= cand - 1;
            }
        }
        return true;
    }
    // The first newline ends the carried line, the only one that can be over-long.
    let first = nl.trailing_zeros() as usize;
    let end0 = base + first;
    let long0 = end0 - st.line_start > max;
    if long0 {
        st.long_lines += 1;
    } else if st.cur_err && !emit(st.line_start, end0) {
        return false;
    }
    if long0 || st.cur_err {
        cand &= !through(first);
    }
    st.cur_err = false;
    st.lines += u64::from(nl.count_ones());
    while cand != 0 {
        let p = cand.trailing_zeros() as usize;
        if !pf.verify(region, base + p) {
            cand &= cand - 1;
            continue;
        }
        let after = nl & !below(p);
        if after == 0 {
            // The line after the last newline of the block: reported once it ends.
            st.cur_err = true;
            break;
        }
        let before = nl & below(p);
        let start = if before == 0 {
            st.line_start
        } else {
            base + (64 - before.leading_zeros() as usize)
        };
        let e = after.trailing_zeros() as usize;
        if !emit(start, base + e) {
            return false;
        }
        cand &= !through(e);
    }
    st.line_start = base + (64 - nl.leading_zeros() as usize);
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
    let mut base = 0;
    while len - base >= WINDOW {
        // SAFETY: `base + WINDOW <= len`, so the window is inside `region`; the caller of
        // `run` chose `blocks` for a CPU that supports it.
        let (nl, cand) = unsafe { blocks.masks(ptr.add(base)) };
        if (nl | cand) != 0 && !block(&mut st, base, base + BLOCK, nl, cand, pf, region, max, emit)
        {
            return stopped;
        }
        base += BLOCK;
    }
    // The tail (at most WINDOW - 1 bytes): zero padding contains no newline and verification
    // reads the region, so padding cannot create lines or matches.
    let rest = len - base;
    let mut buf = [0u8; 2 * BLOCK + LOOKAHEAD];
    buf[..rest].copy_from_slice(&region[base..]);
    let mut off = 0;
    while off < rest {
        let valid = (rest - off).min(BLOCK);
        // SAFETY: `off <= BLOCK` (rest < WINDOW), so `off + WINDOW <= buf.len()`.
        let (nl, cand) = unsafe { blocks.masks(buf.as_ptr().add(off)) };
        let keep = below(valid);
        let start = base + off;
        if !block(
            &mut st,
            start,
            start + valid,
            nl & keep,
            cand & keep,
            pf,
            region,
            max,
            emit,
        ) {
            return stopped;
        }
        off += BLOCK;
    }
    // A last line without `\n`.
    if st.line_start < len {
        st.lines += 1;
        if len - st.line_start > max {
            st.long_lines += 1;
        } else if st.cur_err && !emit(st.line_start, len) {
            return stopped;
        }
    }
    Tally {
        lines: st.lines,
        long_lines: st.long_lines,
        stopped: false,
    }
}

/// The portable kernel: SWAR for newlines, a first-byte table and a folded 3-byte window
/// for candidates.
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
        if !self.pf.groups.is_empty() {
            for i in 0..BLOCK {
                let b = w[i] | FOLD;
                if self.pf.first[usize::from(b)] {
                    let key = u32::from_le_bytes([b, w[i + 1] | FOLD, w[i + 2] | FOLD, 0]);
                    if self.pf.groups.iter().any(|g| key & g.mask == g.key) {
                        cand |= 1 << i;
                    }
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
        _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128, _mm256_and_si256, _mm256_cmpeq_epi8,
        _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
        _mm256_setzero_si256,
    };

    /// Broadcast prefix bytes, per prefix length, for one vector width.
    struct Prefixes<V> {
        p3: [[V; 3]; MAX_PREFIXES],
        n3: usize,
        p2: [[V; 2]; MAX_PREFIXES],
        n2: usize,
        p1: [V; MAX_PREFIXES],
        n1: usize,
    }

    impl<V: Copy> Prefixes<V> {
        fn new(pf: &Prefilter, zero: V, splat: impl Fn(u8) -> V) -> Self {
            let mut p = Prefixes {
                p3: [[zero; 3]; MAX_PREFIXES],
                n3: 0,
                p2: [[zero; 2]; MAX_PREFIXES],
                n2: 0,
                p1: [zero; MAX_PREFIXES],
                n1: 0,
            };
            for k in pf.prefixes(3) {
                p.p3[p.n3] = [splat(k[0]), splat(k[1]), splat(k[2])];
                p.n3 += 1;
            }
            for k in pf.prefixes(2) {
                p.p2[p.n2] = [splat(k[0]), splat(k[1])];
                p.n2 += 1;
            }
            for k in pf.prefixes(1) {
                p.p1[p.n1] = splat(k[0]);
                p.n1 += 1;
            }
            p
        }

        fn is_empty(&self) -> bool {
            self.n1 + self.n2 + self.n3 == 0
        }
    }

    struct Avx2Blocks {
        newline: __m256i,
        fold: __m256i,
        prefixes: Prefixes<__m256i>,
        empty: bool,
    }

    impl Avx2Blocks {
        #[target_feature(enable = "avx2")]
        fn new(pf: &Prefilter) -> Self {
            // The closure inherits the target features of this function.
            let prefixes = Prefixes::new(pf, _mm256_setzero_si256(), |b| _mm256_set1_epi8(b as i8));
            Avx2Blocks {
                newline: _mm256_set1_epi8(b'\n' as i8),
                fold: _mm256_set1_epi8(FOLD as i8),
                empty: prefixes.is_empty(),
                prefixes,
            }
        }

        /// Candidate vector for the 32 bytes at `ptr`.
        ///
        /// # Safety
        ///
        /// 34 bytes at `ptr` readable; AVX2 supported.
        #[inline(always)]
        unsafe fn cand(&self, ptr: *const u8, x: __m256i) -> __m256i {
            // SAFETY: the caller guarantees the reads at `ptr + 1` and `ptr + 2` (32 bytes
            // each) are in bounds and that AVX2 is available.
            unsafe {
                let p = &self.prefixes;
                let y = _mm256_or_si256(_mm256_loadu_si256(ptr.add(1).cast()), self.fold);
                let z = _mm256_or_si256(_mm256_loadu_si256(ptr.add(2).cast()), self.fold);
                let mut acc = _mm256_setzero_si256();
                for k in &p.p3[..p.n3] {
                    let m = _mm256_and_si256(
                        _mm256_and_si256(_mm256_cmpeq_epi8(x, k[0]), _mm256_cmpeq_epi8(y, k[1])),
                        _mm256_cmpeq_epi8(z, k[2]),
                    );
                    acc = _mm256_or_si256(acc, m);
                }
                for k in &p.p2[..p.n2] {
                    let m =
                        _mm256_and_si256(_mm256_cmpeq_epi8(x, k[0]), _mm256_cmpeq_epi8(y, k[1]));
                    acc = _mm256_or_si256(acc, m);
                }
                for k in &p.p1[..p.n1] {
                    acc = _mm256_or_si256(acc, _mm256_cmpeq_epi8(x, *k));
                }
                acc
            }
        }
    }

    impl Blocks for Avx2Blocks {
        #[inline(always)]
        unsafe fn masks(&self, ptr: *const u8) -> (u64, u64) {
            // SAFETY: the caller guarantees `WINDOW` readable bytes at `ptr` (so 32-byte loads
            // at offsets 0, 1, 2, 32, 33 and 34 are in bounds) and AVX2 support.
            unsafe {
                let a0 = _mm256_loadu_si256(ptr.cast());
                let a1 = _mm256_loadu_si256(ptr.add(32).cast());
                let n0 = _mm256_movemask_epi8(_mm256_cmpeq_epi8(a0, self.newline)) as u32;
                let n1 = _mm256_movemask_epi8(_mm256_cmpeq_epi8(a1, self.newline)) as u32;
                let nl = u64::from(n0) | (u64::from(n1) << 32);
                if self.empty {
                    return (nl, 0);
                }
                let c0 = self.cand(ptr, _mm256_or_si256(a0, self.fold));
                let c1 = self.cand(ptr.add(32), _mm256_or_si256(a1, self.fold));
                let c0 = _mm256_movemask_epi8(c0) as u32;
                let c1 = _mm256_movemask_epi8(c1) as u32;
                (nl, u64::from(c0) | (u64::from(c1) << 32))
            }
        }
    }

    /// The AVX2 kernel.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_avx2<F>(
        pf: &Prefilter,
        region: &[u8],
        max: usize,
        emit: &mut F,
    ) -> Tally
    where
        F: FnMut(usize, usize) -> bool,
    {
        let blocks = Avx2Blocks::new(pf);
        run(&blocks, pf, region, max, emit)
    }

    struct Sse2Blocks {
        newline: __m128i,
        fold: __m128i,
        prefixes: Prefixes<__m128i>,
        empty: bool,
    }

    impl Sse2Blocks {
        #[target_feature(enable = "sse2")]
        fn new(pf: &Prefilter) -> Self {
            let prefixes = Prefixes::new(pf, _mm_setzero_si128(), |b| _mm_set1_epi8(b as i8));
            Sse2Blocks {
                newline: _mm_set1_epi8(b'\n' as i8),
                fold: _mm_set1_epi8(FOLD as i8),
                empty: prefixes.is_empty(),
                prefixes,
            }
        }

        /// Masks of the 16 bytes at `ptr`.
        ///
        /// # Safety
        ///
        /// 18 bytes at `ptr` readable.
        #[inline(always)]
        unsafe fn masks16(&self, ptr: *const u8) -> (u16, u16) {
            // SAFETY: the caller guarantees the 16-byte loads at `ptr`, `ptr + 1` and
            // `ptr + 2` are in bounds; SSE2 is part of the x86_64 baseline.
            unsafe {
                let a = _mm_loadu_si128(ptr.cast());
                let nl = _mm_movemask_epi8(_mm_cmpeq_epi8(a, self.newline)) as u16;
                if self.empty {
                    return (nl, 0);
                }
                let p = &self.prefixes;
                let x = _mm_or_si128(a, self.fold);
                let y = _mm_or_si128(_mm_loadu_si128(ptr.add(1).cast()), self.fold);
                let z = _mm_or_si128(_mm_loadu_si128(ptr.add(2).cast()), self.fold);
                let mut acc = _mm_setzero_si128();
                for k in &p.p3[..p.n3] {
                    let m = _mm_and_si128(
                        _mm_and_si128(_mm_cmpeq_epi8(x, k[0]), _mm_cmpeq_epi8(y, k[1])),
                        _mm_cmpeq_epi8(z, k[2]),
                    );
                    acc = _mm_or_si128(acc, m);
                }
                for k in &p.p2[..p.n2] {
                    let m = _mm_and_si128(_mm_cmpeq_epi8(x, k[0]), _mm_cmpeq_epi8(y, k[1]));
                    acc = _mm_or_si128(acc, m);
                }
                for k in &p.p1[..p.n1] {
                    acc = _mm_or_si128(acc, _mm_cmpeq_epi8(x, *k));
                }
                (nl, _mm_movemask_epi8(acc) as u16)
            }
        }
    }

    impl Blocks for Sse2Blocks {
        #[inline(always)]
        unsafe fn masks(&self, ptr: *const u8) -> (u64, u64) {
            let mut nl = 0u64;
            let mut cand = 0u64;
            for i in 0..BLOCK / 16 {
                // SAFETY: `WINDOW` bytes at `ptr` are readable (caller), so 18 bytes at
                // `ptr + 16 * i` are for `i < 4`.
                let (n, c) = unsafe { self.masks16(ptr.add(16 * i)) };
                nl |= u64::from(n) << (16 * i);
                cand |= u64::from(c) << (16 * i);
            }
            (nl, cand)
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
        let blocks = Sse2Blocks::new(pf);
        run(&blocks, pf, region, max, emit)
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
        // "e" absorbs "err"; "fa" absorbs "fat".
        assert_eq!(pf.groups.len(), 2);
        assert_eq!(pf.groups[0].len, 1);
        assert_eq!(pf.groups[1].len, 2);
        let many: Vec<Vec<u8>> = (0..=MAX_PREFIXES)
            .map(|i| vec![b'a' + i as u8; 3])
            .collect();
        assert!(Prefilter::new(many.iter().map(|l| (l.as_slice(), false))).is_none());
        assert!(Prefilter::new(many[1..].iter().map(|l| (l.as_slice(), false))).is_some());
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
