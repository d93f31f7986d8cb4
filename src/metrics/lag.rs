//! How far reading is behind each tailed file's end (the dashboard's and `/status`'s
//! per-file lag, `sentinel_file_lag_bytes{source}`).
//!
//! The file shards report a file's lag (its size at the last poll minus the offset read)
//! only when it changes, and only files that are behind are kept: a daemon tailing 20,000
//! files that are all caught up holds an empty table, and an idle file costs nothing here.
//! Readers ([`FileLag::summary`]) walk the files behind, which is what they want to see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus::IntGaugeVec;

/// One file behind its end.
#[derive(Debug, Clone)]
struct Behind {
    source: Arc<str>,
    path: Arc<str>,
    bytes: u64,
    /// When it fell behind (its lag went from zero to more).
    since: Instant,
}

/// The files that are behind, keyed by (device, inode). See the module docs.
#[derive(Debug)]
pub struct FileLag {
    files: Mutex<HashMap<(u64, u64), Behind>>,
    /// `sentinel_file_lag_bytes{source}`: the sum over the source's files.
    gauge: IntGaugeVec,
}

/// One file in [`LagSummary::most_behind`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FileBehind {
    /// The file source.
    pub source: String,
    /// The file's path.
    pub path: String,
    /// Bytes between the offset read and the file's size at its last poll.
    pub bytes_behind: u64,
    /// Seconds since it fell behind (how old its oldest unread byte is, at least).
    pub behind_seconds: u64,
}

/// The lag of one source (or all).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LagSummary {
    /// Files behind their end.
    pub files_behind: u64,
    /// Their bytes not read yet.
    pub bytes_behind: u64,
    /// The files furthest behind, most first (at most the `top` asked for).
    pub most_behind: Vec<FileBehind>,
}

impl FileLag {
    pub(crate) fn new(gauge: IntGaugeVec) -> FileLag {
        FileLag {
            files: Mutex::new(HashMap::new()),
            gauge,
        }
    }

    /// Creates `source`'s gauge at zero.
    pub(crate) fn touch(&self, source: &str) {
        self.gauge.with_label_values(&[source]);
    }

    /// Records that file `key` of `source`, at `path`, is `bytes` behind its end (0: caught
    /// up, forgotten).
    pub fn set(&self, key: (u64, u64), source: &Arc<str>, path: &Arc<str>, bytes: u64) {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let before = match files.get_mut(&key) {
            Some(b) if bytes > 0 => {
                let before = b.bytes;
                b.bytes = bytes;
                if !Arc::ptr_eq(&b.path, path) {
                    b.path = path.clone();
                }
                before
            }
            Some(_) => files.remove(&key).map_or(0, |b| b.bytes),
            None if bytes > 0 => {
                files.insert(
                    key,
                    Behind {
                        source: source.clone(),
                        path: path.clone(),
                        bytes,
                        since: Instant::now(),
                    },
                );
                0
            }
            None => return,
        };
        drop(files);
        self.gauge
            .with_label_values(&[source])
            .add(bytes as i64 - before as i64);
    }

    /// `sentinel_file_lag_bytes{source}` now.
    pub fn bytes(&self, source: &str) -> i64 {
        self.gauge.with_label_values(&[source]).get()
    }

    /// Forgets file `key` (no longer tailed).
    pub fn remove(&self, key: (u64, u64)) {
        let gone = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        if let Some(b) = gone {
            self.gauge
                .with_label_values(&[&b.source])
                .sub(b.bytes as i64);
        }
    }

    /// The lag of `source` (None: of every source), with its `top` files furthest behind.
    pub fn summary(&self, source: Option<&str>, top: usize) -> LagSummary {
        let now = Instant::now();
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = LagSummary::default();
        let mut heap: Vec<&Behind> = Vec::new();
        for b in files.values() {
            if source.is_some_and(|s| *b.source != *s) {
                continue;
            }
            out.files_behind += 1;
            out.bytes_behind += b.bytes;
            heap.push(b);
        }
        // Most bytes first; ties by path, so the order is stable between refreshes.
        heap.sort_unstable_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        out.most_behind = heap
            .into_iter()
            .take(top)
            .map(|b| FileBehind {
                source: b.source.to_string(),
                path: b.path.to_string(),
                bytes_behind: b.bytes,
                behind_seconds: now.saturating_duration_since(b.since).as_secs(),
            })
            .collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag() -> FileLag {
        FileLag::new(IntGaugeVec::new(prometheus::Opts::new("lag", "lag"), &["source"]).unwrap())
    }

    #[test]
    fn only_files_behind_are_kept_and_the_gauge_is_their_sum() {
        let l = lag();
        let (a, b): (Arc<str>, Arc<str>) = ("app".into(), "web".into());
        let (p1, p2, p3): (Arc<str>, Arc<str>, Arc<str>) =
            ("/l/1.log".into(), "/l/2.log".into(), "/w/3.log".into());
        l.set((1, 1), &a, &p1, 0);
        assert_eq!(l.summary(None, 10), LagSummary::default());
        l.set((1, 1), &a, &p1, 100);
        l.set((1, 2), &a, &p2, 300);
        l.set((1, 3), &b, &p3, 50);
        assert_eq!(l.gauge.with_label_values(&["app"]).get(), 400);
        assert_eq!(l.gauge.with_label_values(&["web"]).get(), 50);
        let s = l.summary(Some("app"), 1);
        assert_eq!((s.files_behind, s.bytes_behind), (2, 400));
        assert_eq!(s.most_behind.len(), 1);
        assert_eq!(s.most_behind[0].path, "/l/2.log");
        assert_eq!(s.most_behind[0].bytes_behind, 300);
        // Caught up: forgotten, and the gauge follows.
        l.set((1, 2), &a, &p2, 0);
        l.set((1, 1), &a, &p1, 40);
        assert_eq!(l.gauge.with_label_values(&["app"]).get(), 40);
        let all = l.summary(None, 10);
        assert_eq!((all.files_behind, all.bytes_behind), (2, 90));
        assert_eq!(all.most_behind[0].path, "/w/3.log");
        l.remove((1, 3));
        l.remove((9, 9));
        assert_eq!(l.gauge.with_label_values(&["web"]).get(), 0);
        assert_eq!(l.summary(None, 10).files_behind, 1);
    }
}
