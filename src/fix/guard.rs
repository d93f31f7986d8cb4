//! The fixer's guardrails: what may stop a fix before it starts or refuse its proposal.
//!
//! Two moments, because they cost differently:
//!
//! - **Before a job starts** ([`Guards::hold`]): the kill switch (`sentinel fixes pause`,
//!   `POST /fixes/pause`), `fix.freeze` windows and `fix.cooldown_seconds` per component.
//!   A held job is not failed — it stays queued and starts once nothing holds it, because the
//!   incident is still worth fixing after the freeze.
//! - **On a proposal, before any test runs** ([`check_proposal`]): `fix.min_confidence`,
//!   `fix.max_files` and `fix.max_changed_lines`. The tests are the slow part; a proposal a
//!   guardrail would refuse anyway is not worth running them for. A refused attempt is
//!   debriefed into the next one (the model can propose something smaller).
//!
//! Every refusal is a [`Refusal`] the caller records on the incident (a `fix_refused`
//! event) and counts in `sentinel_fix_refusals_total{guardrail}`.
//!
//! The pause switch is a file in the state directory, not daemon memory: it survives a
//! restart (a paused fixer must not wake up by itself) and `sentinel fixes pause` works with
//! or without a running daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::worktree::Edit;
use crate::config::{FixConfig, FreezeWindow};
pub use crate::store::Refusal;

/// Guardrail names, as recorded and as the metric's label.
pub mod guardrail {
    /// The kill switch.
    pub const PAUSED: &str = "paused";
    /// A `fix.freeze` window.
    pub const FREEZE: &str = "freeze";
    /// `fix.cooldown_seconds`.
    pub const COOLDOWN: &str = "cooldown";
    /// `fix.min_confidence`.
    pub const MIN_CONFIDENCE: &str = "min_confidence";
    /// `fix.max_changed_lines`.
    pub const MAX_CHANGED_LINES: &str = "max_changed_lines";
    /// `fix.max_files`.
    pub const MAX_FILES: &str = "max_files";
    /// A flaky CI failure (failed, then passed on a rerun of the same commit).
    pub const FLAKY: &str = "flaky";
    /// Every name (to pre-register the metric's series).
    pub const ALL: [&str; 7] = [
        PAUSED,
        FREEZE,
        COOLDOWN,
        MIN_CONFIDENCE,
        MAX_CHANGED_LINES,
        MAX_FILES,
        FLAKY,
    ];
}

/// Compiled `fix.freeze` windows.
#[derive(Debug, Clone, Default)]
pub struct Freeze {
    windows: Vec<Window>,
}

#[derive(Debug, Clone)]
enum Window {
    Once {
        start: Timestamp,
        end: Timestamp,
    },
    Weekly {
        /// Indexed by `Weekday::to_monday_zero_offset`.
        days: [bool; 7],
        from: Time,
        to: Time,
        tz: TimeZone,
        text: String,
    },
}

fn parse_day(s: &str) -> Option<Weekday> {
    let s = s.trim().to_ascii_lowercase();
    let day = match s.get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    };
    // `mon`, `monday`; not `monkey`.
    let full = format!("{day:?}").to_ascii_lowercase();
    (s.len() == 3 || s == full).then_some(day)
}

fn parse_time(s: &str) -> Option<Time> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    // 24:00 is the end of the day.
    if h == 24 && m == 0 {
        return Some(Time::MAX);
    }
    Time::new(h, m, 0, 0).ok()
}

