//! Integration tests: the real `sentinel` binary on temp dirs.

mod api;
mod browser;
mod cardinality;
mod cloudwatch;
mod cluster;
mod components;
mod dashboard;
mod descriptors;
mod faults;
mod fix_e2e;
mod fix_guardrails;
mod fixer;
mod ground_truth;
mod harness;
mod ingest_log;
mod lifecycle;
mod logrotate;
mod nats;
mod outbox;
mod peers;
mod process;
mod scan_cli;
mod serve;
mod watch;
mod webhook;
mod workflow;
