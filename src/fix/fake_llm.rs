//! A scripted fake LLM server on loopback that speaks both wire formats (tests only).
//!
//! ```ignore
//! let fake = FakeLlm::start().await;
//! fake.push(Route::Anthropic, Reply::status(429).header("retry-after", "1"));
//! fake.push(Route::Anthropic, Reply::anthropic_tool("propose_fix", json!({..}), usage));
//! // ... point a client at fake.base_url() ...
//! assert_eq!(fake.requests().len(), 2);
//! ```
//!
//! Each route has a queue of canned replies, served in order; when it is empty the route's
//! fallback ([`FakeLlm::otherwise`]) is served, or a 500 saying nothing was scripted. Every
//! request is recorded (headers, JSON body, arrival time) before it is answered, and
//! [`FakeLlm::wait_for_requests`] lets a test wait (without polling) until a client running
//! in another task has made its calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fix::llm::Usage;

/// Which wire format (endpoint) a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1/chat/completions`.
    OpenAi,
}

/// A canned answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status, headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Never answer (the client must time out).
    Hang,
    /// Answer with the inner reply after a delay.
    Delayed(std::time::Duration, Box<Reply>),
}

impl Reply {
    /// A JSON body.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    /// A text body.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into(),
        }
    }

    /// An empty body.
    pub fn status(status: u16) -> Reply {
        Reply::text(status, "")
    }

    /// Never answers.
    pub fn hang() -> Reply {
        Reply::Hang
    }

    /// This reply, after `delay`.
    pub fn after(self, delay: std::time::Duration) -> Reply {
        Reply::Delayed(delay, Box::new(self))
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// An Anthropic Messages answer whose `tool_use` block carries `input`.
    pub fn anthropic_tool(tool: &str, input: Value, usage: Usage) -> Reply {
        Reply::json(
            200,
            json!({
                "id": "msg_fake01",
                "type": "message",
                "role": "assistant",
                "model": "claude-fake",
                "content": [
                    {"type": "text", "text": "Here is the fix."},
                    {"type": "tool_use", "id": "toolu_fake01", "name": tool, "input": input},
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_creation_input_tokens": usage.cache_write_tokens,
                    "cache_read_input_tokens": usage.cache_read_tokens,
                },
            }),
        )
    }

    /// An Anthropic error body (`{type: error, error: {type, message}}`).
    pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    }

    /// A chat completion whose `message.content` is `output` serialised. `usage.input_tokens +
    /// usage.cache_read_tokens` is reported as `prompt_tokens`, with the cached part in
    /// `prompt_tokens_details`.
    pub fn openai_content(content: &str, usage: Usage) -> Reply {
        Reply::json(
            200,
            json!({
                "id": "chatcmpl-fake01",
                "object": "chat.completion",
                "created": 1_750_000_000,
                "model": "gpt-fake",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": null},
                    "finish_reason": "stop",
                }],
                "usage": openai_usage(usage),
            }),
        )
    }

    /// A chat completion answering with a tool call whose `arguments` string is `input`.
    pub fn openai_tool_call(name: &str, input: Value, usage: Usage) -> Reply {
        Reply::json(
            200,
            json!({
                "id": "chatcmpl-fake02",
                "object": "chat.completion",
                "model": "gpt-fake",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        }],
                    },
                    "finish_reason": "tool_calls",
                }],
                "usage": openai_usage(usage),
            }),
        )
    }

    /// An OpenAI error body (`{error: {message, type, code}}`).
    pub fn openai_error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(
            status,
            json!({"error": {"message": message, "type": kind, "code": null, "param": null}}),
        )
    }
}

fn openai_usage(u: Usage) -> Value {
    let prompt = u.input_tokens + u.cache_read_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
    })
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Where it went.
    pub route: Route,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as JSON (`Null` when it was not JSON).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Debug, Default)]
struct Script {
    queues: HashMap<Route, VecDeque<Reply>>,
    fallback: HashMap<Route, Reply>,
    received: Vec<Recorded>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The fake server. It runs on the test's runtime and stops with it.
#[derive(Debug)]
pub struct FakeLlm {
    base_url: String,
    script: Arc<Mutex<Script>>,
    /// The number of requests received, for [`FakeLlm::wait_for_requests`].
    count: tokio::sync::watch::Receiver<usize>,
}

impl FakeLlm {
    /// Starts the server on `127.0.0.1:0`.
    pub async fn start() -> FakeLlm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let script = Arc::new(Mutex::new(Script::default()));
        let (count_tx, count) = tokio::sync::watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let route = |r: Route| {
            let script = Arc::clone(&script);
            let count_tx = Arc::clone(&count_tx);
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                handle(Arc::clone(&script), Arc::clone(&count_tx), r, headers, body)
            })
        };
        let app = axum::Router::new()
            .route("/v1/messages", route(Route::Anthropic))
            .route("/v1/chat/completions", route(Route::OpenAi));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeLlm {
            base_url: format!("http://{addr}"),
            script,
            count,
        }
    }

    /// Returns once `n` requests have been received (for a client running in another task;
    /// no polling).
    pub async fn wait_for_requests(&self, n: usize) {
        let mut count = self.count.clone();
        count
            .wait_for(|&c| c >= n)
            .await
            .expect("the fake LLM server is running");
    }

    /// `http://127.0.0.1:<port>` (without `/v1`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Queues `reply` for the next request to `route`.
    pub fn push(&self, route: Route, reply: Reply) -> &Self {
        self.lock()
            .queues
            .entry(route)
            .or_default()
            .push_back(reply);
        self
    }

    /// Queues `reply` `n` times.
    pub fn push_n(&self, route: Route, reply: Reply, n: usize) -> &Self {
        for _ in 0..n {
            self.push(route, reply.clone());
        }
        self
    }

    /// Serves `reply` whenever `route`'s queue is empty.
    pub fn otherwise(&self, route: Route, reply: Reply) -> &Self {
        self.lock().fallback.insert(route, reply);
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().received.clone()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        self.lock().received.len()
    }

    /// The most requests that were being answered at once (delayed replies count while
    /// they wait).
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("fake LLM script lock")
    }
}

async fn handle(
    script: Arc<Mutex<Script>>,
    count: Arc<tokio::sync::watch::Sender<usize>>,
    route: Route,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut s = script.lock().expect("fake LLM script lock");
        s.received.push(Recorded {
            route,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        });
        count.send_replace(s.received.len());
        let queued = s.queues.get_mut(&route).and_then(VecDeque::pop_front);
        queued.or_else(|| s.fallback.get(&route).cloned())
    };
    let in_flight = InFlight::enter(&script);
    let mut reply = reply;
    while let Some(Reply::Delayed(delay, inner)) = reply {
        tokio::time::sleep(delay).await;
        reply = Some(*inner);
    }
    drop(in_flight);
    match reply {
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("fake LLM: nothing scripted for {route:?}"),
        )
            .into_response(),
        Some(Reply::Hang) => std::future::pending().await,
        Some(Reply::Delayed(..)) => unreachable!("delays are unwrapped above"),
        Some(Reply::Respond {
            status,
            headers,
            body,
        }) => {
            let mut resp = Response::builder()
                .status(StatusCode::from_u16(status).expect("a valid status code"));
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            resp.body(axum::body::Body::from(body))
                .expect("a valid response")
        }
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Mutex<Script>>);

impl InFlight {
    fn enter(script: &Arc<Mutex<Script>>) -> InFlight {
        let mut s = script.lock().expect("fake LLM script lock");
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight(Arc::clone(script))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight -= 1;
        }
    }
}
