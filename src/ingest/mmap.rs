//! Zero-copy reading: regular files are mapped (memmap2) and scanned in place.
//!
//! # Truncation while mapped: the SIGBUS guard
//!
//! Touching a page of a shared file mapping that lies wholly past the file's *current* end
//! raises SIGBUS, and by default that kills the process: a log that is truncated (rotated
//! with `copytruncate`, rewritten by an editor, `> file`) while `sentinel scan` reads it
//! would crash Sentinel. Copying first defeats the point, and checking the length before
//! each access is racy (the file can shrink between the check and the load), so the fault
//! itself is handled:
//!
//! - A process-wide SIGBUS handler is installed once, the first time a file is mapped
//!   ([`MappedRange::map`]); it keeps the handler it replaced (Rust's own, which reports
//!   stack overflows) to hand every other fault to.
//! - Each live mapping is *registered* in a fixed table of slots ([`SLOTS`]: start and end
//!   address, under a per-slot sequence counter so the handler never acts on a half-written
//!   entry). Registration happens after `mmap` and is undone before `munmap`, by the thread
//!   that owns the mapping. A mapping that finds no free slot is not made: the caller reads
//!   the file instead.
//! - The handler looks the faulting address up in the table. Only if it lies inside a
//!   registered mapping does it map one anonymous zero page over the faulting page
//!   (`MAP_FIXED`: atomically replaces that page of our own mapping, nothing else), record
//!   the fault in the slot (a counter and the lowest faulting address) and return: the
//!   faulting load is restarted and reads zeros. `mmap` is a plain system call, safe to make
//!   in a signal handler; the handler takes no lock and allocates nothing. A fault anywhere
//!   else is passed to the previous handler, or, if there was none, the default action is
//!   restored and the fault recurs: it kills the process as it always did.
//! - The reader never trusts bytes from a faulted mapping: [`MappedRange::faults`] tells it
//!   that a fault happened (it checks after each chunk it scanned and after each probe for
//!   a chunk boundary), and [`MappedRange::valid_end`] says up to where the mapping still
//!   shows the file: the file's new length, and never past the first page the handler
//!   replaced (a file rewritten after a truncation can grow again, but those pages of the
//!   mapping stay zeros). The batch scanner drops the results of the chunk during which
//!   the fault happened, rescans the part of it below the cut and stops there, reporting
//!   the truncation ([`crate::ingest::batch`]). Zeros never reach the counts.
//!
//! The zero pages go away with the mapping (`munmap` of the whole range).

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, compiler_fence};

/// Mappings alive at once, at most (one per scanning thread and catch-up in practice).
const SLOT_COUNT: usize = 256;

/// One registered mapping. `seq` is odd while the owner writes `start`/`end`.
struct Slot {
    used: AtomicBool,
    seq: AtomicU64,
    start: AtomicUsize,
    end: AtomicUsize,
    faults: AtomicU64,
    first_fault: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    used: AtomicBool::new(false),
    seq: AtomicU64::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    faults: AtomicU64::new(0),
    first_fault: AtomicUsize::new(usize::MAX),
};

/// The registered mappings (see the module docs).
static SLOTS: [Slot; SLOT_COUNT] = [EMPTY; SLOT_COUNT];

/// The page size, set when the handler is installed.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The handler replaced, handed every fault that is not ours.
static mut PREVIOUS: Option<libc::sigaction> = None;

static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGBUS handler once per process. Returns whether it is in place.
fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: plain libc calls with valid pointers; PREVIOUS is written once, here,
        // before INSTALLED lets any mapping be registered (so before the handler can read
        // it for a fault of ours), and never again.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE.store(page as usize, Ordering::Relaxed);
            }
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &new, &mut old) == 0 {
                PREVIOUS = Some(old);
                INSTALLED.store(true, Ordering::Release);
            }
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

/// The SIGBUS handler (see the module docs). Async-signal-safe: atomics and system calls.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for slot in &SLOTS {
        if !slot.used.load(Ordering::Acquire) {
            continue;
        }
        let Some((start, end)) = read_slot(slot) else {
            continue;
        };
        if addr < start || addr >= end {
            continue;
        }
        let at = addr & !(page - 1);
        // SAFETY: `at..at + page` lies in a mapping we own (registered, and unregistered
        // only before munmap by the thread that is now faulting on it or has stopped using
        // it); replacing it with anonymous zeros changes no other memory.
        let r = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            break;
        }
        slot.first_fault.fetch_min(at.max(start), Ordering::AcqRel);
        slot.faults.fetch_add(1, Ordering::AcqRel);
        return;
    }
    // Not ours: whoever handled SIGBUS before us does, or the default action.
    // SAFETY: PREVIOUS was written before any mapping could fault (see `install`).
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: the previous handler was installed with these flags and signature.
            unsafe {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(old.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                    f(sig);
                }
            }
        }
        _ => {
            // SAFETY: restoring the default disposition; the fault recurs on return and
            // ends the process as an unhandled SIGBUS would have.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut dfl.sa_mask);
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// A consistent `(start, end)` of a slot, or `None` if it is being rewritten.
fn read_slot(slot: &Slot) -> Option<(usize, usize)> {
    for _ in 0..64 {
        let s1 = slot.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Acquire);
        if slot.seq.load(Ordering::Acquire) == s1 {
            return Some((start, end));
        }
    }
    None
}

