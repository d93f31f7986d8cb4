//! The LLM client: one structured-output call behind a trait, over two wire formats.
//!
//! A call ([`Llm::complete`]) sends a system prompt, a user prompt and a [`ToolSpec`] (a name,
//! a description and a JSON Schema) and returns the model's answer as a JSON value that has
//! every top-level key the schema `required`, with the token usage and its cost.
//!
//! - **Anthropic** (`POST {base_url}/v1/messages`): the tool is offered and forced with
//!   `tool_choice: {type: tool}`; the answer is the `tool_use` block's `input`.
//! - **OpenAI-compatible** (`POST {base_url}/v1/chat/completions`, also Ollama, vLLM,
//!   llama.cpp): `response_format: {type: json_schema, strict: true}`; the answer is
//!   `choices[0].message.content` parsed as JSON (or a tool call's `arguments`). A dummy bearer
//!   token is sent when no key is configured: local servers ignore it.
//!
//! **Failure handling.** Each request has a total timeout (body included) and a 5 s connect
//! timeout. 429, 529, other 5xx, 408, timeouts and transport errors are retried up to
//! `max_retries` times with exponential backoff and full jitter, never sooner than the
//! server's `Retry-After` (seconds or HTTP date; `retry-after-ms` too), which is capped at
//! 60 s. Other 4xx are final. An unusable 2xx answer (not JSON, no tool_use block, required
//! keys missing) is retried once. A circuit breaker shared by every clone of the client
//! opens after 5 consecutive failed calls (after their retries) and fails calls fast with
//! [`LlmError::CircuitOpen`] for 60 s; then one probe call is tried, without retries.
//!
//! **Secrets.** The API key is sent as a sensitive header only; it is not in `Debug` output,
//! errors or logs (an error body echoing it is scrubbed, and redacted like prompts are).
//! Prompts are never logged. Redacting and fencing what goes *into* a prompt is the
//! caller's job ([`crate::fix::redact`]).
//!
//! **Cost** is integer micro-USD from the usage the provider reports and the configured
//! prices ([`Pricing`]). Usage and cost cover every billed attempt of a call, including an
//! unusable answer that was retried; a call that ends in [`LlmError::BadResponse`] reports
//! what it spent there.

mod anthropic;
mod openai;
mod retry;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::LlmConfig;
pub use crate::config::LlmProvider;
use retry::{Breaker, Outcome, Ticket};
pub use retry::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_RETRY_AFTER_CAP,
};

/// The connect timeout of every request (the total timeout is configured).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response body read; a larger answer is a [`LlmError::BadResponse`].
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// The bearer token sent to OpenAI-compatible servers when no key is configured.
pub const NO_KEY_BEARER: &str = "sentinel-no-key";

/// How many times an unusable answer is retried (within `max_retries`).
const BAD_RESPONSE_RETRIES: u32 = 1;

/// The structured answer asked for: the model must produce JSON fitting `input_schema`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The tool / schema name (`[A-Za-z0-9_-]{1,64}` for OpenAI).
    pub name: String,
    /// What the tool is for; shown to the model.
    pub description: String,
    /// A JSON Schema object. Its top-level `required` keys are checked in every answer. For
    /// OpenAI's strict mode every property must be `required` and `additionalProperties`
    /// false.
    pub input_schema: Value,
}

/// One call.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// The system prompt.
    pub system: String,
    /// The user prompt (already redacted, with log text fenced).
    pub user: String,
    /// The answer's shape.
    pub tool: ToolSpec,
    /// The output-token limit.
    pub max_tokens: u64,
}

/// Tokens a call used. `input_tokens` excludes cached tokens (Anthropic's meaning; OpenAI's
/// `prompt_tokens` is split into `input_tokens` + `cache_read_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed at the input price.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmResponse {
    /// The structured answer: a JSON object with every `required` key of the schema.
    pub output: Value,
    /// Tokens used by every billed attempt of the call.
    pub usage: Usage,
    /// What `usage` cost, in micro-USD (rounded up).
    pub cost_micro_usd: u64,
    /// The model that answered (as reported; the configured one otherwise).
    pub model: String,
    /// The provider's request id (`request-id` / `x-request-id` header, or the body's `id`).
    pub request_id: Option<String>,
    /// HTTP requests the call made (1 without retries).
    pub attempts: u32,
}

