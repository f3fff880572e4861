//! Per-partner rate limits by route class, shared by every gateway replica through
//! Redis: GCRA (generic cell rate algorithm) in one Lua script, so a check is one
//! atomic round trip. While Redis is not configured or does not answer, each
//! replica limits on its own with its share of the limit (`rps / replicas`,
//! `burst / replicas`), so the replicas together stay within it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method};
use tokio::sync::RwLock;

use crate::settings::{RateClass, RateLimitSection};

/// Which limit a route counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    Read,
    Write,
}

impl RouteClass {
    pub fn of(method: &Method) -> Self {
        if method == Method::GET || method == Method::HEAD {
            Self::Read
        } else {
            Self::Write
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// Microseconds on the limiter's clock.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in microseconds since some fixed point; `None` lets Redis use its own
    /// clock (the one all replicas share).
    fn now_micros(&self) -> Option<u64>;
    /// Now for the in-process fallback.
    fn local_micros(&self) -> u64;
}

/// The real clock: Redis's time for the shared limit, the process's for its share.
#[derive(Debug)]
pub struct SystemClock(std::time::Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock for SystemClock {
    fn now_micros(&self) -> Option<u64> {
        None
    }

    fn local_micros(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst of the limit that decided.
    pub limit: u64,
    /// Requests that could be made at once now.
    pub remaining: u64,
    /// Microseconds until the next request would be admitted (denied only).
    pub retry_after_micros: u64,
    /// Microseconds until the limit is fully restored.
    pub reset_micros: u64,
}

impl Decision {
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_micros.div_ceil(1_000_000).max(1)
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds), and
    /// `Retry-After` when denied.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "ratelimit-reset",
            HeaderValue::from(self.reset_micros.div_ceil(1_000_000)),
        );
        if !self.allowed {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs()),
            );
        }
    }
}

/// GCRA on a theoretical arrival time `tat`: a request at `now` is admitted when
/// the new `tat` stays within `burst` emission intervals of now.
pub fn gcra(tat: u64, now: u64, interval: u64, burst: u64) -> (Decision, Option<u64>) {
    let window = interval * burst;
    let tat = tat.max(now);
    let new_tat = tat + interval;
    if new_tat - now > window {
        let retry = new_tat - now - window;
        (
            Decision {
                allowed: false,
                limit: burst,
                remaining: 0,
                retry_after_micros: retry,
                reset_micros: tat - now,
            },
            None,
        )
    } else {
        (
            Decision {
                allowed: true,
                limit: burst,
                remaining: (window - (new_tat - now)) / interval,
                retry_after_micros: 0,
                reset_micros: new_tat - now,
            },
            Some(new_tat),
        )
    }
}

/// The same rule in Redis. KEYS[1] the partner's key; ARGV interval (µs), burst,
/// now (µs, or empty for Redis's clock). Returns {allowed, remaining, retry µs,
/// reset µs}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local window = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > window then
  return {0, 0, new_tat - now - window, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((window - (new_tat - now)) / interval), 0, new_tat - now}
";

/// How long checks stay local after Redis failed.
const REDIS_REST: Duration = Duration::from_secs(1);

/// The limiter of one gateway replica.
pub struct RateLimiter {
    settings: RateLimitSection,
    clock: Arc<dyn Clock>,
    redis: Option<Arc<RwLock<Option<redis::aio::ConnectionManager>>>>,
    script: redis::Script,
    namespace: String,
    local: Mutex<HashMap<(String, RouteClass), u64>>,
    /// After Redis failed, checks stay local until then (so a Redis that hangs
    /// does not add its timeout to every request).
    redis_down_until: Mutex<Option<std::time::Instant>>,
    _connecting: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        if let Some(task) = &self._connecting {
            task.abort();
        }
    }
}

