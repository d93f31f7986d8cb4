//! Severity levels and the built-in rules (reference/SPEC.md §6).
//!
//! Levels, ascending: low < medium < high < critical < compliance; names are
//! case-insensitive (the reference compared them case-sensitively, so `HIGH` was silently
//! `medium`). The built-in rules: a `gdpr_erasable` mention raises to at least high; an audit
//! field together with a deletion word gives compliance.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An incident's severity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// low
    Low,
    /// medium (the default)
    #[default]
    Medium,
    /// high
    High,
    /// critical
    Critical,
    /// compliance
    Compliance,
}

impl Severity {
    /// Every level, ascending. The order is part of a file format (a severity is stored as
    /// its place here in the store's `incident_state`): append only.
    pub const ALL: [Severity; 5] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
        Severity::Compliance,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
            Severity::Compliance => "compliance",
        }
    }

    /// The severity of an error line under the built-in rules, starting from `base`.
    pub fn of_line(line: &[u8], base: Severity) -> Severity {
        let mut sev = base;
        if contains_word_pair(line, b"gdpr", b"erasable") {
            sev = sev.max(Severity::High);
        }
        if contains_word_pair(line, b"audit", b"field") && has_deletion_word(line) {
            sev = Severity::Compliance;
        }
        sev
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity name that is not one of the five levels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?}: expected low, medium, high, critical or compliance")]
pub struct ParseSeverityError(pub String);

impl FromStr for Severity {
    type Err = ParseSeverityError;

    fn from_str(s: &str) -> Result<Severity, ParseSeverityError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" | "info" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            "compliance" => Ok(Severity::Compliance),
            _ => Err(ParseSeverityError(s.to_string())),
        }
    }
}

/// Ledger's own built-in annotation severities: the `sentinel_severity` of each entry of its
/// propagation table (jmcentire/ledger `src/config/config.py`, `_BUILTIN_PROPAGATION_TABLE`).
/// Ledger's `info` (for `primary_key`) is Sentinel's lowest level, `low`. These are the
/// defaults of `ledger.annotation_severity`.
pub const LEDGER_ANNOTATION_SEVERITIES: [(&str, Severity); 8] = [
    ("immutable", Severity::Critical),
    ("gdpr_erasable", Severity::High),
    ("audit_field", Severity::High),
    ("soft_delete_marker", Severity::Medium),
    ("encrypted_at_rest", Severity::Critical),
    ("not_null", Severity::Low),
    ("pii_field", Severity::High),
    ("primary_key", Severity::Low),
];

/// One severity override: lines matching `pattern` are at least `severity`.
#[derive(Debug, Clone)]
pub struct SeverityMapping {
    /// Case-insensitive, searched anywhere in the line.
    pub pattern: regex::bytes::Regex,
    /// The severity a match raises the line to (at least).
    pub severity: Severity,
    /// What the mapping came from (the annotation or the pattern), for messages.
    pub label: String,
}

/// The severity rules: Ledger's overrides, then the built-in rules (SPEC §6).
#[derive(Debug, Clone, Default)]
pub struct SeverityRules {
    mappings: Vec<SeverityMapping>,
}

/// Why a mappings document could not be used at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MappingsError {
    /// Not JSON, or not an object with a `severity_mappings` list.
    #[error("not a severity-mappings document: {0}")]
    Shape(String),
}

impl SeverityRules {
    /// Only the built-in rules.
    pub fn builtin() -> SeverityRules {
        SeverityRules::default()
    }

    /// The overrides, in document order.
    pub fn mappings(&self) -> &[SeverityMapping] {
        &self.mappings
    }

    /// Adds the overrides of `other` after these.
    pub fn extend(&mut self, other: SeverityRules) {
        self.mappings.extend(other.mappings);
    }

