//! inotify (through `notify`) as a hint: which event wakes whom.
//!
//! `notify` 8 watches every directory with a fixed mask (`0xfee`): the changes, plus
//! `IN_OPEN` and `IN_CLOSE_WRITE`, and it has no setting to leave those out. Listing a
//! directory opens it, so each glob expansion raises `IN_OPEN` on the directory it lists.
//! When any event woke every thread, the coordinator's own listing woke the coordinator
//! again: a loop of Sentinel's own making that kept an idle daemon at 137% of a core
//! (issue 22). So every event is classified ([`Kind`]) and only the ones that mean change
//! act:
//!
//! - a file created or moved in ([`Changes`]) is handed to the coordinator, which stats
//!   just that path and tracks it at once when a glob matches it: no directory listing, so
//!   a burst of creates costs a stat each, and a file rotated away a moment after it
//!   appeared is still read;
//! - a file or directory removed or moved away, or a directory created, has the
//!   coordinator expand the globs again as soon as its one-per-second cap allows (a tailed
//!   file that left is drained through its open handle meanwhile, nothing waits on it);
//! - `modify` and `attrib` on a tailed file wake only the shard that tails it, and mark
//!   only that file to be polled now ([`Routes`]); `attrib` on another path (a file that
//!   could not be opened may have become readable) is handed over like a create;
//! - `access` (opens and closes: Sentinel's own reads included) and `other` wake nothing;
//! - `rescan` (the kernel's queue overflowed: events were lost) wakes everyone.
//!
//! Every event is counted in `sentinel_inotify_events_total{kind}`. Events whose paths all
//! lie in an excluded directory (Sentinel's state) wake nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::Sender;
use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};
use prometheus::IntCounter;

use crate::metrics::{INOTIFY_KINDS, Metrics};
use crate::store::FileKey;

/// What an inotify event means to the file sources (its `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A file or directory was created.
    Create,
    /// A file's data changed (written, truncated).
    Modify,
    /// Metadata changed (permissions, owner, link count, timestamps).
    Attrib,
    /// Either side of a move (the watched directory's own move included).
    Rename,
    /// A file or directory was deleted (the watched directory itself included).
    Remove,
    /// An open or a close: nothing changed.
    Access,
    /// Anything else `notify` reports.
    Other,
    /// The kernel's event queue overflowed: events were lost.
    Rescan,
    /// `notify` reported an error.
    Error,
}

impl Kind {
    /// Classifies what `notify` delivered.
    pub(super) fn of(res: &notify::Result<notify::Event>) -> Kind {
        let ev = match res {
            Ok(ev) => ev,
            Err(_) => return Kind::Error,
        };
        if ev.need_rescan() {
            return Kind::Rescan;
        }
        match ev.kind {
            EventKind::Create(_) => Kind::Create,
            EventKind::Modify(ModifyKind::Name(_)) => Kind::Rename,
            EventKind::Modify(ModifyKind::Metadata(_)) => Kind::Attrib,
            EventKind::Modify(_) => Kind::Modify,
            EventKind::Remove(_) => Kind::Remove,
            EventKind::Access(_) => Kind::Access,
            EventKind::Any | EventKind::Other => Kind::Other,
        }
    }
}

/// Where the events of a tailed file go: its shard, and the flag that has the shard poll it
/// at once.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) shard: usize,
    pub(super) key: FileKey,
    pub(super) woken: Arc<AtomicBool>,
}

/// The paths of tailed files, kept by the coordinator, read by the event handler.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes(Arc<Mutex<HashMap<PathBuf, Route>>>);

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Route>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `path` is tailed through `route` (replacing what was there).
    pub(super) fn insert(&self, path: PathBuf, route: Route) {
        self.lock().insert(path, route);
    }

    /// `path` no longer leads to `key` (another file may have taken the path meanwhile:
    /// its route stays).
    pub(super) fn remove(&self, path: &Path, key: FileKey) {
        let mut map = self.lock();
        if map.get(path).is_some_and(|r| r.key == key) {
            map.remove(path);
        }
    }

    /// Marks the file at `path` to be polled now; returns its shard (None: not tailed).
    fn wake(&self, path: &Path) -> Option<usize> {
        let map = self.lock();
        let r = map.get(path)?;
        r.woken.store(true, Ordering::Release);
        Some(r.shard)
    }

    /// Marks every file to be polled now.
    fn wake_all(&self) {
        for r in self.lock().values() {
            r.woken.store(true, Ordering::Release);
        }
    }
}

