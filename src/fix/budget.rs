//! Spending caps for the fixer (SPEC §7.6), enforced by construction.
//!
//! Every LLM call first [`Budget::reserve`]s an upper bound of its cost (prompt bytes × the
//! input price — a token is never shorter than a byte — plus `max_tokens` × the output price),
//! then [`Budget::settle`]s the actual cost into the durable spend log in redb (or
//! [`Budget::release`]s the hold when the call cost nothing). Reservation, settlement and the
//! check all happen under one lock, and a settlement writes the log before it drops the hold,
//! so at any moment `logged + held` bounds what was spent: with concurrent fixes, no cap can
//! be exceeded, and a restart cannot reset a cap (the log is in the store).
//!
//! Caps, in USD in the config, micro-USD here: `llm.budget_per_fix` (one fix, all its calls),
//! `budget.per_incident_cap` (all fixes of an incident), and rolling windows
//! `hourly_cap` (1 h), `daily_cap` (24 h), `weekly_cap` (7 d), `monthly_cap` (30 d). A cap is
//! exceeded when spent + held + the new reservation would be *over* it (the reference
//! refused at `>=`, so a cap of 0 blocks every call there and here alike: nothing fits).

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use crate::config::BudgetConfig;
use crate::store::{Store, StoreError};

/// The caps, in micro-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// One fix, all its calls.
    pub per_fix: u64,
    /// All fixes of one incident.
    pub per_incident: u64,
    /// Rolling hour.
    pub hourly: u64,
    /// Rolling 24 h.
    pub daily: u64,
    /// Rolling 7 days.
    pub weekly: u64,
    /// Rolling 30 days.
    pub monthly: u64,
}

/// USD → micro-USD, rounding down (a cap is never raised by rounding); negative → 0.
pub fn micro_usd(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).floor() as u64
    } else {
        0
    }
}

/// micro-USD → USD, for messages and reports.
pub fn usd(micro: u64) -> f64 {
    micro as f64 / 1e6
}

impl Caps {
    /// The caps of the `budget` section and `llm.budget_per_fix`.
    pub fn new(b: &BudgetConfig, budget_per_fix: f64) -> Caps {
        Caps {
            per_fix: micro_usd(budget_per_fix),
            per_incident: micro_usd(b.per_incident_cap),
            hourly: micro_usd(b.hourly_cap),
            daily: micro_usd(b.daily_cap),
            weekly: micro_usd(b.weekly_cap),
            monthly: micro_usd(b.monthly_cap),
        }
    }
}

/// A call would go over a cap; no call is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "budget exceeded: {cap} cap ${:.2}, ${:.4} spent or held, this call may cost up to ${:.4}",
    usd(*limit), usd(*committed), usd(*needed)
)]
pub struct Exceeded {
    /// Which cap (`per_fix`, `per_incident`, `hourly`, `daily`, `weekly`, `monthly`).
    pub cap: &'static str,
    /// The cap.
    pub limit: u64,
    /// Spent plus held against it.
    pub committed: u64,
    /// The reservation asked for.
    pub needed: u64,
}

/// Why a reservation or settlement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// Over a cap.
    #[error(transparent)]
    Exceeded(#[from] Exceeded),
    /// The spend log could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Money set aside for one call; settle or release it.
#[derive(Debug)]
#[must_use = "settle or release the hold"]
pub struct Hold {
    id: u64,
    incident: String,
    amount: u64,
}

impl Hold {
    /// The amount held, micro-USD.
    pub fn amount(&self) -> u64 {
        self.amount
    }
}

#[derive(Debug, Default)]
struct Held {
    next_id: u64,
    holds: Vec<(u64, String, u64, Timestamp)>,
}

/// The fixer's budget over the store's spend log. Share it (`Arc`) between fix tasks.
#[derive(Debug)]
pub struct Budget {
    store: Arc<Store>,
    caps: Caps,
    held: Mutex<Held>,
}

const WINDOWS: [(&str, i64); 4] = [
    ("hourly", 3600),
    ("daily", 86_400),
    ("weekly", 7 * 86_400),
    ("monthly", 30 * 86_400),
];

/// What was spent in one window against its cap (`status`, the dashboard).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowSpend {
    /// `hourly`, `daily`, `weekly`, `monthly`.
    pub name: &'static str,
    /// Spent in the window ending now, in USD.
    pub spent_usd: f64,
    /// The configured cap, in USD.
    pub cap_usd: f64,
}

