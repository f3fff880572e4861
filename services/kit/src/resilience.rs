//! Calls to other services: a deadline on every call, retries for idempotent calls,
//! and a circuit breaker per downstream.
//!
//! The breaker counts consecutive failures that say the downstream is unwell
//! (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED); after `failure_threshold`
//! of them it opens and calls fail at once with UNAVAILABLE for `cool_down`; then one
//! trial call is let through (half-open): success closes it, failure opens it again.
//! A trial that never reports (its caller gave up on it) is replaced by another
//! after a further `cool_down`, so a lost trial cannot keep the circuit half-open.
//! Answers such as NOT_FOUND or FAILED_PRECONDITION are the downstream working and
//! reset the count.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How calls to one downstream behave.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Deadline of each attempt.
    pub timeout: Duration,
    /// Attempts of an idempotent call, at least 1.
    pub attempts: u32,
    /// Pause before the second attempt; doubles after each.
    pub backoff: Duration,
    pub failure_threshold: u32,
    pub cool_down: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(50),
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out since `since`.
    HalfOpen {
        since: Instant,
    },
}

/// A circuit breaker for one downstream.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    policy: CallPolicy,
    state: Mutex<BreakerState>,
    /// Calls refused at once because the circuit was open.
    rejected: AtomicU64,
}

fn unwell(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Unknown | Code::Cancelled
    )
}

impl Breaker {
    pub fn new(name: &'static str, policy: CallPolicy) -> Self {
        Self {
            name,
            policy,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            rejected: AtomicU64::new(0),
        }
    }

    /// Whether calls are refused now (open, or half-open with its trial out).
    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            BreakerState::Closed { .. }
        )
    }

    /// How many calls the open circuit refused without making them.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// Whether a call may go out now.
    fn admit(&self) -> Result<(), Status> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen { since: now };
                Ok(())
            }
            BreakerState::HalfOpen { since } if now >= since + self.policy.cool_down => {
                *state = BreakerState::HalfOpen { since: now };
                Ok(())
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Status::unavailable(format!(
                    "{} is unavailable (circuit open)",
                    self.name
                )))
            }
        }
    }

    fn record(&self, outcome: &Result<(), &Status>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let failed = matches!(outcome, Err(s) if unwell(s));
        *state = match (&*state, failed) {
            (_, false) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, true) if failures + 1 < self.policy.failure_threshold => {
                BreakerState::Closed { failures: failures + 1 }
            }
            (_, true) => {
                tracing::warn!(downstream = self.name, "circuit opened");
                BreakerState::Open {
                    until: Instant::now() + self.policy.cool_down,
                }
            }
        };
    }

    /// Makes one call with the deadline, through the breaker.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_within(self.policy.timeout, call).await
    }

    /// [`Self::call`] with a deadline of its own, for the odd call that may take
    /// longer than the policy's.
    pub async fn call_within<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<T, Status>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.admit()?;
        let result = match tokio::time::timeout(timeout, call(timeout)).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{} did not answer in time",
                self.name
            ))),
        };
        self.record(&result.as_ref().map(|_| ()));
        result
    }

    /// Makes an idempotent call, retrying while the downstream is unwell.
    pub async fn call_idempotent<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut backoff = self.policy.backoff;
        let mut attempt = 1;
        loop {
            match self.call(&call).await {
                Err(status) if unwell(&status) && attempt < self.policy.attempts.max(1) => {
                    tracing::debug!(downstream = self.name, attempt, error = %status.message(), "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A request with the deadline sent along as `grpc-timeout`.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// A channel to another service at `url` (setting `key`), connected on first use:
/// a service starts while the other is still coming up. TCP_NODELAY, since every
/// call is a small request waiting for its answer. A bad URL is an error naming
/// `key`, never the URL (it may carry credentials).
pub fn lazy_channel(key: &str, url: &str) -> anyhow::Result<Channel> {
    let valid = url.starts_with("http://") || url.starts_with("https://");
    let endpoint = Channel::from_shared(url.to_owned())
        .ok()
        .filter(|_| valid)
        .with_context(|| format!("invalid configuration: `{key}` must be an http:// or https:// URL"))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect_lazy())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            CallPolicy {
                timeout: Duration::from_millis(50),
                attempts: 3,
                backoff: Duration::from_millis(1),
                failure_threshold: 3,
                cool_down: Duration::from_millis(100),
            },
        )
    }

    #[tokio::test]
    async fn idempotent_calls_are_retried_while_the_downstream_is_unavailable() {
        let b = breaker();
        let calls = AtomicU32::new(0);
        let result = b
            .call_idempotent(|_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Status::unavailable("down"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn answers_that_are_not_outages_are_not_retried() {
        let b = breaker();
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = b
            .call_idempotent(|_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Status::not_found("no"))
            })
            .await;
        assert_eq!(result.unwrap_err().code(), Code::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_slow_downstream_hits_the_deadline() {
        let b = breaker();
        let result: Result<(), _> = b
            .call(|_| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert_eq!(result.unwrap_err().code(), Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn the_circuit_opens_after_repeated_failures_and_closes_after_a_good_trial() {
        let b = breaker();
        for _ in 0..3 {
            let _: Result<(), _> = b.call(|_| async { Err(Status::unavailable("down")) }).await;
        }
        let calls = AtomicU32::new(0);
        let fast: Result<(), _> = b
            .call(|_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert_eq!(fast.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "an open circuit fails fast");
        tokio::time::sleep(Duration::from_millis(120)).await;
        b.call(|_| async { Ok(()) }).await.unwrap();
        b.call(|_| async { Ok(()) }).await.unwrap();
    }

    #[tokio::test]
    async fn a_trial_call_that_is_given_up_does_not_keep_the_circuit_half_open() {
        let b = breaker();
        for _ in 0..3 {
            let _: Result<(), _> = b.call(|_| async { Err(Status::unavailable("down")) }).await;
        }
        assert!(b.is_open());
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The trial's caller drops it before it reports.
        let trial = b.call(|_| std::future::pending::<Result<(), Status>>());
        let _ = tokio::time::timeout(Duration::from_millis(5), trial).await;
        assert!(b.call(|_| async { Ok(()) }).await.is_err(), "its trial is still out");
        let rejected = b.rejected();
        tokio::time::sleep(Duration::from_millis(120)).await;
        b.call(|_| async { Ok(()) }).await.unwrap();
        assert!(!b.is_open());
        assert_eq!(b.rejected(), rejected);
    }

    #[tokio::test]
    async fn a_bad_downstream_url_is_refused_naming_its_setting_not_its_value() {
        for bad in ["identity:53051", "ftp://x", "http://user:s3cret@bad host"] {
            let err = lazy_channel("auth.identity_url", bad).unwrap_err().to_string();
            assert!(err.contains("auth.identity_url"), "{err}");
            assert!(!err.contains("s3cret") && !err.contains("53051"), "{err}");
        }
        assert!(lazy_channel("auth.identity_url", "http://127.0.0.1:50051").is_ok());
    }
}