/// At most this many reported paths wait for the coordinator; beyond, it expands the
/// globs instead.
const MAX_CHANGED_PATHS: usize = 4096;

/// What inotify reported to the coordinator: paths created or moved in, and whether the
/// globs must be expanded again.
#[derive(Debug, Clone, Default)]
pub(super) struct Changes(Arc<Mutex<(Vec<PathBuf>, bool)>>);

impl Changes {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<PathBuf>, bool)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, path: &Path) {
        let mut c = self.lock();
        if c.0.len() < MAX_CHANGED_PATHS {
            c.0.push(path.to_path_buf());
        } else {
            c.1 = true;
        }
    }

    fn expand(&self) {
        self.lock().1 = true;
    }

    /// Takes what was reported: paths to look at, and whether to expand the globs.
    pub(super) fn take(&self) -> (Vec<PathBuf>, bool) {
        let mut c = self.lock();
        (std::mem::take(&mut c.0), std::mem::take(&mut c.1))
    }
}

/// Turns `notify`'s events into wake-ups (see the module docs).
pub(super) struct Handler {
    pub(super) routes: Routes,
    pub(super) changes: Changes,
    /// One per shard.
    pub(super) shards: Vec<Sender<()>>,
    pub(super) coordinator: Sender<()>,
    /// The watched directories: their own removal or move is noted in `lost`.
    pub(super) bases: Vec<PathBuf>,
    pub(super) lost: Arc<AtomicBool>,
    /// Sentinel's own directories.
    pub(super) exclude: Vec<PathBuf>,
    counters: Vec<IntCounter>,
}

impl Handler {
    // The handler's parts, built by the caller; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        routes: Routes,
        changes: Changes,
        shards: Vec<Sender<()>>,
        coordinator: Sender<()>,
        bases: Vec<PathBuf>,
        lost: Arc<AtomicBool>,
        exclude: Vec<PathBuf>,
        metrics: &Metrics,
    ) -> Handler {
        let counters = INOTIFY_KINDS
            .iter()
            .map(|k| metrics.inotify_events.with_label_values(&[k]))
            .collect();
        Handler {
            routes,
            changes,
            shards,
            coordinator,
            bases,
            lost,
            exclude,
            counters,
        }
    }

    /// Handles one event (called on `notify`'s thread).
    pub(super) fn handle(&self, res: notify::Result<notify::Event>) {
        let kind = Kind::of(&res);
        self.counters[kind as usize].inc();
        let paths: &[PathBuf] = match &res {
            Ok(ev) => &ev.paths,
            Err(_) => &[],
        };
        let ours = !paths.is_empty()
            && paths
                .iter()
                .all(|p| self.exclude.iter().any(|d| p.starts_with(d)));
        match kind {
            Kind::Access | Kind::Other => {}
            _ if ours => {}
            Kind::Modify | Kind::Attrib => {
                for p in paths {
                    match self.routes.wake(p) {
                        Some(shard) => {
                            let _ = self.shards[shard].try_send(());
                        }
                        None if kind == Kind::Attrib => {
                            self.changes.add(p);
                            let _ = self.coordinator.try_send(());
                        }
                        None => {}
                    }
                }
            }
            Kind::Create | Kind::Rename | Kind::Remove => {
                if kind != Kind::Create && paths.iter().any(|p| self.bases.contains(p)) {
                    self.lost.store(true, Ordering::Release);
                }
                let ev = match &res {
                    Ok(ev) => ev.kind,
                    Err(_) => EventKind::Any,
                };
                match ev {
                    // A file appeared, or was moved in: look at that path.
                    EventKind::Create(CreateKind::File)
                    | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                        for p in paths {
                            self.changes.add(p);
                        }
                    }
                    // Both sides of a move, already reported one by one.
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {}
                    // Gone, moved away, a directory created (its files come with the next
                    // expansion), or not said.
                    _ => self.changes.expand(),
                }
                let _ = self.coordinator.try_send(());
            }
            Kind::Rescan | Kind::Error => {
                self.routes.wake_all();
                for s in &self.shards {
                    let _ = s.try_send(());
                }
                self.changes.expand();
                let _ = self.coordinator.try_send(());
            }
        }
    }
}

