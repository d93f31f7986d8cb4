//! The client against the fake server (loopback HTTP, both wire formats).

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::fix::fake_llm::{FakeLlm, Reply, Route};

const KEY: &str = "sk-ant-api03-TESTKEYdoNotLeak0123456789";
const TOOL: &str = "propose_fix";

fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
    }
}

fn request() -> LlmRequest {
    LlmRequest {
        system: "You fix production errors.".into(),
        user: "The error: ...".into(),
        tool: ToolSpec {
            name: TOOL.into(),
            description: "The reproducer test and the fix.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "reproducer_test": {"type": "string"},
                    "fixed_source": {"type": "string"},
                },
                "required": ["reproducer_test", "fixed_source"],
                "additionalProperties": false,
            }),
        },
        max_tokens: 1024,
    }
}

fn answer() -> Value {
    json!({"reproducer_test": "def test_x(): ...", "fixed_source": "print(1)"})
}

/// A client for the fake: fast backoff, no proxy.
fn builder(fake: &FakeLlm, provider: LlmProvider) -> LlmClientBuilder {
    let mut b = LlmClient::builder(provider, fake.base_url(), "test-model");
    b.api_key(KEY)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
        .timeout(Duration::from_secs(10))
        .system_proxy(false);
    b
}

fn assert_no_key(e: &LlmError) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(!text.contains("TESTKEY"), "{text}");
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<LlmClient>();
    check::<LlmError>();
    check::<LlmRequest>();
    check::<LlmResponse>();
}

#[test]
fn cost_is_integer_micro_usd_rounded_up() {
    let p = Pricing::from_usd_per_mtok(LlmProvider::Anthropic, 3.0, 15.0);
    assert_eq!(
        p,
        Pricing {
            input: 3_000_000,
            output: 15_000_000,
            cache_read: 300_000,
            cache_write: 3_750_000
        }
    );
    // 1000 in ($0.003) + 200 out ($0.003) + 5000 cache reads ($0.0015) + 2000 cache writes
    // ($0.0075) = $0.015.
    assert_eq!(p.cost_micro_usd(&usage(1000, 200, 5000, 2000)), 15_000);
    // One token costs 3 micro-USD; a third of a micro-USD rounds up.
    assert_eq!(p.cost_micro_usd(&usage(1, 0, 0, 0)), 3);
    let tiny = Pricing::from_usd_per_mtok(LlmProvider::Anthropic, 0.1, 0.0);
    assert_eq!(tiny.cost_micro_usd(&usage(1, 0, 0, 0)), 1);
    assert_eq!(
        Pricing::from_usd_per_mtok(LlmProvider::OpenAi, 0.0, 0.0).cost_micro_usd(&usage(
            u64::MAX,
            u64::MAX,
            0,
            0
        )),
        0
    );
    let o = Pricing::from_usd_per_mtok(LlmProvider::OpenAi, 2.0, 8.0);
    assert_eq!((o.cache_read, o.cache_write), (1_000_000, 2_000_000));
    // No overflow at the extremes.
    assert_eq!(
        p.cost_micro_usd(&usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX)),
        u64::MAX
    );
}

