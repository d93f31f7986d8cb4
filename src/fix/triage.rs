//! LLM triage (SPEC §5.3): which registered component most likely produced an error text
//! that carries no PACT key. One structured call (`TriageResult`: component id, confidence,
//! reasoning) over the registered components' functions and types; the text is redacted and
//! fenced as untrusted data. Accepted only when the id is registered and the confidence is
//! at least [`MIN_CONFIDENCE`].

use serde_json::{Value, json};

use super::llm::{Llm, LlmError, LlmRequest, LlmResponse, ToolSpec};
use super::redact::{UNTRUSTED_DATA_NOTICE, fence_untrusted, redact};
use crate::attribute::Manifest;

/// The lowest confidence accepted (the reference's 0.3).
pub const MIN_CONFIDENCE: f64 = 0.3;

/// The output-token limit of a triage call (the reference's 1024).
pub const MAX_TOKENS: u64 = 1024;

/// The request for `text` over `manifest`'s components.
pub fn request(text: &str, manifest: &Manifest) -> LlmRequest {
    let mut components = String::new();
    for (id, entry) in &manifest.components {
        let contract = std::fs::read(&entry.contract_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let names = |k: &str| -> Vec<String> {
            contract
                .as_ref()
                .and_then(|c| c.get(k)?.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|f| f.get("name")?.as_str().map(String::from))
                .collect()
        };
        match &contract {
            Some(_) => components.push_str(&format!(
                "- {id}: functions=[{}], types=[{}]\n",
                names("functions").join(", "),
                names("types").join(", ")
            )),
            None => components.push_str(&format!("- {id}: (contract unreadable)\n")),
        }
    }
    let (text, _) = redact(text);
    let user = format!(
        "Error signal from production:\n{}\nKnown components:\n{components}\nWhich component \
         most likely produced this error?",
        fence_untrusted("production log line", &text)
    );
    LlmRequest {
        system: format!(
            "You are starting fresh on this triage with no prior context. Analyze the \
             production error signal and determine which component most likely produced it. \
             Respond with the component_id or \"unknown\" if uncertain.\n\n{UNTRUSTED_DATA_NOTICE}"
        ),
        user,
        tool: ToolSpec {
            name: "TriageResult".into(),
            description: "Result of LLM-based triage.".into(),
            input_schema: json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["component_id", "confidence", "reasoning"],
                "properties": {
                    "component_id": {"type": "string", "description": "Component ID or 'unknown'"},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "reasoning": {"type": "string"}
                }
            }),
        },
        max_tokens: MAX_TOKENS,
    }
}

/// Reads the answer: `Some((component, confidence, reasoning))` when accepted.
pub fn accept(resp: &LlmResponse, manifest: &Manifest) -> Option<(String, f64, String)> {
    let o = &resp.output;
    let id = o.get("component_id")?.as_str()?.trim();
    let confidence = o.get("confidence")?.as_f64()?;
    let reasoning = o.get("reasoning").and_then(Value::as_str).unwrap_or("");
    (id != "unknown" && confidence >= MIN_CONFIDENCE && manifest.get(id).is_some())
        .then(|| (id.to_string(), confidence, reasoning.to_string()))
}

/// Triage `text` with `llm`.
///
/// # Errors
///
/// [`LlmError`] when the call failed.
pub async fn triage<L: Llm>(
    llm: &L,
    text: &str,
    manifest: &Manifest,
) -> Result<(Option<(String, f64, String)>, LlmResponse), LlmError> {
    let resp = llm.complete(&request(text, manifest)).await?;
    Ok((accept(&resp, manifest), resp))
}

/// What a budgeted LLM triage concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Budgeted {
    /// A registered component, with the model's confidence and reasoning.
    Matched {
        /// The component.
        component_id: String,
        /// The model's confidence (≥ [`MIN_CONFIDENCE`]).
        confidence: f64,
        /// The model's reasoning.
        reasoning: String,
    },
    /// The model named no registered component (or the call failed after it was paid for).
    NoMatch,
    /// No call was made: no LLM, or the budget refused it.
    Unavailable(String),
}

/// One triage call within `budget`, charged to `charge_to` (an incident id, or `triage`),
/// its real cost settled in the spend log. The one path the CLI, `POST /triage` and the
/// daemon's own triage of unattributed incidents share.
pub async fn within_budget(
    llm: &super::service::DaemonLlm,
    budget: &super::budget::Budget,
    llm_config: &crate::config::LlmConfig,
    charge_to: &str,
    text: &str,
    manifest: &Manifest,
) -> Budgeted {
    use super::budget::reservation;
    if let super::service::DaemonLlm::Unavailable(why) = llm {
        return Budgeted::Unavailable(why.clone());
    }
    let req = request(text, manifest);
    let p = super::llm::Pricing::from_usd_per_mtok(
        llm_config.provider,
        llm_config.price_input_per_mtok,
        llm_config.price_output_per_mtok,
    );
    let bytes = (req.system.len() + req.user.len()) as u64 + 1024;
    let hold = match budget.reserve(
        charge_to,
        0,
        reservation(bytes, req.max_tokens, p.input, p.output),
        jiff::Timestamp::now(),
    ) {
        Ok(h) => h,
        Err(e) => return Budgeted::Unavailable(e.to_string()),
    };
    let answer = triage(llm, text, manifest).await;
    let spent = match &answer {
        Ok((_, r)) => r.cost_micro_usd,
        Err(e) => e.spent_micro_usd(),
    };
    if let Err(e) = budget.settle(hold, spent, jiff::Timestamp::now()) {
        tracing::warn!(error = %e, "cannot record the triage spend");
    }
    match answer {
        Ok((Some((component_id, confidence, reasoning)), _)) => Budgeted::Matched {
            component_id,
            confidence,
            reasoning,
        },
        Ok((None, _)) => Budgeted::NoMatch,
        Err(e) => {
            tracing::warn!(error = %e, "LLM triage failed");
            Budgeted::NoMatch
        }
    }
}
