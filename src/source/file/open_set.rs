//! The bounded set of open file handles (issue 25).
//!
//! A directory of thousands of logs is ordinary, and so is a descriptor limit of 1024 or
//! 256. So `watch` never holds one descriptor per tailed file: it holds at most
//! `max_open_files` (default: half the soft limit, at most [`DEFAULT_MAX_OPEN_FILES`]),
//! and a tailed file may be *closed*: its position (offset, generation, head fingerprint)
//! stays in its shard, the file is watched by path (a `stat` on its poll schedule, and
//! inotify's write events on its directory), and it is reopened by identity when it
//! changed (the shards say how).
//!
//! The set is split so that no holder can starve another:
//!
//! - **pins**: a small pool (an eighth of the set, at most [`MAX_PINS`]) for files the
//!   coordinator or the inotify handler open at once, so that a file rotated away right
//!   after it appeared is still read; without a free pin a file is handed over closed;
//! - **shares**: the rest, split evenly between the shards. A shard that must open a file
//!   with its share full closes its file that gave data longest ago among those read to
//!   their end (never one rotated away and still draining); when none is, the file waits
//!   (`sentinel_files_waiting_for_descriptor`).
//!
//! When the system refuses a descriptor anyway (EMFILE, ENFILE: another part of the
//! process, or another process, holds the rest), that is a fault, not silence: it is
//! logged once with the limit and the number of files waiting, counted, the set shrinks
//! to three quarters of what it holds then (for good: what else holds descriptors is not
//! ours to know), and the files retry.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prometheus::IntGauge;

/// The default ceiling of `max_open_files` (the default is half the soft limit, at most
/// this). Closing and reopening an idle file costs an `open`, an `fstat` and a 1 KiB read;
/// an open handle costs a descriptor and its shard's read buffer (256 KiB at most). A
/// thousand handles keep every busy file of a busy host open while staying far below
/// usual hard limits; half the soft limit leaves the other half to the store, the ingest
/// log, inotify and the API's sockets.
pub const DEFAULT_MAX_OPEN_FILES: usize = 1024;

/// The most pins (handles opened by the coordinator or the inotify handler, before a shard
/// owns the file).
pub const MAX_PINS: usize = 64;

/// `max_open_files` when the configuration does not set it: half the soft descriptor
/// limit (`None`: unlimited), at most [`DEFAULT_MAX_OPEN_FILES`], at least 2.
pub fn default_max_open_files(soft_limit: Option<u64>) -> usize {
    soft_limit.map_or(DEFAULT_MAX_OPEN_FILES, |n| {
        usize::try_from(n / 2)
            .unwrap_or(usize::MAX)
            .clamp(2, DEFAULT_MAX_OPEN_FILES)
    })
}

/// Whether an open failed for want of a descriptor (EMFILE: the process's limit; ENFILE:
/// the system's).
pub(super) fn is_exhausted(e: &std::io::Error) -> bool {
    crate::limits::is_descriptor_exhaustion(e)
}

/// The open set, shared by the coordinator, the inotify handler and the shards.
#[derive(Debug)]
pub(super) struct OpenSet {
    /// Handles held (pins included).
    held: AtomicUsize,
    /// Pins held.
    pins: AtomicUsize,
    /// The most pins (shrinks after EMFILE / ENFILE).
    pin_cap: AtomicUsize,
    /// The handles each shard may hold (shrinks after EMFILE / ENFILE).
    share: AtomicUsize,
    shards: usize,
    /// Whether EMFILE / ENFILE was logged.
    warned: AtomicBool,
    /// `sentinel_files_open`.
    gauge: IntGauge,
}

impl OpenSet {
    /// A set of `max` handles for `shards` shards.
    pub(super) fn new(max: usize, shards: usize, gauge: IntGauge) -> Arc<OpenSet> {
        let shards = shards.max(1);
        let pin_cap = (max / 8).clamp(1, MAX_PINS);
        let share = (max.saturating_sub(pin_cap) / shards).max(1);
        gauge.set(0);
        Arc::new(OpenSet {
            held: AtomicUsize::new(0),
            pins: AtomicUsize::new(0),
            pin_cap: AtomicUsize::new(pin_cap),
            share: AtomicUsize::new(share),
            shards,
            warned: AtomicBool::new(false),
            gauge,
        })
    }

    /// The handles a shard may hold now.
    pub(super) fn share(&self) -> usize {
        self.share.load(Ordering::Acquire)
    }

    /// The handles held now.
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The most handles the set holds (pins and shares), as configured.
    pub(super) fn capacity(&self) -> usize {
        self.pin_cap.load(Ordering::Acquire) + self.share() * self.shards
    }

