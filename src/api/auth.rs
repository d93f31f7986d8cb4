//! API access control: bearer tokens with `read` and `write` scopes, and a `Host` check
//! against DNS rebinding.
//!
//! - Tokens come from the environment variables `api.read_token_env` and
//!   `api.write_token_env` (never from the config file) and are kept as SHA-256 digests,
//!   compared in constant time; they are never logged.
//! - `GET /health` and `GET /status` are always open. With any token configured, other GETs
//!   need the read or the write token, and POSTs need the write token (a read token on a
//!   POST is 403; no write token configured: POSTs are refused, 403). Without tokens the API
//!   is open, and then it only binds a loopback address: a non-loopback `api.listen` without
//!   both tokens is a start-up error.
//! - Without tokens, a request whose `Host` is not a loopback name (`localhost`,
//!   `127.0.0.0/8`, `[::1]`), the listen address or one of `api.allowed_hosts` is refused
//!   (403): a web page cannot reach the open API through a rebound DNS name. With tokens the
//!   check applies only when `api.allowed_hosts` is set (a token already proves intent).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::ApiConfig;
use crate::http::ApiError;
use crate::http::auth::{TokenDigest, bearer_token};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The API's access rules.
#[derive(Clone)]
pub struct ApiAuth {
    read: Option<TokenDigest>,
    write: Option<TokenDigest>,
    hosts: Vec<String>,
    check_host: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("read_token", &self.read.is_some())
            .field("write_token", &self.write.is_some())
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl ApiAuth {
    /// No tokens, loopback only (tests and the default).
    pub fn open(listen: SocketAddr) -> ApiAuth {
        let mut hosts = Vec::new();
        if !listen.ip().is_unspecified() {
            hosts.push(host_of_ip(listen.ip()));
        }
        ApiAuth {
            read: None,
            write: None,
            hosts,
            check_host: true,
        }
    }

    /// The rules of `api`, reading tokens through `lookup` (the environment).
    ///
    /// # Errors
    ///
    /// A message naming the problem: a configured token variable that is unset or empty, or
    /// a non-loopback listen address without both tokens.
    pub fn from_config(
        api: &ApiConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ApiAuth, String> {
        let token = |key: &str, var: &Option<String>| -> Result<Option<TokenDigest>, String> {
            let Some(var) = var else { return Ok(None) };
            match lookup(var) {
                Some(t) if !t.trim().is_empty() => Ok(Some(TokenDigest::of(t.trim().as_bytes()))),
                _ => Err(format!(
                    "{key}: the environment variable {var} is not set (or empty)"
                )),
            }
        };
        let read = token("api.read_token_env", &api.read_token_env)?;
        let write = token("api.write_token_env", &api.write_token_env)?;
        if !api.listen.ip().is_loopback() && (read.is_none() || write.is_none()) {
            return Err(format!(
                "api.listen {} is not a loopback address: set api.read_token_env and \
                 api.write_token_env first (the API would be open to the network)",
                api.listen
            ));
        }
        let mut auth = ApiAuth::open(api.listen);
        auth.read = read;
        auth.write = write;
        auth.hosts.extend(
            api.allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase()),
        );
        auth.check_host = (read.is_none() && write.is_none()) || !api.allowed_hosts.is_empty();
        Ok(auth)
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            && ip.is_loopback()
        {
            return true;
        }
        self.hosts.contains(&name)
    }

    fn token_is(&self, presented: &[u8], want: Option<TokenDigest>) -> bool {
        want.is_some_and(|w| w.matches(presented))
    }
}

/// What a presented token (or a dashboard session made with it) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// GETs.
    Read,
    /// GETs and POSTs.
    Write,
}

impl ApiAuth {
    /// Whether any token is configured (else the API is open, loopback only).
    pub(crate) fn has_tokens(&self) -> bool {
        self.read.is_some() || self.write.is_some()
    }

    /// Whether a request with this `Host` passes the `Host` check.
    pub(crate) fn host_passes(&self, host: Option<&str>) -> bool {
        !self.check_host || host.is_some_and(|h| self.host_allowed(h))
    }

    /// The scope of a presented token; `None` when it is no configured token.
    pub(crate) fn scope_of(&self, presented: &[u8]) -> Option<Scope> {
        if self.token_is(presented, self.write) {
            Some(Scope::Write)
        } else if self.token_is(presented, self.read) {
            Some(Scope::Read)
        } else {
            None
        }
    }
}

fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `host[:port]` or `[v6][:port]` without the port.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The middleware.
pub(super) async fn guard(State(auth): State<Arc<ApiAuth>>, req: Request, next: Next) -> Response {
    if auth.check_host {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        match host {
            Some(h) if auth.host_allowed(h) => {}
            _ => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "host_not_allowed",
                    "the Host header is not an allowed name (see api.allowed_hosts)",
                )
                .into_response();
            }
        }
    }
    let path = req.uri().path();
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let open = read_only && (path == "/health" || path == "/status");
    if open || (auth.read.is_none() && auth.write.is_none()) {
        return next.run(req).await;
    }
    let presented = bearer_token(req.headers()).map(|t| t.as_bytes().to_vec());
    let Some(presented) = presented else {
        return ApiError::unauthorized("a bearer token is required", Some("Bearer"))
            .into_response();
    };
    let is_write = auth.token_is(&presented, auth.write);
    let is_read = is_write || auth.token_is(&presented, auth.read);
    if !is_read {
        return ApiError::unauthorized("the bearer token is not valid", Some("Bearer"))
            .into_response();
    }
    if !read_only && !is_write {
        let why = if auth.write.is_none() {
            "no write token is configured (api.write_token_env): POSTs are refused"
        } else {
            "this token has the read scope; POSTs need the write token"
        };
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(listen: &str, read: bool, write: bool) -> ApiConfig {
        ApiConfig {
            listen: listen.parse().unwrap(),
            read_token_env: read.then(|| "R".to_string()),
            write_token_env: write.then(|| "W".to_string()),
            ..ApiConfig::default()
        }
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "R" => Some("read-secret".into()),
            "W" => Some("write-secret".into()),
            _ => None,
        }
    }

    #[test]
    fn non_loopback_needs_both_tokens_and_unset_variables_are_errors() {
        assert!(ApiAuth::from_config(&api("0.0.0.0:8484", false, false), env).is_err());
        assert!(ApiAuth::from_config(&api("0.0.0.0:8484", true, false), env).is_err());
        assert!(ApiAuth::from_config(&api("0.0.0.0:8484", true, true), env).is_ok());
        assert!(ApiAuth::from_config(&api("127.0.0.1:8484", false, false), env).is_ok());
        let e = ApiAuth::from_config(&api("127.0.0.1:1", true, false), |_| None).unwrap_err();
        assert!(e.contains("api.read_token_env") && e.contains(" R "), "{e}");
        let dbg = format!(
            "{:?}",
            ApiAuth::from_config(&api("127.0.0.1:1", true, true), env)
        );
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn hosts() {
        let a = ApiAuth::open("127.0.0.1:8484".parse().unwrap());
        for ok in [
            "localhost:8484",
            "127.0.0.1:8484",
            "127.0.0.1",
            "[::1]:8484",
            "LOCALHOST",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example:8484", "10.0.0.1:8484", "localhost.evil.com"] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
    }
}
