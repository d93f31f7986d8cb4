//! `sentinel watch` and `sentinel serve`: run the daemon in the foreground.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::cli::CliError;
use crate::config::Config;
use crate::daemon::{self, DaemonOptions};

/// The reference's message when `watch` has nothing to watch.
pub const NO_SOURCES: &str = "No sources configured in sentinel.yaml. Add sources and retry.";

/// `sentinel watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Do not start the HTTP API (`api.listen`).
    #[arg(long)]
    no_api: bool,
    /// How long a rotated-away or deleted file stays open after its last data, in
    /// milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS", hide = true)]
    rotate_wait_ms: u64,
}

/// `sentinel serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to bind (default: the host of `api.listen`, 127.0.0.1).
    #[arg(long)]
    host: Option<IpAddr>,
    /// The port (default: the port of `api.listen`, 8484).
    #[arg(long)]
    port: Option<u16>,
    /// Serve this state directory read-only (e.g. a `sentinel backup`): the API alone, no
    /// sources, nothing written.
    #[arg(long, value_name = "DIR")]
    state: Option<std::path::PathBuf>,
}

/// Runs `watch`.
///
/// # Errors
///
/// [`CliError`] when the daemon cannot start (exit 1), with the reference's message when no
/// source is configured.
pub fn run_watch(config: Config, args: WatchArgs) -> Result<u8, CliError> {
    if config.sources.is_empty() {
        return Err(CliError::Other(anyhow::anyhow!(NO_SOURCES)));
    }
    let options = DaemonOptions {
        api: (!args.no_api).then_some(config.api.listen),
        command: "sentinel watch",
        rotate_wait: Duration::from_millis(args.rotate_wait_ms),
    };
    daemon::run(config, options)?;
    stopped();
    Ok(0)
}

/// Runs `serve`.
///
/// # Errors
///
/// [`CliError`] when the daemon cannot start.
pub fn run_serve(config: Config, args: ServeArgs) -> Result<u8, CliError> {
    let listen = SocketAddr::new(
        args.host.unwrap_or(config.api.listen.ip()),
        args.port.unwrap_or(config.api.listen.port()),
    );
    if let Some(dir) = args.state {
        let config = crate::cli::with_state(&config, Some(&dir));
        crate::readonly::serve(config, listen)?;
        stopped();
        return Ok(0);
    }
    let options = DaemonOptions {
        api: Some(listen),
        command: "sentinel serve",
        rotate_wait: crate::source::file::DEFAULT_ROTATE_WAIT,
    };
    daemon::run(config, options)?;
    stopped();
    Ok(0)
}

fn stopped() {
    let _ = writeln!(std::io::stdout(), "Sentinel stopped.");
}
