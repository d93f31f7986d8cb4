//! Loading the attribution rules: the manifest, and the severity overrides from Ledger
//! (`ledger.ledger_api`) and/or a mappings file (`ledger.mappings_file`).
//!
//! # What the real Ledger serves
//!
//! jmcentire/ledger's HTTP API has no Sentinel export (`GET /export/sentinel` answers 422;
//! its CLI's `export --format sentinel` needs a propagation table the API does not keep).
//! What it serves is `GET /annotations`:
//!
//! ```json
//! {"annotations": [{"backend_id": "pg", "table_name": "payment", "field": "card_number",
//!                   "annotation": "encrypted_at_rest", "propagated": false}, ...],
//!  "total_count": 4}
//! ```
//!
//! Each annotation is turned into a severity through `ledger.annotation_severity`, whose
//! defaults are Ledger's own built-in severities
//! ([`LEDGER_ANNOTATION_SEVERITIES`](super::severity::LEDGER_ANNOTATION_SEVERITIES):
//! `encrypted_at_rest` critical, `gdpr_erasable` high, …). A field with several annotations
//! takes the highest; an annotation without a severity in the table is ignored. A line names
//! a field by its path (`payment.card_number`, a Ledger glob such as `*.card.number`) or by
//! its name quoted as in JSON (`"card_number"`); see
//! [`field_regex`](super::severity::field_regex).
//!
//! A `ledger_api` that names an `/export/` document (`http://host/export/sentinel`) is read
//! as a mappings document instead (either shape of [`SeverityRules::from_json`]).
//!
//! # Refresh, and Ledger being down
//!
//! Ledger is advisory (the reference's FA-S-030). [`load_rules`] reads it once (the one-shot
//! commands); the daemon then keeps a [`LedgerFollower`] that reads both sources again every
//! `ledger.refresh_seconds` (5 minutes by default) and swaps the new rules in for new
//! incidents. A source that cannot be read keeps its **last good mapping** (none before the
//! first success). Each source warns once when it stops answering and once when it answers
//! again, never on every attempt in between. A manifest that cannot be read is an error:
//! attribution without it would silently turn every line unregistered.

use std::time::Duration;

use super::{LiveRules, Manifest, ManifestError, Rules, Severity, SeverityRules};
use crate::config::{Config, LedgerConfig};

/// How long one Ledger fetch may take (the reference's).
pub const LEDGER_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest document accepted from Ledger.
#[cfg(feature = "daemon")]
const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// The rules `config` describes, with warnings about the severity overrides that could not
/// be used (for the caller to log).
///
/// # Errors
///
/// [`ManifestError`] when `manifest.json` exists but cannot be read or parsed.
pub fn load_rules(config: &Config) -> Result<(Rules, Vec<String>), ManifestError> {
    let (rules, warnings, _) = load_rules_and_loader(config)?;
    Ok((rules, warnings))
}

/// [`load_rules`], and the [`SeverityLoader`] that read the overrides, to be followed by a
/// [`LedgerFollower`] (it remembers what it read, so an unchanged Ledger is not reported).
///
/// # Errors
///
/// [`ManifestError`] when `manifest.json` exists but cannot be read or parsed.
pub fn load_rules_and_loader(
    config: &Config,
) -> Result<(Rules, Vec<String>, SeverityLoader), ManifestError> {
    let manifest = Manifest::load(&config.manifest_path())?;
    let mut loader = SeverityLoader::new(&config.ledger);
    let load = loader.load();
    let warnings = load
        .notes
        .into_iter()
        .filter(|n| n.warn)
        .map(|n| n.text)
        .collect();
    Ok((
        Rules {
            manifest,
            severity: load.rules,
        },
        warnings,
        loader,
    ))
}

/// Where `ledger.ledger_api` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerUrl {
    /// Ledger's `GET /annotations` (a base URL gets `/annotations` appended).
    Annotations(String),
    /// A mappings document (a URL with `/export/` in it), read as [`SeverityRules::from_json`].
    Document(String),
}

impl LedgerUrl {
    /// What `ledger_api` means.
    pub fn of(api: &str) -> LedgerUrl {
        let api = api.trim();
        if api.contains("/export/") {
            return LedgerUrl::Document(api.to_string());
        }
        let base = api.trim_end_matches('/');
        if base.ends_with("/annotations") {
            LedgerUrl::Annotations(base.to_string())
        } else {
            LedgerUrl::Annotations(format!("{base}/annotations"))
        }
    }

