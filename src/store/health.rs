//! The store's health, and its recovery in place after a storage error.
//!
//! redb stops at the first I/O error (a full disk, EIO): every later operation on the same
//! handle answers "Previous I/O error occurred. Please close and re-open the database".
//! Retrying on that handle never succeeds, so the ingest writer, whose commit failed,
//! marks the store *degraded* and calls [`Store::reopen`] with backoff: the handle is
//! closed (readers get [`StoreError::Unavailable`] meanwhile, never a stale answer) and the
//! file opened again — redb's own recovery brings it back to its last durable commit.
//! Whether the failed commit made it to disk or not is read back from the commit counter
//! ([`COMMITS`], written by every ingest commit), so nothing is applied twice.
//!
//! While degraded, everything that reads [`Health`] holds back: webhook requests answer 503
//! with `Retry-After`, `/health` answers 503 naming the reason, `/status` and
//! `sentinel status` show it, the `sentinel_store_degraded` gauge is 1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::Serialize;

use super::{Handle, Store, StoreError, builder, open_error};

/// The `meta` counter every ingest commit sets to its own number (1, 2, ...): after a
/// failed commit and a reopen it tells whether that commit was durable after all.
pub const COMMITS: &str = "ingest_commits";

/// Why and since when the store is degraded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Degraded {
    /// The error that degraded it (the first of the episode).
    pub reason: String,
    /// When (RFC 3339).
    pub since: String,
}

/// Whether the store can be written; shared by everything that holds the store.
#[derive(Debug, Default)]
pub struct Health {
    degraded: AtomicBool,
    detail: Mutex<Option<Degraded>>,
}

impl Health {
    /// True while the store cannot commit (cheap: one atomic load).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// The episode under way, if any.
    pub fn degraded(&self) -> Option<Degraded> {
        if !self.is_degraded() {
            return None;
        }
        self.detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Marks the store degraded by `reason`; true when this starts an episode (the first
    /// reason is kept until it ends).
    pub fn set_degraded(&self, reason: &str) -> bool {
        let mut d = self
            .detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.is_some() {
            return false;
        }
        *d = Some(Degraded {
            reason: reason.to_string(),
            since: Timestamp::now().to_string(),
        });
        self.degraded.store(true, Ordering::Release);
        true
    }

    /// Ends the episode; returns it when there was one.
    pub fn set_healthy(&self) -> Option<Degraded> {
        let mut d = self
            .detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.degraded.store(false, Ordering::Release);
        d.take()
    }
}

/// Opens the database file again (see [`Store::reopen`]).
pub(super) type Opener = Box<dyn Fn() -> Result<redb::Database, redb::DatabaseError> + Send + Sync>;

impl Store {
    /// The store's health (see the module docs).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Closes the database handle and opens the file again, after a storage error left the
    /// handle unusable. Until it succeeds, reads and writes answer
    /// [`StoreError::Unavailable`].
    ///
    /// # Errors
    ///
    /// The open failed (the fault persists; try again later), or a reader still holds the
    /// old handle (it lets go within one read; try again later).
    pub fn reopen(&self) -> Result<(), StoreError> {
        let Some(opener) = &self.opener else {
            return Err(StoreError::Unavailable {
                path: self.path.clone(),
                reason: "opened read-only".into(),
            });
        };
        let old = self
            .handle
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Dropped here when no read is using it; otherwise the open below finds the file
        // still locked and the caller tries again.
        drop(old);
        let db = opener().map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable {
                path: self.path.clone(),
                reason: "a read still holds the old handle".into(),
            },
            e => open_error(&self.path, e),
        })?;
        *self
            .handle
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Handle::Rw(db)));
        self.load_event_head()?;
        Ok(())
    }

    /// Opens (or creates) a database on `backend` instead of a file (fault-injection tests);
    /// `reopen` calls `backend` again.
    #[cfg(test)]
    pub(crate) fn open_with_backend<B: redb::StorageBackend>(
        path: &std::path::Path,
        backend: impl Fn() -> B + Send + Sync + 'static,
    ) -> Result<Store, StoreError> {
        let opener: Opener = Box::new(move || builder().create_with_backend(backend()));
        let db = opener().map_err(|e| open_error(path, e))?;
        let store = Store::with_handle(Handle::Rw(db), path, Some(opener));
        store.init_schema()?;
        store.load_event_head()?;
        Ok(store)
    }

    /// The opener of a database file at `path`.
    pub(super) fn file_opener(path: &std::path::Path) -> Opener {
        let path = path.to_path_buf();
        Box::new(move || builder().create(&path))
    }
}

/// A redb storage backend that fails chosen operations, the way SQLite and redb test
/// themselves: wraps the real file backend and, once armed, makes the Nth read, write or sync
/// (counted across every backend sharing the plan) fail with ENOSPC or EIO, and every
/// later one too while the fault lasts.
#[cfg(test)]
pub(crate) mod faulty {
    use std::fs::File;
    use std::io;
    use std::ops::Bound;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use redb::backends::FileBackend;
    use redb::{BackendError, StorageBackend};

    /// What fails, shared by the backends of every reopen.
    #[derive(Debug, Default)]
    pub(crate) struct Plan {
        /// Writes and syncs so far.
        pub ops: AtomicU64,
        /// The op number that fails first (0: none).
        pub fail_at: AtomicU64,
        /// Ops fail from `fail_at` on while this is set (a full disk); cleared = space freed.
        pub persistent: AtomicBool,
        /// Failures injected.
        pub injected: AtomicU64,
        /// Fail with EIO instead of ENOSPC.
        pub eio: AtomicBool,
    }

    impl Plan {
        /// Counts one operation; fails it when the plan says so.
        pub(crate) fn check(&self) -> io::Result<()> {
            let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
            let at = self.fail_at.load(Ordering::SeqCst);
            let failing =
                at != 0 && (n == at || (n > at && self.persistent.load(Ordering::SeqCst)));
            if failing {
                self.injected.fetch_add(1, Ordering::SeqCst);
                let code = if self.eio.load(Ordering::SeqCst) {
                    libc_eio()
                } else {
                    libc_enospc()
                };
                return Err(io::Error::from_raw_os_error(code));
            }
            Ok(())
        }
    }

    const fn libc_enospc() -> i32 {
        28
    }

    const fn libc_eio() -> i32 {
        5
    }

    /// The file backend with injected faults.
    #[derive(Debug)]
    pub(crate) struct Faulty {
        inner: FileBackend,
        plan: Arc<Plan>,
    }

    impl Faulty {
        pub(crate) fn open(path: &std::path::Path, plan: Arc<Plan>) -> Faulty {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .expect("open the store file");
            Faulty {
                inner: FileBackend::new(file).expect("file backend"),
                plan,
            }
        }
    }

    impl StorageBackend for Faulty {
        fn len(&self) -> Result<u64, io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            self.plan.check()?;
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.plan.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), io::Error> {
            self.plan.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            self.plan.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> Result<(), io::Error> {
            self.inner.close()
        }
        fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_range(s, e)
        }
        fn try_lock_shared_range(
            &self,
            s: Bound<u64>,
            e: Bound<u64>,
        ) -> Result<bool, BackendError> {
            self.inner.try_lock_shared_range(s, e)
        }
        fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_range(s, e)
        }
        fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_shared_range(s, e)
        }
        fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.unlock_range(s, e)
        }
        fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.query_lock_range(s, e)
        }
    }
}
