//! Line framing: turning a byte stream into regions of complete lines.
//!
//! [`LineReader`] reads big chunks (default [`DEFAULT_BUFFER_CAPACITY`]) into one reused
//! buffer, finds the last `\n` of each new chunk with `memrchr` and hands out everything up to
//! it as one [`Region`] of complete lines. The partial last line is carried to the front of
//! the buffer and completed by the next read. Nothing is allocated per line or per region;
//! the buffer only grows (at most to `max_line_bytes + capacity`) to carry a long partial
//! line.
//!
//! Logs are bytes: invalid UTF-8, NUL and `\r` are ordinary bytes, and a line is everything
//! up to and including a `\n`. The *length* of a line, whenever it is compared with
//! `max_line_bytes`, is its number of bytes **without** the terminating `\n`.
//!
//! # Long lines: who counts what
//!
//! Every line longer than `max_line_bytes` is counted exactly once, by one of two parties:
//!
//! - **The reader** counts the lines it drops ([`LineReader::skipped_long_lines`]). A line is
//!   dropped when the partial line the reader would carry to the next read is longer than
//!   `max_line_bytes`: its bytes are discarded, the reader enters *skip mode* (see
//!   [`LineReader::is_skipping`]) and discards everything up to and including the next `\n`,
//!   then counts one skipped line. A dropped line is never yielded, not even in part. If the
//!   input ends while skipping, [`LineReader::take_partial`] counts the line.
//! - **The scanner** counts the rest. A line that is complete inside one buffer is yielded
//!   whole even if it is longer than `max_line_bytes` (it costs no extra memory, and
//!   dropping it would need a per-line pass here). Whoever scans regions must therefore
//!   measure each line it looks at and count (and skip) those longer than
//!   [`LineReader::max_line_bytes`]. The partial line returned by `take_partial` is never
//!   longer than `max_line_bytes`.
//!
//! # Offsets and resuming
//!
//! [`LineReader::offset`] is the absolute offset just after the last byte consumed: the end
//! of the last region returned, of the last skipped line, or of the partial taken with
//! `take_partial`. Apart from `take_partial` (meant for the true end of the input) it is
//! always the start of a line, so a tailer can commit it and, after a crash, reopen the file
//! there with [`LineReader::with_offset`].
//!
//! While a long line is being dropped, `offset()` stays at the **start of that line**; it
//! jumps past the line only when its `\n` has been consumed (and the line counted). Resuming
//! from a committed offset therefore re-reads the long line from its start, drops it again
//! and counts it once. Advancing the offset over the dropped bytes instead would resume in
//! the middle of the line and yield its tail as if it were a line of its own.
//!
//! # Segments
//!
//! [`split_segments`] cuts a large file into newline-aligned byte ranges, and [`ReadAt`]
//! reads one such range with positional reads, so several threads can frame segments of the
//! same file concurrently (each with its own `LineReader::new(ReadAt::new(..))
//! .with_offset(range.start)`).

use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Default size of one read, in bytes: 256 KiB.
pub const DEFAULT_BUFFER_CAPACITY: usize = 256 * 1024;

/// Default maximum length of a carried partial line, in bytes: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Smallest accepted `max_line_bytes`; smaller values are raised to this.
pub const MIN_MAX_LINE_BYTES: usize = 64;

/// Size of one positional read in [`split_segments`] while looking for a newline.
const SEGMENT_PROBE_BYTES: usize = 8 * 1024;

/// A region of complete lines handed out by [`LineReader::next_region`].
#[derive(Debug, Clone, Copy)]
pub struct Region<'a> {
    /// One or more complete lines; never empty, always ends with `b'\n'`.
    pub bytes: &'a [u8],
    /// Absolute offset of `bytes[0]` in the stream.
    pub offset: u64,
}

