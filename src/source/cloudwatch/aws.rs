//! The CloudWatch Logs API as the source uses it: credentials found the way AWS tools find
//! them, `FilterLogEvents` signed with SigV4 (AWS's `aws-sigv4` crate) over reqwest, its
//! answers and errors sorted into what the poller does next, and the request-rate limiter
//! shared by every source of one account and region.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The `X-Amz-Target` of `FilterLogEvents`.
const FILTER_TARGET: &str = "Logs_20140328.FilterLogEvents";
/// The JSON protocol's content type.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// AWS credentials (never printed: `Debug` shows the key id only).
#[derive(Clone)]
pub struct Credentials {
    /// `aws_access_key_id`.
    pub access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    /// Where they came from (`environment`, `~/.aws/credentials [default]`), for messages.
    pub origin: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from their parts (tests).
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.map(Into::into),
            origin: "given".into(),
        }
    }
}

/// Finds credentials: a `profile` named in the config is read from the credentials file;
/// otherwise `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`), then
/// the credentials file's `AWS_PROFILE` section (else `default`). The file is
/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`. Read at every sweep, so that
/// rotated keys are picked up.
///
/// # Errors
///
/// A message saying what was looked for.
pub fn find_credentials(
    profile: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if profile.is_none()
        && let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(Credentials {
            access_key_id: id.trim().into(),
            secret_access_key: secret.trim().into(),
            session_token: var("AWS_SESSION_TOKEN").map(|t| t.trim().to_string()),
            origin: "environment".into(),
        });
    }
    let name = profile
        .map(str::to_string)
        .or_else(|| var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let file = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    let Some(file) = file else {
        return Err(
            "no AWS credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not \
                    set and there is no HOME to find ~/.aws/credentials in"
                .into(),
        );
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            let env_hint = if profile.is_none() {
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set and "
            } else {
                ""
            };
            return Err(format!(
                "no AWS credentials: {env_hint}{} cannot be read ({e})",
                file.display()
            ));
        }
    };
    let section = ini_section(&text, &name);
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: get("aws_session_token"),
            origin: format!("{} [{name}]", file.display()),
        }),
        _ => Err(format!(
            "no AWS credentials: {} has no profile [{name}] with aws_access_key_id and \
             aws_secret_access_key",
            file.display()
        )),
    }
}

/// The `key = value` lines of `[name]` in an INI text.
fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = h.trim() == name;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The region of a source: its `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub fn region_of(configured: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    Some(configured.trim().to_string())
        .filter(|r| !r.is_empty())
        .or_else(|| env("AWS_REGION").filter(|r| !r.trim().is_empty()))
        .or_else(|| env("AWS_DEFAULT_REGION").filter(|r| !r.trim().is_empty()))
}

/// The endpoint of a source: its `endpoint`, else the region's public one.
pub fn endpoint_of(configured: Option<&str>, region: &str) -> String {
    configured.map_or_else(
        || format!("https://logs.{region}.amazonaws.com"),
        |e| e.trim_end_matches('/').to_string(),
    )
}

/// One `FilterLogEvents` request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterRequest<'a> {
    /// The group.
    pub log_group_name: &'a str,
    /// Milliseconds since the epoch; events before are not returned.
    pub start_time: i64,
    /// Always true: the answer is sorted by timestamp across streams.
    pub interleaved: bool,
    /// The page to get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<&'a str>,
    /// CloudWatch's filter syntax.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_pattern: Option<&'a str>,
    /// Only streams whose name starts with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_stream_name_prefix: Option<&'a str>,
    /// Events per page at most (the service's default: as many as fit in 1 MB, ≤ 10 000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One event of a page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilteredEvent {
    /// The stream it was put into.
    #[serde(default)]
    pub log_stream_name: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The message.
    #[serde(default)]
    pub message: String,
    /// The event's id (unique within its group).
    #[serde(default)]
    pub event_id: String,
}

/// One page of `FilterLogEvents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterPage {
    /// The events, sorted by timestamp.
    #[serde(default)]
    pub events: Vec<FilteredEvent>,
    /// More pages follow (a page may be empty and still carry one).
    #[serde(default)]
    pub next_token: Option<String>,
}

/// How a request failed, sorted by what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// `ThrottlingException` and the like, or HTTP 429: back off and retry.
    Throttled(String),
    /// HTTP 5xx or a network failure: back off and retry.
    Transient(String),
    /// Access denied, a missing group, bad or missing credentials, a bad parameter: the
    /// source is failing until an operator acts; retried slowly.
    Denied(String),
}

impl ApiError {
    /// The `outcome` label of `sentinel_cloudwatch_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::Throttled(_) => "throttled",
            ApiError::Transient(_) => "error",
            ApiError::Denied(_) => "denied",
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ApiError::Throttled(m) | ApiError::Transient(m) | ApiError::Denied(m) => m,
        }
    }
}

