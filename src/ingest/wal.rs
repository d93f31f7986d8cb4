//! The ingest log: an append-only, checksummed write-ahead log of accepted webhook events.
//!
//! A 2xx to a webhook request means its events are durable. Making every acknowledgement
//! wait for a redb commit costs redb's two fsyncs (two-phase commit, which the
//! `SingleWriter` mode that lets other processes read requires) plus the B-tree work of
//! every table a commit touches, on the path of every request. Instead the ingest logger
//! appends each group of accepted events to this log — ONE `fdatasync` per group — and
//! acknowledges; the redb writer applies the events in a later commit that also records
//! the highest log sequence number it contains (`meta.wal_applied_seq`). Records at or
//! below that number are garbage, and their segments are deleted.
//!
//! # Format
//!
//! The log is a directory (`state_dir/sentinel.wal/`) of segment files named by the
//! zero-padded sequence number of their first record (`00000000000000000042.seg`). A
//! segment is a sequence of records:
//!
//! ```text
//! len: u32 LE | crc32(seq ‖ body): u32 LE | seq: u64 LE | body: len - 8 bytes
//! ```
//!
//! Sequence numbers strictly increase across segments. On open every segment is read in
//! order; the first record that is cut short, fails its CRC or does not increase the
//! sequence ends the log, and what it is decides what happens to the rest:
//!
//! - a **torn tail**: the bad record is the last thing in the last segment (its header or
//!   body cut short by the end of the file, or a body that fails its CRC and reaches
//!   exactly to the end, or zeros to the end). A crash mid-append leaves that; the group
//!   was never acknowledged (the acknowledgement waits for the `fdatasync`). It is cut off
//!   at the end of the last intact record, and a warning names the segment, the offset and
//!   the bytes cut;
//! - **corruption**: anything else — a CRC mismatch with more bytes behind the record, a
//!   bad record in a segment that is not the last, a sequence number that does not
//!   increase. The records before it are applied; the rest is never dropped: the bytes
//!   from the bad record to the end of its segment are moved to a file beside it
//!   (`<segment>.corrupt-at-<offset>`), every later segment is renamed `<segment>.corrupt`
//!   (neither is read again), and an error names the segment, the offset and those files.
//!
//! A failed append is undone (the segment is truncated back to its length before the
//! append) so that a later record never sits behind a torn one; if even that fails the log
//! refuses appends until a later attempt manages the undo.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes before a record's body: length, CRC and sequence number.
const HEADER: usize = 16;
/// A record longer than this is treated as corrupt (a body is at most one group).
const MAX_RECORD: usize = 1 << 30;
/// A segment at least this long is sealed before the next append.
const SEGMENT_BYTES: u64 = 64 << 20;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// What was appended.
    pub body: Vec<u8>,
}

/// What [`Wal::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The intact records with a sequence number above the one asked for, in order.
    pub records: Vec<Record>,
    /// The highest sequence number of any intact record (0: none).
    pub last_seq: u64,
    /// Bytes cut off after the last intact record (a torn tail: never acknowledged).
    pub discarded_bytes: u64,
    /// Corruption before the end of the log, and where the rest was kept.
    pub corrupt: Option<Corrupt>,
}

/// Corruption found in the middle of the ingest log (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// The segment holding the first bad record.
    pub segment: PathBuf,
    /// Its offset in that segment.
    pub offset: u64,
    /// The files the rest of the log was moved to (not read again).
    pub kept_aside: Vec<PathBuf>,
    /// How many bytes they hold.
    pub bytes: u64,
}

/// The ingest log (see the module docs). Owned by the writer thread.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// The segment being appended to, with its length, path and last sequence number.
    active: Option<(File, u64, PathBuf, u64)>,
    /// Segments no longer appended to, oldest first, with the last sequence number each
    /// holds (the active one is not listed).
    sealed: Vec<(PathBuf, u64)>,
    next_seq: u64,
    /// Bytes in all segments.
    bytes: u64,
    /// An append failed and could not be undone: refuse further appends.
    poisoned: bool,
    /// Injected faults (tests: see [`faults`]).
    #[cfg(test)]
    faults: Option<std::sync::Arc<crate::store::health::faulty::Plan>>,
}

