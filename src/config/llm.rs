//! `llm`: the fixer's model client.

use std::fmt;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, is_env_var_name};

/// The wire format the LLM client speaks (`llm.provider`, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LlmProvider {
    /// Anthropic's Messages API (`POST {base_url}/v1/messages`).
    #[default]
    Anthropic,
    /// OpenAI Chat Completions (`POST {base_url}/v1/chat/completions`), also spoken by local
    /// servers such as Ollama, vLLM and llama.cpp's `llama-server`.
    OpenAi,
}

impl LlmProvider {
    /// Parses a provider name, ignoring ASCII case.
    pub fn parse(name: &str) -> Option<LlmProvider> {
        match name.trim().to_ascii_lowercase().as_str() {
            "anthropic" => Some(LlmProvider::Anthropic),
            "openai" => Some(LlmProvider::OpenAi),
            _ => None,
        }
    }

    /// The name used in `sentinel.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::OpenAi => "openai",
        }
    }

    /// The default `llm.base_url`.
    pub fn default_base_url(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "https://api.anthropic.com",
            LlmProvider::OpenAi => "https://api.openai.com",
        }
    }

    /// The default `llm.api_key_env`.
    pub fn default_api_key_env(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "ANTHROPIC_API_KEY",
            LlmProvider::OpenAi => "OPENAI_API_KEY",
        }
    }
}

impl fmt::Display for LlmProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `llm`: the model the fixer (and triage) use, how it is reached and what it costs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LlmConfig {
    /// `provider`: `anthropic` or `openai` (any case).
    pub provider: LlmProvider,
    /// `model`.
    pub model: String,
    /// `max_tokens`: the output-token limit of one call (at least 1).
    pub max_tokens: u64,
    /// `budget_per_fix` in USD.
    pub budget_per_fix: f64,
    /// `base_url`, without a trailing `/` or `/v1` (default by provider: see
    /// [`LlmProvider::default_base_url`]).
    pub base_url: String,
    /// `api_key_env`: the environment variable holding the API key (default by provider: see
    /// [`LlmProvider::default_api_key_env`]). The key itself never appears in the file.
    pub api_key_env: String,
    /// `timeout_seconds`: the limit of one HTTP request, body included (default 120).
    pub timeout_seconds: u64,
    /// `max_retries`: retries after the first attempt of a call that failed transiently
    /// (default 3, so at most 4 requests per call).
    pub max_retries: u32,
    /// `price_input_per_mtok`: USD per million input tokens (default 3.0; 0 for local models).
    pub price_input_per_mtok: f64,
    /// `price_output_per_mtok`: USD per million output tokens (default 15.0).
    pub price_output_per_mtok: f64,
    /// `max_concurrent_fixes`: fix jobs running at once (default 2).
    pub max_concurrent_fixes: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        let provider = LlmProvider::Anthropic;
        LlmConfig {
            provider,
            model: "claude-sonnet-4-20250514".into(),
            max_tokens: 8192,
            budget_per_fix: 2.0,
            base_url: provider.default_base_url().into(),
            api_key_env: provider.default_api_key_env().into(),
            timeout_seconds: 120,
            max_retries: 3,
            price_input_per_mtok: 3.0,
            price_output_per_mtok: 15.0,
            max_concurrent_fixes: 2,
        }
    }
}

/// The largest accepted `llm.max_tokens`.
pub const MAX_LLM_MAX_TOKENS: u64 = 1_000_000;

/// The largest accepted `llm.timeout_seconds` (one hour).
pub const MAX_LLM_TIMEOUT_SECONDS: u64 = 3600;

/// The largest accepted `llm.max_retries`.
pub const MAX_LLM_RETRIES: u64 = 10;

/// The largest accepted `llm.max_concurrent_fixes`.
pub const MAX_CONCURRENT_FIXES: u64 = 64;

/// The largest accepted price per million tokens, in USD (a guard against typos).
pub const MAX_LLM_PRICE_PER_MTOK: f64 = 10_000.0;