/// Spend in each cap's window ending `now`, from the spend log, with the configured caps.
///
/// # Errors
///
/// [`StoreError`] when the spend log cannot be read.
pub fn window_spend(
    store: &Store,
    budget: &BudgetConfig,
    now: Timestamp,
) -> Result<Vec<WindowSpend>, StoreError> {
    let month = store.spend_since(now - SignedDuration::from_secs(WINDOWS[3].1))?;
    let caps = [
        budget.hourly_cap,
        budget.daily_cap,
        budget.weekly_cap,
        budget.monthly_cap,
    ];
    Ok(WINDOWS
        .into_iter()
        .zip(caps)
        .map(|((name, secs), cap_usd)| {
            let since = now - SignedDuration::from_secs(secs);
            let micro: u64 = month
                .iter()
                .filter(|(at, _, _)| *at >= since)
                .map(|(_, _, m)| m)
                .sum();
            WindowSpend {
                name,
                spent_usd: usd(micro),
                cap_usd,
            }
        })
        .collect())
}

/// [`window_spend`] with nothing spent (no store yet).
pub fn window_spend_of_nothing(budget: &BudgetConfig) -> Option<Vec<WindowSpend>> {
    let caps = [
        budget.hourly_cap,
        budget.daily_cap,
        budget.weekly_cap,
        budget.monthly_cap,
    ];
    Some(
        WINDOWS
            .into_iter()
            .zip(caps)
            .map(|((name, _), cap_usd)| WindowSpend {
                name,
                spent_usd: 0.0,
                cap_usd,
            })
            .collect(),
    )
}

impl Budget {
    /// A budget with `caps` over `store`'s spend log.
    pub fn new(store: Arc<Store>, caps: Caps) -> Budget {
        Budget {
            store,
            caps,
            held: Mutex::new(Held::default()),
        }
    }

    /// The caps.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Holds `amount` for a call of the fix of `incident` that has spent `fix_spent` so far,
    /// if every cap allows it.
    ///
    /// # Errors
    ///
    /// [`BudgetError::Exceeded`] naming the first cap it would go over (no call may be
    /// made), [`BudgetError::Store`] when the log cannot be read.
    pub fn reserve(
        &self,
        incident: &str,
        fix_spent: u64,
        amount: u64,
        now: Timestamp,
    ) -> Result<Hold, BudgetError> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let over = |cap: &'static str, limit: u64, committed: u64| {
            (committed.saturating_add(amount) > limit).then_some(Exceeded {
                cap,
                limit,
                committed,
                needed: amount,
            })
        };
        if let Some(e) = over("per_fix", self.caps.per_fix, fix_spent) {
            return Err(e.into());
        }
        let month_ago = now - SignedDuration::from_secs(30 * 86_400);
        let log = self.store.spend_since(month_ago)?;
        let held_for = |pred: &dyn Fn(&str, Timestamp) -> bool| -> u64 {
            held.holds
                .iter()
                .filter(|(_, inc, _, at)| pred(inc, *at))
                .map(|(_, _, a, _)| *a)
                .sum()
        };
        // An incident's spend is all-time (the log keeps 30 days; older spend on a still
        // open incident is rare enough to leave to the windows).
        let incident_spent: u64 = log
            .iter()
            .filter(|(_, inc, _)| inc == incident)
            .map(|(_, _, a)| a)
            .sum::<u64>()
            + held_for(&|inc, _| inc == incident);
        if let Some(e) = over("per_incident", self.caps.per_incident, incident_spent) {
            return Err(e.into());
        }
        let caps = [
            self.caps.hourly,
            self.caps.daily,
            self.caps.weekly,
            self.caps.monthly,
        ];
        for ((name, secs), limit) in WINDOWS.into_iter().zip(caps) {
            let since = now - SignedDuration::from_secs(secs);
            // Holds count in every window: they are spent now or never.
            let spent: u64 = log
                .iter()
                .filter(|(at, _, _)| *at >= since)
                .map(|(_, _, a)| a)
                .sum::<u64>()
                + held_for(&|_, _| true);
            if let Some(e) = over(name, limit, spent) {
                return Err(e.into());
            }
        }
        let id = held.next_id;
        held.next_id += 1;
        held.holds.push((id, incident.to_string(), amount, now));
        Ok(Hold {
            id,
            incident: incident.to_string(),
            amount,
        })
    }

    /// Records what the call really cost (clamped to the hold: the hold is an upper bound by
    /// construction) in the spend log, durably, and drops the hold. Returns the amount
    /// recorded.
    ///
    /// # Errors
    ///
    /// [`BudgetError::Store`]: the entry could not be committed; the hold is kept (the money
    /// may have been spent), so the caps stay safe.
    pub fn settle(&self, hold: Hold, actual: u64, now: Timestamp) -> Result<u64, BudgetError> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let amount = actual.min(hold.amount);
        let mut txn = self.store.begin_write()?;
        txn.record_spend(&hold.incident, amount, now)?;
        txn.commit()?;
        held.holds.retain(|(id, ..)| *id != hold.id);
        Ok(amount)
    }

    /// Drops a hold whose call cost nothing (it was never sent).
    pub fn release(&self, hold: Hold) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.holds.retain(|(id, ..)| *id != hold.id);
    }

    /// Micro-USD held by calls in flight.
    pub fn held(&self) -> u64 {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.holds.iter().map(|(_, _, a, _)| a).sum()
    }
}

