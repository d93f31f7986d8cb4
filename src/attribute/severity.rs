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
}