    /// Adds one override: lines that name the field `field` of table `table` are `severity`
    /// (see [`field_regex`] for what names a field). `label` says where it came from.
    ///
    /// # Errors
    ///
    /// The field cannot be turned into a pattern (over-long).
    pub fn push_field(
        &mut self,
        table: &str,
        field: &str,
        severity: Severity,
        label: String,
    ) -> Result<(), String> {
        let pattern = regex::bytes::RegexBuilder::new(&field_regex(table, field))
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("field {field:?} cannot be used: {e}"))?;
        self.mappings.push(SeverityMapping {
            pattern,
            severity,
            label,
        });
        Ok(())
    }

    /// Parses a mappings document in either shape and returns the rules with the warnings
    /// about entries that were skipped:
    ///
    /// - the reference's: `{"severity_mappings": [{"field_pattern": <regex>,
    ///   "sentinel_severity": <level>, "annotation": ...}]}`;
    /// - Ledger's own export (`ledger export --format sentinel`): `{"severity_mappings":
    ///   [{"annotation_key", "severity", "field_pattern": <glob such as *.card.number>,
    ///   "description"}]}`. A glob's `*` matches a run of identifier characters and dots,
    ///   `?` one identifier character; everything else is literal.
    ///
    /// # Errors
    ///
    /// [`MappingsError`] when the document is not JSON or has no `severity_mappings` list.
    pub fn from_json(bytes: &[u8]) -> Result<(SeverityRules, Vec<String>), MappingsError> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| MappingsError::Shape(e.to_string()))?;
        let list = doc
            .get("severity_mappings")
            .and_then(|v| v.as_array())
            .ok_or_else(|| MappingsError::Shape("no `severity_mappings` list".into()))?;
        let mut rules = SeverityRules::default();
        let mut warnings = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            match mapping_of(entry) {
                Ok(m) => rules.mappings.push(m),
                Err(why) => warnings.push(format!("severity_mappings[{i}] skipped: {why}")),
            }
        }
        Ok((rules, warnings))
    }

    /// The severity of an error line: the highest matching override (default medium), then
    /// the built-in rules.
    pub fn of_line(&self, line: &[u8]) -> Severity {
        let base = self
            .mappings
            .iter()
            .filter(|m| m.pattern.is_match(line))
            .map(|m| m.severity)
            .max()
            .unwrap_or_default();
        Severity::of_line(line, base)
    }
}

fn mapping_of(entry: &serde_json::Value) -> Result<SeverityMapping, String> {
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str());
    let Some(obj) = entry.as_object() else {
        return Err("not an object".into());
    };
    let pattern_text = field("field_pattern").filter(|p| !p.trim().is_empty());
    let annotation = field("annotation_key").or_else(|| field("annotation"));
    if obj.contains_key("sentinel_severity") || !obj.contains_key("severity") {
        // The reference's shape: a regex and `sentinel_severity` (default medium).
        let level = field("sentinel_severity").unwrap_or("medium");
        let severity = level.parse::<Severity>().map_err(|e| e.to_string())?;
        let text = pattern_text.ok_or("no field_pattern")?;
        let pattern = regex::bytes::RegexBuilder::new(text)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("field_pattern {text:?} is not a valid regex: {e}"))?;
        return Ok(SeverityMapping {
            pattern,
            severity,
            label: annotation.unwrap_or(text).to_string(),
        });
    }
    // Ledger's export: a glob over field paths, or the annotation itself when there is none.
    let level = field("severity").ok_or("`severity` is not a string")?;
    let severity = level.parse::<Severity>().map_err(|e| e.to_string())?;
    let regex = match (pattern_text, annotation) {
        (Some(glob), _) => glob_regex(glob),
        (None, Some(a)) if !a.trim().is_empty() => regex::escape(a.trim()),
        _ => return Err("no field_pattern and no annotation_key".into()),
    };
    let pattern = regex::bytes::RegexBuilder::new(&regex)
        .case_insensitive(true)
        .build()
        .map_err(|e| format!("field_pattern cannot be used: {e}"))?;
    Ok(SeverityMapping {
        pattern,
        severity,
        label: annotation.or(pattern_text).unwrap_or_default().to_string(),
    })
}

