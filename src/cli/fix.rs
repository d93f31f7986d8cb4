//! `sentinel fix PACT_KEY ERROR`: runs a fix now, in this process, and prints the FixResult
//! as JSON (exit 0 when the fix was proven, 1 otherwise). The error is counted as an
//! incident first (created if new). While a daemon owns the store, ask it with `POST /fix`.

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
}

/// Runs `sentinel fix`.
///
/// # Errors
///
/// [`CliError`] when the store or the configuration cannot be used.
pub fn run(config: &Config, args: FixArgs) -> Result<u8, CliError> {
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
    print_json(&result)?;
    Ok(match result.status {
        FixStatus::Success | FixStatus::AwaitingApproval => 0,
        _ => 1,
    })
}

fn print_json(fix: &FixResult) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(fix).context("serialising the fix")?;
    writeln!(std::io::stdout().lock(), "{json}").context("stdout")?;
    Ok(())
}
