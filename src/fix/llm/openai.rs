//! OpenAI-compatible Chat Completions: structured output through a strict `json_schema`
//! response format (tool calls are accepted too).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BadBody, LlmRequest, Parsed, Usage};

/// The endpoint, after the base URL.
pub(super) const PATH: &str = "/v1/chat/completions";

/// The request body. `max_tokens_key` is `max_completion_tokens` for api.openai.com (its
/// reasoning models reject `max_tokens`) and `max_tokens` for local servers, which may not
/// know the newer name.
pub(super) fn body(model: &str, req: &LlmRequest, max_tokens_key: &str) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": req.system},
            {"role": "user", "content": req.user},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": req.tool.name,
                "description": req.tool.description,
                "strict": true,
                "schema": req.tool.input_schema,
            },
        },
    });
    body[max_tokens_key] = json!(req.max_tokens);
    body
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Reads the JSON answer of the first choice (`tool_calls[0].function.arguments` when
/// present, else `content`, a Markdown code fence around it tolerated) and the usage
/// (`prompt_tokens` includes cached tokens; [`Usage::input_tokens`] does not).
pub(super) fn parse(body: &[u8]) -> Result<Parsed, BadBody> {
    let resp: Response = serde_json::from_slice(body).map_err(|e| BadBody {
        what: format!("the body is not a chat completion: {e}"),
        usage: Usage::default(),
    })?;
    let u = resp.usage.unwrap_or_default();
    let cached = u
        .prompt_tokens_details
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    let usage = Usage {
        input_tokens: u.prompt_tokens.unwrap_or(0).saturating_sub(cached),
        output_tokens: u.completion_tokens.unwrap_or(0),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
    };
    let bad = |what: String| BadBody { what, usage };
    let Some(choice) = resp.choices.and_then(|c| c.into_iter().next()) else {
        return Err(bad("no choices in the answer".into()));
    };
    let stop = choice
        .finish_reason
        .as_deref()
        .map(|s| format!(" (finish_reason {})", super::clip(s, 40)))
        .unwrap_or_default();
    let Some(message) = choice.message else {
        return Err(bad(format!("the first choice has no message{stop}")));
    };
    if let Some(refusal) = message.refusal.as_deref().filter(|r| !r.trim().is_empty()) {
        let (refusal, _) = crate::fix::redact::redact(refusal);
        return Err(bad(format!(
            "the model refused: {:?}",
            super::clip(&refusal, 200)
        )));
    }
    let arguments = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .find_map(|t| t.function.and_then(|f| f.arguments));
    let (text, source) = match (arguments, message.content) {
        (Some(a), _) => (a, "tool_calls[0].function.arguments"),
        (None, Some(c)) if !c.trim().is_empty() => (c, "message.content"),
        _ => {
            return Err(bad(format!(
                "the answer has no content and no tool call{stop}"
            )));
        }
    };
    let output: Value = serde_json::from_str(strip_code_fence(&text))
        .map_err(|e| bad(format!("{source} is not JSON: {e}{stop}")))?;
    Ok(Parsed {
        output,
        usage,
        model: resp.model,
        id: resp.id,
        stop_note: stop,
    })
}

/// `json\n{...}\n` inside a Markdown fence, as small local models like to answer.
fn strip_code_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(inner) = t.strip_prefix("```") else {
        return t;
    };
    let Some(inner) = inner.strip_suffix("```") else {
        return t;
    };
    match inner.find('\n') {
        Some(nl) if inner[..nl].chars().all(|c| c.is_ascii_alphanumeric()) => inner[nl..].trim(),
        _ => inner.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_fences_are_stripped() {
        assert_eq!(strip_code_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(strip_code_fence("```\n{\"a\":1}```"), "{\"a\":1}");
        assert_eq!(strip_code_fence(" {\"a\":1} "), "{\"a\":1}");
    }
}