/// Fault injection for the ingest log (tests): a plan set on a thread applies to the logs
/// opened on that thread, failing their Nth write, sync or truncation.
#[cfg(test)]
pub(crate) mod faults {
    use std::cell::RefCell;
    use std::sync::Arc;

    use crate::store::health::faulty::Plan;

    thread_local! {
        static PLAN: RefCell<Option<Arc<Plan>>> = const { RefCell::new(None) };
    }

    /// Logs opened on this thread from now on follow `plan` (None: no faults).
    pub(crate) fn set(plan: Option<Arc<Plan>>) {
        PLAN.with(|p| *p.borrow_mut() = plan);
    }

    pub(super) fn current() -> Option<Arc<Plan>> {
        PLAN.with(|p| p.borrow().clone())
    }
}

impl Wal {
    /// One write, sync or truncation: fails when a test's plan says so.
    #[inline]
    fn inject(&self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(p) = &self.faults {
            return p.check();
        }
        Ok(())
    }
}

impl Wal {
    /// Opens the log in `dir` (created if missing) and reads it back: the records with a
    /// sequence number above `applied` are returned; appends continue after the highest of
    /// `applied` and the sequence numbers found.
    ///
    /// Every existing segment stays until [`Wal::applied`] says its records are applied.
    ///
    /// # Errors
    ///
    /// I/O errors reading the directory or a segment (a torn tail is not an error).
    pub fn open(dir: &Path, applied: u64) -> io::Result<(Wal, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut rec = Recovered::default();
        let mut bytes = 0u64;
        let segments = list_segments(dir)?;
        let count = segments.len();
        let mut ended = false;
        let mut data = Vec::new();
        let mut kept = Vec::new();
        for (i, path) in segments.into_iter().enumerate() {
            data.clear();
            File::open(&path)?.read_to_end(&mut data)?;
            if ended {
                // After corruption: kept aside, never read again (nor dropped).
                let aside = path.with_extension("seg.corrupt");
                std::fs::rename(&path, &aside)?;
                if let Some(c) = &mut rec.corrupt {
                    c.kept_aside.push(aside);
                    c.bytes += data.len() as u64;
                }
                continue;
            }
            let mut at = 0usize;
            while at < data.len() {
                match parse(&data[at..]) {
                    Some((seq, body, n)) if seq > rec.last_seq => {
                        rec.last_seq = seq;
                        if seq > applied {
                            rec.records.push(Record {
                                seq,
                                body: body.to_vec(),
                            });
                        }
                        at += n;
                    }
                    _ => {
                        ended = true;
                        let rest = &data[at..];
                        if i + 1 == count && is_torn_tail(rest) {
                            rec.discarded_bytes += rest.len() as u64;
                            tracing::warn!(
                                segment = %path.display(),
                                offset = at,
                                bytes = rest.len(),
                                "the ingest log ended in a torn record (a crash while \
                                 appending; that group was never acknowledged): cut off"
                            );
                        } else {
                            let aside = path.with_extension(format!("seg.corrupt-at-{at}"));
                            let mut f = File::create(&aside)?;
                            f.write_all(rest)?;
                            f.sync_all()?;
                            rec.corrupt = Some(Corrupt {
                                segment: path.clone(),
                                offset: at as u64,
                                kept_aside: vec![aside],
                                bytes: rest.len() as u64,
                            });
                        }
                        // Cut it off, so that records appended from now on (in a new
                        // segment) are read back.
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(at as u64)?;
                        f.sync_all()?;
                        break;
                    }
                }
            }
            bytes += at as u64;
            kept.push((path, rec.last_seq));
        }
        if ended {
            File::open(dir)?.sync_all()?;
        }
        if let Some(c) = &rec.corrupt {
            let aside: Vec<String> = c
                .kept_aside
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            tracing::error!(
                segment = %c.segment.display(),
                offset = c.offset,
                bytes = c.bytes,
                kept_aside = %aside.join(", "),
                "the ingest log is corrupt (a checksum mismatch or a broken record before its \
                 end): the records before it are applied; the rest is kept aside, not read"
            );
        }
        let wal = Wal {
            dir: dir.to_path_buf(),
            active: None,
            sealed: kept,
            next_seq: rec.last_seq.max(applied) + 1,
            bytes,
            poisoned: false,
            #[cfg(test)]
            faults: faults::current(),
        };
        Ok((wal, rec))
    }