/// Prices in micro-USD per million tokens (3.00 USD per MTok is `3_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Tokens read from the prompt cache.
    pub cache_read: u64,
    /// Tokens written to the prompt cache.
    pub cache_write: u64,
}

impl Pricing {
    /// Prices from USD per million tokens. Cache prices follow the provider: Anthropic bills
    /// cache writes at 1.25× and reads at 0.1× the input price; OpenAI bills cached input at
    /// a model-dependent discount of 50–90 %, charged here at the dearest (0.5×) so spend is
    /// never under-counted. Negative or non-finite prices count as 0.
    pub fn from_usd_per_mtok(provider: LlmProvider, input: f64, output: f64) -> Pricing {
        let micro = |usd: f64| {
            if usd.is_finite() && usd > 0.0 {
                (usd * 1e6).round() as u64
            } else {
                0
            }
        };
        let input = micro(input);
        let (cache_read, cache_write) = match provider {
            LlmProvider::OpenAi => (input / 2, input),
            _ => (input / 10, input.saturating_mul(5) / 4),
        };
        Pricing {
            input,
            output: micro(output),
            cache_read,
            cache_write,
        }
    }

    /// What `usage` costs, in micro-USD, rounded up (integer arithmetic).
    pub fn cost_micro_usd(&self, usage: &Usage) -> u64 {
        let total = u128::from(usage.input_tokens) * u128::from(self.input)
            + u128::from(usage.output_tokens) * u128::from(self.output)
            + u128::from(usage.cache_read_tokens) * u128::from(self.cache_read)
            + u128::from(usage.cache_write_tokens) * u128::from(self.cache_write);
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// Why a call failed. Never contains the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The provider needs a key and the variable is unset or empty.
    #[error("no LLM API key: set the environment variable {var} (llm.api_key_env)")]
    NoApiKey {
        /// The variable.
        var: String,
    },
    /// The client could not be built (a bad base URL, TLS set-up).
    #[error("cannot set up the LLM client: {message}")]
    Setup {
        /// What went wrong.
        message: String,
    },
    /// The circuit breaker is open: recent calls failed, this one was not sent.
    #[error(
        "LLM calls are paused after repeated failures (circuit breaker open; next try in {}s)",
        retry_in.as_secs()
    )]
    CircuitOpen {
        /// How long the breaker stays open (zero while a probe call is out).
        retry_in: Duration,
    },
    /// Every attempt timed out.
    #[error("the LLM did not answer within {}s ({attempts} attempt(s))", timeout.as_secs_f64())]
    Timeout {
        /// Requests made.
        attempts: u32,
        /// The limit of each.
        timeout: Duration,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the LLM at {endpoint} ({attempts} attempt(s)): {message}")]
    Connect {
        /// The URL called.
        endpoint: String,
        /// Requests made.
        attempts: u32,
        /// The transport error.
        message: String,
    },
    /// The server answered with an error status.
    #[error("the LLM answered HTTP {status} ({attempts} attempt(s)): {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's error message (scrubbed, redacted, shortened).
        message: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// Requests made.
        attempts: u32,
    },
    /// The server answered 2xx with something unusable.
    #[error("the LLM's answer is unusable ({attempts} attempt(s)): {what}")]
    BadResponse {
        /// What was wrong with the last answer.
        what: String,
        /// Requests made.
        attempts: u32,
        /// Tokens the unusable answers used.
        usage: Usage,
        /// What they cost, in micro-USD (charge it to the budget).
        spent_micro_usd: u64,
    },
}

impl LlmError {
    /// True when trying the call again later may succeed (rate limits, overload, server
    /// errors, timeouts, transport errors, an open breaker); false for configuration and
    /// request errors.
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::CircuitOpen { .. }
            | LlmError::Timeout { .. }
            | LlmError::Connect { .. }
            | LlmError::BadResponse { .. } => true,
            LlmError::Status { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }

    /// Micro-USD spent by the failed call (only unusable answers are billed).
    pub fn spent_micro_usd(&self) -> u64 {
        match self {
            LlmError::BadResponse {
                spent_micro_usd, ..
            } => *spent_micro_usd,
            _ => 0,
        }
    }
}

