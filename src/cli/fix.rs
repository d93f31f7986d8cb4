//! `sentinel fix PACT_KEY ERROR`: runs a fix now and prints the FixResult as JSON (exit 0
//! when the fix was proven, 1 otherwise). The error is counted as an incident first
//! (created if new).
//!
//! Without a daemon the fix runs in this process. While a daemon owns the store, the same
//! command asks it (`POST /fix`, then `GET /fixes/{id}` until the fix ends): same output,
//! same exit codes. `--no-wait` prints the queued fix's id and returns; Ctrl-C while waiting
//! leaves the fix running in the daemon and says how to follow it (exit 130).

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;

use super::CliError;
use crate::attribute::LiveRules;
use crate::config::Config;
use crate::fix::budget::{Budget, Caps};
use crate::fix::engine::{Fixer, FixerEnv};
use crate::fix::service::{DaemonLlm, FixService, RequestError, request_fix};
use crate::store::{FixResult, FixStatus, Store, StoreError};

/// `sentinel fix`.
#[derive(Debug, clap::Args)]
pub struct FixArgs {
    /// The PACT key of the failing component, e.g. PACT:auth_module:validate_token.
    pact_key: String,
    /// The error text (a production log line).
    error: String,
    /// With a running daemon: queue the fix, print its id and return at once.
    #[arg(long)]
    no_wait: bool,
}

/// Runs `sentinel fix`.
///
/// # Errors
///
/// [`CliError`] when the store or the configuration cannot be used.
pub fn run(config: &Config, args: FixArgs) -> Result<u8, CliError> {
    if let Some(daemon) = super::client::DaemonClient::find(config)? {
        return through_daemon(daemon, &args);
    }
    if args.no_wait {
        return Err(CliError::Usage(
            "--no-wait needs a running daemon (without one the fix runs in this process)".into(),
        ));
    }
    config.state().create()?;
    let store = match Store::open(&config.db_path()) {
        Ok(s) => Arc::new(s),
        Err(e @ StoreError::InUse { .. }) => {
            return Err(CliError::Other(anyhow::anyhow!(
                "{e}\nA daemon owns the store: ask it with POST /fix (see README, HTTP API)."
            )));
        }
        Err(e) => return Err(CliError::Other(e.into())),
    };
    let config = Arc::new(config.clone());
    let (rules, warnings) = crate::attribute::ledger::load_rules(&config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let rules = LiveRules::new(rules);
    store.set_fix_policy(crate::fix::policy::FixPolicy::new(
        &config.error_threshold,
        config.auto_remediate,
    ));
    let fix = match request_fix(
        &store,
        &rules,
        &args.pact_key,
        &args.error,
        jiff::Timestamp::now(),
    ) {
        Ok(f) => f,
        Err(RequestError::Store(e)) => return Err(CliError::Other(e.into())),
        Err(e) => {
            // The reference's answer for an unknown component: a failed FixResult.
            let failed = FixResult {
                status: FixStatus::Failure,
                error: e.to_string(),
                pact_key: args.pact_key.clone(),
                ..FixResult::default()
            };
            print_json(&failed)?;
            return Ok(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let service = FixService::new(
        store.clone(),
        rules,
        Fixer::new(
            DaemonLlm::new(&config.llm),
            FixerEnv {
                config: config.clone(),
                budget: Arc::new(Budget::new(
                    store.clone(),
                    Caps::new(&config.budget, config.llm.budget_per_fix),
                )),
            },
        ),
        1,
    );
    let result = runtime
        .block_on(service.run_now(&fix.id))
        .context("the fix could not be recorded")?
        .unwrap_or(fix);
    // No daemon follows the event log here: write the postmortem now.
    if let Err(e) =
        crate::fix::postmortem::write(&store, &config.state().reports(), &result.incident_id)
    {
        tracing::warn!(error = %e, "cannot write the postmortem");
    }
    print_json(&result)?;
    Ok(match result.status {
        FixStatus::Success | FixStatus::AwaitingApproval => 0,
        _ => 1,
    })
}

/// How often a waiting `fix` asks the daemon.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// `fix` while a daemon runs: `POST /fix`, then wait for the fix to end.
fn through_daemon(daemon: super::client::DaemonClient, args: &FixArgs) -> Result<u8, CliError> {
    let body = serde_json::json!({"pact_key": args.pact_key, "error": args.error});
    let queued = match daemon.post("/fix", &body) {
        Ok(doc) => doc,
        Err(e) => match super::client::refusal(&e) {
            // The same answer as without a daemon: a failed FixResult.
            Some(r) if r.code == "not_registered" => {
                print_json(&FixResult {
                    status: FixStatus::Failure,
                    error: r.message.clone(),
                    pact_key: args.pact_key.clone(),
                    ..FixResult::default()
                })?;
                return Ok(1);
            }
            Some(r) if r.status == 400 => return Err(CliError::Usage(r.message.clone())),
            _ => return Err(CliError::Other(e)),
        },
    };
    let fix: FixResult =
        serde_json::from_value(queued).context("the daemon's answer is not a FixResult")?;
    if args.no_wait {
        writeln!(std::io::stdout().lock(), "{}", fix.id).context("stdout")?;
        return Ok(0);
    }
    let id = fix.id.clone();
    let pid = daemon.pid;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The wait runs on a blocking thread; Ctrl-C ends this process, never the fix.
    let outcome = runtime.block_on(async {
        let poll = {
            let id = id.clone();
            let started = std::time::Instant::now();
            tokio::task::spawn_blocking(move || {
                wait_for_end(&id, started, tty, |path| daemon.get(path))
            })
        };
        tokio::select! {
            r = poll => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let Some(ended) = outcome else {
        eprintln!(
            "\ninterrupted: fix {id} goes on in the daemon (pid {pid}); follow it with \
             `sentinel fixes {id}` or GET /fixes/{id}"
        );
        runtime.shutdown_background();
        return Ok(130);
    };
    let result = ended.context("waiting for the fix")??;
    runtime.shutdown_background();
    print_json(&result)?;
    Ok(match result.status {
        FixStatus::Success | FixStatus::AwaitingApproval => 0,
        _ => 1,
    })
}

/// Polls `GET /fixes/{id}` until the fix is neither pending nor running; on a terminal,
/// says what it waits for on stderr.
fn wait_for_end(
    id: &str,
    started: std::time::Instant,
    tty: bool,
    get: impl Fn(&str) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<FixResult> {
    let path = format!("/fixes/{id}");
    let mut said = String::new();
    loop {
        let fix: FixResult = serde_json::from_value(get(&path)?)
            .context("the daemon's answer is not a FixResult")?;
        if !matches!(fix.status, FixStatus::Pending | FixStatus::Running) {
            if tty && !said.is_empty() {
                eprintln!();
            }
            return Ok(fix);
        }
        if tty {
            let now = format!(
                "fix {id}: {} ({} s)",
                fix.status.as_str(),
                started.elapsed().as_secs()
            );
            if now != said {
                eprint!("\r{now}");
                said = now;
            }
        }
        std::thread::sleep(POLL);
    }
}

fn print_json(fix: &FixResult) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(fix).context("serialising the fix")?;
    writeln!(std::io::stdout().lock(), "{json}").context("stdout")?;
    Ok(())
}
