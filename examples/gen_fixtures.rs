//! Regenerates the committed test fixtures from [`sentinel_corpus::fixtures`]:
//! `testdata/logs/{app.log, service.jsonl, archive/old.log.gz}` and `testdata/logs.truth.json` and
//! `testdata/manifest.json`.
//!
//! ```text
//! cargo run --example gen_fixtures
//! ```
//!
//! The output is deterministic; `corpus::tests::committed_fixtures_are_current` fails until
//! this is re-run after a change to the generator.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::{Compression, GzBuilder};
use sentinel_corpus::{self as corpus, FIXTURE_PROJECT_DIR, GroundTruth};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let logs = root.join("logs");
    let fixtures = corpus::fixtures();
    let mut truths: BTreeMap<String, GroundTruth> = BTreeMap::new();
    for fixture in &fixtures {
        let mut bytes = Vec::new();
        let truth = corpus::generate(&fixture.spec, &mut bytes)?;
        let path = logs.join(fixture.path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        if fixture.gzip {
            // mtime 0 and a fixed name keep the gzip header deterministic.
            let name = fixture
                .path
                .rsplit('/')
                .next()
                .unwrap_or("log")
                .trim_end_matches(".gz");
            let mut gz = GzBuilder::new()
                .mtime(0)
                .filename(name)
                .write(Vec::new(), Compression::best());
            gz.write_all(&bytes)?;
            fs::write(&path, gz.finish()?)?;
        } else {
            fs::write(&path, &bytes)?;
        }
        eprintln!(
            "{}: {} bytes, {} lines, {} error lines, {} distinct fingerprints",
            fixture.path, truth.bytes, truth.lines, truth.error_lines, truth.distinct_fingerprints
        );
        truths.insert(fixture.path.to_owned(), truth);
    }
    fs::write(
        root.join("logs.truth.json"),
        serde_json::to_string_pretty(&truths)? + "\n",
    )?;
    let manifest = corpus::manifest_json(&fixtures[0].spec, FIXTURE_PROJECT_DIR);
    fs::write(root.join("manifest.json"), manifest + "\n")?;
    Ok(())
}
