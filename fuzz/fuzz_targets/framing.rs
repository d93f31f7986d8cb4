//! Any chunking of any input frames to the same lines as one-shot splitting, and the reader
//! never panics or stalls.
//!
//! Input layout: `[cap_lo, cap_hi, max, nsizes, sizes.., data..]`. Each size byte is the
//! length of one read; 0 is a transient EOF ("no more data for now") and 255 an
//! `Interrupted` error.
#![no_main]

use std::collections::HashMap;
use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use sentinel::scan::framing::LineReader;

struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: &'a [u8],
    idx: usize,
    last_was_special: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut size = self
            .sizes
            .get(self.idx % self.sizes.len().max(1))
            .copied()
            .unwrap_or(7);
        self.idx += 1;
        if self.last_was_special && (size == 0 || size == 255) {
            size = 1;
        }
        self.last_was_special = size == 0 || size == 255;
        if size == 255 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "scripted"));
        }
        let n = usize::from(size)
            .min(buf.len())
            .min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    let [cap_lo, cap_hi, max, nsizes, rest @ ..] = input else {
        return;
    };
    let capacity = usize::from(u16::from_le_bytes([*cap_lo, *cap_hi]) % 4096);
    let max = 64 + usize::from(*max) * 8;
    let nsizes = usize::from(*nsizes % 16).min(rest.len());
    let (sizes, data) = rest.split_at(nsizes);
    let base = u64::from(*cap_hi) << 32;

    let chunked = Chunked {
        data,
        pos: 0,
        sizes,
        idx: 0,
        last_was_special: false,
    };
    let mut rdr = LineReader::with_capacity(chunked, capacity, max).with_offset(base);

    // Lines yielded, by absolute offset.
    let mut yielded: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut prev_end = base;
    // Every call either yields, or consumes at least one scripted read; a bounded number of
    // calls must finish the input.
    let mut calls = 0usize;
    loop {
        calls += 1;
        assert!(calls <= 4 * data.len() + 8, "the reader stalls");
        let got = rdr
            .next_region()
            .expect("only Interrupted errors, which are retried");
        let Some(region) = got.map(|r| (r.offset, r.bytes.to_vec())) else {
            if rdr.get_ref().pos == data.len() {
                break;
            }
            continue;
        };
        let (off, bytes) = region;
        assert!(bytes.ends_with(b"\n"));
        assert!(off >= prev_end);
        let i = usize::try_from(off - base).expect("in range");
        assert_eq!(&data[i..i + bytes.len()], &bytes[..]);
        assert!(i == 0 || data[i - 1] == b'\n');
        let mut o = off;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            yielded.insert(o, line.to_vec());
            o += line.len() as u64;
        }
        prev_end = off + bytes.len() as u64;
        assert_eq!(rdr.offset(), prev_end);
    }
    let partial = rdr.take_partial().to_vec();
    assert_eq!(rdr.offset(), base + data.len() as u64);

    let mut dropped = 0;
    let mut at = 0usize;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let off = base + at as u64;
        at += line.len();
        if !line.ends_with(b"\n") {
            // The unterminated tail.
            if line.len() > max {
                assert!(partial.is_empty());
                dropped += 1;
            } else {
                assert_eq!(partial, line);
            }
            continue;
        }
        match yielded.remove(&off) {
            Some(y) => assert_eq!(y, line),
            None => {
                assert!(line.len() - 1 > max, "a short line was dropped");
                dropped += 1;
            }
        }
    }
    assert!(yielded.is_empty());
    assert_eq!(rdr.skipped_long_lines(), dropped);
});