/// What names field `field` of table `table` in a line, as a regex searched anywhere in it:
///
/// - its path, `table.field` (or `field` alone when it already holds a dot), as a Ledger glob
///   ([`glob_regex`]): `payment.card_number` names it, so does `pg.payment.card_number`, but
///   not `payment.card_number_hash`;
/// - its name (the last segment) in double quotes, as a JSON key or string value names it:
///   `{"card_number": …}`, `"field":"card_number"` (quotes escaped inside a JSON string
///   too). A name that is only wildcards is not used this way (it would match any string).
///
/// The bare name without quotes does not name the field: `email` alone is too common a word
/// to raise every line that has it.
pub fn field_regex(table: &str, field: &str) -> String {
    let field = field.trim();
    let table = table.trim();
    let path = if field.contains('.') || table.is_empty() {
        field.to_string()
    } else {
        format!("{table}.{field}")
    };
    let mut re = format!("(?:{})", glob_regex(&path));
    let name = field.rsplit('.').next().unwrap_or(field);
    if name.chars().any(|c| c != '*' && c != '?') {
        re.push_str(r#"|(?:\\?""#);
        for c in name.chars() {
            match c {
                '*' => re.push_str("[A-Za-z0-9_-]*"),
                '?' => re.push_str("[A-Za-z0-9_]"),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push_str(r#"\\?")"#);
    }
    re
}

/// A Ledger field glob as a regex searched anywhere in a line: `*` a run of identifier
/// characters and dots, `?` one identifier character, the rest literal; the match may not
/// start or end inside a longer identifier.
fn glob_regex(glob: &str) -> String {
    let mut re = String::from(r"(?:^|[^A-Za-z0-9_])");
    for c in glob.trim().chars() {
        match c {
            '*' => re.push_str(r"[A-Za-z0-9_.\-]*"),
            '?' => re.push_str("[A-Za-z0-9_]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push_str(r"(?:$|[^A-Za-z0-9_])");
    re
}

/// `(?i)a[_\s]?b` anywhere in `hay` (`a` and `b` lowercase ASCII letters).
fn contains_word_pair(hay: &[u8], a: &[u8], b: &[u8]) -> bool {
    positions_ci(hay, a).any(|i| {
        let rest = &hay[i + a.len()..];
        starts_with_ci(rest, b)
            || (matches!(
                rest.first(),
                Some(b'_' | b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
            ) && starts_with_ci(&rest[1..], b))
    })
}

/// `(?i)delet|remov|drop|purg` anywhere in `hay`.
fn has_deletion_word(hay: &[u8]) -> bool {
    [&b"delet"[..], b"remov", b"drop", b"purg"]
        .iter()
        .any(|w| positions_ci(hay, w).next().is_some())
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

/// Start positions of the lowercase ASCII `needle` in `hay`, ignoring ASCII case; candidates
/// come from memchr on the first byte in both cases, so a line is not walked byte by byte.
fn positions_ci<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let first = needle[0];
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), hay)
        .filter(move |&i| starts_with_ci(&hay[i..], needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_ordered() {
        assert_eq!("HIGH".parse::<Severity>().unwrap(), Severity::High);
        assert_eq!(
            "Compliance".parse::<Severity>().unwrap(),
            Severity::Compliance
        );
        assert!("urgent".parse::<Severity>().is_err());
        assert!(Severity::Low < Severity::Medium && Severity::Critical < Severity::Compliance);
    }

    #[test]
    fn built_in_rules() {
        let m = Severity::Medium;
        assert_eq!(
            Severity::of_line(b"ERROR field gdpr_erasable email leaked", m),
            Severity::High
        );
        assert_eq!(Severity::of_line(b"ERROR GDPR erasable", m), Severity::High);
        assert_eq!(Severity::of_line(b"ERROR gdprerasable", m), Severity::High);
        assert_eq!(
            Severity::of_line(b"ERROR audit_field created_by deleted", m),
            Severity::Compliance
        );
        assert_eq!(
            Severity::of_line(b"ERROR Audit Field purged", m),
            Severity::Compliance
        );
        assert_eq!(
            Severity::of_line(b"ERROR audit_field read", m),
            Severity::Medium
        );
        assert_eq!(Severity::of_line(b"ERROR timeout", m), Severity::Medium);
        assert_eq!(
            Severity::of_line(b"ERROR timeout", Severity::Critical),
            Severity::Critical
        );
    }

    #[test]
    fn reference_mappings_are_case_insensitive_regexes() {
        let doc = br#"{"severity_mappings": [
            {"field_pattern": "ssn|social_security", "annotation": "pii", "sentinel_severity": "CRITICAL"},
            {"field_pattern": "([bad", "sentinel_severity": "high"},
            {"field_pattern": "card_number"}
        ]}"#;
        let (rules, warnings) = SeverityRules::from_json(doc).unwrap();
        assert_eq!(rules.mappings().len(), 2);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("[1]"), "{warnings:?}");
        assert_eq!(rules.of_line(b"ERROR leaked SSN 123"), Severity::Critical);
        assert_eq!(rules.of_line(b"ERROR bad card_number"), Severity::Medium);
        assert_eq!(rules.of_line(b"ERROR timeout"), Severity::Medium);
        // Overrides and the built-in rules combine: compliance still wins.
        assert_eq!(
            rules.of_line(b"ERROR ssn audit_field deleted"),
            Severity::Compliance
        );
    }

    #[test]
    fn ledger_export_globs_match_field_paths() {
        let doc = br#"{"severity_mappings": [
            {"annotation_key": "pii_field", "severity": "HIGH", "field_pattern": "*.card.number", "description": "x"},
            {"annotation_key": "encrypted_at_rest", "severity": "critical", "field_pattern": "user.?assword"},
            {"annotation_key": "immutable", "severity": "urgent", "field_pattern": "*.id"}
        ]}"#;
        let (rules, warnings) = SeverityRules::from_json(doc).unwrap();
        assert_eq!(rules.mappings().len(), 2, "{warnings:?}");
        assert_eq!(
            rules.of_line(b"ERROR validation failed for payment.card.number"),
            Severity::High
        );
        assert_eq!(
            rules.of_line(b"ERROR write to user.password rejected"),
            Severity::Critical
        );
        assert_eq!(
            rules.of_line(b"ERROR card number missing"),
            Severity::Medium
        );
        assert_eq!(rules.of_line(b"ERROR xuser.password"), Severity::Medium);
    }

    #[test]
    fn documents_that_are_not_mappings_are_errors() {
        assert!(SeverityRules::from_json(b"<html>").is_err());
        assert!(SeverityRules::from_json(b"{\"mappings\": []}").is_err());
        let (rules, w) = SeverityRules::from_json(b"{\"severity_mappings\": [3]}").unwrap();
        assert!(rules.mappings().is_empty() && w.len() == 1);
    }
}