/// Reads a byte stream in big chunks and yields regions of complete lines.
///
/// See the [module docs](self) for how long lines are dropped and counted and what
/// [`offset`](Self::offset) means while they are.
///
/// # Example
///
/// ```
/// use sentinel::scan::framing::LineReader;
///
/// let mut rdr = LineReader::new(&b"one\ntwo\nthr"[..]);
/// let mut lines = 0;
/// while let Some(region) = rdr.next_region()? {
///     lines += region.bytes.split_inclusive(|&b| b == b'\n').count();
/// }
/// assert_eq!(lines, 2);
/// assert_eq!(rdr.take_partial(), b"thr");
/// assert_eq!(rdr.offset(), 11);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LineReader<R> {
    rdr: R,
    /// The one buffer. Its length is the initialised (zero-filled once) area; it never
    /// exceeds `max_line_bytes + capacity`.
    buf: Vec<u8>,
    /// `buf[start..end]` is the held partial line: unconsumed, no `\n` in it, and never
    /// longer than `max_line_bytes` between calls. Empty while skipping.
    start: usize,
    /// End of the valid data in `buf`.
    end: usize,
    /// Absolute offset just after the last consumed byte. Outside `take_partial` this is the
    /// start of a line: of `buf[start..]`, or of the long line being skipped.
    offset: u64,
    /// Absolute offset of `buf[end]`, i.e. of the next byte the reader will return.
    pos: u64,
    /// Dropping bytes until the next `\n`.
    skipping: bool,
    /// Lines dropped for being longer than `max_line_bytes`.
    skipped: u64,
    /// Minimum free space for one read (at least 1).
    capacity: usize,
    /// Longest partial line carried (at least `MIN_MAX_LINE_BYTES`).
    max_line_bytes: usize,
}

impl<R: fmt::Debug> fmt::Debug for LineReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineReader")
            .field("rdr", &self.rdr)
            .field("buffered", &(self.end - self.start))
            .field("buffer_len", &self.buf.len())
            .field("offset", &self.offset)
            .field("skipping", &self.skipping)
            .field("skipped_long_lines", &self.skipped)
            .field("capacity", &self.capacity)
            .field("max_line_bytes", &self.max_line_bytes)
            .finish()
    }
}

impl<R: Read> LineReader<R> {
    /// A reader with [`DEFAULT_BUFFER_CAPACITY`] and [`DEFAULT_MAX_LINE_BYTES`].
    pub fn new(rdr: R) -> Self {
        Self::with_capacity(rdr, DEFAULT_BUFFER_CAPACITY, DEFAULT_MAX_LINE_BYTES)
    }

    /// A reader that reads at least `capacity` bytes at a time (raised to 1 if 0) and carries
    /// partial lines of at most `max_line_bytes` (raised to [`MIN_MAX_LINE_BYTES`] if
    /// smaller). The buffer starts at `capacity` bytes and never exceeds
    /// `max_line_bytes + capacity`.
    pub fn with_capacity(rdr: R, capacity: usize, max_line_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        LineReader {
            rdr,
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            offset: 0,
            pos: 0,
            skipping: false,
            skipped: 0,
            capacity,
            max_line_bytes: max_line_bytes.max(MIN_MAX_LINE_BYTES),
        }
    }

    /// Sets the absolute offset of the first byte `rdr` yields (default 0), e.g. the
    /// committed offset a tailer reopened its file at, or the start of a segment. Meant to
    /// be called before the first read; offsets of bytes already held shift along.
    pub fn with_offset(mut self, offset: u64) -> Self {
        let held = self.pos - self.offset;
        self.offset = offset;
        self.pos = offset + held;
        self
    }

