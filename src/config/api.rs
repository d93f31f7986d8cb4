//! `api`: the daemon's HTTP API section.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, resolve_path};

/// `api`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiConfig {
    /// `api.listen`: the address the API binds (default `127.0.0.1:8484`; port 0 picks a
    /// free port, reported in the start-up summary and in `state_dir/daemon.json`).
    pub listen: std::net::SocketAddr,
    /// `api.register_roots`: the directories `POST /register` may register from (besides
    /// `pact.project_dir`); resolved against the config file's directory.
    pub register_roots: Vec<PathBuf>,
    /// `api.read_token_env`: the variable holding the bearer token for GETs (the write
    /// token works too). Unset: GETs are open.
    pub read_token_env: Option<String>,
    /// `api.write_token_env`: the variable holding the bearer token for POSTs. Unset: POSTs
    /// are open (the API then only binds a loopback address).
    pub write_token_env: Option<String>,
    /// `api.allowed_hosts`: `Host` header names accepted besides loopback names and the
    /// listen address (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT)),
            register_roots: Vec::new(),
            read_token_env: None,
            write_token_env: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// The API's default port (the reference's).
pub const DEFAULT_API_PORT: u16 = 8484;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApi {
    listen: Option<Spanned<String>>,
    register_roots: Vec<String>,
    read_token_env: Option<String>,
    write_token_env: Option<String>,
    allowed_hosts: Vec<String>,
}

/// Checks the `api` section.
pub(super) fn resolve_api(
    raw: &RawApi,
    base: &Path,
    home: Option<&Path>,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<ApiConfig, ConfigError> {
    let register_roots = raw
        .register_roots
        .iter()
        .map(|r| resolve_path(r, base, home))
        .collect();
    let listen = match &raw.listen {
        None => ApiConfig::default().listen,
        Some(l) => match l.value.parse::<std::net::SocketAddr>() {
            Ok(listen) => listen,
            Err(_) => {
                return Err(invalid(
                    "api.listen".into(),
                    Some(&l.referenced),
                    format!(
                        "{:?} is not an address: expected host:port, e.g. 127.0.0.1:8484",
                        l.value
                    ),
                ));
            }
        },
    };
    Ok(ApiConfig {
        listen,
        register_roots,
        read_token_env: raw.read_token_env.clone(),
        write_token_env: raw.write_token_env.clone(),
        allowed_hosts: raw.allowed_hosts.clone(),
    })
}