#[test]
fn from_config_reads_the_key_variable() {
    let cfg = LlmConfig::default();
    let err = LlmClient::from_config(&cfg, |_| None).unwrap_err();
    assert!(
        matches!(&err, LlmError::NoApiKey { var } if var == "ANTHROPIC_API_KEY"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ANTHROPIC_API_KEY"));
    let err = LlmClient::from_config(&cfg, |_| Some("  ".into())).unwrap_err();
    assert!(matches!(err, LlmError::NoApiKey { .. }));

    let client = LlmClient::from_config(&cfg, |v| {
        assert_eq!(v, "ANTHROPIC_API_KEY");
        Some(KEY.into())
    })
    .unwrap();
    assert_eq!(client.provider(), LlmProvider::Anthropic);
    assert_eq!(client.model(), "claude-sonnet-4-20250514");
    assert_eq!(client.pricing().input, 3_000_000);
    let debug = format!("{client:?}");
    assert!(!debug.contains(KEY) && debug.contains("<set>"), "{debug}");

    // OpenAI-compatible servers work without a key.
    let cfg = LlmConfig {
        provider: LlmProvider::OpenAi,
        base_url: "http://127.0.0.1:11434".into(),
        api_key_env: "OPENAI_API_KEY".into(),
        ..LlmConfig::default()
    };
    assert!(LlmClient::from_config(&cfg, |_| None).is_ok());
}

#[test]
fn bad_base_urls_are_setup_errors() {
    for url in ["not a url", "ftp://host", "http://user:pw@host"] {
        let err = LlmClient::builder(LlmProvider::Anthropic, url, "m")
            .build()
            .unwrap_err();
        assert!(matches!(err, LlmError::Setup { .. }), "{url}: {err:?}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}

#[tokio::test]
async fn anthropic_forced_tool_use_with_usage_and_cost() {
    let fake = FakeLlm::start().await;
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(TOOL, answer(), usage(1000, 200, 5000, 2000))
            .header("request-id", "req_abc123"),
    );
    let client = builder(&fake, LlmProvider::Anthropic).build().unwrap();
    let resp = client.complete(&request()).await.unwrap();
    assert_eq!(resp.output, answer());
    assert_eq!(resp.usage, usage(1000, 200, 5000, 2000));
    assert_eq!(resp.cost_micro_usd, 15_000);
    assert_eq!(resp.model, "claude-fake");
    assert_eq!(resp.request_id.as_deref(), Some("req_abc123"));
    assert_eq!(resp.attempts, 1);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.route, Route::Anthropic);
    assert_eq!(r.header("x-api-key"), KEY);
    assert_eq!(r.header("anthropic-version"), "2023-06-01");
    assert!(r.header("content-type").starts_with("application/json"));
    assert_eq!(r.header("authorization"), "");
    let b = &r.body;
    assert_eq!(b["model"], "test-model");
    assert_eq!(b["max_tokens"], 1024);
    assert_eq!(b["system"], "You fix production errors.");
    assert_eq!(
        b["messages"],
        json!([{"role": "user", "content": "The error: ..."}])
    );
    assert_eq!(b["tools"][0]["name"], TOOL);
    assert_eq!(b["tools"][0]["input_schema"], request().tool.input_schema);
    assert_eq!(b["tool_choice"], json!({"type": "tool", "name": TOOL}));
}

#[tokio::test]
async fn openai_json_schema_content_with_cached_usage() {
    let fake = FakeLlm::start().await;
    fake.push(
        Route::OpenAi,
        Reply::openai_content(&answer().to_string(), usage(1000, 100, 200, 0))
            .header("x-request-id", "req_oai"),
    );
    let mut b = builder(&fake, LlmProvider::OpenAi);
    b.pricing(Pricing::from_usd_per_mtok(LlmProvider::OpenAi, 2.0, 8.0));
    let resp = b.build().unwrap().complete(&request()).await.unwrap();
    assert_eq!(resp.output, answer());
    // prompt_tokens 1200 of which 200 cached.
    assert_eq!(resp.usage, usage(1000, 100, 200, 0));
    // 1000 × 2 + 200 × 1 + 100 × 8 = 3000 micro-USD.
    assert_eq!(resp.cost_micro_usd, 3000);
    assert_eq!(resp.request_id.as_deref(), Some("req_oai"));
    assert_eq!(resp.model, "gpt-fake");

    let r = &fake.requests()[0];
    assert_eq!(r.route, Route::OpenAi);
    assert_eq!(r.header("authorization"), format!("Bearer {KEY}"));
    assert_eq!(r.header("x-api-key"), "");
    let body = &r.body;
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You fix production errors."})
    );
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["response_format"]["type"], "json_schema");
    let js = &body["response_format"]["json_schema"];
    assert_eq!(
        (js["name"].as_str(), js["strict"].as_bool()),
        (Some(TOOL), Some(true))
    );
    assert_eq!(js["schema"], request().tool.input_schema);
    // A local server gets `max_tokens`.
    assert_eq!(body["max_tokens"], 1024);
    assert!(body.get("max_completion_tokens").is_none());
}

#[tokio::test]
async fn openai_tool_calls_and_fenced_content_are_accepted_without_a_key() {
    let fake = FakeLlm::start().await;
    fake.push(
        Route::OpenAi,
        Reply::openai_tool_call(TOOL, answer(), usage(10, 5, 0, 0)),
    );
    fake.push(
        Route::OpenAi,
        Reply::openai_content(&format!("```json\n{}\n```", answer()), usage(10, 5, 0, 0)),
    );
    let cfg = LlmConfig {
        provider: LlmProvider::OpenAi,
        base_url: fake.base_url().into(),
        api_key_env: "OPENAI_API_KEY".into(),
        ..LlmConfig::default()
    };
    let client = LlmClient::from_config(&cfg, |_| None).unwrap();
    for _ in 0..2 {
        let resp = client.complete(&request()).await.unwrap();
        assert_eq!(resp.output, answer());
    }
    for r in fake.requests() {
        assert_eq!(r.header("authorization"), format!("Bearer {NO_KEY_BEARER}"));
    }
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_succeeds() {
    let fake = FakeLlm::start().await;
    fake.push(
        Route::Anthropic,
        Reply::anthropic_error(429, "rate_limit_error", "slow down").header("retry-after", "1"),
    );
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(TOOL, answer(), usage(10, 10, 0, 0)),
    );
    let client = builder(&fake, LlmProvider::Anthropic).build().unwrap();
    let start = std::time::Instant::now();
    let resp = client.complete(&request()).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(resp.attempts, 2);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    // The backoff ceiling is 10 ms here: the wait is Retry-After's, not much more.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn retry_after_is_capped() {
    let fake = FakeLlm::start().await;
    fake.push(
        Route::OpenAi,
        Reply::openai_error(503, "server_error", "busy").header("retry-after", "3600"),
    );
    fake.push(
        Route::OpenAi,
        Reply::openai_content(&answer().to_string(), usage(1, 1, 0, 0)),
    );
    let mut b = builder(&fake, LlmProvider::OpenAi);
    b.retry_after_cap(Duration::from_millis(50));
    let start = std::time::Instant::now();
    let resp = b.build().unwrap().complete(&request()).await.unwrap();
    assert_eq!(resp.attempts, 2);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let fake = FakeLlm::start().await;
    fake.otherwise(
        Route::Anthropic,
        Reply::anthropic_error(500, "api_error", "internal"),
    );
    let mut b = builder(&fake, LlmProvider::Anthropic);
    b.max_retries(2);
    let err = b.build().unwrap().complete(&request()).await.unwrap_err();
    match &err {
        LlmError::Status {
            status,
            attempts,
            message,
            ..
        } => {
            assert_eq!((*status, *attempts), (500, 3));
            assert_eq!(message, "api_error: internal");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn overloaded_529_is_retried() {
    let fake = FakeLlm::start().await;
    fake.push(
        Route::Anthropic,
        Reply::anthropic_error(529, "overloaded_error", "Overloaded"),
    );
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(TOOL, answer(), usage(1, 1, 0, 0)),
    );
    let client = builder(&fake, LlmProvider::Anthropic).build().unwrap();
    let resp = client.complete(&request()).await.unwrap();
    assert_eq!(resp.attempts, 2);
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let fake = FakeLlm::start().await;
    fake.otherwise(Route::Anthropic, Reply::hang());
    let mut b = builder(&fake, LlmProvider::Anthropic);
    b.timeout(Duration::from_millis(200)).max_retries(1);
    let start = std::time::Instant::now();
    let err = b.build().unwrap().complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(fake.request_count(), 2);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let mut b = LlmClient::builder(
        LlmProvider::Anthropic,
        format!("http://127.0.0.1:{port}"),
        "m",
    );
    b.api_key(KEY)
        .max_retries(1)
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .system_proxy(false);
    let err = b.build().unwrap().complete(&request()).await.unwrap_err();
    match &err {
        LlmError::Connect {
            attempts, endpoint, ..
        } => {
            assert_eq!(*attempts, 2);
            assert!(endpoint.ends_with("/v1/messages"), "{endpoint}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_no_key(&err);
}

#[tokio::test]
async fn garbage_is_a_bad_response_retried_once() {
    let fake = FakeLlm::start().await;
    fake.otherwise(Route::Anthropic, Reply::text(200, "<html>gateway</html>"));
    let client = builder(&fake, LlmProvider::Anthropic).build().unwrap();
    let err = client.complete(&request()).await.unwrap_err();
    match &err {
        LlmError::BadResponse { what, attempts, .. } => {
            assert!(what.contains("not a Messages response"), "{what}");
            assert_eq!(*attempts, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    // max_retries is 3, but garbage is retried only once.
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn bad_responses_name_what_was_wrong_and_what_they_cost() {
    let fake = FakeLlm::start().await;
    let text_only = Reply::json(
        200,
        json!({
            "id": "msg_1", "type": "message", "model": "claude-fake",
            "content": [{"type": "text", "text": "I think the bug is..."}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 1000, "output_tokens": 1000},
        }),
    );
    fake.push_n(Route::Anthropic, text_only, 2);
    fake.push_n(
        Route::Anthropic,
        Reply::anthropic_tool(TOOL, json!({"reproducer_test": "x"}), usage(10, 10, 0, 0)),
        2,
    );
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(TOOL, json!(["not", "an", "object"]), usage(10, 10, 0, 0)),
    );
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(TOOL, answer(), usage(100, 100, 0, 0)),
    );
    let client = builder(&fake, LlmProvider::Anthropic).build().unwrap();

    let err = client.complete(&request()).await.unwrap_err();
    let LlmError::BadResponse {
        what,
        usage: u,
        spent_micro_usd,
        ..
    } = &err
    else {
        panic!("unexpected {err:?}")
    };
    assert!(
        what.contains("no tool_use block") && what.contains("max_tokens"),
        "{what}"
    );
    assert_eq!(*u, usage(2000, 2000, 0, 0));
    // 2 × (1000 × 3 + 1000 × 15) micro-USD.
    assert_eq!(*spent_micro_usd, 36_000);
    assert_eq!(err.spent_micro_usd(), 36_000);

    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("lacks the required key(s) \"fixed_source\""),
        "{err}"
    );

    // Garbage, then a good answer: the call succeeds and pays for both.
    let resp = client.complete(&request()).await.unwrap();
    assert_eq!(resp.attempts, 2);
    assert_eq!(resp.usage, usage(110, 110, 0, 0));
    assert_eq!(resp.cost_micro_usd, 110 * 3 + 110 * 15);
}

#[tokio::test]
async fn openai_garbage_is_named() {
    let fake = FakeLlm::start().await;
    fake.push_n(
        Route::OpenAi,
        Reply::openai_content("Sure! Here is the fix: ...", usage(1, 1, 0, 0)),
        2,
    );
    fake.push(
        Route::OpenAi,
        Reply::json(200, json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that."}}]})),
    );
    let mut b = builder(&fake, LlmProvider::OpenAi);
    let client = b.max_retries(0).build().unwrap();
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        err.to_string().contains("message.content is not JSON"),
        "{err}"
    );
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        err.to_string().contains("message.content is not JSON"),
        "{err}"
    );
    let err = client.complete(&request()).await.unwrap_err();
    assert!(err.to_string().contains("the model refused"), "{err}");
}

#[tokio::test]
async fn client_errors_are_not_retried_and_never_show_the_key() {
    let fake = FakeLlm::start().await;
    fake.push(
        Route::Anthropic,
        Reply::anthropic_error(
            401,
            "authentication_error",
            &format!("invalid x-api-key {KEY}"),
        ),
    );
    for status in [400, 403, 404, 413] {
        fake.push(
            Route::Anthropic,
            Reply::anthropic_error(status, "invalid_request_error", "no"),
        );
    }
    let client = builder(&fake, LlmProvider::Anthropic).build().unwrap();
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Status {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_no_key(&err);
    assert!(err.to_string().contains("authentication_error"), "{err}");
    for status in [400, 403, 404, 413] {
        let err = client.complete(&request()).await.unwrap_err();
        match err {
            LlmError::Status {
                status: s,
                attempts,
                ..
            } => assert_eq!((s, attempts), (status, 1)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(fake.request_count(), 5);
}

#[tokio::test]
async fn circuit_opens_after_consecutive_failures_and_fails_fast() {
    let fake = FakeLlm::start().await;
    fake.otherwise(Route::Anthropic, Reply::status(503));
    let mut b = builder(&fake, LlmProvider::Anthropic);
    b.max_retries(1)
        .circuit_breaker(3, Duration::from_secs(3600));
    let client = b.build().unwrap();
    for _ in 0..3 {
        let err = client.complete(&request()).await.unwrap_err();
        assert!(
            matches!(err, LlmError::Status { status: 503, .. }),
            "{err:?}"
        );
    }
    assert_eq!(fake.request_count(), 6);
    // Open: clones share the breaker, and nothing is sent.
    let clone = client.clone();
    let start = std::time::Instant::now();
    let err = clone.complete(&request()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100));
    match &err {
        LlmError::CircuitOpen { retry_in } => {
            assert!(*retry_in > Duration::from_secs(3500), "{retry_in:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(fake.request_count(), 6);
}

#[tokio::test]
async fn half_open_probe_is_tried_once_and_closes_on_success() {
    let fake = FakeLlm::start().await;
    // Cool-down zero: the call after the opening failure is the probe.
    let mut b = builder(&fake, LlmProvider::OpenAi);
    b.max_retries(2).circuit_breaker(2, Duration::ZERO);
    let client = b.build().unwrap();
    fake.push_n(Route::OpenAi, Reply::status(500), 6);
    for _ in 0..2 {
        assert!(client.complete(&request()).await.is_err());
    }
    assert_eq!(fake.request_count(), 6);
    // The probe fails: one request only, no retries.
    fake.push(Route::OpenAi, Reply::status(500));
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Status { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(fake.request_count(), 7);
    // The next probe succeeds and closes the breaker: retries are back.
    fake.push(
        Route::OpenAi,
        Reply::openai_content(&answer().to_string(), usage(1, 1, 0, 0)),
    );
    client.complete(&request()).await.unwrap();
    fake.push(Route::OpenAi, Reply::status(500));
    fake.push(
        Route::OpenAi,
        Reply::openai_content(&answer().to_string(), usage(1, 1, 0, 0)),
    );
    let resp = client.complete(&request()).await.unwrap();
    assert_eq!(resp.attempts, 2);
}

#[tokio::test]
async fn a_cancelled_probe_lets_the_next_call_probe() {
    let fake = FakeLlm::start().await;
    let mut b = builder(&fake, LlmProvider::Anthropic);
    b.max_retries(0).circuit_breaker(1, Duration::ZERO);
    let client = b.build().unwrap();
    fake.push(Route::Anthropic, Reply::status(500));
    assert!(client.complete(&request()).await.is_err());
    // The probe hangs; while it is out, other calls fail fast.
    fake.push(Route::Anthropic, Reply::hang());
    let probe = tokio::spawn({
        let client = client.clone();
        async move { client.complete(&request()).await }
    });
    fake.wait_for_requests(2).await;
    let err = client.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::CircuitOpen { retry_in } if retry_in == Duration::ZERO),
        "{err:?}"
    );
    // Cancel it: the breaker must not stay half-open with a probe nobody will finish.
    probe.abort();
    assert!(probe.await.unwrap_err().is_cancelled());
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(TOOL, answer(), usage(1, 1, 0, 0)),
    );
    client.complete(&request()).await.unwrap();
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn request_errors_do_not_trip_the_breaker() {
    let fake = FakeLlm::start().await;
    fake.otherwise(
        Route::Anthropic,
        Reply::anthropic_error(400, "invalid_request_error", "prompt is too long"),
    );
    let mut b = builder(&fake, LlmProvider::Anthropic);
    b.circuit_breaker(2, Duration::from_secs(3600));
    let client = b.build().unwrap();
    for _ in 0..5 {
        let err = client.complete(&request()).await.unwrap_err();
        assert!(
            matches!(err, LlmError::Status { status: 400, .. }),
            "{err:?}"
        );
    }
    assert_eq!(fake.request_count(), 5);
}

#[tokio::test]
async fn the_max_tokens_key_follows_the_host() {
    // api.openai.com is not contacted: only the body is built.
    let b = LlmClient::builder(LlmProvider::OpenAi, "https://api.openai.com", "gpt-5")
        .build()
        .unwrap();
    assert_eq!(b.inner.max_tokens_key, "max_completion_tokens");
    let body = openai::body("gpt-5", &request(), b.inner.max_tokens_key);
    assert_eq!(body["max_completion_tokens"], 1024);
    assert!(body.get("max_tokens").is_none());
}