/// An LLM that answers structured requests. [`LlmClient`] is the HTTP implementation; tests
/// of the fixer can script their own.
pub trait Llm: Send + Sync {
    /// Sends `req` and returns the structured answer.
    ///
    /// # Errors
    ///
    /// [`LlmError`]: see its variants.
    fn complete(
        &self,
        req: &LlmRequest,
    ) -> impl Future<Output = Result<LlmResponse, LlmError>> + Send;
}

/// The HTTP LLM client. Cheap to clone; clones share the connection pool and the circuit
/// breaker.
#[derive(Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

struct Inner {
    provider: LlmProvider,
    endpoint: reqwest::Url,
    model: String,
    api_key: Option<String>,
    headers: HeaderMap,
    http: reqwest::Client,
    timeout: Duration,
    max_retries: u32,
    pricing: Pricing,
    backoff_base: Duration,
    backoff_max: Duration,
    retry_after_cap: Duration,
    max_tokens_key: &'static str,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("LlmClient")
            .field("provider", &i.provider)
            .field("endpoint", &i.endpoint.as_str())
            .field("model", &i.model)
            .field("api_key", &i.api_key.as_ref().map(|_| "<set>"))
            .field("timeout", &i.timeout)
            .field("max_retries", &i.max_retries)
            .field("pricing", &i.pricing)
            .finish_non_exhaustive()
    }
}

/// Builds an [`LlmClient`]; see [`LlmClient::builder`].
#[derive(Clone)]
pub struct LlmClientBuilder {
    provider: LlmProvider,
    base_url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    max_retries: u32,
    pricing: Pricing,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    retry_after_cap: Duration,
    system_proxy: bool,
}

