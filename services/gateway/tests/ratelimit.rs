//! The per-partner rate limits: replicas sharing one Redis admit together no more
//! than one burst at one instant (a frozen clock), each partner has its own, and
//! without Redis each replica admits only its share.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use retail_gateway::ratelimit::{Clock, RateLimiter, RouteClass};
use retail_gateway::settings::{RateClass, RateLimitSection};

/// A clock the test moves.
#[derive(Debug, Default)]
struct Manual(AtomicU64);

impl Manual {
    fn advance_secs(&self, secs: u64) {
        self.0.fetch_add(secs * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for Manual {
    fn now_micros(&self) -> Option<u64> {
        Some(1_000_000_000 + self.0.load(Ordering::SeqCst))
    }
    fn local_micros(&self) -> u64 {
        1_000_000_000 + self.0.load(Ordering::SeqCst)
    }
}

fn settings(redis_url: Option<String>) -> RateLimitSection {
    RateLimitSection {
        redis_url,
        namespace: String::new(),
        replicas: 2,
        read: RateClass { rps: 4, burst: 8 },
        write: RateClass { rps: 2, burst: 2 },
    }
}

async fn admitted(limiters: &[&RateLimiter], partner: &str, class: RouteClass, attempts: usize) -> usize {
    let mut admitted = 0;
    for i in 0..attempts {
        if limiters[i % limiters.len()].check(partner, class).await.allowed {
            admitted += 1;
        }
    }
    admitted
}

#[tokio::test]
async fn two_replicas_on_one_redis_admit_one_burst_then_the_rate() {
    let Some(url) = retail_testkit::redis_url() else {
        eprintln!("RETAIL_TEST_REDIS_URL is not set: skipped");
        return;
    };
    let clock = Arc::new(Manual::default());
    let namespace = format!("test-rl-{}", uuid::Uuid::new_v4());
    let one = RateLimiter::start(settings(Some(url.clone())), clock.clone(), &namespace)
        .await
        .unwrap();
    let two = RateLimiter::start(settings(Some(url)), clock.clone(), &namespace)
        .await
        .unwrap();
    assert!(one.uses_redis().await && two.uses_redis().await);
    // At one instant: one burst between both replicas, not one each.
    assert_eq!(admitted(&[&one, &two], "p1", RouteClass::Read, 40).await, 8);
    // Another partner, and the other class, are unaffected.
    assert_eq!(admitted(&[&one, &two], "p2", RouteClass::Read, 40).await, 8);
    assert_eq!(admitted(&[&two, &one], "p1", RouteClass::Write, 10).await, 2);
    // A denial says when to come back.
    let denied = one.check("p1", RouteClass::Read).await;
    assert!(!denied.allowed && denied.retry_after_secs() >= 1);
    // A second later: the rate (4 rps), shared.
    clock.advance_secs(1);
    assert_eq!(admitted(&[&one, &two], "p1", RouteClass::Read, 40).await, 4);
}

#[tokio::test]
async fn with_redis_unreachable_each_replica_admits_its_share() {
    let clock = Arc::new(Manual::default());
    // Nothing listens on port 1.
    let limiter = RateLimiter::start(settings(Some("redis://127.0.0.1:1".into())), clock.clone(), "t")
        .await
        .unwrap();
    // Half the burst (two replicas), at once.
    assert_eq!(admitted(&[&limiter], "p1", RouteClass::Read, 40).await, 4);
    assert_eq!(admitted(&[&limiter], "p2", RouteClass::Read, 40).await, 4);
    clock.advance_secs(1);
    // Half the rate.
    assert_eq!(admitted(&[&limiter], "p1", RouteClass::Read, 40).await, 2);
}