impl Freeze {
    /// Checks and compiles the windows. Err: (index, key, what is wrong).
    ///
    /// # Errors
    ///
    /// A window that is neither `{start, end}` nor `{days, from, to[, tz]}`, an instant that
    /// is not RFC 3339, an end not after its start, an unknown day or time zone.
    pub fn compile(list: &[Spanned<FreezeWindow>]) -> Result<Freeze, (usize, String, String)> {
        let mut windows = Vec::new();
        for (i, w) in list.iter().enumerate() {
            let w = &w.value;
            let err = |key: &str, msg: String| (i, key.to_string(), msg);
            let weekly = !w.days.is_empty() || w.from.is_some() || w.to.is_some() || w.tz.is_some();
            let once = w.start.is_some() || w.end.is_some();
            match (once, weekly) {
                (true, true) => {
                    return Err(err(
                        "start",
                        "a window is either {start, end} or {days, from, to, tz}, not both".into(),
                    ));
                }
                (false, false) => {
                    return Err(err(
                        "start",
                        "expected {start, end} (RFC 3339) or {days, from, to, tz}".into(),
                    ));
                }
                (true, false) => {
                    let instant = |key: &str, v: &Option<String>| {
                        let v = v.as_deref().ok_or_else(|| {
                            err(key, "missing (RFC 3339, e.g. 2026-12-24T18:00:00Z)".into())
                        })?;
                        v.parse::<Timestamp>()
                            .map_err(|e| err(key, format!("{v:?} is not an RFC 3339 instant: {e}")))
                    };
                    let (start, end) = (instant("start", &w.start)?, instant("end", &w.end)?);
                    if end <= start {
                        return Err(err("end", format!("{end} is not after start {start}")));
                    }
                    windows.push(Window::Once { start, end });
                }
                (false, true) => {
                    if w.days.is_empty() {
                        return Err(err("days", "missing: a list of mon..sun".into()));
                    }
                    let mut days = [false; 7];
                    for d in &w.days {
                        let day = parse_day(d).ok_or_else(|| {
                            err("days", format!("{d:?} is not a day (mon, tue, … sun)"))
                        })?;
                        days[day.to_monday_zero_offset() as usize] = true;
                    }
                    let time = |key: &str, v: &Option<String>| {
                        let v = v
                            .as_deref()
                            .ok_or_else(|| err(key, "missing (HH:MM)".into()))?;
                        parse_time(v).ok_or_else(|| err(key, format!("{v:?} is not HH:MM")))
                    };
                    let (from, to) = (time("from", &w.from)?, time("to", &w.to)?);
                    let tz_name = w.tz.as_deref().unwrap_or("UTC");
                    let tz = TimeZone::get(tz_name).map_err(|e| {
                        err("tz", format!("{tz_name:?} is not a known time zone: {e}"))
                    })?;
                    let text = format!(
                        "weekly {} {}–{} {tz_name}",
                        w.days.join(","),
                        w.from.as_deref().unwrap_or_default(),
                        w.to.as_deref().unwrap_or_default()
                    );
                    windows.push(Window::Weekly {
                        days,
                        from,
                        to,
                        tz,
                        text,
                    });
                }
            }
        }
        Ok(Freeze { windows })
    }

    /// The window `now` is in, described, or None.
    pub fn active(&self, now: Timestamp) -> Option<String> {
        self.windows.iter().find_map(|w| match w {
            Window::Once { start, end } => {
                (*start <= now && now < *end).then(|| format!("freeze window {start} to {end}"))
            }
            Window::Weekly {
                days,
                from,
                to,
                tz,
                text,
            } => {
                let local = now.to_zoned_datetime(tz.clone());
                let t = local.time();
                let today = days[local.weekday().to_monday_zero_offset() as usize];
                let yesterday = days[local.weekday().previous().to_monday_zero_offset() as usize];
                let inside = if from < to {
                    today && *from <= t && t < *to
                } else {
                    // Past midnight (or a whole day when from == to): it started on a listed
                    // day, today or yesterday.
                    (today && t >= *from) || (yesterday && t < *to)
                };
                inside.then(|| format!("freeze window {text}"))
            }
        })
    }
}

/// The kill switch's state, as stored and as `POST /fixes/pause` answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
pub struct PauseState {
    /// Whether fixes are paused.
    pub paused: bool,
    /// Since when (RFC 3339), when paused.
    pub since: Option<Timestamp>,
    /// Who or why, as given.
    pub reason: String,
}

/// The kill switch: a file in the state directory (`fixes-paused.json`).
#[derive(Debug, Clone)]
pub struct PauseSwitch {
    path: PathBuf,
}