    /// The URL fetched.
    pub fn as_str(&self) -> &str {
        match self {
            LedgerUrl::Annotations(u) | LedgerUrl::Document(u) => u,
        }
    }
}

/// The severity rules of Ledger's `GET /annotations` answer, with `table` (annotation name ->
/// severity) deciding each annotation's severity; warnings name the entries skipped.
///
/// # Errors
///
/// A message when the document is not Ledger's answer (not JSON, no `annotations` list).
pub fn rules_from_annotations(
    bytes: &[u8],
    table: &std::collections::BTreeMap<String, Severity>,
) -> Result<(SeverityRules, Vec<String>), String> {
    let doc: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("not Ledger's /annotations answer: {e}"))?;
    let list = doc
        .get("annotations")
        .and_then(|v| v.as_array())
        .ok_or("not Ledger's /annotations answer: no `annotations` list")?;
    // (table, field) -> (severity, annotations), in first-seen order.
    let mut fields: Vec<((String, String), Severity, Vec<String>)> = Vec::new();
    let mut skipped = Vec::new();
    let mut unmapped = std::collections::BTreeSet::new();
    for (i, entry) in list.iter().enumerate() {
        let text = |k: &str| entry.get(k).and_then(|v| v.as_str()).map(str::trim);
        let (Some(table_name), Some(field)) = (text("table_name"), text("field")) else {
            skipped.push(format!(
                "annotations[{i}] skipped: `table_name` and `field` must be strings"
            ));
            continue;
        };
        if field.is_empty() {
            skipped.push(format!("annotations[{i}] skipped: empty `field`"));
            continue;
        }
        let Some(name) = annotation_name(entry.get("annotation")) else {
            skipped.push(format!(
                "annotations[{i}] skipped: `annotation` is not a name"
            ));
            continue;
        };
        let Some(&severity) = table.get(&name) else {
            unmapped.insert(name);
            continue;
        };
        let key = (table_name.to_ascii_lowercase(), field.to_ascii_lowercase());
        match fields.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, sev, names)) => {
                *sev = (*sev).max(severity);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            None => fields.push((key, severity, vec![name])),
        }
    }
    if !unmapped.is_empty() {
        tracing::debug!(
            annotations = ?unmapped,
            "Ledger annotations without a severity in ledger.annotation_severity are ignored"
        );
    }
    let mut rules = SeverityRules::builtin();
    for ((table_name, field), severity, names) in fields {
        let path = if table_name.is_empty() || field.contains('.') {
            field.clone()
        } else {
            format!("{table_name}.{field}")
        };
        let label = format!("{path} ({})", names.join(", "));
        if let Err(e) = rules.push_field(&table_name, &field, severity, label) {
            skipped.push(format!("{path} skipped: {e}"));
        }
    }
    Ok((rules, skipped))
}

/// An annotation's name: a string, or an object's `name` (Ledger's `Annotation{name,
/// params}`), lowercased.
fn annotation_name(v: Option<&serde_json::Value>) -> Option<String> {
    let name = match v? {
        serde_json::Value::String(s) => s.as_str(),
        serde_json::Value::Object(o) => o.get("name")?.as_str()?,
        _ => return None,
    };
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// Something [`SeverityLoader::load`] has to say, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadNote {
    /// A warning (else information).
    pub warn: bool,
    /// The message.
    pub text: String,
}

/// What one [`SeverityLoader::load`] gave.
#[derive(Debug)]
pub struct Load {
    /// The overrides of every source (each at its last good state).
    pub rules: SeverityRules,
    /// Whether they differ from the previous load's.
    pub changed: bool,
    /// What to log: only changes of state, never the same failure twice in a row.
    pub notes: Vec<LoadNote>,
}

/// How a document is fetched: the URL or path in, the bytes or why not out.
type Fetch = Box<dyn FnMut(&str) -> Result<Vec<u8>, String> + Send>;

/// What a source's document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Ledger's `/annotations` answer.
    Annotations,
    /// A severity-mappings document (either shape).
    Mappings,
}

