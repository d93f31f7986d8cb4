//! Request authentication shared by every listener: bearer tokens (the API's scopes, a
//! webhook's `token_env`) and HMAC-SHA256 request signatures (a webhook's
//! `hmac_secret_env`). Secrets are kept as digests or keys, compared in constant time and
//! never printed.

use axum::http::{HeaderMap, header};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;

/// The header carrying a signed request's unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "x-sentinel-timestamp";
/// The header carrying `sha256=<hex HMAC(secret, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "x-sentinel-signature";
/// How far a signed request's timestamp may be from now (replay window), in seconds.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// A secret token, kept as its SHA-256 digest: compared in constant time and of fixed
/// length whatever is presented.
#[derive(Clone, Copy)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &[u8]) -> TokenDigest {
        TokenDigest(Sha256::digest(token).into())
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let got: [u8; 32] = Sha256::digest(presented).into();
        bool::from(got.ct_eq(&self.0))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// An HMAC-SHA256 key that signed requests are checked against.
#[derive(Clone)]
pub struct HmacKey(Hmac<Sha256>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

impl HmacKey {
    /// A key from `secret` (any length).
    pub fn new(secret: &[u8]) -> HmacKey {
        HmacKey(Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!()))
    }

    /// Checks the [`TIMESTAMP_HEADER`] (within [`SIGNATURE_TOLERANCE_SECS`] of `now`, unix
    /// seconds) and the [`SIGNATURE_HEADER`] over the raw `body` as received.
    ///
    /// # Errors
    ///
    /// 401 naming what is missing or wrong.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(ts_text) = text(TIMESTAMP_HEADER) else {
            return Err(ApiError::unauthorized(
                "missing X-Sentinel-Timestamp (unix seconds)",
                None,
            ));
        };
        let Ok(ts) = ts_text.trim().parse::<i64>() else {
            return Err(ApiError::unauthorized(
                "X-Sentinel-Timestamp is not a unix time in seconds",
                None,
            ));
        };
        if now.abs_diff(ts) > SIGNATURE_TOLERANCE_SECS as u64 {
            return Err(ApiError::unauthorized(
                format!(
                    "X-Sentinel-Timestamp is more than {SIGNATURE_TOLERANCE_SECS} s from now \
                     (check the sender's clock)"
                ),
                None,
            ));
        }
        let tag = text(SIGNATURE_HEADER)
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .and_then(|h| hex::decode(h).ok());
        let Some(tag) = tag else {
            return Err(ApiError::unauthorized(
                "missing or malformed X-Sentinel-Signature (sha256=<hex>)",
                None,
            ));
        };
        let mut mac = self.0.clone();
        mac.update(ts_text.trim().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&tag)
            .map_err(|_| ApiError::unauthorized("signature mismatch", None))
    }
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at unix time `timestamp` (seconds):
/// `sha256=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacKey::new(secret).0;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_and_compared() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "bearer  tok ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, "Basic tok".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        let d = TokenDigest::of(b"tok");
        assert!(d.matches(b"tok") && !d.matches(b"to") && !d.matches(b""));
        assert!(!format!("{d:?}").contains("tok"));
    }
}
