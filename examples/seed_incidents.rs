//! Seeds a store with N distinct incidents (default 100 000) for the dashboard's bench
//! (`bench/dashboard.sh`) and the API's (`bench/api_at_scale.sh`):
//! `cargo run --release --example seed_incidents -- STATE_DIR [N] [noisy]`.
//!
//! The incidents are written through [`Store::apply`] (the ingest transaction, trend
//! counters, tallies and secondary indexes included), in batches of 10 000. By default they
//! are spread over 20 components and all severities. With `noisy`, the shape of a store
//! that has lived a while with one noisy component: 95% of the incidents are `noisy`'s
//! (severity medium), the rest spread over `svc_0`..`svc_19` with the severities low,
//! critical and compliance (none is `high`), and incidents seen 3 times or more in their
//! batch are escalated (the others stay detected).
#![allow(clippy::print_stdout)] // A command-line report is the point of this example.

use sentinel::attribute::{AttributionStatus, Severity};
use sentinel::fix::policy::FixPolicy;
use sentinel::scan::Fingerprint;
use sentinel::store::{IncidentDelta, IngestBatch, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: seed_incidents STATE_DIR [N] [noisy]";
    let dir = std::path::PathBuf::from(args.next().ok_or(usage)?);
    let n: u64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let noisy = match args.next().as_deref() {
        None => false,
        Some("noisy") => true,
        Some(_) => return Err(usage.into()),
    };
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir.join("sentinel.redb"))?;
    if noisy {
        store.set_fix_policy(FixPolicy {
            threshold: 3,
            ..FixPolicy::default()
        });
    }
    let started = std::time::Instant::now();
    let mut i = 0;
    while i < n {
        let mut batch = IngestBatch::new();
        for j in i..(i + 10_000).min(n) {
            let fp = Fingerprint(xxhash_rust::xxh3::xxh3_64(&j.to_le_bytes()));
            let (component, sev) = if !noisy {
                (format!("svc_{}", j % 20), Severity::ALL[(j % 5) as usize])
            } else if j % 20 != 0 {
                ("noisy".to_string(), Severity::Medium)
            } else {
                let sev = [Severity::Low, Severity::Critical, Severity::Compliance]
                    [(j / 20 % 3) as usize];
                (format!("svc_{}", j / 60 % 20), sev)
            };
            let line = format!(
                "ERROR PACT:{component}:op_{} request failed: case {} ({})",
                j % 7,
                j,
                ["timeout", "refused", "bad input", "overflow"][(j % 4) as usize]
            );
            let mut delta =
                IncidentDelta::new(fp, 1 + j % 5, &line, AttributionStatus::Unregistered, sev);
            if let Some(new) = delta.new.as_mut() {
                new.set_component_id(&component);
                new.set_pact_key(&format!("PACT:{component}:op_{}", j % 7));
            }
            batch.incidents.insert(fp, delta);
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
