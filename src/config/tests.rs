use super::llm::normalise_base_url;
use super::*;
use crate::attribute::Severity;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(
        text,
        Path::new("/etc/sentinel/sentinel.yaml"),
        Some(Path::new("/home/u")),
    )
}

#[test]
fn empty_file_is_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.error_threshold.count, 1);
    assert_eq!(c.error_threshold.window_seconds, 300);
    assert_eq!(c.llm.model, "claude-sonnet-4-20250514");
    assert_eq!(c.budget.monthly_cap, 300.0);
    assert_eq!(c.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
    assert_eq!(c.error_patterns.len(), DEFAULT_ERROR_PATTERNS.len());
    assert!(!c.auto_remediate);
}

#[test]
fn full_reference_schema_parses() {
    let text = r#"
version: '1.0'
sources:
  - type: file
    path: "/var/log/app/*.log"
    format: jsonl
    error_patterns: ["ERROR", "(?i)fatal"]
  - type: webhook
    port: 9000
pact_key_pattern: PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+
error_threshold: {count: 3, window_seconds: 60}
llm: {provider: Anthropic, model: m, max_tokens: 100, budget_per_fix: 1.5}
pact: {project_dir: ~/Code/p, api_endpoint: null}
arbiter: {api_endpoint: http://localhost:7700, trust_event_on_fix: false}
stigmergy: {endpoint: null}
chronicler: {chronicler_enabled: true, chronicler_endpoint: http://localhost:8485}
notify: {webhook_url: null, on_error: true, on_fix: false, on_contract_push: true}
ledger: {ledger_api: null}
budget: {per_incident_cap: 1.0, hourly_cap: 2.0, daily_cap: 3.0, weekly_cap: 4.0, monthly_cap: 5.0}
auto_remediate: true
state_dir: state
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.sources.len(), 2);
    assert_eq!(c.sources[0].common().format, LogFormat::Jsonl);
    assert_eq!(
        c.sources[0].common().error_patterns.as_deref().unwrap(),
        ["ERROR", "(?i)fatal"]
    );
    assert_eq!(c.sources[1].kind(), SourceKind::Webhook);
    let SourceConfig::Webhook(hook) = &c.sources[1] else {
        panic!("a webhook source")
    };
    assert_eq!(hook.host, "127.0.0.1");
    assert_eq!(c.error_threshold.count, 3);
    assert!(c.chronicler.chronicler_enabled);
    assert_eq!(c.budget.daily_cap, 3.0);
    assert!(c.auto_remediate);
    // state_dir is relative to the config file's directory.
    assert!(c.state_dir.ends_with("sentinel/state"), "{:?}", c.state_dir);
}

#[test]
fn tilde_is_expanded() {
    let c = parse("state_dir: ~/.sentinel-state\n").unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/home/u/.sentinel-state"));
}

#[test]
fn unknown_key_is_named_with_line_and_column() {
    let err = parse("version: '1.0'\nchronicler:\n  enable: true\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/etc/sentinel/sentinel.yaml:3:"), "{msg}");
    assert!(msg.contains("enable"), "{msg}");
    match err {
        ConfigError::Parse { line, .. } => assert_eq!(line, 3),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn wrong_type_says_what_was_expected() {
    let err = parse("sources:\n  - type: kafka\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(":2:"), "{msg}");
    assert!(msg.contains("kafka"), "{msg}");
    let err = parse("auto_remediate: maybe\n").unwrap_err();
    assert!(err.to_string().contains(":1:"), "{err}");
}

#[test]
fn invalid_pattern_names_key_and_line() {
    let err = parse(
        "sources:\n  - path: a.log\n    error_patterns:\n      - OK\n      - \"(unclosed\"\n",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sources[0].error_patterns[1]"), "{msg}");
    assert!(msg.contains(":5:"), "{msg}");
}

#[test]
fn arbiter_event_map_is_validated() {
    let c = parse("arbiter: {api_endpoint: http://a:7700}\n").unwrap();
    assert_eq!(c.arbiter.event_map, ArbiterEventMap::default());
    assert!(c.arbiter.trust_event_on_fix);
    let c = parse(
            "arbiter:\n  event_map:\n    production_error: {event: TAINT_DETECTED}\n    sentinel_fix: {weight: 0.5}\n",
        )
        .unwrap();
    let m = c.arbiter.event_map;
    assert_eq!(m.production_error.event, TrustEventType::TaintDetected);
    assert_eq!(m.production_error.weight, -0.3);
    assert_eq!(m.sentinel_fix.event, TrustEventType::AuditPass);
    assert_eq!(m.sentinel_fix.weight, 0.5);

    let err =
        parse("arbiter:\n  event_map:\n    sentinel_fix: {event: sentinel_fix}\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/etc/sentinel/sentinel.yaml:3:"), "{msg}");
    assert!(
        msg.contains("arbiter.event_map.sentinel_fix.event"),
        "{msg}"
    );
    assert!(msg.contains("AUDIT_PASS"), "{msg}");
    let err = parse(
            "arbiter:\n  event_map:\n    sentinel_fix_failure:\n      event: AUDIT_FAIL\n      weight: -1.5\n",
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(":5:"), "{msg}");
    assert!(
        msg.contains("arbiter.event_map.sentinel_fix_failure.weight"),
        "{msg}"
    );
    // An unknown Sentinel event name is an unknown key.
    assert!(parse("arbiter:\n  event_map:\n    fix: {weight: 1}\n").is_err());
}

#[test]
fn chronicler_takes_its_own_keys_and_the_references() {
    let c = parse("").unwrap().chronicler;
    assert!(!c.chronicler_enabled);
    assert_eq!(c.events_url(), "http://localhost:8485/events");
    // Chronicler's documentation: the endpoint already ends in /events.
    let c = parse("chronicler: {enabled: true, endpoint: 'http://localhost:8080/events'}\n")
        .unwrap()
        .chronicler;
    assert!(c.chronicler_enabled);
    assert_eq!(c.events_url(), "http://localhost:8080/events");
    let c =
        parse("chronicler:\n  chronicler_enabled: true\n  chronicler_endpoint: http://c:8485/\n")
            .unwrap()
            .chronicler;
    assert_eq!(c.events_url(), "http://c:8485/events");
    // Both spellings: fine when they agree, an error naming the key when not.
    let c = parse(
            "chronicler:\n  enabled: true\n  chronicler_enabled: true\n  endpoint: http://c/events\n  chronicler_endpoint: http://c/\n",
        )
        .unwrap()
        .chronicler;
    assert_eq!(c.events_url(), "http://c/events");
    let err = parse("chronicler:\n  chronicler_enabled: true\n  enabled: false\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(":3:") && msg.contains("chronicler.enabled"),
        "{msg}"
    );
    let err = parse("chronicler:\n  enabled: true\n  endpoint: localhost:8080\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(":3:") && msg.contains("chronicler.endpoint"),
        "{msg}"
    );
}

#[test]
fn ledger_annotation_severities_default_to_ledgers_and_are_validated() {
    let l = parse("").unwrap().ledger;
    assert_eq!(l.refresh_seconds, 300);
    assert_eq!(l.annotation_severity.len(), 8);
    assert_eq!(
        l.annotation_severity["encrypted_at_rest"],
        Severity::Critical
    );
    assert_eq!(l.annotation_severity["gdpr_erasable"], Severity::High);
    assert_eq!(l.annotation_severity["primary_key"], Severity::Low);
    let l = parse(
            "ledger:\n  ledger_api: http://l:7701\n  refresh_seconds: 60\n  annotation_severity:\n    Tokenized: CRITICAL\n    not_null: medium\n",
        )
        .unwrap()
        .ledger;
    assert_eq!(l.refresh_seconds, 60);
    assert_eq!(l.annotation_severity["tokenized"], Severity::Critical);
    assert_eq!(l.annotation_severity["not_null"], Severity::Medium);
    assert_eq!(l.annotation_severity["pii_field"], Severity::High);
    let err = parse("ledger:\n  annotation_severity:\n    pii_field: urgent\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("/etc/sentinel/sentinel.yaml:3:")
            && msg.contains("ledger.annotation_severity.pii_field")
            && msg.contains("urgent"),
        "{msg}"
    );
    let err = parse("ledger:\n  refresh_seconds: 0\n").unwrap_err();
    assert!(err.to_string().contains("ledger.refresh_seconds"), "{err}");
    let l = parse("ledger: {mappings_file: m.json}\n").unwrap().ledger;
    assert_eq!(
        l.mappings_file.unwrap(),
        PathBuf::from("/etc/sentinel/m.json")
    );
}

#[test]
fn max_line_bytes_range_is_checked() {
    let err = parse("max_line_bytes: 10\n").unwrap_err();
    assert!(err.to_string().contains("max_line_bytes"), "{err}");
    assert_eq!(
        parse("max_line_bytes: 65536\n").unwrap().max_line_bytes,
        65536
    );
}

#[test]
fn llm_defaults_follow_the_provider() {
    let c = parse("").unwrap();
    assert_eq!(c.llm.provider, LlmProvider::Anthropic);
    assert_eq!(c.llm.base_url, "https://api.anthropic.com");
    assert_eq!(c.llm.api_key_env, "ANTHROPIC_API_KEY");
    assert_eq!(c.llm.timeout_seconds, 120);
    assert_eq!(c.llm.max_retries, 3);
    assert_eq!(c.llm.price_input_per_mtok, 3.0);
    assert_eq!(c.llm.price_output_per_mtok, 15.0);
    assert_eq!(c.llm.max_concurrent_fixes, 2);
    assert_eq!(c.llm.max_tokens, 8192);
    let c = parse("llm: {provider: OpenAI, model: gpt-4.1}\n").unwrap();
    assert_eq!(c.llm.provider, LlmProvider::OpenAi);
    assert_eq!(c.llm.base_url, "https://api.openai.com");
    assert_eq!(c.llm.api_key_env, "OPENAI_API_KEY");
    assert_eq!(c.llm.model, "gpt-4.1");
}

#[test]
fn llm_keys_parse() {
    let text = "llm:
  provider: openai
  model: qwen2.5-coder
  max_tokens: 4096
  budget_per_fix: 0
  base_url: http://localhost:11434/v1/
  api_key_env: OLLAMA_KEY
  timeout_seconds: 30
  max_retries: 0
  price_input_per_mtok: 0
  price_output_per_mtok: 0.5
  max_concurrent_fixes: 1
";
    let l = parse(text).unwrap().llm;
    assert_eq!(l.base_url, "http://localhost:11434");
    assert_eq!(l.api_key_env, "OLLAMA_KEY");
    assert_eq!((l.timeout_seconds, l.max_retries), (30, 0));
    assert_eq!(
        (l.price_input_per_mtok, l.price_output_per_mtok),
        (0.0, 0.5)
    );
    assert_eq!((l.max_tokens, l.max_concurrent_fixes), (4096, 1));
    assert_eq!(l.budget_per_fix, 0.0);
}

#[test]
fn llm_unknown_provider_names_file_line_and_key() {
    let err = parse("version: '1.0'\nllm:\n  model: m\n  provider: gemini\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("/etc/sentinel/sentinel.yaml:4:"), "{msg}");
    assert!(msg.contains("llm.provider"), "{msg}");
    assert!(
        msg.contains("gemini") && msg.contains("anthropic or openai"),
        "{msg}"
    );
}

#[test]
fn llm_values_are_validated() {
    for (text, key) in [
        ("llm: {max_tokens: 0}", "llm.max_tokens"),
        ("llm: {timeout_seconds: 0}", "llm.timeout_seconds"),
        ("llm: {max_retries: 11}", "llm.max_retries"),
        ("llm: {max_concurrent_fixes: 0}", "llm.max_concurrent_fixes"),
        (
            "llm: {price_input_per_mtok: -1}",
            "llm.price_input_per_mtok",
        ),
        (
            "llm: {price_output_per_mtok: .nan}",
            "llm.price_output_per_mtok",
        ),
        ("llm: {budget_per_fix: -0.5}", "llm.budget_per_fix"),
        ("llm: {base_url: api.anthropic.com}", "llm.base_url"),
        ("llm: {base_url: 'https://user:pw@host'}", "llm.base_url"),
        ("llm: {api_key_env: sk-ant-123}", "llm.api_key_env"),
        ("llm: {model: ''}", "llm.model"),
    ] {
        let err = parse(&format!("{text}\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains(":1:"), "{text}: {msg}");
    }
    // Unknown keys stay errors.
    assert!(parse("llm: {api_key: sk-ant-123}\n").is_err());
}

#[test]
fn base_urls_are_normalised() {
    for (raw, want) in [
        (
            "https://api.anthropic.com",
            Some("https://api.anthropic.com"),
        ),
        (
            "https://api.anthropic.com/",
            Some("https://api.anthropic.com"),
        ),
        ("http://localhost:8000/v1", Some("http://localhost:8000")),
        ("http://gw.internal/llm/v1/", Some("http://gw.internal/llm")),
        ("http://v1", Some("http://v1")),
        ("ftp://x", None),
        ("https://", None),
        ("https://h?x=1", None),
    ] {
        assert_eq!(normalise_base_url(raw).as_deref(), want, "{raw}");
    }
}

#[test]
fn duplicate_key_is_an_error() {
    assert!(parse("auto_remediate: true\nauto_remediate: false\n").is_err());
}

#[test]
fn explicit_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let search = ConfigSearch {
        explicit: Some(dir.path().join("nope.yaml")),
        cwd: dir.path().to_path_buf(),
        home: None,
    };
    assert!(matches!(
        Config::load(&search),
        Err(ConfigError::NotFound { .. })
    ));
}

#[test]
fn search_order_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let search = ConfigSearch {
        explicit: None,
        cwd: dir.path().to_path_buf(),
        home: Some(home.path().to_path_buf()),
    };
    let c = Config::load(&search).unwrap();
    assert!(c.path.is_none());
    std::fs::create_dir_all(home.path().join(".sentinel")).unwrap();
    std::fs::write(
        home.path().join(".sentinel/sentinel.yaml"),
        "auto_remediate: true\n",
    )
    .unwrap();
    let c = Config::load(&search).unwrap();
    assert!(c.auto_remediate);
    std::fs::write(dir.path().join("sentinel.yaml"), "auto_remediate: false\n").unwrap();
    let c = Config::load(&search).unwrap();
    assert!(!c.auto_remediate);
    assert_eq!(c.path.unwrap(), dir.path().join("sentinel.yaml"));
    // A broken first candidate is an error, not a fall-through to the next one.
    std::fs::write(dir.path().join("sentinel.yaml"), "auto_remediate: [\n").unwrap();
    assert!(Config::load(&search).is_err());
}

#[test]
fn cloudwatch_process_and_stdin_sources_parse() {
    let c = parse(
        r#"
sources:
  - type: cloudwatch
    log_group: /aws/lambda/api
    log_groups: [/aws/lambda/worker, /aws/lambda/api]
    log_stream_prefix: "2026/"
    region: eu-west-1
    endpoint: http://127.0.0.1:5000/
    start_at: beginning
    max_requests_per_second: 2.5
    profile: prod
  - type: cloudwatch
    name: cw2
    log_groups: [g]
    region: us-east-1
  - type: process
    command: [kubectl, logs, -f, deploy/api]
    env: {KUBECONFIG: /k}
    cwd: work
    restart: on-failure
  - type: stdout
"#,
    )
    .unwrap();
    let SourceConfig::Cloudwatch(cw) = &c.sources[0] else {
        panic!("cloudwatch")
    };
    assert_eq!(cw.common.name, "cloudwatch:/aws/lambda/api");
    assert_eq!(cw.log_groups, ["/aws/lambda/api", "/aws/lambda/worker"]);
    assert_eq!(cw.log_stream_prefix.as_deref(), Some("2026/"));
    assert_eq!(cw.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(cw.start_at, StartAt::Beginning);
    assert_eq!(cw.max_requests_per_second, 2.5);
    assert_eq!(cw.poll_interval, 30);
    assert_eq!(cw.profile.as_deref(), Some("prod"));
    let SourceConfig::Cloudwatch(cw2) = &c.sources[1] else {
        panic!("cloudwatch")
    };
    // The reference's start: 300 s back from now.
    assert_eq!(cw2.start_at, StartAt::End);
    assert_eq!(cw2.lookback_seconds, DEFAULT_LOOKBACK_SECONDS);
    assert_eq!(cw2.max_requests_per_second, DEFAULT_CLOUDWATCH_RPS);
    let SourceConfig::Process(p) = &c.sources[2] else {
        panic!("process")
    };
    assert_eq!(p.common.name, "process:kubectl");
    assert_eq!(p.command, ["kubectl", "logs", "-f", "deploy/api"]);
    assert_eq!(p.env, [("KUBECONFIG".to_string(), "/k".to_string())]);
    assert_eq!(p.restart, RestartPolicy::OnFailure);
    let SourceConfig::Stdin(s) = &c.sources[3] else {
        panic!("stdin")
    };
    assert!(s.deprecated_alias);
    assert_eq!(c.sources[3].kind(), SourceKind::Stdin);
    // A file source still starts at the beginning by default.
    let c = parse("sources: [{path: a.log}]\n").unwrap();
    let SourceConfig::File(f) = &c.sources[0] else {
        panic!("file")
    };
    assert_eq!(f.start_at, StartAt::Beginning);
}

#[test]
fn bad_cloudwatch_and_process_sources_are_named() {
    for (yaml, key) in [
        (
            "sources: [{type: cloudwatch, region: x}]",
            "sources[0].log_group",
        ),
        (
            "sources: [{type: cloudwatch, log_group: g, max_requests_per_second: 0}]",
            "sources[0].max_requests_per_second",
        ),
        (
            "sources: [{type: cloudwatch, log_group: g, endpoint: 'localhost:1'}]",
            "sources[0].endpoint",
        ),
        ("sources: [{type: process}]", "sources[0].command"),
        (
            "sources: [{type: stdin}, {type: stdin, name: b}]",
            "sources[1].type",
        ),
    ] {
        let msg = parse(yaml).unwrap_err().to_string();
        assert!(msg.contains(key), "{yaml}: {msg}");
    }
}

#[test]
fn nats_sources_and_forward_parse_with_defaults_and_checks() {
    let c = parse(
        r#"
sources:
  - type: nats
    url: nats://127.0.0.1:4222
    partitions: [0, 1, 10]
  - type: nats
    name: shippers
    url: nats://n1:4222,nats://n2:4222
    stream: LOGS
    subject_prefix: logs.
    format: raw
forward:
  nats: {url: "nats://127.0.0.1:4222", edge: web-1}
"#,
    )
    .unwrap();
    let SourceConfig::Nats(a) = &c.sources[0] else {
        panic!("nats")
    };
    assert_eq!(a.common.name, "nats:SENTINEL");
    assert_eq!(
        (a.stream.as_str(), a.subject_prefix.as_str()),
        (DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX)
    );
    assert_eq!(a.partitions, ["0", "1", "10"]);
    assert_eq!(a.payload, NatsFormat::Sentinel);
    let SourceConfig::Nats(r) = &c.sources[1] else {
        panic!("nats")
    };
    assert_eq!(
        (r.payload, r.subject_prefix.as_str()),
        (NatsFormat::Raw, "logs")
    );
    assert_eq!(
        r.partitions,
        [">"],
        "a raw source reads every subject by default"
    );
    let f = c.forward.expect("forward");
    assert_eq!((f.partitions, f.edge.as_str()), (16, "web-1"));
    assert_eq!(f.max_age_hours, DEFAULT_NATS_MAX_AGE_HOURS);
    // Checks.
    let err = |y: &str| parse(y).unwrap_err().to_string();
    assert!(err("sources: [{type: nats, url: 'nats://h'}]\n").contains("partitions"));
    assert!(err("sources: [{type: nats, partitions: [0]}]\n").contains("url"));
    assert!(
        err("sources: [{type: nats, url: 'nats://h', partitions: [a.b]}]\n").contains("partitions")
    );
    assert!(err("sources: [{path: a.log, format: raw}]\n").contains("format"));
    assert!(err("forward: {nats: {url: 'nats://h', partitions: 0}}\n").contains("partitions"));
    assert!(err("forward: {nats: {partitions: 4}}\n").contains("url"));
    assert!(parse("").unwrap().forward.is_none());
}

#[test]
fn triage_defaults_on_and_its_limit_is_checked() {
    let c = parse("version: '1.0'\n").unwrap();
    assert!(c.triage.enabled);
    assert_eq!(c.triage.max_per_hour, 30);
    let c = parse("triage:\n  enabled: false\n  max_per_hour: 5\n").unwrap();
    assert!(!c.triage.enabled);
    assert_eq!(c.triage.max_per_hour, 5);
    let msg = parse("triage:\n  max_per_hour: 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("triage.max_per_hour") && msg.contains(":2:"),
        "{msg}"
    );
    let msg = parse("triage:\n  max_per_hours: 3\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("max_per_hours"), "{msg}");
}
