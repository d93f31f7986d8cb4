//! Counting distinct fingerprints in bounded memory: exact up to [`EXACT_DISTINCT`], a
//! HyperLogLog estimate beyond.
//!
//! `scan` reports how many distinct fingerprints it met. A set of them grows with every new
//! one (a million distinct error lines would hold tens of MB in sets alone), so the set is
//! kept only while it is small: up to [`EXACT_DISTINCT`] fingerprints the count is exact
//! (every corpus of ordinary logs, the ground-truth test's included), beyond it the set is
//! dropped and the count is the HyperLogLog estimate (2^14 one-byte registers: 16 KiB, a
//! standard error of about 0.8 %), and `scan --json` says `distinct_fingerprints_estimated:
//! true`.

use std::collections::HashSet;

/// Distinct values counted exactly before the counter switches to its estimate.
pub const EXACT_DISTINCT: usize = 1 << 18;

/// Register-index bits of the sketch.
const P: u32 = 14;
const M: usize = 1 << P;

/// A distinct counter. See the module docs.
#[derive(Debug, Clone)]
pub struct DistinctCounter {
    exact: Option<HashSet<u64>>,
    cap: usize,
    registers: Box<[u8]>,
}

impl Default for DistinctCounter {
    fn default() -> Self {
        DistinctCounter::with_cap(EXACT_DISTINCT)
    }
}

impl DistinctCounter {
    /// A counter exact up to `cap` values.
    pub fn with_cap(cap: usize) -> DistinctCounter {
        DistinctCounter {
            exact: Some(HashSet::new()),
            cap,
            registers: vec![0u8; M].into_boxed_slice(),
        }
    }

    /// Counts `v`; true when it is certainly new (always false once estimating).
    pub fn insert(&mut self, v: u64) -> bool {
        let h = mix(v);
        let idx = (h >> (64 - P)) as usize;
        let rank = ((h << P) | (1 << (P - 1))).leading_zeros() as u8 + 1;
        if self.registers[idx] < rank {
            self.registers[idx] = rank;
        }
        let Some(set) = &mut self.exact else {
            return false;
        };
        let new = set.insert(v);
        if set.len() > self.cap {
            self.exact = None;
        }
        new
    }

    /// Whether `v` was counted; `None` once estimating.
    pub fn contains(&self, v: u64) -> Option<bool> {
        self.exact.as_ref().map(|s| s.contains(&v))
    }

    /// Whether [`DistinctCounter::count`] is exact.
    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// The exact set, while there is one.
    pub fn exact(&self) -> Option<&HashSet<u64>> {
        self.exact.as_ref()
    }

    /// The distinct values counted (exact, or the estimate).
    pub fn count(&self) -> u64 {
        match &self.exact {
            Some(s) => s.len() as u64,
            None => self.estimate(),
        }
    }

    /// The HyperLogLog estimate (with the linear-counting correction for small counts).
    fn estimate(&self) -> u64 {
        let m = M as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in self.registers.iter() {
            sum += 1.0 / f64::from(1u32 << r.min(31));
            zeros += usize::from(r == 0);
        }
        let raw = alpha * m * m / sum;
        let e = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        e.round() as u64
    }
}

/// splitmix64's finaliser: fingerprints are already hashes, but the sketch needs every bit
/// well mixed whatever values it is given.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_the_cap_then_an_estimate_within_two_percent() {
        let mut c = DistinctCounter::with_cap(1000);
        for v in 0..1000u64 {
            assert!(c.insert(v));
            assert!(!c.insert(v));
        }
        assert!(c.is_exact());
        assert_eq!(c.count(), 1000);
        assert_eq!(c.contains(5), Some(true));
        for round in 0..2 {
            for v in 0..1_000_000u64 {
                c.insert(v * 7919);
            }
            assert!(!c.is_exact(), "round {round}");
        }
        assert_eq!(c.contains(5), None);
        // 1000 small values plus a million multiples of 7919 (999 of them shared).
        let truth = 1_000_000.0 + 1000.0 - 1.0 - 999.0 / 7919.0;
        let err = (c.count() as f64 - truth).abs() / truth;
        assert!(err < 0.02, "estimate {} vs {truth}", c.count());
    }

    #[test]
    fn small_counts_estimate_closely() {
        let mut c = DistinctCounter::with_cap(0);
        for v in 0..5000u64 {
            c.insert(v);
        }
        let err = (c.count() as f64 - 5000.0).abs() / 5000.0;
        assert!(err < 0.02, "{}", c.count());
    }
}