    /// The intact records above `seq` in the segments kept, in order: what a restart would
    /// replay. The writer re-derives its pending events from them after a commit whose
    /// outcome it could not know (see `crate::store::health`).
    ///
    /// # Errors
    ///
    /// I/O errors reading a segment.
    pub fn records_after(&self, seq: u64) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        let paths = self
            .sealed
            .iter()
            .map(|(p, _)| p)
            .chain(self.active.as_ref().map(|a| &a.2));
        let mut data = Vec::new();
        for path in paths {
            data.clear();
            match File::open(path) {
                Ok(mut f) => f.read_to_end(&mut data)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut at = 0usize;
            while let Some((s, body, n)) = parse(&data[at..]) {
                if s > seq {
                    out.push(Record {
                        seq: s,
                        body: body.to_vec(),
                    });
                }
                at += n;
            }
        }
        Ok(out)
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in the log's segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one record holding `body` and makes it durable (`fdatasync`); returns its
    /// sequence number. On error nothing was appended.
    ///
    /// # Errors
    ///
    /// I/O errors; after one that could not be undone, later appends fail until the undo
    /// succeeds.
    pub fn append(&mut self, body: &[u8]) -> io::Result<u64> {
        if self.poisoned {
            // A failed append could not be undone: undo it now, or refuse (a later record
            // must never follow a torn one).
            self.inject()?;
            let undone = self.active.as_mut().map_or(Ok(()), |(f, flen, _, _)| {
                use std::io::Seek;
                f.set_len(*flen)
                    .and_then(|()| f.seek(io::SeekFrom::Start(*flen)).map(|_| ()))
            });
            if let Err(e) = undone {
                return Err(io::Error::new(
                    e.kind(),
                    format!("the ingest log cannot undo a failed append yet: {e}"),
                ));
            }
            self.poisoned = false;
        }
        let seq = self.next_seq;
        if self.active.as_ref().is_some_and(|a| a.1 >= SEGMENT_BYTES) {
            self.seal();
        }
        if self.active.is_none() {
            let path = self.dir.join(format!("{seq:020}.seg"));
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)?;
            // The new segment's directory entry must be durable before a record in it is
            // acknowledged.
            File::open(&self.dir)?.sync_all()?;
            self.active = Some((f, 0, path, 0));
        }
        let len = u32::try_from(8 + body.len())
            .ok()
            .filter(|&l| (l as usize) < MAX_RECORD)
            .ok_or_else(|| io::Error::other("record too large for the ingest log"))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(body);
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        let total = (HEADER + body.len()) as u64;
        // Injected faults (tests): before the write, between the header and the body (a
        // torn record), before the sync, and at the undo.
        let fail_write = self.inject();
        let fail_body = self.inject();
        let fail_sync = self.inject();
        let fail_undo = self.inject();
        let Some((f, flen, _, last)) = self.active.as_mut() else {
            unreachable!("opened above")
        };
        // Header and body without copying the body (it may be tens of MiB).
        let result = fail_write
            .and_then(|()| f.write_all(&header))
            .and(fail_body)
            .and_then(|()| f.write_all(body))
            .and(fail_sync)
            .and_then(|()| f.sync_data());
        match result {
            Ok(()) => {
                *flen += total;
                *last = seq;
                self.bytes += total;
                self.next_seq += 1;
                Ok(seq)
            }
            Err(e) => {
                // Undo, so that no later record follows a torn one.
                let undone = fail_undo.and_then(|()| f.set_len(*flen)).and_then(|()| {
                    use std::io::Seek;
                    f.seek(io::SeekFrom::Start(*flen)).map(|_| ())
                });
                if undone.is_err() {
                    self.poisoned = true;
                }
                Err(e)
            }
        }
    }

    /// Ends the active segment: the next append starts a new one.
    fn seal(&mut self) {
        if let Some((_, len, path, last)) = self.active.take() {
            if len == 0 {
                // Nothing in it: not worth keeping.
                let _ = std::fs::remove_file(&path);
            } else {
                self.sealed.push((path, last));
            }
        }
    }

