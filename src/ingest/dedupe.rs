//! The webhook delivery ids remembered, in memory: a set of 64-bit hashes
//! ([`crate::store::deliveries::delivery_hash`]).
//!
//! The ingest logger checks and inserts a group's ids under one lock before appending the
//! group to the ingest log; the writer persists them (one row per commit) and deletes rows
//! older than [`super::writer::DELIVERY_TTL`] or beyond the newest [`MAX_REMEMBERED`] ids,
//! so that a restart remembers what the running daemon did. In memory, ids are forgotten a
//! generation at a time: an id is remembered for at least the next 1.75 million ids and at
//! most 3.5 million. A retry of an id forgotten that way counts again — retries come within
//! seconds to minutes; at 1 000 events/s the window is at least 29 minutes, in a flood of
//! 1 M events/s at least 1.75 s.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// At most this many ids are remembered, in two generations of 2^21 buckets each (7/8 of
/// which may be used): 36 MiB once both were filled, never more.
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

type Set = HashSet<u64, BuildHasherDefault<Identity>>;

/// The remembered delivery hashes (see the module docs): two generations of at most
/// `MAX_REMEMBERED / 2` each. New ids go into the current one; when it is full it becomes
/// the previous one and the old previous one is dropped whole — forgetting costs nothing
/// per id, and the memory is fixed (the sets never grow past the size they start with).
#[derive(Debug, Default)]
pub struct DeliveryIds {
    sets: Mutex<(Set, Set)>,
}

/// Ids per generation.
const GENERATION: usize = MAX_REMEMBERED / 2;

fn generation() -> Set {
    Set::with_capacity_and_hasher(GENERATION, BuildHasherDefault::default())
}

impl DeliveryIds {
    /// An empty set.
    pub fn new() -> DeliveryIds {
        DeliveryIds::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Set, Set)> {
        self.sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts each hash; `fresh[i]` tells whether `hashes[i]` was new (a hash repeated
    /// within `hashes` is new only the first time).
    pub fn insert_all(&self, hashes: &[u64], fresh: &mut Vec<bool>) {
        let mut guard = self.lock();
        let (current, previous) = &mut *guard;
        fresh.clear();
        for h in hashes {
            if current.capacity() == 0 {
                *current = generation();
            }
            let new = !previous.contains(h) && current.insert(*h);
            fresh.push(new);
            if current.len() >= GENERATION {
                *previous = std::mem::replace(current, generation());
            }
        }
    }

    /// Forgets the hashes (a group that could not be logged).
    pub fn remove_all(&self, hashes: impl IntoIterator<Item = u64>) {
        let mut guard = self.lock();
        let (current, previous) = &mut *guard;
        for h in hashes {
            current.remove(&h);
            previous.remove(&h);
        }
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.0.len() + g.1.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    }

    #[test]
    fn the_oldest_generation_is_forgotten_whole() {
        let ids = DeliveryIds::new();
        let mut fresh = Vec::new();
        let first: Vec<u64> = (0..GENERATION as u64).collect();
        ids.insert_all(&first, &mut fresh);
        assert!(fresh.iter().all(|f| *f));
        // A full generation moved to "previous": still remembered.
        ids.insert_all(&[0, GENERATION as u64], &mut fresh);
        assert_eq!(fresh, [false, true]);
        let second: Vec<u64> = (GENERATION as u64 + 1..2 * GENERATION as u64).collect();
        ids.insert_all(&second, &mut fresh);
        // The first generation is gone; the second is remembered.
        assert!(ids.len() <= MAX_REMEMBERED);
        ids.insert_all(&[1, GENERATION as u64 + 1], &mut fresh);
        assert_eq!(fresh, [true, false]);
    }
}
