//! The one-pass normaliser equals the three regex substitutions on arbitrary bytes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use regex::bytes::Regex;
use sentinel::scan::fingerprint::{Fingerprint, Fingerprinter, normalize_into};

static RES: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        r"(?-u)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        r"(?-u)[0-9a-fA-F]{8,}",
        r"(?-u)[0-9]+",
    ]
    .map(|re| Regex::new(re).expect("valid regex"))
});

fuzz_target!(|line: &[u8]| {
    let [uuid, hex, num] = &*RES;
    let t1 = uuid.replace_all(line, &b"<uuid>"[..]);
    let t2 = hex.replace_all(&t1, &b"<hex>"[..]);
    let want = num.replace_all(&t2, &b"<n>"[..]);

    let mut out = b"stale".to_vec();
    normalize_into(line, &mut out);
    assert_eq!(out, &want[..]);

    let mut fp = Fingerprinter::new();
    let got = fp.fingerprint(line);
    assert_eq!(fp.normalized(), &want[..]);
    assert_eq!(got.to_string().parse::<Fingerprint>(), Ok(got));
});
