//! Anthropic Messages API: structured output through one forced tool.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BadBody, LlmRequest, Parsed, Usage};

/// The endpoint, after the base URL.
pub(super) const PATH: &str = "/v1/messages";

/// The `anthropic-version` header.
pub(super) const VERSION: &str = "2023-06-01";

/// The request body: the tool is offered and forced (`tool_choice: {type: tool}`), so the
/// answer is the tool's input.
pub(super) fn body(model: &str, req: &LlmRequest) -> Value {
    json!({
        "model": model,
        "max_tokens": req.max_tokens,
        "system": req.system,
        "messages": [{"role": "user", "content": req.user}],
        "tools": [{
            "name": req.tool.name,
            "description": req.tool.description,
            "input_schema": req.tool.input_schema,
        }],
        "tool_choice": {"type": "tool", "name": req.tool.name},
    })
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Option<Vec<Block>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// Reads the forced tool's input and the usage (`input_tokens` excludes cached tokens, as
/// [`Usage`] does).
pub(super) fn parse(body: &[u8], tool: &str) -> Result<Parsed, BadBody> {
    let resp: Response = serde_json::from_slice(body).map_err(|e| BadBody {
        what: format!("the body is not a Messages response: {e}"),
        usage: Usage::default(),
    })?;
    let u = resp.usage.unwrap_or_default();
    let usage = Usage {
        input_tokens: u.input_tokens.unwrap_or(0),
        output_tokens: u.output_tokens.unwrap_or(0),
        cache_read_tokens: u.cache_read_input_tokens.unwrap_or(0),
        cache_write_tokens: u.cache_creation_input_tokens.unwrap_or(0),
    };
    let stop = resp
        .stop_reason
        .as_deref()
        .map(|s| format!(" (stop_reason {})", super::clip(s, 40)))
        .unwrap_or_default();
    let blocks = resp.content.unwrap_or_default();
    let mut tool_uses = blocks.into_iter().filter(|b| b.kind == "tool_use");
    let Some(first) = tool_uses.next() else {
        return Err(BadBody {
            what: format!("no tool_use block in the answer{stop}"),
            usage,
        });
    };
    let block = if first.name.as_deref() == Some(tool) {
        first
    } else {
        match tool_uses.find(|b| b.name.as_deref() == Some(tool)) {
            Some(b) => b,
            None => {
                return Err(BadBody {
                    what: format!(
                        "the tool_use block is for {:?}, not {tool:?}",
                        super::clip(first.name.as_deref().unwrap_or(""), 64)
                    ),
                    usage,
                });
            }
        }
    };
    let Some(output) = block.input else {
        return Err(BadBody {
            what: format!("the tool_use block has no input{stop}"),
            usage,
        });
    };
    Ok(Parsed {
        output,
        usage,
        model: resp.model,
        id: resp.id,
        stop_note: stop,
    })
}
