//! Integration tests: the real `sentinel` binary on temp dirs.

mod components;
mod ground_truth;
mod harness;
mod scan_cli;
mod watch;