/// One place overrides come from, with its last good state.
struct Source {
    /// `ledger.mappings_file <path>` or `Ledger at <url>`, for messages.
    what: String,
    /// Ledger's API (else the mappings file).
    api: bool,
    /// The path or URL handed to `fetch`.
    target: String,
    shape: Shape,
    fetch: Fetch,
    /// The last document that could be used, and its rules.
    good: Option<(Vec<u8>, SeverityRules)>,
    /// `Some(true)` after a success, `Some(false)` after a failure, `None` before any try.
    up: Option<bool>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("what", &self.what)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

/// Reads the severity overrides from `ledger.mappings_file` and `ledger.ledger_api`, and
/// again on each [`load`](SeverityLoader::load), keeping each source's last good mapping.
#[derive(Debug)]
pub struct SeverityLoader {
    sources: Vec<Source>,
    table: std::collections::BTreeMap<String, Severity>,
    refresh: Duration,
}

impl SeverityLoader {
    /// A loader for the sources `ledger` names (none: [`is_empty`](Self::is_empty)).
    pub fn new(ledger: &LedgerConfig) -> SeverityLoader {
        let mut sources = Vec::new();
        if let Some(path) = &ledger.mappings_file {
            sources.push(Source {
                what: format!("ledger.mappings_file {}", path.display()),
                api: false,
                target: path.display().to_string(),
                shape: Shape::Mappings,
                fetch: Box::new(|p| std::fs::read(p).map_err(|e| e.to_string())),
                good: None,
                up: None,
            });
        }
        if let Some(api) = ledger.ledger_api.as_deref().map(str::trim)
            && !api.is_empty()
        {
            let url = LedgerUrl::of(api);
            sources.push(Source {
                what: format!("Ledger at {}", url.as_str()),
                api: true,
                target: url.as_str().to_string(),
                shape: match url {
                    LedgerUrl::Annotations(_) => Shape::Annotations,
                    LedgerUrl::Document(_) => Shape::Mappings,
                },
                fetch: http_fetch(),
                good: None,
                up: None,
            });
        }
        SeverityLoader {
            sources,
            table: ledger.annotation_severity.clone(),
            refresh: Duration::from_secs(ledger.refresh_seconds),
        }
    }

    /// Whether no source is configured (nothing to follow).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// How often the daemon reads the sources again (`ledger.refresh_seconds`).
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// Replaces how Ledger's API is fetched (tests: a scripted Ledger without a socket).
    #[doc(hidden)]
    pub fn with_api_fetch(
        mut self,
        fetch: impl FnMut(&str) -> Result<Vec<u8>, String> + Send + 'static,
    ) -> SeverityLoader {
        if let Some(s) = self.sources.iter_mut().find(|s| s.api) {
            s.fetch = Box::new(fetch);
        }
        self
    }

