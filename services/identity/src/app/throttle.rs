//! The brute-force throttle around every guessable credential check (passwords and
//! API keys): an attempt is claimed before the check, counted, and cleared by a
//! success.

use retail_kit::error::{ServiceError, ServiceResult};

use super::{App, now};
use crate::domain::lockout::{Gate, ThrottleState};
use crate::store;

/// What a failed attempt reveals to the caller, after the throttle was consulted.
fn throttled(gate: Gate) -> ServiceResult<()> {
    match gate {
        Gate::Open => Ok(()),
        Gate::Wait(delay) => Err(ServiceError::ResourceExhausted {
            message: "too many failed attempts, retry later".into(),
            retry_after: Some(delay),
        }),
        Gate::Locked(delay) => Err(ServiceError::ResourceExhausted {
            message: "too many failed attempts, temporarily locked".into(),
            retry_after: Some(delay),
        }),
    }
}

impl App {
    /// Claims one attempt for `subject` before its credential is checked. The attempt
    /// is counted first, atomically, so however many arrive at once, no more than the
    /// policy allows are ever checked; a success clears the count again.
    pub(super) async fn claim_attempt(&self, subject: &str) -> ServiceResult<u32> {
        let at = now();
        if let Some(row) = store::throttle(&self.db, subject).await? {
            if row.locked_until.is_some_and(|t| t <= at) {
                store::reset_expired_lock(&self.db, subject, at).await?;
            } else {
                let state = ThrottleState {
                    failures: u32::try_from(row.failures).unwrap_or(0),
                    next_attempt_at: row.next_attempt_at,
                    locked_until: row.locked_until,
                };
                throttled(self.lockout.gate(&state, at))?;
            }
        }
        let attempt = store::count_failure(&self.db, subject, at).await?;
        if attempt > self.lockout.lock_after() {
            // Racing attempts beyond the limit: refused unchecked.
            let locked = self.lockout.state_for(attempt, at);
            store::raise_throttle(&self.db, subject, None, locked.locked_until).await?;
            throttled(Gate::Locked(self.lockout.lock_duration()))?;
        }
        Ok(attempt)
    }

    /// The claimed attempt failed: waits and locks follow from its count. Returns
    /// whether the subject is now locked.
    pub(super) async fn attempt_failed(&self, subject: &str, attempt: u32) -> ServiceResult<bool> {
        let state = self.lockout.state_for(attempt, now());
        store::raise_throttle(&self.db, subject, state.next_attempt_at, state.locked_until).await?;
        Ok(state.locked_until.is_some())
    }

    pub(super) fn lockout_secs(&self) -> u64 {
        self.lockout.lock_duration().as_secs()
    }
}
