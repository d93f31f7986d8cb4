//! `grouping.rules`: the user's ordered regex replacements, applied to an error line before
//! the built-in normalisation ([`crate::scan::fingerprint`]).
//!
//! Identity with rules: a line's fingerprint is the hash of the built-in normalisation of
//! the line *after* every rule, in the order listed, replaced all of its matches (each rule
//! sees the previous one's output). A line no rule matches keeps the identity it had without
//! rules, so adding a rule only merges incidents of the lines it matches. The sample stays
//! the original line; attribution reads the original line's key.
//!
//! Patterns are `regex::bytes` regexes (Unicode on, as the `regex` crate's default), so they
//! also match lines that are not valid UTF-8; the size of a compiled pattern is capped so
//! that a config cannot make every line slow.

use std::borrow::Cow;

use regex::bytes::{Regex, RegexBuilder};

use crate::config::GroupingRule;

/// The compiled size limit of one pattern.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Compiles one pattern as the rules do, or says why it is not valid.
///
/// # Errors
///
/// The `regex` crate's message on one line.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// The compiled rules, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<(Regex, Vec<u8>)>,
}

impl Rules {
    /// Compiles `rules` (validated at config load, so an error here is a programming error
    /// reported as a message).
    ///
    /// # Errors
    ///
    /// The first pattern that does not compile, with its index.
    pub fn new(rules: &[GroupingRule]) -> Result<Rules, String> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                compile(&r.pattern)
                    .map(|re| (re, r.replace.as_bytes().to_vec()))
                    .map_err(|e| format!("grouping.rules[{i}]: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Rules { rules })
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `line` with every rule applied in order (borrowed when no rule matched).
    pub fn apply<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        let mut text = Cow::Borrowed(line);
        for (re, replace) in &self.rules {
            if let Cow::Owned(o) = re.replace_all(&text, replace.as_slice()) {
                text = Cow::Owned(o);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_in_order_and_leave_unmatched_lines_alone() {
        let rules = Rules::new(&[
            GroupingRule::new(r"user [a-z]+", "user <user>"),
            GroupingRule::new(r"<user> from (\w+)", "<user> from <$1>"),
        ])
        .unwrap();
        assert_eq!(
            &*rules.apply(b"ERROR user alice from paris"),
            b"ERROR user <user> from <paris>"
        );
        assert!(matches!(rules.apply(b"ERROR other"), Cow::Borrowed(_)));
        assert!(Rules::default().is_empty());
    }

    #[test]
    fn a_bad_pattern_says_why() {
        let e = compile("user (").unwrap_err();
        assert!(e.contains("unclosed group"), "{e}");
        assert!(!e.contains('\n'));
        let e = Rules::new(&[GroupingRule::new("ok", ""), GroupingRule::new("[", "")]);
        assert!(e.unwrap_err().starts_with("grouping.rules[1]:"));
    }
}