    /// Reads every source; a source that fails keeps its last good mapping.
    pub fn load(&mut self) -> Load {
        let mut notes = Vec::new();
        let mut changed = false;
        for s in &mut self.sources {
            let got = (s.fetch)(&s.target).and_then(|bytes| {
                if s.good.as_ref().is_some_and(|(b, _)| *b == bytes) {
                    return Ok(None); // unchanged: no parse, no repeated warnings
                }
                let parsed = match s.shape {
                    Shape::Annotations => rules_from_annotations(&bytes, &self.table),
                    Shape::Mappings => SeverityRules::from_json(&bytes).map_err(|e| e.to_string()),
                };
                parsed.map(|(rules, skipped)| Some((bytes, rules, skipped)))
            });
            match got {
                Ok(fresh) => {
                    if s.up == Some(false) {
                        notes.push(LoadNote {
                            warn: true,
                            text: format!(
                                "{} answers again; its severity overrides are in force",
                                s.what
                            ),
                        });
                    }
                    s.up = Some(true);
                    if let Some((bytes, rules, skipped)) = fresh {
                        notes.extend(skipped.into_iter().map(|w| LoadNote {
                            warn: true,
                            text: format!("{}: {w}", s.what),
                        }));
                        if s.good.is_some() {
                            notes.push(LoadNote {
                                warn: false,
                                text: format!(
                                    "{}: severity overrides updated ({} fields or patterns)",
                                    s.what,
                                    rules.mappings().len()
                                ),
                            });
                        }
                        s.good = Some((bytes, rules));
                        changed = true;
                    }
                }
                Err(e) => {
                    if s.up != Some(false) {
                        let kept = match &s.good {
                            Some((_, r)) => format!(
                                "keeping its last good severity overrides ({} fields or patterns)",
                                r.mappings().len()
                            ),
                            None => "proceeding without its severity overrides".into(),
                        };
                        notes.push(LoadNote {
                            warn: true,
                            text: format!("{} cannot be used — {kept}: {e}", s.what),
                        });
                    } else {
                        tracing::debug!(source = %s.what, error = %e, "still unavailable");
                    }
                    s.up = Some(false);
                }
            }
        }
        let mut rules = SeverityRules::builtin();
        for s in &self.sources {
            if let Some((_, r)) = &s.good {
                rules.extend(r.clone());
            }
        }
        Load {
            rules,
            changed,
            notes,
        }
    }
}

#[cfg(feature = "daemon")]
fn http_fetch() -> Fetch {
    let client = reqwest::blocking::Client::builder()
        .timeout(LEDGER_TIMEOUT)
        .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
        .build();
    // reqwest's message alone hides the cause ("error sending request"): add its sources.
    let why = |e: &reqwest::Error| {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        text
    };
    Box::new(move |url| {
        let client = client.as_ref().map_err(why)?;
        let resp = client.get(url).send().map_err(|e| why(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err("the document is over 16 MiB".into());
        }
        let bytes = resp.bytes().map_err(|e| why(&e))?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err("the document is over 16 MiB".into());
        }
        Ok(bytes.to_vec())
    })
}

#[cfg(not(feature = "daemon"))]
fn http_fetch() -> Fetch {
    Box::new(|_| {
        Err("this build has no HTTP client (feature `daemon`); use ledger.mappings_file".into())
    })
}

/// Reads Ledger (and the mappings file) again every `ledger.refresh_seconds` while the daemon
/// runs, and swaps changed overrides into the live rules (they apply to new incidents).
#[derive(Debug)]
pub struct LedgerFollower {
    stop: crossbeam_channel::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LedgerFollower {
    /// Starts following with `loader` (as [`load_rules_and_loader`] left it) into `live`;
    /// `None` when there is nothing to follow.
    ///
    /// # Errors
    ///
    /// The thread cannot be spawned.
    pub fn start(
        mut loader: SeverityLoader,
        live: std::sync::Arc<LiveRules>,
    ) -> std::io::Result<Option<LedgerFollower>> {
        if loader.is_empty() {
            return Ok(None);
        }
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let every = loader.refresh();
        let thread = std::thread::Builder::new()
            .name("sentinel-ledger".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let load = loader.load();
                    for n in &load.notes {
                        if n.warn {
                            tracing::warn!("{}", n.text);
                        } else {
                            tracing::info!("{}", n.text);
                        }
                    }
                    if load.changed {
                        live.replace_severity(load.rules);
                    }
                }
            })?;
        Ok(Some(LedgerFollower {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops following (waits for a fetch in flight, at most [`LEDGER_TIMEOUT`]).
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn table() -> std::collections::BTreeMap<String, Severity> {
        LedgerConfig::default().annotation_severity
    }

    /// Ledger's answer for the issue's schema: `payment.card_number` annotated
    /// `encrypted_at_rest, pii_field`, `payment.email` `gdpr_erasable`, `payment.id`
    /// `primary_key`.
    const ANNOTATIONS: &str = r#"{"annotations": [
        {"backend_id": "pg", "table_name": "payment", "field": "id", "annotation": "primary_key", "propagated": false},
        {"backend_id": "pg", "table_name": "payment", "field": "card_number", "annotation": "encrypted_at_rest", "propagated": false},
        {"backend_id": "pg", "table_name": "payment", "field": "card_number", "annotation": "pii_field", "propagated": false},
        {"backend_id": "pg", "table_name": "payment", "field": "email", "annotation": "gdpr_erasable", "propagated": false},
        {"backend_id": "pg", "table_name": "payment", "field": "memo", "annotation": "tokenized", "propagated": false}
    ], "total_count": 5}"#;

    #[test]
    fn ledger_urls() {
        assert_eq!(
            LedgerUrl::of("http://127.0.0.1:7701/"),
            LedgerUrl::Annotations("http://127.0.0.1:7701/annotations".into())
        );
        assert_eq!(
            LedgerUrl::of(" http://h/annotations/ "),
            LedgerUrl::Annotations("http://h/annotations".into())
        );
        assert_eq!(
            LedgerUrl::of("http://h/export/sentinel"),
            LedgerUrl::Document("http://h/export/sentinel".into())
        );
    }

    #[test]
    fn annotations_give_ledgers_own_severities() {
        let (rules, skipped) = rules_from_annotations(ANNOTATIONS.as_bytes(), &table()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        // id, card_number, email (memo's `tokenized` has no severity).
        assert_eq!(rules.mappings().len(), 3);
        assert!(
            rules
                .mappings()
                .iter()
                .any(|m| m.label == "payment.card_number (encrypted_at_rest, pii_field)"),
            "{:?}",
            rules.mappings()
        );
        let sev = |l: &str| rules.of_line(l.as_bytes());
        assert_eq!(
            sev("ERROR [PACT:billing:charge] cannot write payment.card_number: cipher unset"),
            Severity::Critical
        );
        assert_eq!(
            sev(r#"{"level":"error","msg":"rejected","card_number":"4111-xxxx"}"#),
            Severity::Critical
        );
        assert_eq!(
            sev(r#"ERROR payload {\"field\":\"card_number\"} invalid"#),
            Severity::Critical
        );
        assert_eq!(
            sev("ERROR [PACT:billing:mail] bounce for payment.email"),
            Severity::High
        );
        assert_eq!(
            sev("ERROR [PACT:billing:refund] timeout after 30s"),
            Severity::Medium
        );
        // Not the field: another column, or the bare word.
        assert_eq!(
            sev("ERROR payment.card_number_hash mismatch"),
            Severity::Medium
        );
        assert_eq!(sev("ERROR invalid email address"), Severity::Medium);
        // Ledger's `info` for primary keys is Sentinel's `low`.
        assert_eq!(sev("ERROR duplicate payment.id 42"), Severity::Low);
    }

    #[test]
    fn the_table_is_configurable_and_globs_are_fields() {
        let mut t = table();
        t.insert("tokenized".into(), Severity::Compliance);
        t.insert("gdpr_erasable".into(), Severity::Critical);
        let (rules, _) = rules_from_annotations(ANNOTATIONS.as_bytes(), &t).unwrap();
        assert_eq!(
            rules.of_line(b"ERROR payment.memo lost"),
            Severity::Compliance
        );
        assert_eq!(
            rules.of_line(b"ERROR payment.email lost"),
            Severity::Critical
        );

        let doc = br#"{"annotations": [
            {"backend_id": "stripe", "table_name": "charges", "field": "*.card.number", "annotation": "encrypted_at_rest"},
            {"backend_id": "stripe", "table_name": "charges", "field": "exp_*", "annotation": {"name": "PII_FIELD", "params": {}}}
        ], "total_count": 2}"#;
        let (rules, skipped) = rules_from_annotations(doc, &table()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            rules.of_line(b"ERROR bad source.card.number"),
            Severity::Critical
        );
        assert_eq!(
            rules.of_line(b"ERROR bad charges.exp_month"),
            Severity::High
        );
        assert_eq!(rules.of_line(br#"{"exp_year": 1999}"#), Severity::High);
    }

    #[test]
    fn bad_entries_are_skipped_and_other_documents_refused() {
        let doc = br#"{"annotations": [
            {"table_name": "t", "field": 3, "annotation": "pii_field"},
            {"table_name": "t", "field": "f", "annotation": ["x"]},
            {"table_name": "t", "field": "ok", "annotation": "pii_field"}
        ]}"#;
        let (rules, skipped) = rules_from_annotations(doc, &table()).unwrap();
        assert_eq!(rules.mappings().len(), 1);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].starts_with("annotations[0]"), "{skipped:?}");
        for bad in [&b"<html>"[..], b"{\"severity_mappings\": []}", b"[]"] {
            assert!(rules_from_annotations(bad, &table()).is_err());
        }
    }