impl PauseSwitch {
    /// The switch of state directory `state_dir`.
    pub fn new(state_dir: &Path) -> PauseSwitch {
        PauseSwitch {
            path: state_dir.join("fixes-paused.json"),
        }
    }

    /// The current state (not paused when the file is missing or unreadable — but see
    /// [`PauseSwitch::pause`]: it is written atomically, so a torn file never happens).
    pub fn state(&self) -> PauseState {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(PauseState {
                // A file we cannot read still means someone pulled the switch.
                paused: true,
                since: None,
                reason: "unreadable pause file".into(),
            }),
            Err(_) => PauseState::default(),
        }
    }

    /// Pauses every fix from now (idempotent: the first pause's time is kept).
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn pause(&self, reason: &str, now: Timestamp) -> std::io::Result<PauseState> {
        let cur = self.state();
        if cur.paused {
            return Ok(cur);
        }
        let st = PauseState {
            paused: true,
            since: Some(now),
            reason: reason.chars().take(500).collect(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&st).unwrap_or_default())?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(st)
    }

    /// Lets fixes start again.
    ///
    /// # Errors
    ///
    /// The file cannot be removed.
    pub fn resume(&self) -> std::io::Result<PauseState> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(PauseState::default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PauseState::default()),
            Err(e) => Err(e),
        }
    }
}

/// What may hold a job back before it starts.
#[derive(Debug)]
pub struct Guards {
    pause: PauseSwitch,
    freeze: Freeze,
    cooldown: SignedDuration,
    /// When the last fix of each component ended.
    last_ended: std::sync::Mutex<HashMap<String, Timestamp>>,
}

impl Guards {
    /// The guards of `fix` over state directory `state_dir` (windows that do not compile —
    /// the config check refuses them first — are left out).
    pub fn new(fix: &FixConfig, state_dir: &Path) -> Guards {
        Guards {
            pause: PauseSwitch::new(state_dir),
            freeze: Freeze::compile(&fix.freeze).unwrap_or_default(),
            cooldown: SignedDuration::from_secs(
                i64::try_from(fix.cooldown_seconds).unwrap_or(i64::MAX),
            ),
            last_ended: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The kill switch.
    pub fn pause_switch(&self) -> &PauseSwitch {
        &self.pause
    }

    /// Notes that a fix of `component` ended at `at` (for the cooldown).
    pub fn ended(&self, component: &str, at: Timestamp) {
        let mut m = self
            .last_ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = m.entry(component.to_string()).or_insert(at);
        if *e < at {
            *e = at;
        }
    }

    /// Why a fix of `component` may not start at `now`, or None.
    pub fn hold(&self, component: &str, now: Timestamp) -> Option<Refusal> {
        let p = self.pause.state();
        if p.paused {
            let since = p.since.map(|s| format!(" since {s}")).unwrap_or_default();
            let why = if p.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.reason)
            };
            return Some(Refusal::new(
                guardrail::PAUSED,
                format!("fixes are paused{since}{why}; the fix waits for resume"),
            ));
        }
        if let Some(w) = self.freeze.active(now) {
            return Some(Refusal::new(
                guardrail::FREEZE,
                format!("{w}: the fix waits until it ends"),
            ));
        }
        if !self.cooldown.is_zero() {
            let last = self
                .last_ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(component)
                .copied();
            if let Some(last) = last
                && let Ok(until) = last.checked_add(self.cooldown)
                && now < until
            {
                return Some(Refusal::new(
                    guardrail::COOLDOWN,
                    format!(
                        "component {component} had a fix end at {last}: fix.cooldown_seconds \
                         holds the next one until {until}"
                    ),
                ));
            }
        }
        None
    }
}

/// Lines changed from `a` to `b`: lines only in one of them, counted with multiplicity
/// (a moved line is free; an edited line counts twice, removed and added — as a diff
/// shows it).
pub fn changed_lines(a: &str, b: &str) -> u64 {
    let mut count: HashMap<&str, i64> = HashMap::new();
    for l in a.lines() {
        *count.entry(l).or_default() += 1;
    }
    for l in b.lines() {
        *count.entry(l).or_default() -= 1;
    }
    count.values().map(|n| n.unsigned_abs()).sum()
}