    /// A pin, if one is free.
    pub(super) fn try_pin(self: &Arc<Self>) -> Option<Slot> {
        self.pins
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.pin_cap.load(Ordering::Acquire)).then_some(n + 1)
            })
            .ok()?;
        Some(self.slot(true))
    }

    /// A slot of a shard's share (the shard keeps count against [`OpenSet::share`]).
    pub(super) fn shard_slot(self: &Arc<Self>) -> Slot {
        self.slot(false)
    }

    fn slot(self: &Arc<Self>, pin: bool) -> Slot {
        self.held.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        Slot {
            set: self.clone(),
            pin,
        }
    }

    /// The system refused a descriptor: the set shrinks to three quarters of what it holds
    /// now (so that the shards close some), split as at the start (an eighth for pins, the
    /// rest in shares). Returns the new share and whether this is the first time (to be
    /// logged).
    pub(super) fn exhausted(&self) -> (usize, bool) {
        let total = self.held() * 3 / 4;
        let pins = (total / 8).max(1);
        self.pin_cap.fetch_min(pins, Ordering::AcqRel);
        let want = (total.saturating_sub(pins) / self.shards).max(1);
        let before = self.share.fetch_min(want, Ordering::AcqRel);
        let first = !self.warned.swap(true, Ordering::AcqRel);
        (before.min(want), first)
    }
}

/// One held handle's place in the set; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct Slot {
    set: Arc<OpenSet>,
    pin: bool,
}

impl Slot {
    /// Whether this is a pin (to be traded for a place in a shard's share, or closed).
    pub(super) fn is_pin(&self) -> bool {
        self.pin
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.set.held.fetch_sub(1, Ordering::AcqRel);
        if self.pin {
            self.set.pins.fetch_sub(1, Ordering::AcqRel);
        }
        self.set.gauge.dec();
    }
}

/// A file opened in a slot. Field order matters: the file is closed before its slot is
/// given back.
#[derive(Debug)]
pub(super) struct Pinned {
    pub(super) file: File,
    pub(super) slot: Slot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_half_the_soft_limit_within_bounds() {
        assert_eq!(default_max_open_files(Some(256)), 128);
        assert_eq!(default_max_open_files(Some(1024)), 512);
        assert_eq!(
            default_max_open_files(Some(1 << 20)),
            DEFAULT_MAX_OPEN_FILES
        );
        assert_eq!(default_max_open_files(None), DEFAULT_MAX_OPEN_FILES);
        assert_eq!(default_max_open_files(Some(3)), 2);
    }

    #[test]
    fn pins_are_bounded_and_slots_come_back() {
        let gauge = IntGauge::new("t", "t").expect("gauge");
        let set = OpenSet::new(128, 2, gauge.clone());
        assert_eq!(set.share(), 56);
        assert_eq!(set.capacity(), 128);
        let pins: Vec<Slot> = std::iter::from_fn(|| set.try_pin()).collect();
        assert_eq!(pins.len(), 16);
        let s = set.shard_slot();
        assert_eq!((set.held(), gauge.get()), (17, 17));
        drop(pins);
        assert!(set.try_pin().is_some_and(|p| p.is_pin()));
        drop(s);
        assert_eq!((set.held(), gauge.get()), (0, 0));
    }

    #[test]
    fn exhaustion_shrinks_the_shares_and_is_first_said_once() {
        let gauge = IntGauge::new("t", "t").expect("gauge");
        let set = OpenSet::new(1000, 2, gauge);
        let pins: Vec<Slot> = (0..20).filter_map(|_| set.try_pin()).collect();
        let held: Vec<Slot> = (0..60).map(|_| set.shard_slot()).collect();
        // 80 held: 60 from now on, 7 of them pins, 26 per shard.
        assert_eq!(set.exhausted(), (26, true));
        assert_eq!((set.share(), set.capacity()), (26, 59));
        assert!(set.try_pin().is_none(), "20 pins held, 7 allowed");
        assert_eq!(set.exhausted(), (26, false));
        drop((pins, held));
        assert_eq!(set.exhausted(), (1, false));
    }

    #[test]
    fn emfile_and_enfile_are_exhaustion() {
        let e = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(is_exhausted(&e));
        let e = std::io::Error::from_raw_os_error(rustix::io::Errno::NFILE.raw_os_error());
        assert!(is_exhausted(&e));
        assert!(!is_exhausted(&std::io::Error::from(
            std::io::ErrorKind::NotFound
        )));
    }
}
