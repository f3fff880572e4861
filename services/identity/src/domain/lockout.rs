//! Brute-force protection: after `slow_after` consecutive failures every further
//! attempt must wait a delay that doubles per failure; after `lock_after` failures the
//! subject is locked for `lock`, and an expired lock starts a fresh count. A success
//! clears the record. Subjects are usernames
//! (known or not, so locking reveals nothing) and API-key prefixes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::settings::LockoutSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThrottleState {
    pub failures: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
}

/// Whether an attempt may be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Too soon after the last failure; retry after this long.
    Wait(Duration),
    /// Locked; retry after this long.
    Locked(Duration),
}

#[derive(Debug, Clone)]
pub struct LockoutPolicy {
    slow_after: u32,
    base_delay: Duration,
    max_delay: Duration,
    lock_after: u32,
    lock: Duration,
}

fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default()
}

impl LockoutPolicy {
    pub fn new(s: &LockoutSettings) -> Self {
        Self {
            slow_after: s.slow_after,
            base_delay: Duration::from_millis(s.base_delay_ms),
            max_delay: Duration::from_millis(s.max_delay_ms),
            lock_after: s.lock_after,
            lock: Duration::from_secs(s.lock_secs),
        }
    }

    pub fn lock_duration(&self) -> Duration {
        self.lock
    }

    pub fn lock_after(&self) -> u32 {
        self.lock_after
    }

    pub fn gate(&self, state: &ThrottleState, now: DateTime<Utc>) -> Gate {
        if let Some(locked_until) = state.locked_until
            && locked_until > now
        {
            return Gate::Locked(until(locked_until, now));
        }
        if let Some(next) = state.next_attempt_at
            && next > now
            && state.locked_until.is_none()
        {
            return Gate::Wait(until(next, now));
        }
        Gate::Open
    }

    /// The state for `failures` consecutive failures, the last at `now`.
    pub fn state_for(&self, failures: u32, now: DateTime<Utc>) -> ThrottleState {
        if failures >= self.lock_after {
            return ThrottleState {
                failures,
                next_attempt_at: None,
                locked_until: now
                    .checked_add_signed(chrono::Duration::from_std(self.lock).unwrap_or(chrono::Duration::MAX))
                    .or(Some(DateTime::<Utc>::MAX_UTC)),
            };
        }
        let next_attempt_at = (failures >= self.slow_after).then(|| {
            let doublings = (failures - self.slow_after).min(20);
            let delay = self.base_delay.saturating_mul(1 << doublings).min(self.max_delay);
            now.checked_add_signed(chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        });
        ThrottleState {
            failures,
            next_attempt_at,
            locked_until: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy::new(&LockoutSettings {
            slow_after: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 8_000,
            lock_after: 6,
            lock_secs: 900,
        })
    }

    #[test]
    fn failures_below_the_threshold_do_not_slow_down() {
        let p = policy();
        let now = Utc::now();
        for failures in 0..3 {
            assert_eq!(p.gate(&p.state_for(failures, now), now), Gate::Open);
        }
    }

    #[test]
    fn delays_double_then_cap_then_lock() {
        let p = policy();
        let now = Utc::now();
        assert_eq!(p.state_for(3, now).next_attempt_at, Some(now + Duration::from_secs(1)));
        assert_eq!(p.state_for(4, now).next_attempt_at, Some(now + Duration::from_secs(2)));
        assert_eq!(p.state_for(5, now).next_attempt_at, Some(now + Duration::from_secs(4)));
        let locked = p.state_for(6, now);
        assert_eq!(p.gate(&locked, now), Gate::Locked(Duration::from_secs(900)));
        assert_eq!(
            p.gate(&locked, now + chrono::Duration::seconds(899)),
            Gate::Locked(Duration::from_secs(1))
        );
        assert_eq!(p.gate(&locked, now + chrono::Duration::seconds(900)), Gate::Open);
    }

    #[test]
    fn a_waiting_subject_is_told_how_long() {
        let p = policy();
        let now = Utc::now();
        let s = p.state_for(4, now);
        assert_eq!(p.gate(&s, now), Gate::Wait(Duration::from_secs(2)));
        assert_eq!(p.gate(&s, now + chrono::Duration::seconds(2)), Gate::Open);
    }
}