/// Claims a slot for `start..end`.
fn register(start: usize, end: usize) -> Option<usize> {
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .used
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.seq.fetch_add(1, Ordering::AcqRel);
            slot.start.store(start, Ordering::Release);
            slot.end.store(end, Ordering::Release);
            slot.faults.store(0, Ordering::Release);
            slot.first_fault.store(usize::MAX, Ordering::Release);
            slot.seq.fetch_add(1, Ordering::AcqRel);
            return Some(i);
        }
    }
    None
}

fn unregister(i: usize) {
    let slot = &SLOTS[i];
    slot.seq.fetch_add(1, Ordering::AcqRel);
    slot.start.store(0, Ordering::Release);
    slot.end.store(0, Ordering::Release);
    slot.seq.fetch_add(1, Ordering::AcqRel);
    slot.used.store(false, Ordering::Release);
}

/// A byte range of a regular file, mapped read-only and guarded against truncation (see the
/// module docs).
pub struct MappedRange {
    map: memmap2::Mmap,
    slot: usize,
    /// Offset in the file of `bytes()[0]`.
    start: u64,
    file: File,
}

impl std::fmt::Debug for MappedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedRange")
            .field("start", &self.start)
            .field("len", &self.map.len())
            .field("faults", &self.faults())
            .finish()
    }
}

impl MappedRange {
    /// Maps `range` of `file` (non-empty), or `Ok(None)` when it cannot be guarded (no
    /// handler, no free slot): the caller reads instead.
    ///
    /// # Errors
    ///
    /// `mmap` failing (e.g. a file system that cannot map).
    pub fn map(file: &File, range: Range<u64>) -> io::Result<Option<MappedRange>> {
        if range.end <= range.start || !install() {
            return Ok(None);
        }
        let len = usize::try_from(range.end - range.start)
            .map_err(|_| io::Error::other("range too large to map"))?;
        let file = file.try_clone()?;
        // SAFETY: the classic hazard of a mapped file, another process truncating it, is
        // handled by the SIGBUS guard registered below before any byte is read; the bytes
        // are only read (as plain bytes, no invariant rests on them) and the file's content
        // changing under the scan only changes what is counted.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(range.start)
                .len(len)
                .map(&file)?
        };
        let page = PAGE.load(Ordering::Relaxed);
        let lo = map.as_ptr() as usize & !(page - 1);
        let hi = (map.as_ptr() as usize + len).next_multiple_of(page);
        let Some(slot) = register(lo, hi) else {
            return Ok(None);
        };
        Ok(Some(MappedRange {
            map,
            slot,
            start: range.start,
            file,
        }))
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Faults the guard has handled in this mapping so far.
    pub fn faults(&self) -> u64 {
        // The handler runs on the reading thread, between its plain loads: keep the compiler
        // from moving this load above them.
        compiler_fence(Ordering::SeqCst);
        SLOTS[self.slot].faults.load(Ordering::Acquire)
    }

    /// After a fault: the end (an index into [`bytes`](Self::bytes)) of what still shows
    /// the file: its current length, and never past the first page replaced with zeros.
    ///
    /// # Errors
    ///
    /// `fstat` failing.
    pub fn valid_end(&self) -> io::Result<usize> {
        compiler_fence(Ordering::SeqCst);
        let len = self.file.metadata()?.len();
        let by_len = usize::try_from(len.saturating_sub(self.start)).unwrap_or(usize::MAX);
        let first = SLOTS[self.slot].first_fault.load(Ordering::Acquire);
        let by_fault = first.saturating_sub(self.map.as_ptr() as usize);
        Ok(by_len.min(by_fault).min(self.map.len()))
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        // Unregistered before `map` unmaps (fields drop after this body).
        unregister(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_truncated_mapping_reads_zeros_and_reports_the_cut() {
        let page = 4096 * 4;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![b'x'; page * 4]).unwrap();
        let m = MappedRange::map(&f, 0..(page * 4) as u64).unwrap().unwrap();
        assert_eq!(m.faults(), 0);
        f.set_len(page as u64 + 10).unwrap();
        let b = m.bytes();
        assert_eq!(b[0], b'x');
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        assert!(m.faults() >= 1);
        let end = m.valid_end().unwrap();
        assert_eq!(end, page + 10);
        assert!(sum < (page * 4) as u64 * u64::from(b'x'));
        assert!(
            b[end..]
                .iter()
                .skip(PAGE.load(Ordering::Relaxed))
                .all(|&x| x == 0)
        );
        drop(m);
        // The slot is free again and a new mapping starts clean.
        let m = MappedRange::map(&f, 0..(page as u64 + 10))
            .unwrap()
            .unwrap();
        assert_eq!(m.faults(), 0);
        assert_eq!(m.bytes()[page + 9], b'x');
    }
}
