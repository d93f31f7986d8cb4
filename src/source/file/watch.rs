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
//!
//! inotify is a hint, never the source of truth: when a watch is refused because
//! `fs.inotify.max_user_watches` is reached (a directory, or a new subdirectory of a
//! recursive watch), that directory is polled instead (see [`WatchLimit`]).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::Sender;
use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};
use prometheus::IntCounter;

use super::open_set::{OpenSet, Pinned};
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

/// What inotify reported to the coordinator: paths created or moved in (pinned while the
/// open set has a pin free), moves (from, to), and whether the globs must be expanded
/// again.
#[derive(Debug, Clone)]
pub(super) struct Changes {
    reported: Arc<Mutex<Reported>>,
    /// Where pins come from.
    open_set: Arc<OpenSet>,
    /// Shared with the [`DirWatch`].
    watch_limit: Arc<WatchLimit>,
}

/// inotify's watch budget (`fs.inotify.max_user_watches`): when a watch is refused for it,
/// the directory is polled (the globs are expanded every [`super::RESCAN_INTERVAL`]), the
/// refusal is counted (`sentinel_inotify_watch_limit_total`) and the first one is logged
/// as a warning, once per process.
#[derive(Debug)]
pub(super) struct WatchLimit {
    reached: AtomicBool,
    warned: AtomicBool,
    refusals: IntCounter,
}

impl WatchLimit {
    pub(super) fn new(refusals: IntCounter) -> Arc<WatchLimit> {
        Arc::new(WatchLimit {
            reached: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            refusals,
        })
    }

    /// A watch on `dir` was refused for the budget.
    fn refused(&self, dir: Option<&Path>) {
        self.refusals.inc();
        self.reached.store(true, Ordering::Release);
        if !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                dir = %dir.map_or_else(String::new, |d| d.display().to_string()),
                "inotify watch limit reached (fs.inotify.max_user_watches): directories without \
                 a watch are polled instead (new files found within a second, appends read \
                 within a second). Raise it with sysctl fs.inotify.max_user_watches=N"
            );
        }
    }

    /// Whether a watch was ever refused for the budget (then some directory may be
    /// unwatched: the globs are expanded every second).
    pub(super) fn is_reached(&self) -> bool {
        self.reached.load(Ordering::Acquire)
    }
}

/// Whether `notify` refused a watch for inotify's watch budget (ENOSPC).
fn is_watch_limit(e: &notify::Error) -> bool {
    matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
}

/// Moves: (from, to).
pub(super) type Moves = Vec<(PathBuf, PathBuf)>;

#[derive(Debug, Default)]
struct Reported {
    paths: Vec<(PathBuf, Option<Pinned>)>,
    moved: Moves,
    expand: bool,
}

