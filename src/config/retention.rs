//! `retention`: what the store forgets, when the daemon sweeps, when it compacts.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

/// `retention` (see `store/retention.rs` for what each limit removes and never removes).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionConfig {
    /// `retention.incidents_days`: resolved and escalated incidents not seen for this many
    /// days are removed (`0`: kept forever). Default 90.
    pub incidents_days: u64,
    /// `retention.fixes_days`: fix results (and finished fix jobs) that ended and started
    /// this many days ago are removed (`0`: kept forever). Default 90.
    pub fixes_days: u64,
    /// `retention.events_days`: events older than this many days leave the event log
    /// (besides its count bound; an event a sink has not delivered stays; `0`: only the
    /// count bound). Default 30.
    pub events_days: u64,
    /// `retention.interval_seconds`: how often the daemon applies retention (its first run
    /// is one interval after it starts). Default 3600.
    pub interval_seconds: u64,
    /// `retention.rows_per_transaction`: rows examined per write transaction (keeps each one
    /// short: the ingest writer waits for at most one). Default 500.
    pub rows_per_transaction: usize,
    /// `retention.compact_free_percent`: `sentinel gc` (and the daemon, in its window)
    /// compacts the file when at least this share of it is free. Default 25.
    pub compact_free_percent: u64,
    /// `retention.compact_window`: `"HH:MM-HH:MM"` (UTC) in which the daemon compacts when
    /// idle; unset: the daemon never compacts (`sentinel gc` does, when no daemon runs).
    pub compact_window: Option<(u32, u32)>,
    /// `retention.compact_idle_seconds`: no ingest commit for this long counts as idle.
    /// Default 60.
    pub compact_idle_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            incidents_days: 90,
            fixes_days: 90,
            events_days: 30,
            interval_seconds: 3600,
            rows_per_transaction: 500,
            compact_free_percent: 25,
            compact_window: None,
            compact_idle_seconds: 60,
        }
    }
}

impl RetentionConfig {
    /// The store's policy for these limits.
    pub fn policy(&self) -> crate::store::retention::RetentionPolicy {
        crate::store::retention::RetentionPolicy::new(
            (self.incidents_days > 0).then_some(self.incidents_days),
            (self.fixes_days > 0).then_some(self.fixes_days),
            self.rows_per_transaction,
        )
        .with_events_days((self.events_days > 0).then_some(self.events_days))
    }

    /// Whether `minute_of_day` (UTC, 0..1440) is inside the compaction window.
    pub fn in_compact_window(&self, minute_of_day: u32) -> bool {
        match self.compact_window {
            None => false,
            Some((from, to)) if from <= to => (from..to).contains(&minute_of_day),
            // Across midnight.
            Some((from, to)) => minute_of_day >= from || minute_of_day < to,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetention {
    incidents_days: Option<Spanned<u64>>,
    fixes_days: Option<Spanned<u64>>,
    events_days: Option<Spanned<u64>>,
    interval_seconds: Option<Spanned<u64>>,
    rows_per_transaction: Option<Spanned<u64>>,
    compact_free_percent: Option<Spanned<u64>>,
    compact_window: Option<Spanned<String>>,
    compact_idle_seconds: Option<Spanned<u64>>,
}

/// Checks the `retention` section.
pub(super) fn resolve_retention(
    raw: &RawRetention,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<RetentionConfig, ConfigError> {
    let d = RetentionConfig::default();
    let ranged = |key: &str, v: &Option<Spanned<u64>>, lo: u64, hi: u64, default: u64| match v {
        None => Ok(default),
        Some(s) if (lo..=hi).contains(&s.value) => Ok(s.value),
        Some(s) => Err(invalid(
            format!("retention.{key}"),
            Some(&s.referenced),
            format!("{} is out of range: expected {lo}..={hi}", s.value),
        )),
    };
    let compact_window = match &raw.compact_window {
        None => None,
        Some(s) => Some(parse_window(&s.value).ok_or_else(|| {
            invalid(
                "retention.compact_window".into(),
                Some(&s.referenced),
                format!(
                    "{:?} is not a window: expected \"HH:MM-HH:MM\" (UTC), e.g. \"02:00-05:00\"",
                    s.value
                ),
            )
        })?),
    };
    Ok(RetentionConfig {
        incidents_days: ranged(
            "incidents_days",
            &raw.incidents_days,
            0,
            36_500,
            d.incidents_days,
        )?,
        fixes_days: ranged("fixes_days", &raw.fixes_days, 0, 36_500, d.fixes_days)?,
        events_days: ranged("events_days", &raw.events_days, 0, 36_500, d.events_days)?,
        interval_seconds: ranged(
            "interval_seconds",
            &raw.interval_seconds,
            1,
            7 * 86_400,
            d.interval_seconds,
        )?,
        rows_per_transaction: ranged(
            "rows_per_transaction",
            &raw.rows_per_transaction,
            1,
            100_000,
            d.rows_per_transaction as u64,
        )? as usize,
        compact_free_percent: ranged(
            "compact_free_percent",
            &raw.compact_free_percent,
            1,
            100,
            d.compact_free_percent,
        )?,
        compact_window,
        compact_idle_seconds: ranged(
            "compact_idle_seconds",
            &raw.compact_idle_seconds,
            1,
            86_400,
            d.compact_idle_seconds,
        )?,
    })
}

/// `"HH:MM-HH:MM"` → (minute of day, minute of day); equal ends are refused (an empty or a
/// whole-day window is better said otherwise).
fn parse_window(s: &str) -> Option<(u32, u32)> {
    let minute = |hm: &str| {
        let (h, m) = hm.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = s.split_once('-')?;
    let (a, b) = (minute(a)?, minute(b)?);
    (a != b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_wrap_midnight() {
        assert_eq!(parse_window("02:00-05:30"), Some((120, 330)));
        assert_eq!(parse_window("23:00-01:00"), Some((1380, 60)));
        assert_eq!(parse_window("25:00-01:00"), None);
        assert_eq!(parse_window("01:00-01:00"), None);
        assert_eq!(parse_window("nope"), None);
        let c = RetentionConfig {
            compact_window: Some((1380, 60)),
            ..RetentionConfig::default()
        };
        assert!(c.in_compact_window(1400) && c.in_compact_window(30));
        assert!(!c.in_compact_window(60) && !c.in_compact_window(600));
        assert!(!RetentionConfig::default().in_compact_window(0));
    }
}
