//! Copies are not new files: the head fingerprints of every generation Sentinel knows.
//!
//! A file is identified by its (device, inode) and, within that, by the xxh3 of its first
//! ≤ 1 KiB (its *head*). `copytruncate` (and a plain `cp`) makes a file with a new inode
//! and the head of a generation Sentinel was reading; read from byte 0 it would count
//! again every line already counted from the original. So a file that starts from byte 0
//! (a new inode, or a known one truncated or replaced) is first *decided* against this
//! registry, shared by the coordinator and the shards:
//!
//! - its head equals the head of a generation that is still being read (a tracked file's
//!   current one): it is a copy of a file Sentinel reads; it is not read while that
//!   generation lives (its lines come from the original);
//! - its head equals the head of a generation that ended (truncated or replaced — its
//!   final offset is kept, also in the store, see [`crate::store::EndedGeneration`] — or a
//!   file no longer tracked): it continues that generation at its offset: what was
//!   counted is not counted again, what the copy holds beyond is (the lines written
//!   between Sentinel's last read and `copytruncate`'s copy). Several ended matches: the
//!   furthest offset;
//! - no match: a new file, read from byte 0.
//!
//! Only full heads count: a file is a copy of a generation when both have at least 1 KiB
//! ([`HEAD_BYTES`]) and their first 1 KiB hash the same. Shorter heads are not
//! distinctive enough — a thousand small files holding the same two lines are a thousand
//! files — so a copy of a file shorter than 1 KiB is read as a new file (its lines, less
//! than 1 KiB, are counted again). A file still shorter than 1 KiB while a full head is
//! known may be a copy being written: it waits until it has 1 KiB, or for [`DECIDE_WAIT`]
//! after its first byte (then it is new). An empty file waits (it has nothing to read).
//! The decision and the claim (the file registered as a live generation with that head)
//! happen under one lock, so two copies decided at once never both continue the same
//! generation.
//!
//! The limit of every content fingerprint (Vector's `checksum` strategy included): two
//! unrelated files whose first 1 KiB are byte-identical are taken for copies.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::store::{EndedGeneration, FileKey, FilePosition};

/// How many leading bytes identify a file's content.
pub(super) const HEAD_BYTES: u64 = 1024;

/// How many ended generations are remembered per file identity (in memory; the position
/// record keeps the last): a copy decided late (it polls once a second while it waits)
/// still finds its generation after several truncations in between.
const ENDED_KEPT: usize = 16;

/// How long a file shorter than a known head (and than [`HEAD_BYTES`]) waits, from its
/// first byte, for the bytes that decide whether it is a copy.
pub(super) const DECIDE_WAIT: Duration = Duration::from_secs(1);

/// A head fingerprint: xxh3 of the first `len` bytes (len 0: not known yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Head {
    pub(super) len: u16,
    pub(super) hash: u64,
}

impl Head {
    /// The head of `bytes` (at most [`HEAD_BYTES`] of them are used).
    pub(super) fn of(bytes: &[u8]) -> Head {
        let n = bytes.len().min(HEAD_BYTES as usize);
        if n == 0 {
            return Head::default();
        }
        Head {
            len: n as u16,
            hash: xxhash_rust::xxh3::xxh3_64(&bytes[..n]),
        }
    }
}

/// What is known of one file identity.
#[derive(Debug, Clone)]
struct Known {
    /// Its current generation's head.
    head: Head,
    /// Tracked now: its current generation is being read.
    live: bool,
    /// Where reading its current generation stopped (meaningful when not live).
    offset: u64,
    /// Its previous generations, ended, the last one last (at most [`ENDED_KEPT`]).
    ended: Vec<EndedGeneration>,
}

/// What a file's head says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Not yet: too short to tell (or empty).
    Wait,
    /// A copy of a generation still being read: not read while that one lives.
    CopyOfLive,
    /// A copy of an ended generation: continue at this offset, with this head.
    Continue(u64, Head),
    /// A new file: read it from byte 0 (registered with this head).
    New(Head),
}

/// The registry (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Heads(Mutex<HashMap<FileKey, Known>>);

