//! Starting the `type: file` sources: they share one set of shard threads.

use crate::config::SourceConfig;
use crate::source::{Running, SourceContext, SourceInfo, Stopper};

use super::{FileSources, FileSpec, Options, starts_total};

/// Resolves every file source and starts tailing (registered in
/// [`crate::source::SOURCE_TYPES`]).
///
/// # Errors
///
/// A bad glob or pattern, an unreadable store, threads that cannot start.
pub fn start(sources: &[&SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
    let mut specs = Vec::new();
    let mut infos = Vec::new();
    for src in sources {
        let SourceConfig::File(src) = src else {
            continue;
        };
        let spec = FileSpec::from_config(src, &cx.defaults)?;
        infos.push(SourceInfo {
            name: src.common.name.clone(),
            kind: "file".into(),
            detail: spec.pattern.clone(),
        });
        specs.push(spec);
    }
    let positions = cx.store.file_positions()?;
    let starts = starts_total(&cx.store.totals()?);
    let opts = Options {
        shards: cx.defaults.shards,
        rotate_wait: cx.defaults.rotate_wait,
        exclude: cx.defaults.exclude.clone(),
    };
    let (sources, summary) = FileSources::start(
        specs,
        opts,
        positions,
        starts,
        cx.rules.clone(),
        cx.ingest.clone(),
        cx.metrics.clone(),
    )?;
    for (name, n) in &summary.files {
        tracing::info!(source = %name, files = n, "tailing");
    }
    if summary.recovered > 0 {
        tracing::info!(
            files = summary.recovered,
            "draining files rotated away before the last stop"
        );
    }
    Ok(Running {
        infos,
        listening: Vec::new(),
        stoppers: vec![Stopper::Threads(Box::new(move || sources.stop()))],
    })
}
