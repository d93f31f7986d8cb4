//! The one-pass normaliser equals its definition on arbitrary bytes: PACT key matches kept
//! verbatim, the three regex substitutions applied to each stretch between them.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use regex::bytes::Regex;
use sentinel::scan::fingerprint::{Fingerprint, Fingerprinter, normalize_into, normalize_stretch_into};

static KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u)PACT:[A-Za-z0-9_]+:[A-Za-z0-9_]+").expect("valid regex"));

static RES: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        r"(?-u)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        r"(?-u)[0-9a-fA-F]{8,}",
        r"(?-u)[0-9]+",
    ]
    .map(|re| Regex::new(re).expect("valid regex"))
});

fn substitutions(text: &[u8]) -> Vec<u8> {
    let [uuid, hex, num] = &*RES;
    let t1 = uuid.replace_all(text, &b"<uuid>"[..]);
    let t2 = hex.replace_all(&t1, &b"<hex>"[..]);
    num.replace_all(&t2, &b"<n>"[..]).into_owned()
}

fuzz_target!(|line: &[u8]| {
    let mut want = Vec::new();
    let mut from = 0;
    for m in KEY.find_iter(line) {
        want.extend(substitutions(&line[from..m.start()]));
        want.extend_from_slice(m.as_bytes());
        from = m.end();
    }
    want.extend(substitutions(&line[from..]));

    let mut out = b"stale".to_vec();
    normalize_into(line, &mut out);
    assert_eq!(out, want);

    normalize_stretch_into(line, &mut out);
    assert_eq!(out, substitutions(line));

    let mut fp = Fingerprinter::new();
    let got = fp.fingerprint(line);
    assert_eq!(fp.normalized(), &want[..]);
    assert_eq!(got.to_string().parse::<Fingerprint>(), Ok(got));
});
