//! How `sentinel scan`'s workers keep pace with its one committer.
//!
//! A first scan of a large corpus is bound by the committer: one thread creating every new
//! incident in the store, while the workers scan. Two things kept it from working all the
//! time (1 GiB corpus, 28,638 new incidents, 2 cores, `perf` timelines, 2026-12-08):
//!
//! - It waited for work: workers hand their batches on when full (thousands of new
//!   incidents each), so the committer sat idle for its first 100 ms and between batches.
//!   Now, while it waits and its last flush created incidents ([`Pace::wants_work`]), a
//!   worker hands on as soon as its batch describes a few incidents and the merger flushes
//!   at once. On a rescan the descriptions are of known incidents: their flushes create
//!   nothing, and the batches stay large (small ones cost the committer a quarter more).
//! - It shared its core: with as many workers as cores, the scheduler shared the cores
//!   three ways (the workers' nice 5 gave the committer three quarters of one). Now, while
//!   it is behind — working, with a flush waiting for it ([`Pace::is_behind`]) — at most
//!   `cores - 1` workers scan ([`Pace::pass`] parks the others between two chunks), so it
//!   has a core of its own. When it keeps up (a rescan, whose updates are quick, or a dry
//!   run) every worker scans: parking whenever it merely worked cost a rescan a quarter.
//!
//! A parked worker holds nothing the committer needs: it is woken when no flush waits any
//! more, when the committer waits or stops, or when another worker stops scanning.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// What the workers, the merger and the committer of one scan share about the committer.
#[derive(Debug)]
pub struct Pace {
    /// Set while the committer waits for work.
    hungry: AtomicBool,
    /// Whether the committer's last flush created incidents (at first: yes). A flush of a
    /// rescan only updates known incidents: hurrying it helps nothing (see [`Pace::wants_work`]).
    creating: AtomicBool,
    /// Whether hurrying can help at all: not when the merger keeps new descriptions for one
    /// large flush whatever the committer does (`grouping.templates`), nor in a dry run.
    hurry: bool,
    /// Flushes handed to the committer (or being handed) and not yet taken: while one
    /// waits, the committer is behind.
    queued: AtomicUsize,
    /// Workers that scan at once while the committer works.
    busy_limit: usize,
    workers: Mutex<Workers>,
    woken: Condvar,
}

/// Workers in a unit of work.
#[derive(Debug, Default)]
struct Workers {
    /// Scanning.
    running: usize,
    /// Parked in [`Pace::pass`].
    parked: usize,
}

impl Pace {
    /// Pace for `threads` workers on `cores` cores: while the committer works, at most
    /// `cores - 1` of them scan (at least one).
    pub fn new(threads: usize, cores: usize) -> Pace {
        Pace {
            hungry: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            creating: AtomicBool::new(true),
            hurry: true,
            busy_limit: threads.min(cores.saturating_sub(1)).max(1),
            workers: Mutex::new(Workers::default()),
            woken: Condvar::new(),
        }
    }

    /// For this machine: [`std::thread::available_parallelism`] cores.
    pub fn for_machine(threads: usize) -> Pace {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pace::new(threads, cores)
    }

    /// Never hurry (see [`Pace::wants_work`]): the merger would hold what workers hand on
    /// early, and they would keep handing on small batches while the committer waits.
    pub fn without_hurry(mut self) -> Pace {
        self.hurry = false;
        self
    }

    /// Whether the committer waits for work.
    pub fn is_hungry(&self) -> bool {
        self.hungry.load(Ordering::Acquire)
    }

    /// Whether the committer waits for work and would create incidents with it: then
    /// descriptions of new incidents are handed on at once.
    pub fn wants_work(&self) -> bool {
        self.hurry && self.is_hungry() && self.creating.load(Ordering::Acquire)
    }

    /// The committer applied a flush that created incidents, or not.
    pub fn created(&self, any: bool) {
        self.creating.store(any, Ordering::Release);
    }

    /// The committer waits for work: parked workers scan again.
    pub fn waiting(&self) {
        self.hungry.store(true, Ordering::Release);
        // Taken so that a worker between its check and its wait cannot miss the wake-up.
        drop(self.lock());
        self.woken.notify_all();
    }

    /// The committer works again.
    pub fn working(&self) {
        self.hungry.store(false, Ordering::Release);
    }

    /// The merger hands a flush to the committer (before it sends it).
    pub fn handing(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// The committer took a flush: when none waits any more, parked workers scan again.
    pub fn taken(&self) {
        if self.queued.fetch_sub(1, Ordering::AcqRel) == 1 {
            drop(self.lock());
            self.woken.notify_all();
        }
    }

    /// Whether the committer is behind: working, with a flush waiting for it.
    pub fn is_behind(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0 && !self.is_hungry()
    }

    /// The committer stops (done, or failed) when the guard drops: every worker scans.
    pub fn stopped_on_drop(&self) -> Stopped<'_> {
        Stopped(self)
    }

