//! `grouping`: how error lines become incidents, and how many new incidents a key may open.
//!
//! ```yaml
//! grouping:
//!   max_new_incidents_per_key: 10000   # per window; past it, new fingerprints fold
//!   window_seconds: 3600
//!   rules:                             # applied in order before the built-in normalisation
//!     - pattern: 'user \w+'
//!       replace: 'user <user>'
//!   templates: true                    # the Drain-style template miner (default false)
//!   template_similarity: 0.5           # 0..=1, drain3's sim_th
//!   template_depth: 4                  # 3..=16, drain3's depth
//! ```
//!
//! A bad rule is refused at load time with the file, line and key (`grouping.rules[2].pattern`),
//! never at the first line it meets.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

/// The default of `grouping.max_new_incidents_per_key`: far above what ordinary logs open
/// in an hour (the 1 GiB ground-truth corpus has 28k incidents over 250 keys), so only a key
/// whose messages carry unnormalised variables meets it.
pub const DEFAULT_MAX_NEW_INCIDENTS_PER_KEY: u64 = 10_000;

/// The default of `grouping.window_seconds`.
pub const DEFAULT_GROUPING_WINDOW_SECONDS: u64 = 3600;

/// The most rules a config may list (each costs a regex pass over every new error line).
pub const MAX_GROUPING_RULES: usize = 64;

/// `grouping`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupingConfig {
    /// `max_new_incidents_per_key`: new incidents a PACT key (or the unattributed lines) may
    /// open per window before its new fingerprints fold into its overflow incident.
    pub max_new_incidents_per_key: u64,
    /// `window_seconds`: the window of that count.
    pub window_seconds: u64,
    /// `rules`: ordered regex replacements applied to a line before the built-in
    /// normalisation.
    pub rules: Vec<GroupingRule>,
    /// `templates` (with `template_similarity`, `template_depth`): the template miner's
    /// settings when it is on (see [`crate::store::templates`]).
    pub templates: Option<crate::scan::templates::TemplateSettings>,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        GroupingConfig {
            max_new_incidents_per_key: DEFAULT_MAX_NEW_INCIDENTS_PER_KEY,
            window_seconds: DEFAULT_GROUPING_WINDOW_SECONDS,
            rules: Vec::new(),
            templates: None,
        }
    }
}

/// One `grouping.rules` entry: every match of `pattern` becomes `replace` (`$1`, `${name}`
/// refer to groups, as in the `regex` crate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupingRule {
    /// The regex (validated at load).
    pub pattern: String,
    /// The replacement.
    pub replace: String,
}

impl GroupingRule {
    /// A rule (for tests and callers building a config in code).
    pub fn new(pattern: &str, replace: &str) -> GroupingRule {
        GroupingRule {
            pattern: pattern.to_string(),
            replace: replace.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGrouping {
    max_new_incidents_per_key: Option<Spanned<u64>>,
    window_seconds: Option<Spanned<u64>>,
    rules: Vec<RawRule>,
    /// Read as text so that a value that is not a boolean is refused with its key.
    templates: Option<Spanned<String>>,
    template_similarity: Option<Spanned<f64>>,
    template_depth: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pattern: Spanned<String>,
    #[serde(default)]
    replace: String,
}

/// Checks `grouping`.
pub(super) fn resolve_grouping(
    raw: &RawGrouping,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<GroupingConfig, ConfigError> {
    let ranged = |key: &str, v: &Option<Spanned<u64>>, default: u64, max: u64| match v {
        None => Ok(default),
        Some(s) if (1..=max).contains(&s.value) => Ok(s.value),
        Some(s) => Err(invalid(
            format!("grouping.{key}"),
            Some(&s.referenced),
            format!("{} is out of range: expected 1..={max}", s.value),
        )),
    };
    let max_new_incidents_per_key = ranged(
        "max_new_incidents_per_key",
        &raw.max_new_incidents_per_key,
        DEFAULT_MAX_NEW_INCIDENTS_PER_KEY,
        1 << 40,
    )?;
    let window_seconds = ranged(
        "window_seconds",
        &raw.window_seconds,
        DEFAULT_GROUPING_WINDOW_SECONDS,
        30 * 86_400,
    )?;
    if raw.rules.len() > MAX_GROUPING_RULES {
        return Err(invalid(
            "grouping.rules".into(),
            None,
            format!(
                "{} rules: at most {MAX_GROUPING_RULES} are allowed",
                raw.rules.len()
            ),
        ));
    }
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.iter().enumerate() {
        let key = format!("grouping.rules[{i}].pattern");
        if r.pattern.value.is_empty() {
            return Err(invalid(
                key,
                Some(&r.pattern.referenced),
                "must not be empty".into(),
            ));
        }
        if let Err(e) = crate::scan::rules::compile(&r.pattern.value) {
            return Err(invalid(key, Some(&r.pattern.referenced), e));
        }
        rules.push(GroupingRule {
            pattern: r.pattern.value.clone(),
            replace: r.replace.clone(),
        });
    }
    let similarity = match &raw.template_similarity {
        None => crate::scan::templates::DEFAULT_SIMILARITY,
        Some(s) if (0.0..=1.0).contains(&s.value) => s.value,
        Some(s) => {
            return Err(invalid(
                "grouping.template_similarity".into(),
                Some(&s.referenced),
                format!("{} is out of range: expected 0..=1", s.value),
            ));
        }
    };
    let depth = ranged(
        "template_depth",
        &raw.template_depth,
        crate::scan::templates::DEFAULT_DEPTH as u64,
        16,
    )?;
    if depth < 3 {
        let at = raw.template_depth.as_ref().map(|s| &s.referenced);
        return Err(invalid(
            "grouping.template_depth".into(),
            at,
            format!("{depth} is out of range: expected 3..=16"),
        ));
    }
    let on = match &raw.templates {
        None => false,
        Some(t) => match t.value.as_str() {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            other => {
                return Err(invalid(
                    "grouping.templates".into(),
                    Some(&t.referenced),
                    format!("{other:?} is not a boolean: expected true or false"),
                ));
            }
        },
    };
    let templates = on.then_some(crate::scan::templates::TemplateSettings {
        similarity,
        depth: depth as usize,
    });
    Ok(GroupingConfig {
        max_new_incidents_per_key,
        window_seconds,
        rules,
        templates,
    })
}
