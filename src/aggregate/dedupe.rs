//! The webhook delivery ids remembered, in memory: a set of 64-bit hashes
//! ([`crate::store::deliveries::delivery_hash`]).
//!
//! The ingest logger checks and inserts a group's ids under one lock before appending the
//! group to the ingest log; the writer persists them (one row per commit) and forgets the
//! oldest rows once they are older than [`super::writer::DELIVERY_TTL`] or more than
//! [`MAX_REMEMBERED`] ids are held. A retry of an id forgotten that way counts again —
//! retries come within minutes; the window is 24 hours or the last 3.5 million ids, whichever
//! is shorter (at 1 000 events/s, 58 minutes; in a flood of 1 M events/s, 3.5 s).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// At most this many ids are remembered: the set then stays within 2^22 buckets (7/8 of
/// which may be used), 36 MiB; at most 54 MiB while it grows into them.
pub const MAX_REMEMBERED: usize = 3_500_000;

/// The ids are hashes already: the set uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this is the general fallback.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The remembered delivery hashes (see the module docs).
#[derive(Debug, Default)]
pub struct DeliveryIds {
    set: Mutex<HashSet<u64, BuildHasherDefault<Identity>>>,
}

impl DeliveryIds {
    /// An empty set.
    pub fn new() -> DeliveryIds {
        DeliveryIds::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64, BuildHasherDefault<Identity>>> {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts each hash; `fresh[i]` tells whether `hashes[i]` was new (a hash repeated
    /// within `hashes` is new only the first time).
    pub fn insert_all(&self, hashes: &[u64], fresh: &mut Vec<bool>) {
        let mut set = self.lock();
        fresh.clear();
        fresh.extend(hashes.iter().map(|h| set.insert(*h)));
    }

    /// Forgets the hashes (a group that could not be logged, or the oldest rows).
    pub fn remove_all(&self, hashes: impl IntoIterator<Item = u64>) {
        let mut set = self.lock();
        for h in hashes {
            set.remove(&h);
        }
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether more than [`MAX_REMEMBERED`] are.
    pub fn too_many(&self) -> bool {
        self.len() > MAX_REMEMBERED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_once_then_forgotten() {
        let ids = DeliveryIds::new();
        let mut fresh = Vec::new();
        ids.insert_all(&[1, 2, 1], &mut fresh);
        assert_eq!(fresh, [true, true, false]);
        ids.insert_all(&[2, 3], &mut fresh);
        assert_eq!(fresh, [false, true]);
        ids.remove_all([1, 2]);
        assert_eq!(ids.len(), 1);
        ids.insert_all(&[1], &mut fresh);
        assert_eq!(fresh, [true]);
        assert!(!ids.too_many());
    }
}