    /// A loader whose Ledger answers what the test scripts.
    fn scripted(answers: Arc<Mutex<Result<String, String>>>) -> SeverityLoader {
        let cfg = LedgerConfig {
            ledger_api: Some("http://ledger.test:7701".into()),
            ..LedgerConfig::default()
        };
        SeverityLoader::new(&cfg).with_api_fetch(move |url| {
            assert_eq!(url, "http://ledger.test:7701/annotations");
            answers.lock().unwrap().clone().map(String::into_bytes)
        })
    }

    #[test]
    fn a_down_ledger_keeps_the_last_good_mapping_and_warns_once_each_way() {
        let answer = Arc::new(Mutex::new(Ok(ANNOTATIONS.to_string())));
        let mut loader = scripted(answer.clone());
        let critical =
            |l: &Load| l.rules.of_line(b"ERROR payment.card_number") == Severity::Critical;

        let first = loader.load();
        assert!(first.changed && first.notes.is_empty() && critical(&first));
        let same = loader.load();
        assert!(!same.changed && same.notes.is_empty() && critical(&same));

        *answer.lock().unwrap() = Err("connection refused".into());
        let down = loader.load();
        assert!(
            !down.changed && critical(&down),
            "the last good mapping stays"
        );
        assert_eq!(down.notes.len(), 1, "{:?}", down.notes);
        assert!(down.notes[0].warn);
        assert!(
            down.notes[0]
                .text
                .contains("keeping its last good severity overrides (3"),
            "{:?}",
            down.notes
        );
        for _ in 0..5 {
            let again = loader.load();
            assert!(again.notes.is_empty(), "no flood: {:?}", again.notes);
            assert!(critical(&again));
        }

        *answer.lock().unwrap() = Ok(ANNOTATIONS.replace("encrypted_at_rest", "not_null"));
        let back = loader.load();
        assert!(back.changed);
        let texts: Vec<&str> = back.notes.iter().map(|n| n.text.as_str()).collect();
        assert!(
            texts[0].contains("answers again") && back.notes[0].warn,
            "{texts:?}"
        );
        assert!(texts[1].contains("updated"), "{texts:?}");
        assert_eq!(
            back.rules.of_line(b"ERROR payment.card_number"),
            Severity::High,
            "the new mapping (pii_field high, not_null low)"
        );
    }