    /// Reads until at least one complete line is available and returns the region of
    /// complete lines (it ends with `b'\n'`), or `Ok(None)` when the reader returned 0 bytes
    /// (EOF for now) before a complete line arrived.
    ///
    /// The partial tail is kept; calling again later continues (tailing). Lines longer than
    /// `max_line_bytes` that do not fit in one buffer are dropped and counted (see the
    /// [module docs](self)).
    ///
    /// # Errors
    ///
    /// Any error of the underlying reader except [`ErrorKind::Interrupted`], which is
    /// retried. No data is lost on error: calling again continues where the reader left off.
    pub fn next_region(&mut self) -> io::Result<Option<Region<'_>>> {
        loop {
            self.make_room();
            let n = loop {
                match self.rdr.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(None);
            }
            // A misbehaving reader may claim more than it was given; never trust it.
            let n = n.min(self.buf.len() - self.end);
            let mut new_start = self.end;
            self.end += n;
            self.pos += n as u64;
            if self.skipping {
                match memchr::memchr(b'\n', &self.buf[new_start..self.end]) {
                    None => {
                        // Still inside the long line: drop everything read.
                        self.start = 0;
                        self.end = 0;
                        continue;
                    }
                    Some(i) => {
                        self.skipping = false;
                        self.skipped += 1;
                        self.start = new_start + i + 1;
                        new_start = self.start;
                        self.offset = self.pos - (self.end - self.start) as u64;
                    }
                }
            }
            let region = match memchr::memrchr(b'\n', &self.buf[new_start..self.end]) {
                Some(i) => {
                    let region_end = new_start + i + 1;
                    let region = self.start..region_end;
                    let region_offset = self.offset;
                    self.offset += (region_end - self.start) as u64;
                    self.start = region_end;
                    Some((region, region_offset))
                }
                None => None,
            };
            if self.end - self.start > self.max_line_bytes {
                // The carried partial line is too long: drop it and skip to its end.
                // `offset` stays at its start, the last safe place to resume from.
                self.skipping = true;
                self.start = self.end;
            }
            if let Some((range, offset)) = region {
                return Ok(Some(Region {
                    bytes: &self.buf[range],
                    offset,
                }));
            }
        }
    }

    /// Ensures `buf[end..]` has at least `capacity` bytes, moving the partial line to the
    /// front and growing the buffer (bounded) when needed.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= self.capacity {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let need = self.end + self.capacity;
        if self.buf.len() < need {
            // end <= max_line_bytes here, so need <= max_line_bytes + capacity.
            let limit = self.max_line_bytes + self.capacity;
            let new_len = self
                .buf
                .len()
                .saturating_mul(2)
                .clamp(need, limit.max(need));
            self.buf.reserve_exact(new_len - self.buf.len());
            self.buf.resize(new_len, 0);
        }
    }

    /// The held partial last line (no `\n`), e.g. to scan it as the final line at end of
    /// file; empty if none.
    ///
    /// Calling this consumes it: [`offset`](Self::offset) advances past it. Call it only at
    /// the true end of the input (a tailer that calls it on a transient EOF splits a line in
    /// two). If a long line was being skipped, the skip ends here: the line is counted in
    /// [`skipped_long_lines`](Self::skipped_long_lines), `offset` advances past all bytes
    /// read, and the returned slice is empty. The result is never longer than
    /// [`max_line_bytes`](Self::max_line_bytes).
    pub fn take_partial(&mut self) -> &[u8] {
        if self.skipping {
            self.skipping = false;
            self.skipped += 1;
            self.start = self.end;
            self.offset = self.pos;
            return &[];
        }
        let partial = self.start..self.end;
        self.offset = self.pos;
        self.start = self.end;
        &self.buf[partial]
    }

    /// Absolute offset just after the last byte consumed: the end of the last region
    /// returned, of the last skipped line, or of the partial taken. While a long line is
    /// being skipped, the start of that line (see the [module docs](self)).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Absolute offset of the next byte the reader will read: [`offset`](Self::offset) plus
    /// the bytes held (the partial line) or dropped (a long line being skipped). A tailer
    /// compares it with the file's size to notice a truncation.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Number of lines dropped by this reader for being longer than `max_line_bytes`.
    /// Long lines yielded whole inside a region are not counted here (the scanner counts
    /// them).
    pub fn skipped_long_lines(&self) -> u64 {
        self.skipped
    }

    /// Whether the reader is dropping the rest of a long line until its `\n`.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// The longest partial line this reader carries (and the threshold the scanner should
    /// apply to the lines of a region).
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.rdr
    }

    /// The underlying reader, mutably. Reading from it directly desynchronises offsets.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.rdr
    }

    /// Returns the underlying reader; buffered bytes are lost.
    pub fn into_inner(self) -> R {
        self.rdr
    }
}

