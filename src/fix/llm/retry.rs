//! Retry timing and the circuit breaker: pure state and arithmetic, time passed in.

use std::time::Duration;

use tokio::time::Instant;

/// The longest `Retry-After` honoured by default; a server asking for more gets this.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// The first backoff ceiling (doubled per failed attempt, full jitter below it).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);

/// The largest backoff ceiling.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Consecutive failed calls that open the circuit breaker by default.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;

/// How long an open circuit breaker fails calls fast by default.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(60);

/// The wait before retry number `failed_attempts` (1 after the first failure): "full
/// jitter" below `min(max, base * 2^(failed_attempts-1))`, but never less than the server's
/// `Retry-After` (itself capped at `retry_after_cap`). `random` is any uniformly random u64.
pub(crate) fn backoff(
    failed_attempts: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    retry_after_cap: Duration,
    random: u64,
) -> Duration {
    let exp = failed_attempts.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    let jittered = Duration::from_micros(random % ceiling_us.saturating_add(1));
    match retry_after {
        Some(ra) => jittered.max(ra.min(retry_after_cap)),
        None => jittered,
    }
}

/// Parses a `Retry-After` value: delay-seconds (fractions accepted) or an HTTP date, relative
/// to `now`. A date in the past is zero; anything else unparsable is `None`.
pub(crate) fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v)
        .ok()?;
    let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// A circuit breaker: after `threshold` consecutive failed calls it opens and calls fail
/// fast for `cooldown`; then one probe call is let through (half-open): its success closes
/// the breaker, its failure opens it again.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Permission to make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// The breaker is closed.
    Normal,
    /// The one call let through by a half-open breaker: it is tried once, without retries.
    Probe,
}

/// How a call ended, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The endpoint answered usefully.
    Success,
    /// The endpoint is failing (transport, timeout, 429, 5xx, auth, garbage).
    Failure,
    /// Says nothing about the endpoint (a 400 for this request; a call cancelled).
    Neutral,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: State::Closed { failures: 0 },
        }
    }

    /// A ticket for a call, or how long the breaker stays open (zero while a probe is out).
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Result<Ticket, Duration> {
        match self.state {
            State::Closed { .. } => Ok(Ticket::Normal),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Ok(Ticket::Probe)
            }
            State::HalfOpen { probing: true } => Err(Duration::ZERO),
        }
    }

    /// Records how a call with `ticket` ended.
    pub(crate) fn record(&mut self, ticket: Ticket, outcome: Outcome, now: Instant) {
        let open = State::Open {
            until: now + self.cooldown,
        };
        self.state = match (self.state, ticket, outcome) {
            (_, _, Outcome::Success) => State::Closed { failures: 0 },
            (_, Ticket::Probe, Outcome::Failure) => open,
            (_, Ticket::Probe, Outcome::Neutral) => State::HalfOpen { probing: false },
            (State::Closed { failures }, Ticket::Normal, Outcome::Failure) => {
                if failures + 1 >= self.threshold {
                    open
                } else {
                    State::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // A call that started before the breaker opened: it changes nothing more.
            (state, Ticket::Normal, _) => state,
        };
    }

    /// True when calls fail fast.
    #[cfg(test)]
    fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, 60 * S);
        for _ in 0..2 {
            assert_eq!(b.try_acquire(t0), Ok(Ticket::Normal));
            b.record(Ticket::Normal, Outcome::Failure, t0);
        }
        // A success resets the count.
        b.record(Ticket::Normal, Outcome::Success, t0);
        for _ in 0..2 {
            b.record(Ticket::Normal, Outcome::Failure, t0);
        }
        // Neutral outcomes neither count nor reset.
        b.record(Ticket::Normal, Outcome::Neutral, t0);
        assert!(!b.is_open());
        b.record(Ticket::Normal, Outcome::Failure, t0);
        assert!(b.is_open());
        assert_eq!(b.try_acquire(t0 + 10 * S), Err(50 * S));
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, 60 * S);
        b.record(Ticket::Normal, Outcome::Failure, t0);
        let later = t0 + 60 * S;
        assert_eq!(b.try_acquire(later), Ok(Ticket::Probe));
        assert_eq!(b.try_acquire(later), Err(Duration::ZERO));
        // The probe fails: open for another cooldown.
        b.record(Ticket::Probe, Outcome::Failure, later);
        assert_eq!(b.try_acquire(later + S), Err(59 * S));
        // Next probe is cancelled: the next caller probes instead.
        let later = later + 60 * S;
        assert_eq!(b.try_acquire(later), Ok(Ticket::Probe));
        b.record(Ticket::Probe, Outcome::Neutral, later);
        assert_eq!(b.try_acquire(later), Ok(Ticket::Probe));
        // It succeeds: closed.
        b.record(Ticket::Probe, Outcome::Success, later);
        assert!(!b.is_open());
        assert_eq!(b.try_acquire(later), Ok(Ticket::Normal));
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for r in [0, 1, 12345, u64::MAX / 3, u64::MAX] {
            assert!(backoff(1, base, max, None, 60 * S, r) <= base);
            assert!(backoff(3, base, max, None, 60 * S, r) <= 4 * base);
            assert!(backoff(40, base, max, None, 60 * S, r) <= max);
            assert!(backoff(1, base, max, Some(S), 60 * S, r) >= S);
            assert_eq!(backoff(1, base, max, Some(600 * S), 60 * S, r), 60 * S);
        }
        // Jitter spreads.
        let a = backoff(4, base, max, None, 60 * S, 1);
        let b = backoff(4, base, max, None, 60 * S, 700_001);
        assert_ne!(a, b);
    }

    #[test]
    fn retry_after_values() {
        let now: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("1", now), Some(S));
        assert_eq!(parse_retry_after(" 120 ", now), Some(120 * S));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Sun, 01 Jun 2025 12:00:30 GMT", now),
            Some(30 * S)
        );
        assert_eq!(
            parse_retry_after("Sun, 01 Jun 2025 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