    /// A worker starts a unit of work; it counts as scanning until the guard drops.
    pub fn start(&self) -> Scanning<'_> {
        self.lock().running += 1;
        Scanning(self)
    }

    /// Between two chunks: while the committer is behind and more than its share of
    /// workers scan, waits until it is not or another worker stops.
    pub fn pass(&self) {
        if !self.is_behind() {
            return;
        }
        let mut w = self.lock();
        if w.running <= self.busy_limit {
            return;
        }
        (w.running, w.parked) = (w.running - 1, w.parked + 1);
        while self.is_behind() && w.running >= self.busy_limit {
            w = self.woken.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
        (w.running, w.parked) = (w.running + 1, w.parked - 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Workers> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A worker's unit of work in progress (see [`Pace::start`]).
#[derive(Debug)]
pub struct Scanning<'p>(&'p Pace);

impl Drop for Scanning<'_> {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.woken.notify_all();
    }
}

/// The committer's life (see [`Pace::stopped_on_drop`]).
#[derive(Debug)]
pub struct Stopped<'p>(&'p Pace);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.waiting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    /// A second worker that starts a unit and passes once; counts when it got through.
    fn second_worker(pace: &Arc<Pace>, passed: &Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
        let (p, n) = (pace.clone(), passed.clone());
        std::thread::spawn(move || {
            let _s = p.start();
            p.pass();
            n.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn limits_follow_threads_and_cores() {
        assert_eq!(Pace::new(2, 2).busy_limit, 1);
        assert_eq!(Pace::new(8, 8).busy_limit, 7);
        assert_eq!(
            Pace::new(1, 2).busy_limit,
            1,
            "fewer workers than cores: none parks"
        );
        assert_eq!(Pace::new(4, 1).busy_limit, 1, "one core: one worker scans");
        assert_eq!(Pace::new(3, 8).busy_limit, 3);
    }

    #[test]
    fn nobody_parks_while_the_committer_keeps_up() {
        let pace = Pace::new(2, 2);
        let (_a, _b) = (pace.start(), pace.start());
        // Working, nothing queued.
        pace.working();
        pace.pass();
        // A flush handed over, but the committer waits for it (it takes it at once).
        pace.waiting();
        pace.handing();
        assert!(!pace.is_behind());
        pace.pass();
        let w = pace.lock();
        assert_eq!((w.running, w.parked), (2, 0));
    }

    #[test]
    fn a_worker_over_the_share_parks_while_a_flush_waits() {
        let pace = Arc::new(Pace::new(2, 2));
        let _first = pace.start();
        pace.working();
        pace.handing();
        assert!(pace.is_behind());
        pace.pass(); // alone within the share: goes on
        let passed = Arc::new(AtomicUsize::new(0));
        let second = second_worker(&pace, &passed);
        eventually("the second worker to park", || pace.lock().parked == 1);
        assert_eq!(
            passed.load(Ordering::SeqCst),
            0,
            "parked while the flush waits"
        );
        pace.taken();
        second.join().unwrap();
        assert_eq!(passed.load(Ordering::SeqCst), 1);
        assert!(!pace.is_behind());
    }

    #[test]
    fn a_parked_worker_resumes_when_the_committer_waits_stops_or_another_worker_stops() {
        for how in ["waits", "stops", "worker"] {
            let pace = Arc::new(Pace::new(2, 2));
            let first = pace.start();
            pace.working();
            pace.handing();
            let passed = Arc::new(AtomicUsize::new(0));
            let second = second_worker(&pace, &passed);
            eventually("the second worker to park", || pace.lock().parked == 1);
            match how {
                "waits" => pace.waiting(),
                "stops" => drop(pace.stopped_on_drop()),
                _ => drop(first),
            }
            second.join().unwrap();
            assert_eq!(passed.load(Ordering::SeqCst), 1, "{how}");
        }
    }

    #[test]
    fn hurrying_follows_what_the_last_flush_created() {
        let pace = Pace::new(2, 2);
        assert!(!pace.wants_work(), "working at first");
        pace.waiting();
        assert!(pace.wants_work(), "a first scan: hurry");
        pace.created(false);
        assert!(!pace.wants_work(), "a rescan's flush created nothing");
        pace.created(true);
        assert!(pace.wants_work());
        let never = Pace::new(2, 2).without_hurry();
        never.waiting();
        assert!(!never.wants_work(), "templates or a dry run: never");
    }
}