impl Heads {
    /// The registry of the committed positions: all ended until the coordinator tracks
    /// their files ([`Heads::set_live`]).
    pub(super) fn new(positions: &HashMap<FileKey, FilePosition>) -> Heads {
        let map = positions
            .iter()
            .map(|(k, p)| {
                (
                    *k,
                    Known {
                        head: Head {
                            len: p.head_len,
                            hash: p.head_hash,
                        },
                        live: false,
                        offset: p.offset,
                        ended: p.prev.into_iter().collect(),
                    },
                )
            })
            .collect();
        Heads(Mutex::new(map))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Known>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `key` is tracked (handed to a shard): its generation is being read.
    pub(super) fn set_live(&self, key: FileKey) {
        self.lock()
            .entry(key)
            .or_insert(Known {
                head: Head::default(),
                live: true,
                offset: 0,
                ended: Vec::new(),
            })
            .live = true;
    }

    /// `key` is no longer read (closed after rotation): its generation ended at `offset`
    /// with `head`.
    pub(super) fn set_ended(&self, key: FileKey, head: Head, offset: u64) {
        let mut map = self.lock();
        let k = map.entry(key).or_insert(Known {
            head,
            live: false,
            offset,
            ended: Vec::new(),
        });
        k.head = head;
        k.live = false;
        k.offset = offset;
    }

    /// `key`'s current generation, still read, has this head now (it grew).
    pub(super) fn set_head(&self, key: FileKey, head: Head) {
        if let Some(k) = self.lock().get_mut(&key) {
            k.head = head;
        }
    }

    /// `key`'s current generation ended (truncated, replaced) at `prev`; a new one begins,
    /// its head not known yet.
    pub(super) fn new_generation(&self, key: FileKey, prev: Option<EndedGeneration>) {
        let mut map = self.lock();
        let k = map.entry(key).or_insert(Known {
            head: Head::default(),
            live: true,
            offset: 0,
            ended: Vec::new(),
        });
        k.head = Head::default();
        k.live = true;
        k.offset = 0;
        if let Some(p) = prev
            && k.ended.last() != Some(&p)
        {
            if k.ended.len() >= ENDED_KEPT {
                k.ended.remove(0);
            }
            k.ended.push(p);
        }
    }

    /// Forgets `key` (its position was forgotten).
    pub(super) fn forget(&self, key: FileKey) {
        self.lock().remove(&key);
    }

    /// Decides what the file `key` is from its first bytes `head` (at most [`HEAD_BYTES`])
    /// and its `size`; `waited`: the file has waited [`DECIDE_WAIT`] already. A file that
    /// continues a generation or is new is registered as live with its head, under the
    /// same lock.
    pub(super) fn decide(&self, key: FileKey, head: &[u8], size: u64, waited: bool) -> Decision {
        if size == 0 || head.is_empty() {
            return Decision::Wait;
        }
        let have = head.len().min(HEAD_BYTES as usize);
        let mut map = self.lock();
        let mut hashes: HashMap<u16, u64> = HashMap::new();
        let mut hash_of = |len: u16| -> Option<u64> {
            if usize::from(len) > have {
                return None;
            }
            Some(
                *hashes
                    .entry(len)
                    .or_insert_with(|| xxhash_rust::xxh3::xxh3_64(&head[..usize::from(len)])),
            )
        };
        let mut live = false;
        let mut ended: Option<(u64, Head)> = None;
        let mut longer = false;
        for (k, known) in map.iter() {
            let mut candidates = Vec::with_capacity(2);
            if *k != key && u64::from(known.head.len) == HEAD_BYTES {
                candidates.push((known.head, known.live, known.offset));
            }
            for p in known
                .ended
                .iter()
                .filter(|p| u64::from(p.head_len) == HEAD_BYTES)
            {
                let h = Head {
                    len: p.head_len,
                    hash: p.head_hash,
                };
                candidates.push((h, false, p.offset));
            }
            for (h, is_live, offset) in candidates {
                match hash_of(h.len) {
                    Some(x) if x == h.hash => {
                        if is_live {
                            live = true;
                        } else if ended.is_none_or(|(o, _)| offset > o) {
                            ended = Some((offset, h));
                        }
                    }
                    Some(_) => {}
                    None => longer = true,
                }
            }
        }
        let decision = if live {
            Decision::CopyOfLive
        } else if let Some((offset, h)) = ended {
            Decision::Continue(offset, h)
        } else if longer && (have as u64) < HEAD_BYTES && !waited {
            Decision::Wait
        } else {
            Decision::New(Head::of(head))
        };
        let claimed = match decision {
            Decision::Continue(_, h) | Decision::New(h) => Some(h),
            Decision::Wait | Decision::CopyOfLive => None,
        };
        if let Some(h) = claimed {
            let k = map.entry(key).or_insert(Known {
                head: h,
                live: true,
                offset: 0,
                ended: Vec::new(),
            });
            k.head = h;
            k.live = true;
        }
        decision
    }
}

/// Whether `head` (a file's first bytes) starts like a compressed file (gzip, bzip2, xz,
/// zstd): such a file is never read as text. None: too short to tell yet.
pub(super) fn is_compressed(head: &[u8]) -> Option<bool> {
    const MAGICS: [&[u8]; 4] = [
        &[0x1f, 0x8b],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    let mut undecided = false;
    for m in MAGICS {
        if head.len() >= m.len() {
            if head.starts_with(m) {
                return Some(true);
            }
        } else if m.starts_with(head) {
            undecided = true;
        }
    }
    if undecided { None } else { Some(false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileKey = FileKey { dev: 1, ino: 10 };
    const B: FileKey = FileKey { dev: 1, ino: 11 };
    const C: FileKey = FileKey { dev: 1, ino: 12 };

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("line {i} ERROR x\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_copy_of_a_live_generation_waits_and_continues_once_it_ended() {
        let h = Heads::default();
        let content = text(200);
        assert_eq!(
            h.decide(A, &content[..1024], 3000, false),
            Decision::New(Head::of(&content))
        );
        // `cp`: the copy is not read while the original is.
        assert_eq!(
            h.decide(B, &content[..1024], 3000, false),
            Decision::CopyOfLive
        );
        // The original is truncated at offset 2500: the copy continues there.
        h.new_generation(
            A,
            Some(EndedGeneration {
                head_len: 1024,
                head_hash: Head::of(&content).hash,
                offset: 2500,
            }),
        );
        let d = h.decide(B, &content[..1024], 3000, false);
        assert_eq!(d, Decision::Continue(2500, Head::of(&content)));
        // B now reads that generation: a third copy waits for B.
        assert_eq!(
            h.decide(C, &content[..1024], 3000, false),
            Decision::CopyOfLive
        );
        // B closed at 3000: the third continues there.
        h.set_ended(B, Head::of(&content), 3000);
        assert_eq!(
            h.decide(C, &content[..1024], 3000, false),
            Decision::Continue(3000, Head::of(&content))
        );
    }

    #[test]
    fn short_files_wait_for_the_bytes_that_decide() {
        let h = Heads::default();
        let content = text(200);
        h.decide(A, &content[..1024], 3000, false);
        h.new_generation(
            A,
            Some(EndedGeneration {
                head_len: 1024,
                head_hash: Head::of(&content).hash,
                offset: 2000,
            }),
        );
        assert_eq!(h.decide(B, &[], 0, true), Decision::Wait, "empty");
        assert_eq!(h.decide(B, &content[..100], 100, false), Decision::Wait);
        // After the wait, what it has decides: a new file.
        assert_eq!(
            h.decide(B, &content[..100], 100, true),
            Decision::New(Head::of(&content[..100]))
        );
        // A known generation shorter than 1 KiB is no fingerprint: files that start with
        // its bytes are new files.
        let small = Heads::default();
        let two = b"INFO boot\nERROR [PACT:idle:boot] ready\n".to_vec();
        for ino in 0..3 {
            let d = small.decide(FileKey { dev: 2, ino }, &two, two.len() as u64, false);
            assert_eq!(d, Decision::New(Head::of(&two)));
        }
        small.set_ended(FileKey { dev: 2, ino: 0 }, Head::of(&two), two.len() as u64);
        let d = small.decide(FileKey { dev: 2, ino: 9 }, &two, two.len() as u64, false);
        assert_eq!(d, Decision::New(Head::of(&two)));
        // Unrelated bytes of 1 KiB and more: new at once.
        let other = b"x".repeat(2048);
        assert!(matches!(
            h.decide(FileKey { dev: 1, ino: 98 }, &other[..1024], 2048, false),
            Decision::New(_)
        ));
    }

    #[test]
    fn a_file_never_matches_its_own_current_generation() {
        let h = Heads::default();
        let content = text(200);
        h.decide(A, &content[..1024], 3000, false);
        h.new_generation(A, None);
        assert!(matches!(
            h.decide(A, &content[..1024], 3000, false),
            Decision::New(_)
        ));
        // Its previous generation does (the same bytes written again continue it).
        h.new_generation(
            A,
            Some(EndedGeneration {
                head_len: 1024,
                head_hash: Head::of(&content).hash,
                offset: 700,
            }),
        );
        assert_eq!(
            h.decide(A, &content[..1024], 3000, false),
            Decision::Continue(700, Head::of(&content))
        );
    }

    #[test]
    fn a_late_copy_finds_its_generation_after_more_truncations() {
        let h = Heads::default();
        let gens: Vec<Vec<u8>> = (0..5)
            .map(|g| format!("generation {g}\n").repeat(200).into_bytes())
            .collect();
        h.decide(A, &gens[0][..1024], 3000, false);
        for (g, content) in gens.iter().enumerate().skip(1) {
            h.new_generation(
                A,
                Some(EndedGeneration {
                    head_len: 1024,
                    head_hash: Head::of(&gens[g - 1]).hash,
                    offset: 1000 + g as u64,
                }),
            );
            h.decide(A, &content[..1024], 3000, false);
        }
        // The copy of the first generation, decided after four truncations.
        assert_eq!(
            h.decide(B, &gens[0][..1024], 3000, false),
            Decision::Continue(1001, Head::of(&gens[0]))
        );
    }

    #[test]
    fn compressed_heads() {
        assert_eq!(is_compressed(&[0x1f, 0x8b, 8, 0]), Some(true));
        assert_eq!(is_compressed(&[0x1f]), None);
        assert_eq!(is_compressed(b"BZh91AY"), Some(true));
        assert_eq!(is_compressed(b"2026-12-06 ERROR"), Some(false));
        assert_eq!(is_compressed(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(true));
    }
}