    #[test]
    fn a_ledger_down_at_start_warns_once_and_the_built_in_rules_apply() {
        let answer = Arc::new(Mutex::new(Err("answered HTTP 503".to_string())));
        let mut loader = scripted(answer.clone());
        let first = loader.load();
        assert_eq!(first.notes.len(), 1);
        assert!(
            first.notes[0]
                .text
                .contains("proceeding without its severity overrides"),
            "{:?}",
            first.notes
        );
        assert!(first.rules.mappings().is_empty());
        assert!(loader.load().notes.is_empty());
        *answer.lock().unwrap() = Ok(ANNOTATIONS.to_string());
        let back = loader.load();
        assert!(back.changed && back.notes.len() == 1, "{:?}", back.notes);
        assert_eq!(back.rules.mappings().len(), 3);
    }

    #[test]
    fn the_mappings_file_and_ledger_combine() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.json");
        std::fs::write(
            &file,
            r#"{"severity_mappings": [{"field_pattern": "ssn", "sentinel_severity": "compliance"}]}"#,
        )
        .unwrap();
        let cfg = LedgerConfig {
            mappings_file: Some(file.clone()),
            ledger_api: Some("http://ledger.test:7701".into()),
            ..LedgerConfig::default()
        };
        let mut loader =
            SeverityLoader::new(&cfg).with_api_fetch(|_| Ok(ANNOTATIONS.as_bytes().to_vec()));
        let l = loader.load();
        assert_eq!(l.rules.mappings().len(), 4);
        assert_eq!(l.rules.of_line(b"ERROR ssn leaked"), Severity::Compliance);
        assert_eq!(l.rules.of_line(b"ERROR payment.email"), Severity::High);
        // The file goes bad: its last good mapping stays, one warning.
        std::fs::write(&file, "not json").unwrap();
        let l = loader.load();
        assert_eq!(l.notes.len(), 1, "{:?}", l.notes);
        assert_eq!(l.rules.of_line(b"ERROR ssn leaked"), Severity::Compliance);
    }
}
