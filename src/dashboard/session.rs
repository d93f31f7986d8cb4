//! Dashboard sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, mapped in
//! memory to the scope of the token that opened it and a CSRF token for its forms.
//!
//! Only the SHA-256 of a session id is kept, and ids and CSRF tokens are compared in
//! constant time. Sessions end after [`super::SESSION_TTL`], on logout, and when the
//! daemon restarts; at most [`MAX_SESSIONS`] live at once (the oldest go first).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::Scope;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "sentinel_session";
/// The `Set-Cookie` value that ends the session cookie.
pub(crate) const CLEAR_COOKIE: &str =
    "sentinel_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0";
/// Sessions kept at once.
pub(crate) const MAX_SESSIONS: usize = 4096;

/// Who is looking: the session's scope and CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) scope: Scope,
    pub(crate) csrf: String,
    /// Whether API tokens are configured (the session was opened with one: it can sign out).
    pub(crate) signed_in: bool,
    key: [u8; 32],
}

impl Viewer {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub(crate) fn csrf_is(&self, presented: &str) -> bool {
        !presented.is_empty() && bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }

    /// Whether this session may approve and reject fixes.
    pub(crate) fn can_write(&self) -> bool {
        self.scope == Scope::Write
    }
}

#[derive(Debug)]
struct Session {
    scope: Scope,
    csrf: String,
    opened: Instant,
}

/// The open sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes as hex.
fn random_hex() -> String {
    let mut b = [0u8; 32];
    // The OS's generator failing is not something a dashboard can recover from; a
    // predictable session id would be worse than an error page.
    getrandom::fill(&mut b).expect("the OS random number generator works");
    hex::encode(b)
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The session id the request's `Cookie` header carries.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

impl Sessions {
    /// Opens a session with `scope`; returns it and its `Set-Cookie` value.
    pub(crate) fn open(&self, scope: Scope) -> (Viewer, String) {
        let id = random_hex();
        let csrf = random_hex();
        let key = key_of(&id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.opened.elapsed() < super::SESSION_TTL);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.opened).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key,
            Session {
                scope,
                csrf: csrf.clone(),
                opened: Instant::now(),
            },
        );
        let cookie = format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            super::SESSION_TTL.as_secs()
        );
        (
            Viewer {
                scope,
                csrf,
                signed_in: false,
                key,
            },
            cookie,
        )
    }

    /// The session of a cookie's id, if it is open.
    pub(crate) fn get(&self, id: Option<&str>) -> Option<Viewer> {
        let key = key_of(id?);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get(&key)?;
        (s.opened.elapsed() < super::SESSION_TTL).then(|| Viewer {
            scope: s.scope,
            csrf: s.csrf.clone(),
            signed_in: false,
            key,
        })
    }

    /// Ends the session.
    pub(crate) fn close(&self, viewer: &Viewer) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&viewer.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_the_scope_it_was_opened_with_until_closed() {
        let s = Sessions::default();
        let (v, set_cookie) = s.open(Scope::Read);
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
        let id = set_cookie
            .strip_prefix("sentinel_session=")
            .and_then(|c| c.split(';').next())
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={id}").parse().unwrap(),
        );
        let got = s.get(cookie(&h)).expect("open");
        assert_eq!(got.scope, Scope::Read);
        assert!(got.csrf_is(&v.csrf));
        assert!(!got.csrf_is("") && !got.csrf_is("x"));
        assert!(!got.can_write());
        assert!(s.get(Some("not-a-session")).is_none());
        s.close(&got);
        assert!(s.get(Some(id)).is_none());
    }
}