/// The upper bound of a call's cost: every prompt byte a token (a token is never shorter
/// than one byte), every output token used.
pub fn reservation(prompt_bytes: u64, max_tokens: u64, price_in: u64, price_out: u64) -> u64 {
    let mtok = 1_000_000u128;
    let cost = (prompt_bytes as u128 * price_in as u128 + max_tokens as u128 * price_out as u128)
        .div_ceil(mtok);
    u64::try_from(cost).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        (dir, Arc::new(s))
    }

    fn caps() -> Caps {
        Caps {
            per_fix: 2_000_000,
            per_incident: 5_000_000,
            hourly: 10_000_000,
            daily: 25_000_000,
            weekly: 100_000_000,
            monthly: 300_000_000,
        }
    }

    #[test]
    fn caps_are_checked_before_and_spend_is_durable() {
        let (_d, s) = store();
        let b = Budget::new(s.clone(), caps());
        let now = Timestamp::now();
        // Per fix.
        let e = b.reserve("inc1", 1_500_000, 600_000, now).unwrap_err();
        assert!(
            matches!(e, BudgetError::Exceeded(Exceeded { cap: "per_fix", .. })),
            "{e}"
        );
        // Per incident: 5 settled calls of 1 USD, the sixth is refused.
        for _ in 0..5 {
            let h = b.reserve("inc1", 0, 1_000_000, now).unwrap();
            assert_eq!(b.settle(h, 1_000_000, now).unwrap(), 1_000_000);
        }
        let e = b.reserve("inc1", 0, 1, now).unwrap_err();
        assert!(
            matches!(
                e,
                BudgetError::Exceeded(Exceeded {
                    cap: "per_incident",
                    ..
                })
            ),
            "{e}"
        );
        // A restart (a new Budget on the same store) remembers.
        let b2 = Budget::new(s.clone(), caps());
        assert!(b2.reserve("inc1", 0, 1, now).is_err());
        // Hourly: 5 more USD on other incidents fill the 10 USD hour.
        for i in 0..5 {
            let h = b2.reserve(&format!("x{i}"), 0, 1_000_000, now).unwrap();
            b2.settle(h, 2_000_000, now).unwrap(); // clamped to the hold
        }
        let e = b2.reserve("y", 0, 1, now).unwrap_err();
        assert!(
            matches!(e, BudgetError::Exceeded(Exceeded { cap: "hourly", .. })),
            "{e}"
        );
        // Two hours later the hour is free again, the day is not.
        let later = now + SignedDuration::from_secs(7200);
        let h = b2.reserve("y", 0, 1_000_000, later).unwrap();
        b2.release(h);
        assert_eq!(b2.held(), 0);
        let total: u64 = s
            .spend_since(now - SignedDuration::from_secs(60))
            .unwrap()
            .iter()
            .map(|e| e.2)
            .sum();
        assert_eq!(total, 10_000_000);
    }

    #[test]
    fn concurrent_fixes_never_exceed_a_cap() {
        let (_d, s) = store();
        let mut c = caps();
        c.hourly = 3_000_000;
        let b = Arc::new(Budget::new(s.clone(), c));
        let now = Timestamp::now();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    for i in 0..40u64 {
                        if let Ok(h) = b.reserve(&format!("i{t}-{i}"), 0, 70_000 + i * 1000, now) {
                            let cost = h.amount() - (i % 3) * 1000;
                            b.settle(h, cost, now).unwrap();
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        let calls: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let spent: u64 = s
            .spend_since(now - SignedDuration::from_secs(1))
            .unwrap()
            .iter()
            .map(|e| e.2)
            .sum();
        assert!(spent <= 3_000_000, "spent {spent}");
        assert!(
            calls > 10 && spent > 2_800_000,
            "the cap is used, not starved: {calls} calls, {spent}"
        );
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn reservations_bound_the_cost() {
        // 3 USD / 15 USD per million: 1 MB of prompt and 8192 output tokens.
        assert_eq!(
            reservation(1_000_000, 8192, 3_000_000, 15_000_000),
            3_000_000 + 122_880
        );
        assert_eq!(micro_usd(2.0), 2_000_000);
        assert_eq!(micro_usd(-1.0), 0);
        assert_eq!(micro_usd(f64::NAN), 0);
    }
}