impl<R: io::Seek> LineReader<R> {
    /// Moves to the line start `offset`, when nothing is held (no partial line, no long line
    /// being skipped): for a caller that consumed `position()..offset` by other means (a
    /// mapped catch-up). Returns `false`, changing nothing, if something is held.
    ///
    /// # Errors
    ///
    /// The seek's.
    pub fn seek_to(&mut self, offset: u64) -> io::Result<bool> {
        if self.skipping || self.start != self.end || self.pos != self.offset {
            return Ok(false);
        }
        self.rdr.seek(io::SeekFrom::Start(offset))?;
        self.start = 0;
        self.end = 0;
        self.offset = offset;
        self.pos = offset;
        Ok(true)
    }
}

/// A [`Read`] over the byte range `pos..end` of a file, using positional reads
/// ([`FileExt::read_at`]), so several threads can read segments of one file at once without
/// sharing a cursor.
#[derive(Debug)]
pub struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> ReadAt<'a> {
    /// Reads `range` of `file`. Reading stops early if the file is shorter.
    pub fn new(file: &'a File, range: Range<u64>) -> Self {
        ReadAt {
            file,
            pos: range.start,
            end: range.end.max(range.start),
        }
    }

    /// Offset in the file of the next byte to read.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Splits `[0, len)` of `file` into newline-aligned segments of about `target` bytes.
///
/// The ranges are contiguous, non-empty and cover `[0, len)` exactly; every boundary
/// between two segments lies just after a `\n`. A boundary is placed at the first `\n` at
/// or after `start + target - 1`, found with small positional reads; a stretch without
/// newlines just makes the segment longer (to the end of the file if need be). `target` 0
/// is treated as 1. `len` 0 gives no segments. Uses no file cursor, so the file can be
/// shared.
///
/// # Errors
///
/// Errors of the positional reads (interrupted reads are retried). A file shorter than
/// `len` is not an error: its last segment simply extends to `len`.
pub fn split_segments(file: &File, len: u64, target: u64) -> io::Result<Vec<Range<u64>>> {
    let target = target.max(1);
    let mut segments = Vec::new();
    let mut probe = vec![0u8; SEGMENT_PROBE_BYTES];
    let mut start = 0u64;
    while start < len {
        let want = start.saturating_add(target);
        if want >= len {
            segments.push(start..len);
            break;
        }
        match find_newline(file, want - 1, len, &mut probe)? {
            Some(nl) => {
                segments.push(start..nl + 1);
                start = nl + 1;
            }
            None => {
                segments.push(start..len);
                break;
            }
        }
    }
    Ok(segments)
}

