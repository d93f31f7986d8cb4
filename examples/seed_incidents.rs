//! Seeds a store with N distinct incidents (default 100 000) for the dashboard's bench
//! (`bench/dashboard.sh`): `cargo run --release --example seed_incidents -- STATE_DIR [N]`.
//!
//! The incidents are written through [`Store::apply`] (the ingest transaction, trend
//! counters included), in batches of 10 000, spread over 20 components and all severities.
#![allow(clippy::print_stdout)] // A command-line report is the point of this example.

use sentinel::attribute::{AttributionStatus, Severity};
use sentinel::scan::Fingerprint;
use sentinel::store::{IncidentDelta, IngestBatch, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: seed_incidents STATE_DIR [N]")?);
    let n: u64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir.join("sentinel.redb"))?;
    let started = std::time::Instant::now();
    let mut i = 0;
    while i < n {
        let mut batch = IngestBatch::new();
        for j in i..(i + 10_000).min(n) {
            let fp = Fingerprint(xxhash_rust::xxh3::xxh3_64(&j.to_le_bytes()));
            let line = format!(
                "ERROR PACT:svc_{}:op_{} request failed: case {} ({})",
                j % 20,
                j % 7,
                j,
                ["timeout", "refused", "bad input", "overflow"][(j % 4) as usize]
            );
            let sev = Severity::ALL[(j % 5) as usize];
            batch.incidents.insert(
                fp,
                IncidentDelta::new(fp, 1 + j % 5, &line, AttributionStatus::Unregistered, sev),
            );
        }
        store.apply(&batch, jiff::Timestamp::now())?;
        i = (i + 10_000).min(n);
    }
    println!(
        "{} incidents in {} ({:.1} s)",
        store.incident_count()?,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