/// The directories the globs start from, watched while they exist.
pub(super) struct DirWatch {
    watcher: Option<notify::RecommendedWatcher>,
    dirs: Vec<(PathBuf, notify::RecursiveMode, bool)>,
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch")
            .field("inotify", &self.watcher.is_some())
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl DirWatch {
    /// Starts `notify` with `handler` and watches `dirs` (directory, recursive) as far as
    /// they exist; [`DirWatch::refresh`] retries the others.
    pub(super) fn start(
        dirs: Vec<(PathBuf, bool)>,
        handler: Handler,
        lost: Arc<AtomicBool>,
    ) -> DirWatch {
        let watcher = match notify::recommended_watcher(move |res| handler.handle(res)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; polling only");
                None
            }
        };
        let dirs = dirs
            .into_iter()
            .map(|(d, recursive)| {
                let mode = if recursive {
                    notify::RecursiveMode::Recursive
                } else {
                    notify::RecursiveMode::NonRecursive
                };
                (d, mode, false)
            })
            .collect();
        let mut w = DirWatch {
            watcher,
            dirs,
            lost,
        };
        w.refresh();
        w
    }

    /// Whether inotify covers every glob's directory (then a create or a move wakes the
    /// coordinator, and the periodic expansion is only a safety net).
    pub(super) fn is_complete(&self) -> bool {
        self.watcher.is_some() && self.dirs.iter().all(|(_, _, w)| *w)
    }