/// Checks a proposal (its test and source edits, and the model's confidence) against
/// `fix.min_confidence`, `fix.max_files` and `fix.max_changed_lines`; `current` reads a
/// file's text before the edit (None when new).
///
/// # Errors
///
/// The first guardrail that refuses it.
pub fn check_proposal(
    edits: &[&Edit],
    confidence: Option<f64>,
    fix: &FixConfig,
    current: impl Fn(&Path) -> Option<String>,
) -> Result<(), Refusal> {
    if fix.min_confidence > 0.0 {
        match confidence {
            None => {
                return Err(Refusal::new(
                    guardrail::MIN_CONFIDENCE,
                    format!(
                        "the model reported no confidence; fix.min_confidence is {}",
                        fix.min_confidence
                    ),
                ));
            }
            Some(c) if c.is_nan() || c < fix.min_confidence => {
                return Err(Refusal::new(
                    guardrail::MIN_CONFIDENCE,
                    format!(
                        "the model's confidence {c:.2} is below fix.min_confidence {}",
                        fix.min_confidence
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let mut files: Vec<&Path> = edits.iter().map(|e| e.path()).collect();
    files.sort();
    files.dedup();
    if fix.max_files > 0 && files.len() as u64 > fix.max_files {
        return Err(Refusal::new(
            guardrail::MAX_FILES,
            format!(
                "the proposal touches {} files ({}), over fix.max_files {}",
                files.len(),
                files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                fix.max_files
            ),
        ));
    }
    if fix.max_changed_lines > 0 {
        let lines: u64 = edits
            .iter()
            .map(|e| match e {
                Edit::Replace { old, new, .. } => changed_lines(old, new),
                Edit::Write { path, contents } => {
                    changed_lines(&current(path).unwrap_or_default(), contents)
                }
            })
            .sum();
        if lines > fix.max_changed_lines {
            return Err(Refusal::new(
                guardrail::MAX_CHANGED_LINES,
                format!(
                    "the proposal changes {lines} lines, over fix.max_changed_lines {}",
                    fix.max_changed_lines
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(w: FreezeWindow) -> Spanned<FreezeWindow> {
        let loc = serde_saphyr::Location::UNKNOWN;
        Spanned::new(w, loc, loc)
    }

    fn weekly(days: &[&str], from: &str, to: &str, tz: Option<&str>) -> FreezeWindow {
        FreezeWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            from: Some(from.into()),
            to: Some(to.into()),
            tz: tz.map(Into::into),
            ..FreezeWindow::default()
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn one_off_windows_hold_between_start_and_end() {
        let f = Freeze::compile(&[window(FreezeWindow {
            start: Some("2026-12-24T18:00:00Z".into()),
            end: Some("2026-12-27T08:00:00+01:00".into()),
            ..FreezeWindow::default()
        })])
        .unwrap();
        assert!(f.active(at("2026-12-24T17:59:59Z")).is_none());
        assert!(f.active(at("2026-12-24T18:00:00Z")).is_some());
        assert!(f.active(at("2026-12-27T06:59:59Z")).is_some());
        assert!(f.active(at("2026-12-27T07:00:00Z")).is_none());
    }

    #[test]
    fn weekly_windows_follow_their_zone_and_run_past_midnight() {
        // Friday 18:00 to Monday 08:00 in Paris: fri 18:00-24:00, sat, sun all day, and
        // sun→mon past midnight until 08:00.
        let f = Freeze::compile(&[
            window(weekly(&["fri"], "18:00", "24:00", Some("Europe/Paris"))),
            window(weekly(
                &["sat", "sunday"],
                "00:00",
                "00:00",
                Some("Europe/Paris"),
            )),
            window(weekly(&["sun"], "23:00", "08:00", Some("Europe/Paris"))),
        ])
        .unwrap();
        // 2026-12-04 is a Friday; Paris is UTC+1 in December.
        assert!(f.active(at("2026-12-04T16:59:00Z")).is_none());
        assert!(f.active(at("2026-12-04T17:00:00Z")).is_some());
        assert!(f.active(at("2026-12-05T12:00:00Z")).is_some());
        assert!(
            f.active(at("2026-12-07T06:59:00Z")).is_some(),
            "monday 07:59 Paris"
        );
        assert!(
            f.active(at("2026-12-07T07:00:00Z")).is_none(),
            "monday 08:00 Paris"
        );
        assert!(f.active(at("2026-12-08T12:00:00Z")).is_none());
    }

    #[test]
    fn bad_windows_name_their_key() {
        let bad = |w: FreezeWindow| Freeze::compile(&[window(w)]).unwrap_err();
        assert_eq!(
            bad(FreezeWindow {
                start: Some("tomorrow".into()),
                end: Some("2026-01-01T00:00:00Z".into()),
                ..FreezeWindow::default()
            })
            .1,
            "start"
        );
        assert_eq!(bad(weekly(&["funday"], "1:00", "2:00", None)).1, "days");
        assert_eq!(bad(weekly(&["mon"], "25:00", "2:00", None)).1, "from");
        assert_eq!(
            bad(weekly(&["mon"], "1:00", "2:00", Some("Mars/Olympus"))).1,
            "tz"
        );
        assert_eq!(bad(FreezeWindow::default()).1, "start");
    }

    #[test]
    fn the_cooldown_holds_one_component_and_the_switch_holds_all() {
        let dir = tempfile::tempdir().unwrap();
        let fix = FixConfig {
            cooldown_seconds: 60,
            ..FixConfig::default()
        };
        let g = Guards::new(&fix, dir.path());
        let t0 = at("2026-12-06T10:00:00Z");
        assert!(g.hold("a", t0).is_none());
        g.ended("a", t0);
        let r = g.hold("a", at("2026-12-06T10:00:59Z")).unwrap();
        assert_eq!(r.guardrail, "cooldown");
        assert!(g.hold("b", t0).is_none());
        assert!(g.hold("a", at("2026-12-06T10:01:00Z")).is_none());
        g.pause_switch().pause("deploy", t0).unwrap();
        assert_eq!(g.hold("b", t0).unwrap().guardrail, "paused");
        // A second switch over the same directory (another process) sees it.
        assert!(PauseSwitch::new(dir.path()).state().paused);
        g.pause_switch().resume().unwrap();
        assert!(g.hold("b", t0).is_none());
    }

    #[test]
    fn proposals_over_a_limit_are_refused_before_tests() {
        let fix = FixConfig {
            max_files: 1,
            max_changed_lines: 3,
            min_confidence: 0.5,
            ..FixConfig::default()
        };
        let small = Edit::Replace {
            path: "src/a.py".into(),
            old: "x = 1\n".into(),
            new: "x = 2\n".into(),
        };
        let other = Edit::Write {
            path: "src/b.py".into(),
            contents: "a\nb\nc\nd\n".into(),
        };
        let none = |_: &Path| None;
        assert!(check_proposal(&[&small], Some(0.9), &fix, none).is_ok());
        assert_eq!(
            check_proposal(&[&small], Some(0.4), &fix, none)
                .unwrap_err()
                .guardrail,
            "min_confidence"
        );
        assert_eq!(
            check_proposal(&[&small], None, &fix, none)
                .unwrap_err()
                .guardrail,
            "min_confidence"
        );
        assert_eq!(
            check_proposal(&[&small, &other], Some(0.9), &fix, none)
                .unwrap_err()
                .guardrail,
            "max_files"
        );
        // A whole-file write counts against what the file held.
        assert_eq!(
            check_proposal(&[&other], Some(0.9), &fix, none)
                .unwrap_err()
                .guardrail,
            "max_changed_lines"
        );
        assert!(check_proposal(&[&other], Some(0.9), &fix, |_| Some("a\nb\nc\n".into())).is_ok());
        assert_eq!(changed_lines("a\nb\n", "b\na\n"), 0);
        assert_eq!(changed_lines("a\nb\n", "a\nc\n"), 2);
    }
}
