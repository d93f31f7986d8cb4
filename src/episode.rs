//! Log discipline for conditions that repeat: a full disk refuses every request, a failing
//! store every commit. Each is an *episode*: logged once when it starts, once when it ends
//! (with how long it lasted and how often it happened), and in between at most one summary
//! every [`SUMMARY_EVERY`] — never once per occurrence.

use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// At most one summary line per episode this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// One condition's episode state (see the module docs).
#[derive(Debug)]
pub struct Episode {
    what: &'static str,
    started: Option<Instant>,
    count: u64,
    since_summary: u64,
    last_summary: Option<Instant>,
    last_error: String,
}

impl Episode {
    /// A condition described by `what` ("the store cannot commit").
    pub const fn new(what: &'static str) -> Episode {
        Episode {
            what,
            started: None,
            count: 0,
            since_summary: 0,
            last_summary: None,
            last_error: String::new(),
        }
    }

    /// True while the condition lasts.
    pub fn active(&self) -> bool {
        self.started.is_some()
    }

    /// The condition happened (again): logs at its start, then a summary at most every
    /// [`SUMMARY_EVERY`]. Returns true when this started the episode.
    pub fn failed(&mut self, error: &dyn Display) -> bool {
        self.count += 1;
        self.since_summary += 1;
        let now = Instant::now();
        let Some(_) = self.started else {
            self.started = Some(now);
            self.last_summary = Some(now);
            self.since_summary = 0;
            tracing::error!(error = %error, "{}; it is logged again when it ends, and at most every {} s meanwhile", self.what, SUMMARY_EVERY.as_secs());
            return true;
        };
        if self
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY)
        {
            tracing::error!(
                error = %error,
                times = self.count,
                since_last_summary = self.since_summary,
                lasting_s = self.started.map_or(0, |s| now.duration_since(s).as_secs()),
                "{}: still",
                self.what
            );
            self.last_summary = Some(now);
            self.since_summary = 0;
        } else {
            self.last_error = error.to_string();
        }
        false
    }

    /// The condition is over: logs the end of the episode, if one was under way. Returns
    /// how long it lasted.
    pub fn ended(&mut self) -> Option<Duration> {
        let started = self.started.take()?;
        let lasted = started.elapsed();
        tracing::warn!(
            times = self.count,
            lasted_ms = lasted.as_millis() as u64,
            last_error = %self.last_error,
            "{}: over",
            self.what
        );
        self.count = 0;
        self.since_summary = 0;
        self.last_summary = None;
        self.last_error.clear();
        Some(lasted)
    }
}

/// An [`Episode`] shared by threads or tasks (request handlers).
#[derive(Debug)]
pub struct SharedEpisode {
    episode: Mutex<Episode>,
    /// Mirrors `episode.active()`: ending is one atomic load when nothing is under way.
    active: AtomicBool,
}

impl SharedEpisode {
    /// See [`Episode::new`].
    pub const fn new(what: &'static str) -> SharedEpisode {
        SharedEpisode {
            episode: Mutex::new(Episode::new(what)),
            active: AtomicBool::new(false),
        }
    }

    /// See [`Episode::failed`].
    pub fn failed(&self, error: &dyn Display) -> bool {
        let mut e = self
            .episode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.active.store(true, Ordering::Release);
        e.failed(error)
    }

    /// See [`Episode::ended`]; one atomic load when no episode is under way.
    pub fn ended(&self) -> Option<Duration> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let mut e = self
            .episode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.active.store(false, Ordering::Release);
        e.ended()
    }
}

/// Per-occurrence lines (a new incident) at a bounded rate: one line each while they come
/// at most [`Burst::PER_SECOND`] a second; beyond that (this second or the last) they are
/// counted, and a summary line says how many every [`Burst::SUMMARY_EVERY`] and before the
/// next single line, the way the kernel's `printk_ratelimit` says "N callbacks
/// suppressed".
#[derive(Debug)]
pub struct Burst {
    window: Option<Instant>,
    in_window: u32,
    last_window: u32,
    suppressed: u64,
    last_summary: Option<Instant>,
}

/// What [`Burst::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log the line; first say that `suppressed` (when non-zero) were not logged.
    Line {
        /// Occurrences not logged one by one since the last summary.
        suppressed: u64,
    },
    /// Log only a summary: this many were not logged one by one (this one included).
    Summary(u64),
    /// Count it, log nothing.
    Quiet,
}

impl Default for Burst {
    fn default() -> Burst {
        Burst::new()
    }
}

impl Burst {
    /// Single lines a second at most.
    pub const PER_SECOND: u32 = 5;
    /// A summary at most this often while over the rate.
    pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

    /// Nothing seen yet.
    pub const fn new() -> Burst {
        Burst {
            window: None,
            in_window: 0,
            last_window: 0,
            suppressed: 0,
            last_summary: None,
        }
    }

    /// One occurrence, now.
    pub fn admit(&mut self) -> Admit {
        self.admit_at(Instant::now())
    }

    fn admit_at(&mut self, now: Instant) -> Admit {
        match self.window {
            Some(w) if now.duration_since(w) < Duration::from_secs(1) => {}
            Some(w) => {
                // A quiet gap of a second or more forgets the last window.
                let gap = now.duration_since(w) >= Duration::from_secs(2);
                self.last_window = if gap { 0 } else { self.in_window };
                self.window = Some(now);
                self.in_window = 0;
            }
            None => self.window = Some(now),
        }
        self.in_window += 1;
        let busy = self.in_window > Self::PER_SECOND || self.last_window > Self::PER_SECOND;
        if !busy {
            return Admit::Line {
                suppressed: std::mem::take(&mut self.suppressed),
            };
        }
        self.suppressed += 1;
        let due = self
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= Self::SUMMARY_EVERY);
        if due && self.suppressed > 0 && self.last_summary.is_some() {
            self.last_summary = Some(now);
            return Admit::Summary(std::mem::take(&mut self.suppressed));
        }
        if self.last_summary.is_none() {
            // The first summary comes one period after the burst began.
            self.last_summary = Some(now);
        }
        Admit::Quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_starts_once_and_ends_once() {
        let mut e = Episode::new("the thing fails");
        assert!(e.failed(&"first"));
        for _ in 0..1000 {
            assert!(!e.failed(&"again"));
        }
        assert!(e.active());
        assert!(e.ended().is_some());
        assert!(!e.active());
        assert!(e.ended().is_none());
        assert!(
            e.failed(&"a new episode"),
            "a later failure starts a new episode"
        );
    }

    #[test]
    fn a_burst_is_summarised_and_a_trickle_is_not() {
        let mut b = Burst::new();
        let t0 = Instant::now();
        let mut lines = 0;
        let mut summarised = 0;
        // 1,000 a second for 30 s.
        for i in 0..30_000u64 {
            match b.admit_at(t0 + Duration::from_millis(i)) {
                Admit::Line { .. } => lines += 1,
                Admit::Summary(n) => summarised += n,
                Admit::Quiet => {}
            }
        }
        assert_eq!(lines, 5, "only the first {} lines", Burst::PER_SECOND);
        assert!((2..=4).contains(&(summarised / 9_000)), "{summarised}");
        // Then one every 3 s: each logged, the first saying how many were not.
        let later = t0 + Duration::from_secs(40);
        match b.admit_at(later) {
            Admit::Line { suppressed } => assert_eq!(suppressed + summarised + 5, 30_000),
            a => panic!("{a:?}"),
        }
        for i in 1..5 {
            assert_eq!(
                b.admit_at(later + Duration::from_secs(3 * i)),
                Admit::Line { suppressed: 0 }
            );
        }
    }
}