/// Sorts an error answer: HTTP status, the `x-amzn-ErrorType` header, the JSON body.
pub fn classify(status: u16, error_type: Option<&str>, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Body {
        #[serde(rename = "__type", default)]
        kind: Option<String>,
        #[serde(default, alias = "Message")]
        message: Option<String>,
    }
    let parsed: Option<Body> = serde_json::from_slice(body).ok();
    let kind = error_type
        .map(str::to_string)
        .or_else(|| parsed.as_ref().and_then(|b| b.kind.clone()))
        .unwrap_or_default();
    // `com.amazonaws.logs#ThrottlingException`, `ThrottlingException:http://...`.
    let kind = kind
        .rsplit('#')
        .next()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let message = parsed.and_then(|b| b.message).unwrap_or_default();
    let text = match (kind.is_empty(), message.is_empty()) {
        (false, false) => format!("{kind}: {message}"),
        (false, true) => kind.clone(),
        (true, false) => format!("HTTP {status}: {message}"),
        (true, true) => format!("HTTP {status}"),
    };
    match kind.as_str() {
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "LimitExceededException" => return ApiError::Throttled(text),
        "ServiceUnavailableException" | "InternalFailure" | "ServiceUnavailable" => {
            return ApiError::Transient(text);
        }
        _ => {}
    }
    if status == 429 {
        ApiError::Throttled(text)
    } else if status >= 500 {
        ApiError::Transient(text)
    } else {
        let hint = match kind.as_str() {
            "AccessDeniedException" | "AccessDenied" => {
                " (the credentials lack logs:FilterLogEvents on this log group)"
            }
            "ResourceNotFoundException" => " (no such log group in this region and account)",
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch" => " (the credentials are not valid)",
            "ExpiredTokenException" | "ExpiredToken" => " (the session token expired)",
            _ => "",
        };
        ApiError::Denied(format!("{text}{hint}"))
    }
}

/// A CloudWatch Logs endpoint with its region: signs and sends requests.
#[derive(Debug, Clone)]
pub struct LogsClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
}

impl LogsClient {
    /// A client of `endpoint` (`https://logs.<region>.amazonaws.com` or an override),
    /// signing for `region`.
    pub fn new(http: reqwest::Client, endpoint: String, region: String) -> LogsClient {
        LogsClient {
            http,
            endpoint,
            region,
        }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One page of `FilterLogEvents`.
    ///
    /// # Errors
    ///
    /// [`ApiError`], sorted by what to do next.
    pub async fn filter(
        &self,
        creds: &Credentials,
        req: &FilterRequest<'_>,
    ) -> Result<FilterPage, ApiError> {
        let body = serde_json::to_vec(req)
            .map_err(|e| ApiError::Denied(format!("cannot encode the request: {e}")))?;
        let url = format!("{}/", self.endpoint);
        let headers = sign(
            creds,
            &self.region,
            &url,
            FILTER_TARGET,
            &body,
            SystemTime::now(),
        )
        .map_err(ApiError::Denied)?;
        let mut rb = self
            .http
            .post(&url)
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", FILTER_TARGET);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let resp = rb.body(body).send().await.map_err(|e| {
            ApiError::Transient(format!("{} unreachable: {}", self.endpoint, describe(&e)))
        })?;
        let status = resp.status().as_u16();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| {
            ApiError::Transient(format!("reading the answer failed: {}", describe(&e)))
        })?;
        if !(200..300).contains(&status) {
            return Err(classify(status, error_type.as_deref(), &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Transient(format!("an answer that is not a page: {e}")))
    }
}

