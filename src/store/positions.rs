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
}

/// Format byte of an encoded [`FilePosition`].
const FILE_POSITION_FORMAT: u8 = 1;

impl FilePosition {
    /// The stored encoding: format byte, fixed-width little-endian fields, then the path.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(31 + self.path.len());
        v.push(FILE_POSITION_FORMAT);
        v.extend_from_slice(&self.generation.to_le_bytes());
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.head_len.to_le_bytes());
        v.extend_from_slice(&self.head_hash.to_le_bytes());
        v.extend_from_slice(&micros(self.updated).to_le_bytes());
        v.extend_from_slice(self.path.as_bytes());
        v
    }

    /// Decodes [`FilePosition::encode`]'s output.
    ///
    /// # Errors
    ///
    /// A description of what is wrong (unknown format, truncated record).
    pub fn decode(b: &[u8]) -> Result<FilePosition, String> {
        match b.first() {
            Some(&FILE_POSITION_FORMAT) => {}
            Some(f) => return Err(format!("unknown format {f}")),
            None => return Err("empty record".into()),
        }
        if b.len() < 31 {
            return Err(format!("truncated record ({} bytes)", b.len()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let head_len = u16::from_le_bytes([b[13], b[14]]);
        Ok(FilePosition {
            generation: u32_at(1),
            offset: u64_at(5),
            head_len,
            head_hash: u64_at(15),
            updated: Timestamp::from_microsecond(u64_at(23) as i64)
                .unwrap_or(Timestamp::UNIX_EPOCH),
            path: String::from_utf8_lossy(&b[31..]).into_owned(),
        })
    }
}