impl std::fmt::Debug for LlmClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClientBuilder")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl LlmClientBuilder {
    /// The API key (default: none, which only OpenAI-compatible local servers accept).
    pub fn api_key(&mut self, key: impl Into<String>) -> &mut Self {
        self.api_key = Some(key.into());
        self
    }

    /// The limit of one HTTP request, body included (default 120 s).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Retries after a call's first attempt failed transiently (default 3).
    pub fn max_retries(&mut self, retries: u32) -> &mut Self {
        self.max_retries = retries;
        self
    }

    /// The prices (default: 3 / 15 USD per million input / output tokens).
    pub fn pricing(&mut self, pricing: Pricing) -> &mut Self {
        self.pricing = pricing;
        self
    }

    /// The circuit breaker: open after `threshold` consecutive failed calls (at least 1),
    /// for `cooldown` (default 5 calls, 60 s).
    pub fn circuit_breaker(&mut self, threshold: u32, cooldown: Duration) -> &mut Self {
        self.breaker_threshold = threshold.max(1);
        self.breaker_cooldown = cooldown;
        self
    }

    /// The backoff: the first retry waits up to `base`, each later one up to twice as long,
    /// never more than `max` (default 500 ms, 30 s).
    pub fn backoff(&mut self, base: Duration, max: Duration) -> &mut Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// The longest `Retry-After` honoured (default 60 s).
    pub fn retry_after_cap(&mut self, cap: Duration) -> &mut Self {
        self.retry_after_cap = cap;
        self
    }

    /// Use the proxy named by `HTTPS_PROXY` and friends (default true).
    pub fn system_proxy(&mut self, yes: bool) -> &mut Self {
        self.system_proxy = yes;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`LlmError::Setup`] for a base URL that is not an http(s) URL (or carries
    /// credentials), or when the HTTP client cannot be built.
    pub fn build(&self) -> Result<LlmClient, LlmError> {
        let setup = |message: String| LlmError::Setup { message };
        let path = match self.provider {
            LlmProvider::OpenAi => openai::PATH,
            _ => anthropic::PATH,
        };
        let base = self.base_url.trim_end_matches('/');
        // For messages: a URL with credentials in it must not be echoed.
        let shown = crate::fix::redact::redact(base).0;
        let endpoint = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|e| setup(format!("llm.base_url {shown:?} is not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https")
            || endpoint.host_str().is_none()
            || !endpoint.username().is_empty()
            || endpoint.password().is_some()
        {
            return Err(setup(format!(
                "llm.base_url {shown:?} must be http(s)://host[:port][/path] without credentials"
            )));
        }
        let key_header = |value: &str| {
            let mut v = HeaderValue::from_str(value)
                .map_err(|_| setup("the API key is not a valid header value".into()))?;
            v.set_sensitive(true);
            Ok::<_, LlmError>(v)
        };
        let mut headers = HeaderMap::new();
        match self.provider {
            LlmProvider::OpenAi => {
                let key = self.api_key.as_deref().unwrap_or(NO_KEY_BEARER);
                headers.insert(
                    reqwest::header::AUTHORIZATION,
                    key_header(&format!("Bearer {key}"))?,
                );
            }
            _ => {
                if let Some(key) = &self.api_key {
                    headers.insert(HeaderName::from_static("x-api-key"), key_header(key)?);
                }
                headers.insert(
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(anthropic::VERSION),
                );
            }
        }
        let mut http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")));
        if !self.system_proxy {
            http = http.no_proxy();
        }
        let http = http
            .build()
            .map_err(|e| setup(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        let max_tokens_key = if self.provider == LlmProvider::OpenAi
            && endpoint.host_str() == Some("api.openai.com")
        {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        Ok(LlmClient {
            inner: Arc::new(Inner {
                provider: self.provider,
                endpoint,
                model: self.model.clone(),
                api_key: self.api_key.clone(),
                headers,
                http,
                timeout: self.timeout,
                max_retries: self.max_retries,
                pricing: self.pricing,
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
                retry_after_cap: self.retry_after_cap,
                max_tokens_key,
                breaker: Mutex::new(Breaker::new(self.breaker_threshold, self.breaker_cooldown)),
            }),
        })
    }
}

impl LlmClient {
    /// A builder with the defaults of the `llm` config section for `provider`, talking to
    /// `base_url` (without `/v1`) and asking for `model`.
    pub fn builder(
        provider: LlmProvider,
        base_url: impl Into<String>,
        model: impl Into<String>,
    ) -> LlmClientBuilder {
        let d = LlmConfig::default();
        LlmClientBuilder {
            provider,
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(d.timeout_seconds),
            max_retries: d.max_retries,
            pricing: Pricing::from_usd_per_mtok(
                provider,
                d.price_input_per_mtok,
                d.price_output_per_mtok,
            ),
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            system_proxy: true,
        }
    }

    /// The client the `llm` section describes. The key is read with `env` from the variable
    /// `llm.api_key_env` names (pass `|v| std::env::var(v).ok()`); an empty value counts as
    /// unset.
    ///
    /// # Errors
    ///
    /// [`LlmError::NoApiKey`] for Anthropic without a key (OpenAI-compatible servers get a
    /// dummy bearer token); [`LlmError::Setup`] as [`LlmClientBuilder::build`].
    pub fn from_config(
        cfg: &LlmConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LlmClient, LlmError> {
        let key = env(&cfg.api_key_env).filter(|k| !k.trim().is_empty());
        if key.is_none() && cfg.provider == LlmProvider::Anthropic {
            return Err(LlmError::NoApiKey {
                var: cfg.api_key_env.clone(),
            });
        }
        let mut b = LlmClient::builder(cfg.provider, &cfg.base_url, &cfg.model);
        b.timeout(Duration::from_secs(cfg.timeout_seconds))
            .max_retries(cfg.max_retries)
            .pricing(Pricing::from_usd_per_mtok(
                cfg.provider,
                cfg.price_input_per_mtok,
                cfg.price_output_per_mtok,
            ));
        if let Some(key) = key {
            b.api_key(key.trim());
        }
        b.build()
    }

    /// The provider spoken.
    pub fn provider(&self) -> LlmProvider {
        self.inner.provider
    }

    /// The model asked for.
    pub fn model(&self) -> &str {
        &self.inner.model
    }

    /// The prices costs are computed with.
    pub fn pricing(&self) -> Pricing {
        self.inner.pricing
    }

    async fn call(&self, req: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let inner = &*self.inner;
        let ticket = lock(&inner.breaker)
            .try_acquire(Instant::now())
            .map_err(|retry_in| LlmError::CircuitOpen { retry_in })?;
        let mut permit = Permit {
            breaker: &inner.breaker,
            ticket: Some(ticket),
        };
        let max_attempts = match ticket {
            Ticket::Probe => 1,
            Ticket::Normal => inner.max_retries.saturating_add(1),
        };
        let body = match inner.provider {
            LlmProvider::OpenAi => openai::body(&inner.model, req, inner.max_tokens_key),
            _ => anthropic::body(&inner.model, req),
        };
        let mut usage = Usage::default();
        let mut bad_answers = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(&body, req).await {
                Ok(mut ok) => {
                    usage.add(&ok.usage);
                    ok.usage = usage;
                    ok.cost_micro_usd = inner.pricing.cost_micro_usd(&usage);
                    ok.attempts = attempt;
                    permit.finish(Outcome::Success);
                    return Ok(ok);
                }
                Err(f) => f,
            };
            if let Failure::Bad { usage: u, .. } = &failure {
                usage.add(u);
                bad_answers += 1;
            }
            let retry = failure.is_retryable()
                && attempt < max_attempts
                && (!matches!(failure, Failure::Bad { .. }) || bad_answers <= BAD_RESPONSE_RETRIES);
            if !retry {
                permit.finish(failure.outcome());
                return Err(self.final_error(failure, attempt, usage));
            }
            let wait = retry::backoff(
                attempt,
                inner.backoff_base,
                inner.backoff_max,
                failure.retry_after(),
                inner.retry_after_cap,
                super::random_u64(),
            );
            tracing::debug!(
                provider = %inner.provider,
                attempt,
                wait_ms = wait.as_millis() as u64,
                reason = failure.label(),
                "LLM call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP request.
    async fn attempt(&self, body: &Value, req: &LlmRequest) -> Result<LlmResponse, Failure> {
        let inner = &*self.inner;
        let sent = inner
            .http
            .post(inner.endpoint.clone())
            .headers(inner.headers.clone())
            .json(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Err(self.transport(e)),
        };
        let status = resp.status().as_u16();
        let request_id = ["request-id", "x-request-id"]
            .iter()
            .find_map(|h| resp.headers().get(*h)?.to_str().ok())
            .map(|s| clip(s, 128).to_string());
        let retry_after = retry_after(resp.headers());
        let limit = if (200..300).contains(&status) {
            MAX_RESPONSE_BYTES
        } else {
            64 << 10
        };
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > limit {
                        if (200..300).contains(&status) {
                            return Err(Failure::Bad {
                                what: format!("the answer is larger than {limit} bytes"),
                                usage: Usage::default(),
                            });
                        }
                        break;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.transport(e)),
            }
        }
        if !(200..300).contains(&status) {
            return Err(Failure::Status {
                status,
                message: self.scrub(&error_message(&bytes)),
                retry_after,
            });
        }
        let parsed = match inner.provider {
            LlmProvider::OpenAi => openai::parse(&bytes),
            _ => anthropic::parse(&bytes, &req.tool.name),
        }
        .map_err(|b| Failure::Bad {
            what: b.what,
            usage: b.usage,
        })?;
        if let Err(what) = check_required(&parsed.output, &req.tool.input_schema) {
            return Err(Failure::Bad {
                what: format!("{what}{}", parsed.stop_note),
                usage: parsed.usage,
            });
        }
        Ok(LlmResponse {
            output: parsed.output,
            usage: parsed.usage,
            cost_micro_usd: 0,
            model: parsed
                .model
                .map(|m| clip(&m, 128).to_string())
                .unwrap_or_else(|| inner.model.clone()),
            request_id: request_id.or(parsed.id.map(|i| clip(&i, 128).to_string())),
            attempts: 1,
        })
    }

    fn transport(&self, e: reqwest::Error) -> Failure {
        if e.is_timeout() {
            Failure::Timeout
        } else {
            Failure::Transport(self.scrub(&error_chain(&e.without_url())))
        }
    }

    /// Removes the key (should a server or library echo it) and redacts the rest.
    fn scrub(&self, text: &str) -> String {
        let text = match &self.inner.api_key {
            Some(k) if !k.is_empty() => text.replace(k.as_str(), "[REDACTED:api_key]"),
            _ => text.to_string(),
        };
        let (text, _) = crate::fix::redact::redact(&text);
        clip(&text, 300).to_string()
    }

    fn final_error(&self, failure: Failure, attempts: u32, usage: Usage) -> LlmError {
        let inner = &*self.inner;
        match failure {
            Failure::Timeout => LlmError::Timeout {
                attempts,
                timeout: inner.timeout,
            },
            Failure::Transport(message) => LlmError::Connect {
                endpoint: inner.endpoint.to_string(),
                attempts,
                message,
            },
            Failure::Status {
                status,
                message,
                retry_after,
            } => LlmError::Status {
                status,
                message,
                retry_after,
                attempts,
            },
            Failure::Bad { what, .. } => LlmError::BadResponse {
                what,
                attempts,
                usage,
                spent_micro_usd: inner.pricing.cost_micro_usd(&usage),
            },
        }
    }
}

impl Llm for LlmClient {
    fn complete(
        &self,
        req: &LlmRequest,
    ) -> impl Future<Output = Result<LlmResponse, LlmError>> + Send {
        self.call(req)
    }
}

/// The breaker ticket of a call in flight; a call dropped before it finished (cancelled)
/// records a neutral outcome, so a cancelled probe does not leave the breaker half-open
/// forever.
struct Permit<'a> {
    breaker: &'a Mutex<Breaker>,
    ticket: Option<Ticket>,
}

impl Permit<'_> {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            lock(self.breaker).record(ticket, outcome, Instant::now());
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.finish(Outcome::Neutral);
    }
}

fn lock(m: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    // The breaker's state is valid after any panic (plain assignments), so poisoning is moot.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How one attempt failed.
#[derive(Debug)]
enum Failure {
    Timeout,
    Transport(String),
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    Bad {
        what: String,
        usage: Usage,
    },
}

impl Failure {
    fn is_retryable(&self) -> bool {
        match self {
            Failure::Timeout | Failure::Transport(_) | Failure::Bad { .. } => true,
            Failure::Status { status, .. } => is_retryable_status(*status),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            // The request itself was refused (malformed, too large, unprocessable): it says
            // nothing about the endpoint's health.
            Failure::Status {
                status: 400 | 413 | 422,
                ..
            } => Outcome::Neutral,
            _ => Outcome::Failure,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Transport(_) => "transport",
            Failure::Status { status: 429, .. } => "rate limited",
            Failure::Status { .. } => "server error",
            Failure::Bad { .. } => "unusable answer",
        }
    }
}

fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// What a wire adapter read from a 2xx body.
struct Parsed {
    output: Value,
    usage: Usage,
    model: Option<String>,
    id: Option<String>,
    /// ` (stop_reason …)`, appended to validation errors.
    stop_note: String,
}

/// A 2xx body that could not be used, with the usage it reported (it may be billed).
struct BadBody {
    what: String,
    usage: Usage,
}

/// The answer must be an object with every top-level key the schema requires.
fn check_required(output: &Value, schema: &Value) -> Result<(), String> {
    let Some(obj) = output.as_object() else {
        return Err(format!(
            "the answer is {}, not a JSON object",
            json_kind(output)
        ));
    };
    let missing: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|k| !obj.contains_key(*k))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the answer lacks the required key(s) {}",
            missing
                .iter()
                .map(|k| format!("{:?}", clip(k, 64)))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `retry-after-ms` (OpenAI) or `retry-after`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    retry::parse_retry_after(value, jiff::Timestamp::now())
}

/// The provider's error message: `error.type: error.message` from either wire format's
/// error body, else the start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let err = v.get("error").unwrap_or(&v);
        let kind = err.get("type").and_then(Value::as_str);
        let msg = err.get("message").and_then(Value::as_str);
        match (kind, msg) {
            (Some(k), Some(m)) => return format!("{k}: {m}"),
            (None, Some(m)) => return m.to_string(),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(empty body)".into()
    } else {
        clip(&text, 200).to_string()
    }
}

/// An error and its sources, joined by `: ` (reqwest's own message is terse). No URL.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = next {
        let s = err.to_string();
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// At most `max` characters of `s`.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