/// What went wrong, short: the kind and the innermost cause (the URL is said by the caller).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut last = None;
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        last = Some(x.to_string());
        src = x.source();
    }
    match last {
        Some(l) => format!("{kind}: {l}"),
        None => kind.to_string(),
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) of a JSON
/// POST to `url` for the `logs` service.
///
/// # Errors
///
/// A message when the request cannot be signed (a malformed URL).
pub fn sign(
    creds: &Credentials,
    region: &str,
    url: &str,
    target: &str,
    body: &[u8],
    at: SystemTime,
) -> Result<Vec<(&'static str, String)>, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.clone(),
        creds.session_token.clone(),
        None,
        "sentinel",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("logs")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", target)];
    let signable =
        SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| format!("cannot sign a request to {url}: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("cannot sign a request to {url}: {e}"))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

/// Spaces requests: at most `rate` per second, never two closer than `1 / rate`, across
/// every source that shares it (one per account key, region and endpoint).
#[derive(Debug)]
pub struct RateLimiter {
    state: tokio::sync::Mutex<tokio::time::Instant>,
    /// The spacing in nanoseconds (the largest any sharer asked for).
    spacing_ns: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    /// A limiter of `rate` requests per second.
    pub fn new(rate: f64) -> RateLimiter {
        RateLimiter {
            state: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            spacing_ns: std::sync::atomic::AtomicU64::new(spacing_ns(rate)),
        }
    }

    /// Lowers the rate to `rate` if that is lower.
    pub fn at_most(&self, rate: f64) {
        self.spacing_ns
            .fetch_max(spacing_ns(rate), std::sync::atomic::Ordering::Relaxed);
    }

    /// The spacing between two requests.
    pub fn spacing(&self) -> Duration {
        Duration::from_nanos(self.spacing_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Waits for the next free slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.state.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.spacing();
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

fn spacing_ns(rate: f64) -> u64 {
    (1e9 / rate.max(0.001)).ceil() as u64
}

/// The limiter shared by every source of `key` (account key, region, endpoint), created at
/// `rate`, or lowered to it.
pub fn shared_limiter(key: &str, rate: f64) -> Arc<RateLimiter> {
    static ALL: Mutex<Option<HashMap<String, Arc<RateLimiter>>>> = Mutex::new(None);
    let mut all = ALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = all.get_or_insert_with(HashMap::new);
    let l = map
        .entry(key.to_string())
        .or_insert_with(|| Arc::new(RateLimiter::new(rate)))
        .clone();
    l.at_most(rate);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn credentials_come_from_the_environment_then_the_profile_file() {
        let c = find_credentials(
            None,
            env_of(&[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.origin, "environment");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = D\naws_secret_access_key = ds\n\n\
             [prod]\naws_access_key_id=P\naws_secret_access_key=prod-s3cret\naws_session_token = t\n",
        )
        .unwrap();
        let path: &'static str = Box::leak(file.display().to_string().into_boxed_str());
        let env: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
            ("AWS_SHARED_CREDENTIALS_FILE", path),
            ("AWS_PROFILE", "prod"),
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "envs"),
        ]));
        // A profile named in the config wins over the variables.
        let c = find_credentials(Some("default"), env_of(env)).unwrap();
        assert_eq!(c.access_key_id, "D");
        // Without keys in the environment, AWS_PROFILE picks the section.
        let c = find_credentials(None, env_of(&env[..2])).unwrap();
        assert_eq!(c.access_key_id, "P");
        assert_eq!(c.session_token.as_deref(), Some("t"));
        // The secret never shows (the temporary path in the origin may hold any letters).
        assert!(format!("{c:?}").contains("P") && !format!("{c:?}").contains("s3cret"));
        let e = find_credentials(Some("nope"), env_of(env)).unwrap_err();
        assert!(e.contains("[nope]"), "{e}");
    }

    #[test]
    fn errors_are_sorted_by_what_to_do_next() {
        let t = |s, h: Option<&str>, b: &str| classify(s, h, b.as_bytes());
        assert!(matches!(
            t(400, None, r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
            ApiError::Throttled(m) if m == "ThrottlingException: Rate exceeded"
        ));
        assert!(matches!(
            t(400, Some("ThrottlingException:http://internal"), "{}"),
            ApiError::Throttled(_)
        ));
        assert!(matches!(t(503, None, ""), ApiError::Transient(_)));
        let denied = t(
            400,
            None,
            r#"{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"no"}"#,
        );
        assert!(
            matches!(&denied, ApiError::Denied(m) if m.starts_with("AccessDeniedException: no")),
            "{denied:?}"
        );
        assert!(matches!(
            t(400, None, r#"{"__type":"ResourceNotFoundException"}"#),
            ApiError::Denied(m) if m.contains("no such log group")
        ));
    }

    #[test]
    fn requests_are_signed_for_the_logs_service() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("tok"));
        let h = sign(
            &creds,
            "eu-west-1",
            "https://logs.eu-west-1.amazonaws.com/",
            FILTER_TARGET,
            b"{}",
            at,
        )
        .unwrap();
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/logs/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;"),
            "{auth}"
        );
        assert_eq!(get("x-amz-date").unwrap(), "20231114T221320Z");
        assert_eq!(get("x-amz-security-token").unwrap(), "tok");
        // Deterministic: the same request at the same time signs the same.
        let again = sign(
            &creds,
            "eu-west-1",
            "https://logs.eu-west-1.amazonaws.com/",
            FILTER_TARGET,
            b"{}",
            at,
        )
        .unwrap();
        assert_eq!(h, again);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_requests() {
        let l = RateLimiter::new(4.0);
        let t0 = tokio::time::Instant::now();
        for _ in 0..9 {
            l.acquire().await;
        }
        // The first goes at once, the next eight 250 ms apart.
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        l.at_most(10.0);
        assert_eq!(l.spacing(), Duration::from_millis(250), "never raised");
        l.at_most(2.0);
        assert_eq!(l.spacing(), Duration::from_millis(500));
    }
}