/// Validates the `llm` section and fills in the per-provider defaults.
pub(super) fn resolve_llm(
    raw: &RawLlm,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<LlmConfig, ConfigError> {
    let d = LlmConfig::default();
    let err = |key: &str, loc: &serde_saphyr::Location, msg: String| {
        invalid(format!("llm.{key}"), Some(loc), msg)
    };
    let provider = match &raw.provider {
        None => d.provider,
        Some(p) => LlmProvider::parse(&p.value).ok_or_else(|| {
            err(
                "provider",
                &p.referenced,
                format!(
                    "{:?} is not a provider: expected anthropic or openai",
                    p.value
                ),
            )
        })?,
    };
    let model = match &raw.model {
        None => d.model,
        Some(m) if m.value.trim().is_empty() => {
            return Err(err("model", &m.referenced, "must not be empty".into()));
        }
        Some(m) => m.value.trim().to_string(),
    };
    let int = |key: &str,
               v: &Option<Spanned<u64>>,
               default: u64,
               range: std::ops::RangeInclusive<u64>| {
        match v {
            None => Ok(default),
            Some(v) if range.contains(&v.value) => Ok(v.value),
            Some(v) => Err(err(
                key,
                &v.referenced,
                format!(
                    "{} is out of range: expected {}..={}",
                    v.value,
                    range.start(),
                    range.end()
                ),
            )),
        }
    };
    let usd = |key: &str, v: &Option<Spanned<f64>>, default: f64, max: f64| match v {
        None => Ok(default),
        Some(v) if v.value.is_finite() && (0.0..=max).contains(&v.value) => Ok(v.value),
        Some(v) => Err(err(
            key,
            &v.referenced,
            format!(
                "{} is out of range: expected a number of USD in 0..={max}",
                v.value
            ),
        )),
    };
    let base_url = match &raw.base_url {
        None => provider.default_base_url().to_string(),
        Some(u) => normalise_base_url(&u.value).ok_or_else(|| {
            err(
                "base_url",
                &u.referenced,
                format!(
                    "{:?} is not a base URL: expected http(s)://host[:port][/path], e.g. {}",
                    u.value,
                    provider.default_base_url()
                ),
            )
        })?,
    };
    let api_key_env = match &raw.api_key_env {
        None => provider.default_api_key_env().to_string(),
        Some(v) if is_env_var_name(&v.value) => v.value.clone(),
        Some(v) => {
            return Err(err(
                "api_key_env",
                &v.referenced,
                format!(
                    "{:?} is not an environment variable name (name the variable, not the key)",
                    v.value
                ),
            ));
        }
    };
    Ok(LlmConfig {
        provider,
        model,
        max_tokens: int(
            "max_tokens",
            &raw.max_tokens,
            d.max_tokens,
            1..=MAX_LLM_MAX_TOKENS,
        )?,
        budget_per_fix: usd("budget_per_fix", &raw.budget_per_fix, d.budget_per_fix, 1e6)?,
        base_url,
        api_key_env,
        timeout_seconds: int(
            "timeout_seconds",
            &raw.timeout_seconds,
            d.timeout_seconds,
            1..=MAX_LLM_TIMEOUT_SECONDS,
        )?,
        max_retries: int(
            "max_retries",
            &raw.max_retries,
            u64::from(d.max_retries),
            0..=MAX_LLM_RETRIES,
        )? as u32,
        price_input_per_mtok: usd(
            "price_input_per_mtok",
            &raw.price_input_per_mtok,
            d.price_input_per_mtok,
            MAX_LLM_PRICE_PER_MTOK,
        )?,
        price_output_per_mtok: usd(
            "price_output_per_mtok",
            &raw.price_output_per_mtok,
            d.price_output_per_mtok,
            MAX_LLM_PRICE_PER_MTOK,
        )?,
        max_concurrent_fixes: int(
            "max_concurrent_fixes",
            &raw.max_concurrent_fixes,
            d.max_concurrent_fixes as u64,
            1..=MAX_CONCURRENT_FIXES,
        )? as usize,
    })
}

/// `http(s)://host[:port][/path]` without a trailing `/` or `/v1` (both wire formats append
/// `/v1/...`; OpenAI-style SDK settings such as `http://localhost:11434/v1` are accepted).
pub(super) fn normalise_base_url(raw: &str) -> Option<String> {
    let url = raw.trim();
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https://", rest)
    } else {
        ("http://", url.strip_prefix("http://")?)
    };
    let host = rest.split('/').next().unwrap_or("");
    // Credentials do not belong in the file (use `api_key_env`), nor do queries.
    if host.is_empty()
        || host.contains('@')
        || rest.contains(['?', '#'])
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let path = rest[host.len()..].trim_end_matches('/');
    let path = path
        .strip_suffix("/v1")
        .unwrap_or(path)
        .trim_end_matches('/');
    Some(format!("{scheme}{host}{path}"))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLlm {
    provider: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    max_tokens: Option<Spanned<u64>>,
    budget_per_fix: Option<Spanned<f64>>,
    base_url: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    timeout_seconds: Option<Spanned<u64>>,
    max_retries: Option<Spanned<u64>>,
    price_input_per_mtok: Option<Spanned<f64>>,
    price_output_per_mtok: Option<Spanned<f64>>,
    max_concurrent_fixes: Option<Spanned<u64>>,
}
