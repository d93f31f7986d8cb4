//! The store's file: how big it is, how much of it is free, and compaction.
//!
//! redb reuses freed pages but never gives them back to the file system by itself; after
//! retention removed much, [`Store::compact`] moves the live pages to the front and
//! truncates the file. That needs the only handle of the database and no transaction in
//! progress (redb's `Database::compact` takes `&mut`): it takes the store's handle lock for
//! writing, so every read or write of this process that begins meanwhile waits for it (the
//! "exclusive window"), and it gives up — [`Compacted::Busy`], nothing changed — when a
//! transaction is in progress or another reference to the handle exists. `sentinel gc`
//! compacts when no daemon runs; the daemon compacts itself when idle inside
//! `retention.compact_window` (see `crate::lifecycle`).
//!
//! Measuring the free space walks the trees (redb's `WriteTransaction::stats`), so it is
//! done by retention runs and `gc`, not by every scrape: the figure is kept in `meta`
//! (`store_free_bytes`, with when it was measured) for `/metrics`, `/status` and readers in
//! other processes.

use std::sync::Arc;

use serde::Serialize;

use super::{Handle, Store, StoreError, micros};

/// `meta`: the free bytes inside the file, as last measured.
pub const META_FREE_BYTES: &str = "store_free_bytes";
/// `meta`: when they were measured (µs).
pub const META_FREE_MEASURED_US: &str = "store_free_measured_us";
/// `meta`: when the file was last compacted (µs).
pub const META_COMPACTED_US: &str = "store_compacted_us";

/// The file's size and its free part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Space {
    /// The file's size, in bytes.
    pub file_bytes: u64,
    /// Bytes of the file no live page uses (what compaction can give back).
    pub free_bytes: u64,
}

impl Space {
    /// The free share, in percent (0 for an empty file).
    pub fn free_percent(&self) -> u64 {
        (self.free_bytes * 100)
            .checked_div(self.file_bytes)
            .unwrap_or(0)
    }
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
#[non_exhaustive]
pub enum Compacted {
    /// The file went from `before` to `after` bytes.
    Done {
        /// Bytes before.
        before: u64,
        /// Bytes after.
        after: u64,
    },
    /// A transaction was in progress (or the handle was shared): nothing changed.
    Busy,
}

impl Store {
    /// The size of the file now (0 when it cannot be read).
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Measures the free space (a write transaction, aborted: see the module docs) and keeps
    /// the figure in `meta`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is read-only or cannot be read.
    pub fn measure_space(&self) -> Result<Space, StoreError> {
        let mut txn = self.begin_write()?;
        let stats = txn.txn.stats().map_err(self.storage())?;
        let used = stats.allocated_pages() * stats.page_size() as u64;
        let file_bytes = self.file_bytes();
        let space = Space {
            file_bytes,
            free_bytes: file_bytes.saturating_sub(used),
        };
        txn.set_meta(META_FREE_BYTES, space.free_bytes)?;
        txn.set_meta(META_FREE_MEASURED_US, micros(jiff::Timestamp::now()))?;
        txn.commit()?;
        Ok(space)
    }

    /// The file's size now and its free bytes as last measured (see
    /// [`Store::measure_space`]; 0 before the first measurement). Works read-only.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn space(&self) -> Result<Space, StoreError> {
        Ok(Space {
            file_bytes: self.file_bytes(),
            free_bytes: self.meta_value(META_FREE_BYTES)?.unwrap_or(0),
        })
    }

    /// Compacts the file (see the module docs): every read and write of this process waits
    /// meanwhile; [`Compacted::Busy`] when a transaction is in progress.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is read-only or compaction failed.
    pub fn compact(&self) -> Result<Compacted, StoreError> {
        let before = self.file_bytes();
        let mut slot = self
            .handle
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(shared) = slot.take() else {
            drop(slot);
            return Err(self
                .handle()
                .err()
                .unwrap_or_else(|| StoreError::Unavailable {
                    path: self.path.clone(),
                    reason: "reopening".into(),
                }));
        };
        let handle = match Arc::try_unwrap(shared) {
            Ok(h) => h,
            Err(shared) => {
                *slot = Some(shared);
                return Ok(Compacted::Busy);
            }
        };
        let result = match handle {
            Handle::Rw(mut db) => {
                let r = db.compact();
                *slot = Some(Arc::new(Handle::Rw(db)));
                r
            }
            ro @ Handle::Ro(_) => {
                *slot = Some(Arc::new(ro));
                return Err(StoreError::Unavailable {
                    path: self.path.clone(),
                    reason: "opened read-only".into(),
                });
            }
        };
        drop(slot);
        match result {
            Ok(_) => {}
            Err(redb::CompactionError::TransactionInProgress) => return Ok(Compacted::Busy),
            Err(e) => {
                return Err(StoreError::Storage {
                    path: self.path.clone(),
                    source: e.into(),
                });
            }
        }
        let mut txn = self.begin_write()?;
        txn.set_meta(META_COMPACTED_US, micros(jiff::Timestamp::now()))?;
        txn.commit()?;
        Ok(Compacted::Done {
            before,
            after: self.file_bytes(),
        })
    }
}