    /// Watches again what was removed or moved away, and what could not be watched yet.
    pub(super) fn refresh(&mut self) {
        use notify::Watcher;
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        if self.lost.swap(false, Ordering::AcqRel) {
            for (dir, _, watched) in &mut self.dirs {
                if *watched {
                    let _ = watcher.unwatch(dir);
                    *watched = false;
                }
            }
        }
        for (dir, mode, watched) in &mut self.dirs {
            if *watched {
                continue;
            }
            match watcher.watch(dir, *mode) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    *watched = true;
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "not watching (polling covers it)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, RemoveKind, RenameMode};

    fn ev(kind: EventKind, path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
    }

    #[test]
    fn only_changes_count_as_changes() {
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let close_read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        for k in [open, close_read, close_write] {
            assert_eq!(Kind::of(&ev(k, "/l")), Kind::Access);
        }
        assert_eq!(
            Kind::of(&ev(EventKind::Create(CreateKind::File), "/l/a")),
            Kind::Create
        );
        assert_eq!(
            Kind::of(&ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/l/a"
            )),
            Kind::Modify
        );
        assert_eq!(
            Kind::of(&ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                "/l/a"
            )),
            Kind::Rename
        );
        assert_eq!(
            Kind::of(&ev(EventKind::Remove(RemoveKind::File), "/l/a")),
            Kind::Remove
        );
        let rescan = Ok(notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan));
        assert_eq!(Kind::of(&rescan), Kind::Rescan);
        assert_eq!(Kind::of(&Err(notify::Error::generic("x"))), Kind::Error);
        assert_eq!(INOTIFY_KINDS[Kind::Rename as usize], "rename");
        assert_eq!(INOTIFY_KINDS[Kind::Access as usize], "access");
        assert_eq!(INOTIFY_KINDS[Kind::Error as usize], "error");
    }

    struct Rig {
        h: Handler,
        shard: crossbeam_channel::Receiver<()>,
        coord: crossbeam_channel::Receiver<()>,
        flag: Arc<AtomicBool>,
        lost: Arc<AtomicBool>,
        metrics: Metrics,
    }

    fn rig() -> Rig {
        let metrics = Metrics::new();
        let routes = Routes::default();
        let flag = Arc::new(AtomicBool::new(false));
        let key = FileKey { dev: 1, ino: 2 };
        routes.insert(
            PathBuf::from("/l/a.log"),
            Route {
                shard: 0,
                key,
                woken: flag.clone(),
            },
        );
        let (stx, shard) = crossbeam_channel::bounded(1);
        let (ctx, coord) = crossbeam_channel::bounded(1);
        let lost = Arc::new(AtomicBool::new(false));
        let changes = Changes::default();
        let h = Handler::new(
            routes,
            changes,
            vec![stx],
            ctx,
            vec![PathBuf::from("/l")],
            lost.clone(),
            vec![PathBuf::from("/l/state")],
            &metrics,
        );
        Rig {
            h,
            shard,
            coord,
            flag,
            lost,
            metrics,
        }
    }

    #[test]
    fn opening_the_directory_wakes_nobody() {
        let r = rig();
        for _ in 0..3 {
            r.h.handle(ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/l",
            ));
            r.h.handle(ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "/l/a.log",
            ));
        }
        assert!(r.shard.try_recv().is_err());
        assert!(r.coord.try_recv().is_err());
        assert!(!r.flag.load(Ordering::Acquire));
        let c = r
            .metrics
            .inotify_events
            .with_label_values(&["access"])
            .get();
        assert_eq!(c, 6);
    }

    #[test]
    fn a_write_wakes_only_the_shard_of_that_file() {
        let r = rig();
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        r.h.handle(ev(data, "/l/other.log"));
        assert!(r.shard.try_recv().is_err());
        r.h.handle(ev(data, "/l/a.log"));
        assert!(r.shard.try_recv().is_ok());
        assert!(r.flag.load(Ordering::Acquire));
        assert!(r.coord.try_recv().is_err());
        assert_eq!(
            r.metrics
                .inotify_events
                .with_label_values(&["modify"])
                .get(),
            2
        );
    }

    #[test]
    fn creates_and_moves_wake_the_coordinator_and_the_watched_dir_going_is_noted() {
        let r = rig();
        r.h.handle(ev(EventKind::Create(CreateKind::File), "/l/b.log"));
        assert!(r.coord.try_recv().is_ok());
        assert!(!r.lost.load(Ordering::Acquire));
        // The created file is handed over by path, no expansion needed.
        assert_eq!(r.h.changes.take(), (vec![PathBuf::from("/l/b.log")], false));
        r.h.handle(ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/l/c.log",
        ));
        assert!(r.coord.try_recv().is_ok());
        assert_eq!(r.h.changes.take(), (vec![PathBuf::from("/l/c.log")], false));
        r.h.handle(ev(EventKind::Remove(RemoveKind::File), "/l/a.log"));
        assert!(r.coord.try_recv().is_ok());
        assert_eq!(r.h.changes.take(), (vec![], true));
        r.h.handle(ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            "/l",
        ));
        assert!(r.coord.try_recv().is_ok());
        assert!(r.lost.load(Ordering::Acquire));
        assert_eq!(r.h.changes.take(), (vec![], true));
        // Sentinel's own state wakes nothing.
        r.h.handle(ev(EventKind::Create(CreateKind::File), "/l/state/x"));
        assert!(r.coord.try_recv().is_err());
    }

    #[test]
    fn a_route_is_removed_only_by_its_own_file() {
        let routes = Routes::default();
        let woken = Arc::new(AtomicBool::new(false));
        let old = FileKey { dev: 1, ino: 2 };
        let new = FileKey { dev: 1, ino: 3 };
        let p = PathBuf::from("/l/a.log");
        routes.insert(
            p.clone(),
            Route {
                shard: 1,
                key: new,
                woken,
            },
        );
        routes.remove(&p, old);
        assert_eq!(routes.wake(&p), Some(1));
        routes.remove(&p, new);
        assert_eq!(routes.wake(&p), None);
    }
}