impl RateLimiter {
    /// A limiter; with a Redis URL it connects once at start and, failing that,
    /// goes on trying in the background while it limits on its own share.
    pub async fn start(settings: RateLimitSection, clock: Arc<dyn Clock>, namespace: &str) -> anyhow::Result<Self> {
        let (redis, connecting) = match &settings.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|_| anyhow::anyhow!("invalid configuration: `rate_limit.redis_url` is not a Redis URL"))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_millis(200)))
                    // Retried here, every second, not inside one attempt.
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let first = redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()).await;
                let slot = Arc::new(RwLock::new(None));
                let task = match first {
                    Ok(conn) => {
                        *slot.write().await = Some(conn);
                        None
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "redis not reachable; rate limiting on this replica's share");
                        let target = slot.clone();
                        Some(
                            tokio::spawn(async move {
                                loop {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                    if let Ok(conn) =
                                        redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone())
                                            .await
                                    {
                                        tracing::info!("redis reachable; rate limits shared again");
                                        *target.write().await = Some(conn);
                                        break;
                                    }
                                }
                            })
                            .abort_handle(),
                        )
                    }
                };
                (Some(slot), task)
            }
            None => (None, None),
        };
        let namespace = if settings.namespace.is_empty() {
            namespace.to_owned()
        } else {
            settings.namespace.clone()
        };
        Ok(Self {
            settings,
            clock,
            redis,
            script: redis::Script::new(GCRA),
            namespace,
            local: Mutex::new(HashMap::new()),
            redis_down_until: Mutex::new(None),
            _connecting: connecting,
        })
    }

    fn class(&self, class: RouteClass) -> RateClass {
        match class {
            RouteClass::Read => self.settings.read,
            RouteClass::Write => self.settings.write,
        }
    }

    /// Whether checks go to Redis now (connected).
    pub async fn uses_redis(&self) -> bool {
        match &self.redis {
            Some(slot) => slot.read().await.is_some(),
            None => false,
        }
    }

    /// Whether `partner` may make one more request of `class` now.
    pub async fn check(&self, partner: &str, class: RouteClass) -> Decision {
        let limit = self.class(class);
        if let Some(slot) = self.redis.as_ref().filter(|_| !self.redis_resting()) {
            let conn = slot.read().await.clone();
            if let Some(mut conn) = conn {
                let interval = 1_000_000 / u64::from(limit.rps.max(1));
                let now = self.clock.now_micros().map(|n| n.to_string()).unwrap_or_default();
                let key = format!("{}:{}:{}", self.namespace, class.name(), partner);
                let result: Result<Vec<i64>, _> = self
                    .script
                    .key(key)
                    .arg(interval)
                    .arg(limit.burst)
                    .arg(now)
                    .invoke_async(&mut conn)
                    .await;
                match result {
                    Ok(values) if values.len() == 4 => {
                        let at = |i: usize| values[i].max(0) as u64;
                        return Decision {
                            allowed: values[0] == 1,
                            limit: u64::from(limit.burst),
                            remaining: at(1),
                            retry_after_micros: at(2),
                            reset_micros: at(3),
                        };
                    }
                    Ok(_) => tracing::warn!("unexpected answer of the rate limit script; limiting locally"),
                    Err(err) => {
                        tracing::warn!(error = %err, "redis failed; rate limiting on this replica's share for a second");
                        if let Ok(mut until) = self.redis_down_until.lock() {
                            *until = Some(std::time::Instant::now() + REDIS_REST);
                        }
                    }
                }
            }
        }
        self.check_local(partner, class)
    }

    fn redis_resting(&self) -> bool {
        self.redis_down_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    /// The in-process check on this replica's share of the limit.
    fn check_local(&self, partner: &str, class: RouteClass) -> Decision {
        let limit = self.class(class);
        let replicas = u64::from(self.settings.replicas.max(1));
        let rps = (u64::from(limit.rps) / replicas).max(1);
        let burst = (u64::from(limit.burst) / replicas).max(1);
        let interval = 1_000_000 / rps;
        let now = self.clock.local_micros();
        let Ok(mut local) = self.local.lock() else {
            return gcra(0, now, interval, burst).0;
        };
        if local.len() > 100_000 {
            local.retain(|_, tat| *tat > now);
        }
        let key = (partner.to_owned(), class);
        let tat = local.get(&key).copied().unwrap_or(now);
        let (decision, new_tat) = gcra(tat, now, interval, burst);
        if let Some(new_tat) = new_tat {
            local.insert(key, new_tat);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_one_burst_then_the_rate() {
        let interval = 100_000; // 10 rps
        let burst = 5;
        let mut tat = 0;
        let mut admitted = 0;
        for _ in 0..20 {
            let (decision, new) = gcra(tat, 0, interval, burst);
            if let Some(new) = new {
                tat = new;
                admitted += 1;
            } else {
                assert!(decision.retry_after_micros > 0);
            }
        }
        assert_eq!(admitted, burst);
        // One interval later, exactly one more.
        let (decision, new) = gcra(tat, interval, interval, burst);
        assert!(decision.allowed);
        let (decision, _) = gcra(new.unwrap_or(0), interval, interval, burst);
        assert!(!decision.allowed);
    }

    #[derive(Debug, Default)]
    struct Frozen;
    impl Clock for Frozen {
        fn now_micros(&self) -> Option<u64> {
            Some(1_000_000)
        }
        fn local_micros(&self) -> u64 {
            1_000_000
        }
    }

    #[tokio::test]
    async fn without_redis_each_replica_keeps_its_share() {
        let settings = RateLimitSection {
            replicas: 2,
            read: RateClass { rps: 10, burst: 10 },
            ..RateLimitSection::default()
        };
        let limiter = RateLimiter::start(settings, Arc::new(Frozen), "t").await.unwrap();
        let mut admitted = 0;
        for _ in 0..30 {
            if limiter.check("p1", RouteClass::Read).await.allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        // Another partner has its own limit.
        assert!(limiter.check("p2", RouteClass::Read).await.allowed);
    }
}
