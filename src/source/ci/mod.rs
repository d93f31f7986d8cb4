//! CI failures as a source (issue 19, in progress): what a failed job's log says.
//!
//! So far only the log reading ([`log`]): the failing step and its lines, stripped of the
//! runner's timestamps, colours and step markers, for GitHub Actions job logs and GitLab job
//! traces. The webhook listeners (`type: github`, `type: gitlab`), the log fetch queue and the
//! folding into incidents are not written yet.

pub mod log;