impl Changes {
    pub(super) fn new(open_set: Arc<OpenSet>, watch_limit: Arc<WatchLimit>) -> Changes {
        Changes {
            reported: Arc::default(),
            open_set,
            watch_limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.reported.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, path: &Path, file: Option<Pinned>) {
        let mut c = self.lock();
        if c.paths.len() < MAX_CHANGED_PATHS {
            c.paths.push((path.to_path_buf(), file));
        } else {
            c.expand = true;
        }
    }

    fn moved(&self, from: &Path, to: &Path) {
        let mut c = self.lock();
        if c.moved.len() < MAX_CHANGED_PATHS {
            c.moved.push((from.to_path_buf(), to.to_path_buf()));
        }
        // A move away also needs an expansion (to detach what left).
        c.expand = true;
    }

    fn expand(&self) {
        self.lock().expand = true;
    }

    /// Takes what was reported: paths to look at, moves, and whether to expand the globs.
    pub(super) fn take(&self) -> (Vec<(PathBuf, Option<Pinned>)>, Moves, bool) {
        let mut c = self.lock();
        (
            std::mem::take(&mut c.paths),
            std::mem::take(&mut c.moved),
            std::mem::take(&mut c.expand),
        )
    }
}

/// Turns `notify`'s events into wake-ups (see the module docs).
pub(super) struct Handler {
    pub(super) routes: Routes,
    pub(super) changes: Changes,
    /// The sources' globs (which created files to pin).
    pub(super) patterns: Vec<glob::Pattern>,
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
        patterns: Vec<glob::Pattern>,
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
            patterns,
            shards,
            coordinator,
            bases,
            lost,
            exclude,
            counters,
        }
    }

    /// Opens a created file that a glob matches, here and now, while the open set has a
    /// pin free: a file deleted or rotated away a moment later is still read (through this
    /// handle) when the coordinator's turn comes. Symlinks are left to the coordinator (it
    /// decides, and warns).
    fn pin(&self, path: &Path) -> Option<Pinned> {
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        if !self
            .patterns
            .iter()
            .any(|p| p.matches_path_with(path, opts))
        {
            return None;
        }
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let slot = self.changes.open_set.try_pin()?;
        let file = File::open(path).ok()?;
        Some(Pinned { file, slot })
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
                            self.changes.add(p, None);
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
                            self.changes.add(p, self.pin(p));
                        }
                    }
                    // Both sides of a move (also reported one by one): a file rotated away
                    // before the coordinator saw it can still be found where it went.
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                        if let [from, to] = paths {
                            self.changes.moved(from, to);
                        }
                    }
                    // Gone, moved away, a directory created (its files come with the next
                    // expansion), or not said.
                    _ => self.changes.expand(),
                }
                let _ = self.coordinator.try_send(());
            }
            Kind::Rescan | Kind::Error => {
                // A recursive watch's new subdirectory refused for the budget.
                if let Err(e) = &res
                    && is_watch_limit(e)
                {
                    self.changes
                        .watch_limit
                        .refused(e.paths.first().map(PathBuf::as_path));
                }
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
    watch_limit: Arc<WatchLimit>,
    /// Directory, mode, whether watched now, whether a failure to watch it was logged.
    dirs: Vec<(PathBuf, notify::RecursiveMode, bool, bool)>,
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
        let watch_limit = handler.changes.watch_limit.clone();
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
                (d, mode, false, false)
            })
            .collect();
        let mut w = DirWatch {
            watcher,
            watch_limit,
            dirs,
            lost,
        };
        w.refresh();
        w
    }

    /// Whether inotify covers every glob's directory (then a create or a move wakes the
    /// coordinator, and the periodic expansion is only a safety net).
    pub(super) fn is_complete(&self) -> bool {
        self.watcher.is_some()
            && self.dirs.iter().all(|(_, _, w, _)| *w)
            && !self.watch_limit.is_reached()
    }

    /// Watches again what was removed or moved away, and what could not be watched yet.
    pub(super) fn refresh(&mut self) {
        use notify::Watcher;
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        if self.lost.swap(false, Ordering::AcqRel) {
            for (dir, _, watched, _) in &mut self.dirs {
                if *watched {
                    let _ = watcher.unwatch(dir);
                    *watched = false;
                }
            }
        }
        for (dir, mode, watched, logged) in &mut self.dirs {
            if *watched {
                continue;
            }
            match watcher.watch(dir, *mode) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    *watched = true;
                    *logged = false;
                }
                // Retried at every expansion (once a second meanwhile): said once.
                Err(e) if !*logged && is_watch_limit(&e) => {
                    self.watch_limit.refused(Some(dir));
                    *logged = true;
                }
                Err(e) if !*logged => {
                    tracing::debug!(dir = %dir.display(), error = %e, "not watching (polling covers it)");
                    *logged = true;
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, RemoveKind, RenameMode};

    fn test_limit() -> Arc<WatchLimit> {
        WatchLimit::new(IntCounter::new("t", "t").expect("counter"))
    }

    fn test_set() -> Arc<OpenSet> {
        OpenSet::new(64, 1, prometheus::IntGauge::new("t", "t").expect("gauge"))
    }

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

    /// What `c` holds, with "a pinned file" for the file.
    fn taken(c: &Changes) -> (Vec<(PathBuf, bool)>, Moves, bool) {
        let (paths, moved, expand) = c.take();
        let paths = paths.into_iter().map(|(p, f)| (p, f.is_some())).collect();
        (paths, moved, expand)
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
        let changes = Changes::new(test_set(), test_limit());
        let h = Handler::new(
            routes,
            changes,
            Vec::new(),
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
        assert_eq!(
            taken(&r.h.changes),
            (vec![(PathBuf::from("/l/b.log"), false)], vec![], false)
        );
        r.h.handle(ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/l/c.log",
        ));
        assert!(r.coord.try_recv().is_ok());
        assert_eq!(
            taken(&r.h.changes),
            (vec![(PathBuf::from("/l/c.log"), false)], vec![], false)
        );
        let both = notify::Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/l/a.log"))
            .add_path(PathBuf::from("/l/a.log.1"));
        r.h.handle(Ok(both));
        assert!(r.coord.try_recv().is_ok());
        let moved = vec![(PathBuf::from("/l/a.log"), PathBuf::from("/l/a.log.1"))];
        assert_eq!(taken(&r.h.changes), (vec![], moved, true));
        r.h.handle(ev(EventKind::Remove(RemoveKind::File), "/l/a.log"));
        assert!(r.coord.try_recv().is_ok());
        assert_eq!(taken(&r.h.changes), (vec![], vec![], true));
        r.h.handle(ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            "/l",
        ));
        assert!(r.coord.try_recv().is_ok());
        assert!(r.lost.load(Ordering::Acquire));
        assert_eq!(taken(&r.h.changes), (vec![], vec![], true));
        // Sentinel's own state wakes nothing.
        r.h.handle(ev(EventKind::Create(CreateKind::File), "/l/state/x"));
        assert!(r.coord.try_recv().is_err());
    }

    #[test]
    fn a_created_file_a_glob_matches_is_pinned_at_once() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("b.log");
        let other = dir.path().join("b.txt");
        std::fs::write(&logs, "ERROR x\n").expect("write");
        std::fs::write(&other, "ERROR y\n").expect("write");
        let metrics = Metrics::new();
        let (stx, _shard) = crossbeam_channel::bounded(1);
        let (ctx, coord) = crossbeam_channel::bounded(1);
        let pattern =
            glob::Pattern::new(&format!("{}/*.log", dir.path().display())).expect("pattern");
        let h = Handler::new(
            Routes::default(),
            Changes::new(test_set(), test_limit()),
            vec![pattern],
            vec![stx],
            ctx,
            vec![dir.path().to_path_buf()],
            Arc::new(AtomicBool::new(false)),
            Vec::new(),
            &metrics,
        );
        for p in [&logs, &other] {
            let create =
                notify::Event::new(EventKind::Create(CreateKind::File)).add_path(p.clone());
            h.handle(Ok(create));
        }
        assert!(coord.try_recv().is_ok());
        // Deleted a moment later: the pinned handle still reads it.
        std::fs::remove_file(&logs).expect("rm");
        let (paths, _, _) = h.changes.take();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0].0, logs);
        let mut text = String::new();
        paths[0]
            .1
            .as_ref()
            .map(|p| &p.file)
            .expect("pinned")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "ERROR x\n");
        assert_eq!(paths[1].0, other);
        assert!(paths[1].1.is_none(), "no glob matches it");
    }

    #[test]
    fn the_watch_limit_is_counted_and_turns_to_polling() {
        let r = rig();
        assert!(!r.h.changes.watch_limit.is_reached());
        let refused =
            || Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch).add_path("/l/sub".into()));
        r.h.handle(refused());
        r.h.handle(refused());
        assert!(r.h.changes.watch_limit.is_reached());
        assert_eq!(r.h.changes.watch_limit.refusals.get(), 2);
        // Everything is looked at again (the expansion finds the unwatched directory's files).
        assert!(r.flag.load(Ordering::Acquire));
        assert_eq!(taken(&r.h.changes), (vec![], vec![], true));
        assert!(!is_watch_limit(&notify::Error::generic("x")));
    }

    #[test]
    fn a_flood_of_creates_turns_into_one_expansion() {
        let c = Changes::new(test_set(), test_limit());
        for i in 0..MAX_CHANGED_PATHS + 10 {
            c.add(Path::new(&format!("/l/{i}.log")), None);
        }
        let (paths, moved, expand) = c.take();
        assert_eq!(paths.len(), MAX_CHANGED_PATHS);
        assert!(moved.is_empty() && expand);
        assert_eq!(taken(&c), (vec![], vec![], false));
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
