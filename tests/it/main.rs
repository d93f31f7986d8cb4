//! Integration tests: the real `sentinel` binary on temp dirs.

mod harness;
mod scan_cli;