/// Offset of the first `\n` in `from..len` of `file`, if any.
fn find_newline(file: &File, mut from: u64, len: u64, probe: &mut [u8]) -> io::Result<Option<u64>> {
    while from < len {
        let want = probe
            .len()
            .min(usize::try_from(len - from).unwrap_or(usize::MAX));
        let n = match file.read_at(&mut probe[..want], from) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(i) = memchr::memchr(b'\n', &probe[..n]) {
            return Ok(Some(from + i as u64));
        }
        from += n as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::io::Write;

    /// A reader that hands out `data` in pieces of the scripted sizes (cycled). A size of
    /// 0 is a transient EOF ("no more data for now"); `usize::MAX` is an `Interrupted`
    /// error. After either, the next read returns data, so a driver always progresses.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        idx: usize,
        last_was_special: bool,
    }

    impl Chunked {
        fn new(data: Vec<u8>, sizes: Vec<usize>) -> Self {
            let sizes = if sizes.is_empty() { vec![7] } else { sizes };
            Chunked {
                data,
                pos: 0,
                sizes,
                idx: 0,
                last_was_special: false,
            }
        }

        fn exhausted(&self) -> bool {
            self.pos >= self.data.len()
        }
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut size = self.sizes[self.idx % self.sizes.len()];
            self.idx += 1;
            if self.last_was_special && (size == 0 || size == usize::MAX) {
                size = 1;
            }
            self.last_was_special = size == 0 || size == usize::MAX;
            if size == usize::MAX {
                return Err(io::Error::new(ErrorKind::Interrupted, "scripted"));
            }
            let n = size.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// What a run of the reader produced.
    #[derive(Debug)]
    struct Outcome {
        /// (offset, bytes) of each yielded region.
        regions: Vec<(u64, Vec<u8>)>,
        partial: Vec<u8>,
        skipped: u64,
        final_offset: u64,
    }

    /// Drives `rdr` to the end of `Chunked`, tailing through transient EOFs.
    fn drive(mut rdr: LineReader<Chunked>) -> Outcome {
        let limit = rdr.max_line_bytes + rdr.capacity;
        let mut regions = Vec::new();
        let mut last_offset = rdr.offset();
        loop {
            let got = rdr
                .next_region()
                .expect("Chunked only fails with Interrupted");
            match got.map(|r| (r.offset, r.bytes.to_vec())) {
                Some(r) => regions.push(r),
                None if rdr.get_ref().exhausted() => break,
                None => {}
            }
            assert!(rdr.buf.capacity() <= limit, "buffer grew past its bound");
            assert!(rdr.offset() >= last_offset, "offset went backwards");
            last_offset = rdr.offset();
        }
        let partial = rdr.take_partial().to_vec();
        Outcome {
            regions,
            partial,
            skipped: rdr.skipped_long_lines(),
            final_offset: rdr.offset(),
        }
    }

    /// Checks `out` against one-shot splitting of `data`.
    fn check(data: &[u8], max: usize, base: u64, out: &Outcome) {
        // The oracle: every complete line with its offset, plus the unterminated tail.
        let mut oracle = Vec::new();
        let mut at = 0;
        for line in data.split_inclusive(|&b| b == b'\n') {
            if line.ends_with(b"\n") {
                oracle.push((base + at as u64, line));
            }
            at += line.len();
        }
        let tail_start = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let tail = &data[tail_start..];

        // Regions: in order, non-overlapping, of complete lines, matching the data.
        let mut yielded: HashMap<u64, &[u8]> = HashMap::new();
        let mut prev_end = base;
        for (off, bytes) in &out.regions {
            assert!(!bytes.is_empty() && bytes.ends_with(b"\n"));
            assert!(*off >= prev_end, "regions overlap or go backwards");
            let i = usize::try_from(off - base).expect("small");
            assert_eq!(&data[i..i + bytes.len()], &bytes[..], "region bytes");
            assert!(
                i == 0 || data[i - 1] == b'\n',
                "region does not start a line"
            );
            let mut o = *off;
            for line in bytes.split_inclusive(|&b| b == b'\n') {
                yielded.insert(o, line);
                o += line.len() as u64;
            }
            prev_end = *off + bytes.len() as u64;
        }
        let mut dropped = 0;
        for (off, line) in &oracle {
            match yielded.remove(off) {
                Some(y) => assert_eq!(y, *line),
                None => {
                    assert!(line.len() - 1 > max, "a short line was dropped at {off}");
                    dropped += 1;
                }
            }
        }
        assert!(
            yielded.is_empty(),
            "yielded lines that are not lines: {yielded:?}"
        );
        if tail.len() > max {
            assert!(out.partial.is_empty());
            dropped += 1;
        } else {
            assert_eq!(out.partial, tail, "partial");
        }
        assert_eq!(out.skipped, dropped, "skipped count");
        assert_eq!(out.final_offset, base + data.len() as u64, "final offset");
    }

    fn piece(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // Ordinary short lines.
            4 => proptest::collection::vec(b'a'..=b'z', 0..40).prop_map(|mut v| {
                v.push(b'\n');
                v
            }),
            // CRLF lines.
            1 => proptest::collection::vec(b'a'..=b'z', 0..20).prop_map(|mut v| {
                v.extend_from_slice(b"\r\n");
                v
            }),
            // Arbitrary bytes: NULs, invalid UTF-8, sometimes newlines.
            2 => proptest::collection::vec(any::<u8>(), 0..64),
            // Long runs without a newline.
            1 => (1usize..3000, any::<u8>())
                .prop_map(|(n, b)| vec![if b == b'\n' { 0 } else { b }; n]),
            // Lines right at the limit: max - 1, max, max + 1 bytes before the newline.
            1 => (max - 1..=max + 1).prop_map(|n| {
                let mut v = vec![b'm'; n];
                v.push(b'\n');
                v
            }),
            // Empty lines.
            1 => Just(b"\n".to_vec()),
        ]
    }

    fn data(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(piece(max), 0..40).prop_map(|v| v.concat())
    }

    fn sizes() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(
            prop_oneof![
                6 => 1usize..600,
                2 => 600usize..5000,
                1 => Just(0usize),
                1 => Just(usize::MAX),
            ],
            1..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_chunking_matches_one_shot(
            (max, data) in (64usize..4096).prop_flat_map(|max| (Just(max), data(max))),
            sizes in sizes(),
            capacity in 64usize..4096,
            base in prop_oneof![Just(0u64), 0u64..1 << 40],
        ) {
            let rdr = LineReader::with_capacity(Chunked::new(data.clone(), sizes), capacity, max)
                .with_offset(base);
            let out = drive(rdr);
            check(&data, max, base, &out);
        }

        #[test]
        fn tiny_buffers_match_one_shot(
            data in data(64),
            sizes in sizes(),
            capacity in 1usize..64,
        ) {
            let rdr = LineReader::with_capacity(Chunked::new(data.clone(), sizes), capacity, 64);
            let out = drive(rdr);
            check(&data, 64, 0, &out);
        }
    }

    #[test]
    fn huge_line_without_newline_is_skipped_in_bounded_memory() {
        let long = io::repeat(b'x').take(10 << 20);
        let rest = io::Cursor::new(b"\nok\n".to_vec());
        let mut rdr = LineReader::new(long.chain(rest));
        let limit = DEFAULT_MAX_LINE_BYTES + DEFAULT_BUFFER_CAPACITY;
        let region = rdr.next_region().expect("in memory");
        let region = region.expect("a line follows the long one");
        assert_eq!(region.bytes, b"ok\n");
        assert_eq!(region.offset, (10 << 20) + 1);
        assert!(
            rdr.buf.capacity() <= limit,
            "{} > {limit}",
            rdr.buf.capacity()
        );
        assert_eq!(rdr.skipped_long_lines(), 1);
        assert!(!rdr.is_skipping());
        assert_eq!(rdr.offset(), (10 << 20) + 4);
        assert!(rdr.next_region().expect("in memory").is_none());
        assert_eq!(rdr.take_partial(), b"");
    }

    #[test]
    fn huge_line_at_eof_is_counted_by_take_partial() {
        let mut rdr = LineReader::with_capacity(io::repeat(b'x').take(100_000), 1000, 4096);
        assert!(rdr.next_region().expect("in memory").is_none());
        assert!(rdr.is_skipping());
        assert_eq!(
            rdr.offset(),
            0,
            "offset stays at the start of the skipped line"
        );
        assert_eq!(rdr.skipped_long_lines(), 0);
        assert_eq!(rdr.take_partial(), b"");
        assert_eq!(rdr.skipped_long_lines(), 1);
        assert_eq!(rdr.offset(), 100_000);
    }

    #[test]
    fn long_line_complete_in_one_buffer_is_yielded() {
        let mut data = vec![b'y'; 500];
        data.push(b'\n');
        let mut rdr = LineReader::with_capacity(&data[..], 4096, 64);
        let region = rdr.next_region().expect("in memory").expect("one line");
        assert_eq!(region.bytes.len(), 501);
        assert_eq!(rdr.skipped_long_lines(), 0);
    }

    #[test]
    fn offsets_of_regions_and_with_offset() {
        let data = b"alpha\nbeta\ngamma\ndelta";
        let mut rdr = LineReader::with_capacity(Chunked::new(data.to_vec(), vec![8]), 8, 64)
            .with_offset(1000);
        let mut seen = Vec::new();
        while let Some(r) = rdr.next_region().expect("in memory") {
            seen.push((r.offset, r.bytes.to_vec()));
        }
        assert_eq!(
            seen,
            vec![
                (1000, b"alpha\n".to_vec()),
                (1006, b"beta\n".to_vec()),
                (1011, b"gamma\n".to_vec()),
            ]
        );
        assert_eq!(rdr.offset(), 1017);
        assert_eq!(rdr.take_partial(), b"delta");
        assert_eq!(rdr.offset(), 1022);
        assert_eq!(rdr.take_partial(), b"");
        assert_eq!(rdr.offset(), 1022);
    }

    #[test]
    fn offset_during_skip_is_a_safe_resume_point() {
        // "ab\n" + 200 x + "\n" + "cd\n", max 64, small reads.
        let mut data = b"ab\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 200));
        data.extend_from_slice(b"\ncd\n");
        let mut rdr = LineReader::with_capacity(Chunked::new(data.clone(), vec![50, 0]), 50, 64);
        let r = rdr.next_region().expect("in memory").expect("ab");
        assert_eq!((r.offset, r.bytes), (0, &b"ab\n"[..]));
        // Transient EOFs while inside the long line: offset stays at its start.
        let mut saw_skipping_pause = false;
        let r = loop {
            match rdr.next_region().expect("in memory") {
                Some(r) => break (r.offset, r.bytes.to_vec()),
                None => {
                    if rdr.is_skipping() {
                        saw_skipping_pause = true;
                        assert_eq!(rdr.offset(), 3);
                    }
                }
            }
        };
        assert!(saw_skipping_pause);
        assert_eq!(r, (204, b"cd\n".to_vec()));
        assert_eq!(rdr.skipped_long_lines(), 1);

        // A tailer resuming at the committed offset 3 drops and counts the line again.
        let rdr = LineReader::with_capacity(Chunked::new(data[3..].to_vec(), vec![50]), 50, 64)
            .with_offset(3);
        let out = drive(rdr);
        assert_eq!(out.regions, vec![(204, b"cd\n".to_vec())]);
        assert_eq!(out.skipped, 1);
    }

    #[test]
    fn tailing_continues_after_eof() {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"one\ntw").expect("write");
        let mut rdr = LineReader::with_capacity(ReadAt::new(&file, 0..u64::MAX), 64, 64);
        let r = rdr.next_region().expect("read").expect("one");
        assert_eq!(r.bytes, b"one\n");
        assert!(rdr.next_region().expect("read").is_none());
        assert_eq!(rdr.offset(), 4);
        // The file grows.
        (&file).write_all(b"o\nthree\n").expect("write");
        let r = rdr.next_region().expect("read").expect("two, three");
        assert_eq!((r.offset, r.bytes), (4, &b"two\nthree\n"[..]));
        assert!(rdr.next_region().expect("read").is_none());
        assert_eq!(rdr.take_partial(), b"");
        assert_eq!(rdr.offset(), 14);
    }

    #[test]
    fn errors_propagate_and_reading_resumes() {
        struct Flaky {
            inner: io::Cursor<Vec<u8>>,
            fail_next: bool,
        }
        impl Read for Flaky {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::take(&mut self.fail_next) {
                    return Err(io::Error::other("boom"));
                }
                self.fail_next = true;
                let n = buf.len().min(3);
                self.inner.read(&mut buf[..n])
            }
        }
        let flaky = Flaky {
            inner: io::Cursor::new(b"abcd\nef\n".to_vec()),
            fail_next: false,
        };
        let mut rdr = LineReader::with_capacity(flaky, 3, 64);
        let mut got = Vec::new();
        let mut errors = 0;
        loop {
            match rdr.next_region() {
                Ok(Some(r)) => got.extend_from_slice(r.bytes),
                Ok(None) => break,
                Err(_) => errors += 1,
            }
        }
        assert!(errors > 0);
        assert_eq!(got, b"abcd\nef\n");
    }

    #[test]
    fn split_segments_cover_the_file_at_newlines() {
        let mut file = tempfile::tempfile().expect("tempfile");
        let mut data = Vec::new();
        for i in 0..5000u32 {
            data.extend_from_slice(
                format!("line {i} {}\n", "z".repeat((i % 97) as usize)).as_bytes(),
            );
        }
        data.extend(std::iter::repeat_n(b'q', 50_000)); // a long stretch without newline
        data.extend_from_slice(b"\nlast line without newline");
        file.write_all(&data).expect("write");
        let len = data.len() as u64;
        for target in [0, 1, 100, 4096, 10_000, 1 << 20, u64::MAX] {
            let segs = split_segments(&file, len, target).expect("split");
            assert_eq!(segs.first().map(|r| r.start), Some(0));
            assert_eq!(segs.last().map(|r| r.end), Some(len));
            for w in segs.windows(2) {
                assert_eq!(w[0].end, w[1].start, "contiguous");
            }
            for s in &segs {
                assert!(s.start < s.end, "non-empty");
                assert!(s.end - s.start >= target.min(len - s.start));
                if s.end < len {
                    assert_eq!(data[usize::try_from(s.end).expect("small") - 1], b'\n');
                }
            }
            // Reading every segment with ReadAt reproduces the file.
            let mut joined = Vec::new();
            for s in &segs {
                ReadAt::new(&file, s.clone())
                    .read_to_end(&mut joined)
                    .expect("read");
            }
            assert_eq!(joined, data);
        }
        assert!(split_segments(&file, 0, 10).expect("split").is_empty());
        // len past the end of the file: the last segment extends to len.
        let segs = split_segments(&file, len + 10, 1 << 30).expect("split");
        assert_eq!(segs, vec![0..len + 10]);
    }

    #[test]
    fn segments_frame_to_the_same_lines_as_the_whole_file() {
        let mut file = tempfile::tempfile().expect("tempfile");
        let data: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        file.write_all(&data).expect("write");
        let segs = split_segments(&file, data.len() as u64, 7000).expect("split");
        assert!(segs.len() > 5);
        let mut joined = Vec::new();
        let mut next_offset = 0;
        for s in segs {
            let mut rdr = LineReader::with_capacity(ReadAt::new(&file, s.clone()), 1000, 64)
                .with_offset(s.start);
            while let Some(r) = rdr.next_region().expect("read") {
                assert_eq!(r.offset, next_offset);
                next_offset += r.bytes.len() as u64;
                joined.extend_from_slice(r.bytes);
            }
            assert_eq!(rdr.take_partial(), b"");
            assert_eq!(rdr.offset(), s.end);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LineReader<File>>();
        assert_send_sync::<Region<'static>>();
        assert_send_sync::<ReadAt<'static>>();
    }
}