    /// Every record up to `seq` was applied durably: deletes the segments holding nothing
    /// newer (the active one too, which the next append then starts afresh).
    ///
    /// # Errors
    ///
    /// I/O errors deleting a segment (it is tried again by a later call, and its records
    /// are skipped on replay as already applied).
    pub fn applied(&mut self, seq: u64) -> io::Result<()> {
        if self.active.as_ref().is_some_and(|a| a.3 <= seq) {
            self.seal();
        }
        let mut err = None;
        let mut kept = Vec::new();
        for (p, last) in std::mem::take(&mut self.sealed) {
            if last > seq {
                kept.push((p, last));
                continue;
            }
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&p) {
                Ok(()) => self.bytes = self.bytes.saturating_sub(len),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    kept.push((p, last));
                    err = Some(e);
                }
            }
        }
        self.sealed = kept;
        err.map_or(Ok(()), Err)
    }
}

fn list_segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if let Some(first) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            v.push((first, path));
        }
    }
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

/// Whether `rest` (from a record that did not parse to the end of the last segment) is
/// what a crash mid-append leaves: a header or body cut short by the end, a body that
/// reaches exactly to the end but fails its CRC (written in part), or zeros.
fn is_torn_tail(rest: &[u8]) -> bool {
    if rest.len() < HEADER || rest.iter().all(|b| *b == 0) {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    (8..MAX_RECORD).contains(&len) && 8 + len >= rest.len()
}

/// One record at the start of `b`: (seq, body, bytes taken), or None when cut short or
/// corrupt.
fn parse(b: &[u8]) -> Option<(u64, &[u8], usize)> {
    if b.len() < HEADER {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    if !(8..MAX_RECORD).contains(&len) || b.len() < 8 + len {
        return None;
    }
    let payload = &b[8..8 + len];
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(payload[0..8].try_into().ok()?);
    Some((seq, &payload[8..], 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(r: &Recovered) -> Vec<(u64, Vec<u8>)> {
        r.records.iter().map(|r| (r.seq, r.body.clone())).collect()
    }

    #[test]
    fn records_come_back_in_order_above_the_applied_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, rec) = Wal::open(dir.path(), 0).unwrap();
        assert!(rec.records.is_empty());
        assert_eq!(wal.append(b"one").unwrap(), 1);
        assert_eq!(wal.append(b"two").unwrap(), 2);
        wal.seal();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        assert_eq!(wal.append(b"three").unwrap(), 3);
        drop(wal);
        let (wal, rec) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(bodies(&rec), [(2, b"two".to_vec()), (3, b"three".to_vec())]);
        assert_eq!(rec.last_seq, 3);
        assert_eq!(wal.next_seq(), 4);
        // Nothing left above the applied seq: appends continue after it.
        let (wal, rec) = Wal::open(dir.path(), 7).unwrap();
        assert!(rec.records.is_empty());
        assert_eq!(wal.next_seq(), 8);
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for b in [b"aaaa", b"bbbb", b"cccc"] {
            wal.append(b).unwrap();
        }
        drop(wal);
        let seg = list_segments(dir.path()).unwrap().remove(0);
        let full = std::fs::read(&seg).unwrap();
        let rec_len = full.len() / 3;
        // Every cut inside the last record: the first two survive.
        for cut in (2 * rec_len)..full.len() {
            std::fs::write(&seg, &full[..cut]).unwrap();
            let (_, rec) = Wal::open(dir.path(), 0).unwrap();
            assert_eq!(rec.records.len(), 2, "cut at {cut}");
            assert_eq!(rec.discarded_bytes, (cut - 2 * rec_len) as u64);
        }
        // A flipped bit in the last record, which reaches the end: a tear too.
        let mut bad = full.clone();
        bad[2 * rec_len + HEADER + 1] ^= 0x10;
        std::fs::write(&seg, &bad).unwrap();
        let (_, rec) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(rec.records.len(), 2);
        assert!(rec.corrupt.is_none());
        // Zeros after the last record (space allocated, never written): a tear.
        let mut zeros = full[..2 * rec_len].to_vec();
        zeros.extend_from_slice(&[0u8; 40]);
        std::fs::write(&seg, &zeros).unwrap();
        let (mut wal, rec) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!((rec.records.len(), rec.discarded_bytes), (2, 40));
        // The tear is cut off: appends continue after the last intact record, in a new
        // segment, and are read back.
        assert_eq!(wal.append(b"dddd").unwrap(), 3);
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(
            bodies(&rec),
            [
                (1, b"aaaa".to_vec()),
                (2, b"bbbb".to_vec()),
                (3, b"dddd".to_vec())
            ]
        );
        assert!(list_segments(dir.path()).unwrap().len() == 2);
    }

    #[test]
    fn corruption_in_the_middle_is_kept_aside_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for b in [b"aaaa", b"bbbb", b"cccc"] {
            wal.append(b).unwrap();
        }
        wal.seal();
        wal.append(b"later segment").unwrap();
        drop(wal);
        let segs = list_segments(dir.path()).unwrap();
        assert_eq!(segs.len(), 2);
        let full = std::fs::read(&segs[0]).unwrap();
        let later = std::fs::read(&segs[1]).unwrap();
        let rec_len = full.len() / 3;
        // A flipped bit in the middle record of the first segment.
        let mut bad = full.clone();
        bad[rec_len + HEADER + 1] ^= 0x10;
        std::fs::write(&segs[0], &bad).unwrap();
        let (mut wal, rec) = Wal::open(dir.path(), 0).unwrap();
        // The valid prefix is applied ...
        assert_eq!(bodies(&rec), [(1, b"aaaa".to_vec())]);
        assert_eq!(rec.discarded_bytes, 0);
        // ... and the rest kept aside, named.
        let c = rec.corrupt.clone().expect("corruption reported");
        assert_eq!(c.segment, segs[0]);
        assert_eq!(c.offset, rec_len as u64);
        assert_eq!(c.kept_aside.len(), 2);
        assert_eq!(c.bytes, (2 * rec_len + later.len()) as u64);
        assert_eq!(std::fs::read(&c.kept_aside[0]).unwrap(), &bad[rec_len..]);
        assert_eq!(std::fs::read(&c.kept_aside[1]).unwrap(), later);
        assert!(
            c.kept_aside[0]
                .to_string_lossy()
                .ends_with(&format!(".seg.corrupt-at-{rec_len}"))
        );
        // Only the prefix stays in the log; appends continue after it and are read back;
        // what was kept aside is never read again.
        assert_eq!(list_segments(dir.path()).unwrap(), [segs[0].clone()]);
        assert_eq!(wal.append(b"dddd").unwrap(), 2);
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(bodies(&rec), [(1, b"aaaa".to_vec()), (2, b"dddd".to_vec())]);
        assert!(rec.corrupt.is_none());
        assert!(c.kept_aside.iter().all(|p| p.exists()));
    }

    #[test]
    fn a_bad_record_in_a_sealed_segment_is_corruption_not_a_tear() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(b"aaaa").unwrap();
        wal.append(b"bbbb").unwrap();
        wal.seal();
        wal.append(b"cccc").unwrap();
        drop(wal);
        let segs = list_segments(dir.path()).unwrap();
        let full = std::fs::read(&segs[0]).unwrap();
        // The first segment cut short in its last record: not the log's tail.
        std::fs::write(&segs[0], &full[..full.len() - 2]).unwrap();
        let (_, rec) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(bodies(&rec), [(1, b"aaaa".to_vec())]);
        let c = rec.corrupt.expect("corruption");
        assert_eq!(c.kept_aside.len(), 2);
        assert_eq!(rec.discarded_bytes, 0);
    }

    #[test]
    fn sealed_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(b"x").unwrap();
        wal.append(b"y").unwrap();
        wal.applied(1).unwrap();
        // Record 2 is not applied: its segment stays.
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        wal.applied(2).unwrap();
        assert_eq!(wal.bytes(), 0);
        assert!(list_segments(dir.path()).unwrap().is_empty());
        wal.append(b"z").unwrap();
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), 2).unwrap();
        assert_eq!(bodies(&rec), [(3, b"z".to_vec())]);
    }
}
