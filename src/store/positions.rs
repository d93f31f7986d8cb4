//! File positions: where reading each file stopped, committed with the counts of its lines.

use jiff::Timestamp;

use super::micros;

/// Identifies a file across renames: its device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// Where reading a file stopped, committed together with the counts its lines produced.
///
/// A file is the same file as when its position was saved only if its device and inode
/// ([`FileKey`]) match **and** the xxh3 of its first `head_len` bytes is `head_hash`
/// (inode numbers are reused; a truncated file is rewritten from the start). Otherwise it is
/// a new *generation* of that key, read from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    /// Bumped every time the file at this key turned out to be a different file.
    pub generation: u32,
    /// The offset just after the last line counted: always the start of a line.
    pub offset: u64,
    /// How many leading bytes `head_hash` covers (at most 1 KiB).
    pub head_len: u16,
    /// xxh3 of the first `head_len` bytes.
    pub head_hash: u64,
    /// Where the file was last seen.
    pub path: String,
    /// When the position was saved.
    pub updated: Timestamp,
    /// The generation before this one, where reading it stopped (None: none known). A file
    /// that appears with its head (the copy `copytruncate` made before truncating this
    /// file) continues it from there instead of being read again.
    pub prev: Option<EndedGeneration>,
}

/// A generation that ended (its file was truncated or replaced): its head fingerprint and
/// the offset just after its last line counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedGeneration {
    /// How many leading bytes `head_hash` covers (1 ..= 1 KiB).
    pub head_len: u16,
    /// xxh3 of the first `head_len` bytes.
    pub head_hash: u64,
    /// Where reading it stopped.
    pub offset: u64,
}

/// Format byte of an encoded [`FilePosition`]: 1 (no previous generation), 2 (with
/// [`FilePosition::prev`]). Both are read.
const FILE_POSITION_FORMAT_V1: u8 = 1;
const FILE_POSITION_FORMAT: u8 = 2;
/// Bytes before the path: format 1's fixed fields, then format 2's previous generation.
const V1_FIXED: usize = 31;
const V2_FIXED: usize = V1_FIXED + 18;

impl FilePosition {
    /// The stored encoding: format byte, fixed-width little-endian fields (format 2: then
    /// the previous generation's head length, head hash and offset, all zero for none),
    /// then the path.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(V2_FIXED + self.path.len());
        v.push(FILE_POSITION_FORMAT);
        v.extend_from_slice(&self.generation.to_le_bytes());
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.head_len.to_le_bytes());
        v.extend_from_slice(&self.head_hash.to_le_bytes());
        v.extend_from_slice(&micros(self.updated).to_le_bytes());
        let prev = self.prev.unwrap_or(EndedGeneration {
            head_len: 0,
            head_hash: 0,
            offset: 0,
        });
        v.extend_from_slice(&prev.head_len.to_le_bytes());
        v.extend_from_slice(&prev.head_hash.to_le_bytes());
        v.extend_from_slice(&prev.offset.to_le_bytes());
        v.extend_from_slice(self.path.as_bytes());
        v
    }

    /// Decodes [`FilePosition::encode`]'s output.
    ///
    /// # Errors
    ///
    /// A description of what is wrong (unknown format, truncated record).
    pub fn decode(b: &[u8]) -> Result<FilePosition, String> {
        let fixed = match b.first() {
            Some(&FILE_POSITION_FORMAT_V1) => V1_FIXED,
            Some(&FILE_POSITION_FORMAT) => V2_FIXED,
            Some(f) => return Err(format!("unknown format {f}")),
            None => return Err("empty record".into()),
        };
        if b.len() < fixed {
            return Err(format!("truncated record ({} bytes)", b.len()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let prev = (fixed == V2_FIXED && u16_at(V1_FIXED) > 0).then(|| EndedGeneration {
            head_len: u16_at(V1_FIXED),
            head_hash: u64_at(V1_FIXED + 2),
            offset: u64_at(V1_FIXED + 10),
        });
        Ok(FilePosition {
            generation: u32_at(1),
            offset: u64_at(5),
            head_len: u16_at(13),
            head_hash: u64_at(15),
            updated: Timestamp::from_microsecond(u64_at(23) as i64)
                .unwrap_or(Timestamp::UNIX_EPOCH),
            path: String::from_utf8_lossy(&b[fixed..]).into_owned(),
            prev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(prev: Option<EndedGeneration>) -> FilePosition {
        FilePosition {
            generation: 3,
            offset: 4096,
            head_len: 1024,
            head_hash: 0x0abc_def0_1234_5678,
            path: "/var/log/app.log".into(),
            updated: Timestamp::from_microsecond(1_765_000_000_000_000).unwrap(),
            prev,
        }
    }

    #[test]
    fn both_formats_read_and_the_previous_generation_round_trips() {
        let ended = EndedGeneration {
            head_len: 700,
            head_hash: 0x1122_3344_5566_7788,
            offset: 12_345,
        };
        for p in [pos(None), pos(Some(ended))] {
            let b = p.encode();
            assert_eq!(b[0], FILE_POSITION_FORMAT);
            assert_eq!(FilePosition::decode(&b).unwrap(), p);
        }
        // Format 1, as the previous version wrote it: no previous generation.
        let mut v1 = vec![FILE_POSITION_FORMAT_V1];
        v1.extend_from_slice(&3u32.to_le_bytes());
        v1.extend_from_slice(&4096u64.to_le_bytes());
        v1.extend_from_slice(&1024u16.to_le_bytes());
        v1.extend_from_slice(&0x0abc_def0_1234_5678u64.to_le_bytes());
        v1.extend_from_slice(&1_765_000_000_000_000i64.to_le_bytes());
        v1.extend_from_slice(b"/var/log/app.log");
        assert_eq!(FilePosition::decode(&v1).unwrap(), pos(None));
        assert!(FilePosition::decode(&v1[..20]).is_err());
        let mut v2 = pos(Some(ended)).encode();
        v2.truncate(40);
        assert!(FilePosition::decode(&v2).is_err());
        assert!(
            FilePosition::decode(&[3])
                .unwrap_err()
                .contains("unknown format")
        );
    }
}
