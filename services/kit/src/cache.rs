//! A versioned cache-aside for hot records: Redis when configured, else in-process.
//!
//! - Values carry the version of the row they were read from. A write-back after a
//!   miss only lands if no newer version was cached and no invalidation with a newer
//!   version happened meanwhile (a per-key "fence" left by [`VersionedCache::invalidate`]),
//!   so a slow reader can never put back a value older than a committed change.
//! - Concurrent misses of one key load once (single flight); the others wait for it.
//!   An invalidation ends the flight's admission: readers arriving after it load anew.
//! - Redis is given a tight timeout; when it is slow or down, reads go to the loader
//!   and keep succeeding, and a counter records each fallback. Redis calls go through
//!   a circuit breaker: after a few failures in a row it opens, and reads go straight
//!   to the loader without waiting for Redis, until a probe after a cool-down finds
//!   it answering again.
//! - An invalidation that does not reach Redis (slow, down, restarted) is not given
//!   up: the key is marked pending before Redis is asked, and while it is pending this
//!   process neither reads nor writes it in Redis (reads go to the loader), and a
//!   background task retries the invalidation until Redis takes it. So this process
//!   never serves a value older than a change it invalidated, and other processes
//!   sharing the Redis serve one at most [`STALENESS_BOUND`] after Redis answers
//!   again (they read the loader while Redis does not answer at all).
//! - With Redis, a near cache in this process serves repeated reads without a round
//!   trip. Every invalidation is published on a Redis channel in the same script that
//!   drops the value, and every replica applies it to its near cache. The near cache
//!   serves only while that subscription is up, is emptied whenever it (re)starts, and
//!   refuses a fill that began before any invalidation it has seen since, so it is
//!   never older than Redis except for the moment a message is on its way.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use moka::ops::compute::Op;
use opentelemetry::KeyValue;
use tokio::sync::{RwLock, watch};

use crate::error::ServiceResult;
use crate::resilience::{Breaker, CallPolicy};

/// Keeps the newest version; refuses older ones and ones below the key's fence.
const WRITE_BACK: &str = r"
local fence = tonumber(redis.call('GET', KEYS[2]) or '-1')
local v = tonumber(ARGV[1])
if v < fence then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if cur >= v then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'p', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Raises the fence to the committed version, drops the cached value and tells every
/// replica's near cache (channel ARGV[3], message "<version> <key>").
const INVALIDATE: &str = r"
local fence = tonumber(redis.call('GET', KEYS[2]) or '-1')
local v = tonumber(ARGV[1])
if v > fence then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. ARGV[4])
return 1
";

/// How often the invalidation subscription is checked with a PING.
const SUBSCRIPTION_HEARTBEAT: Duration = Duration::from_secs(5);

/// Redis failures in a row (timeouts, errors) that open the breaker.
const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker keeps Redis out of reads and writes before a probe.
const BREAKER_COOL_DOWN: Duration = Duration::from_millis(500);
/// Pause before the first retry of a failed invalidation; it doubles up to
/// [`RETRY_MAX_PAUSE`] while Redis keeps failing.
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(100);
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(1);

/// How long after Redis answers again another process sharing it may still serve a
/// value older than a change whose invalidation this process could not deliver:
/// the retry's longest pause, once more if the breaker's probe came too early.
/// The process that made the change never serves the older value.
pub const STALENESS_BOUND: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `redis://...`; `None` = in-process cache.
    pub redis_url: Option<String>,
    /// Key namespace, e.g. `membership`.
    pub namespace: String,
    pub ttl: Duration,
    /// Upper bound on one Redis round trip before falling back to the loader.
    pub timeout: Duration,
    /// In-process capacity (entries): the whole cache without Redis, the near cache in
    /// front of it with Redis (0 turns the near cache off).
    pub local_capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            namespace: "retail".into(),
            ttl: Duration::from_secs(300),
            timeout: Duration::from_millis(25),
            local_capacity: 100_000,
        }
    }
}

enum Backend {
    Redis {
        manager: Arc<RwLock<Option<redis::aio::ConnectionManager>>>,
        write_back: redis::Script,
        invalidate: redis::Script,
        near: Option<Arc<Near>>,
        /// Where invalidations are published for the near caches.
        channel: String,
    },
    /// One cache per process and service: keys need no namespace.
    Local { slots: Slots },
}

/// What the in-process cache holds per key: the cached value and the fence of the
/// last invalidation, changed together in one atomic compute so a write-back and an
/// invalidation of the same key cannot interleave.
#[derive(Clone, Default)]
struct Slot {
    fence: Option<u64>,
    value: Option<LocalValue>,
}

#[derive(Clone)]
struct LocalValue {
    version: u64,
    bytes: Arc<Vec<u8>>,
    expires_at: Instant,
}

impl Slot {
    fn fresh_value(&self, now: Instant) -> Option<&LocalValue> {
        self.value.as_ref().filter(|v| v.expires_at > now)
    }
}

/// Versioned slots in this process.
struct Slots {
    cache: moka::sync::Cache<String, Slot>,
    ttl: Duration,
}

impl Slots {
    /// A slot outlives its value (which expires after `ttl`) so its fence still guards
    /// loads that started before the invalidation.
    fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl * 2)
                .build(),
            ttl,
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.cache
            .get(key)
            .and_then(|slot| slot.fresh_value(Instant::now()).map(|v| v.bytes.clone()))
    }

    /// Keeps `version` unless the key is fenced above it, holds a newer version, or
    /// `admit` (evaluated atomically with the key's other changes) says no.
    fn put(&self, key: &str, version: u64, bytes: Arc<Vec<u8>>, admit: impl FnOnce() -> bool) {
        let now = Instant::now();
        let expires_at = now + self.ttl;
        self.cache.entry_by_ref(key).and_compute_with(|entry| {
            let slot = entry.map(|e| e.into_value()).unwrap_or_default();
            let fenced = slot.fence.is_some_and(|f| version < f);
            let newer = slot.fresh_value(now).is_some_and(|v| v.version >= version);
            if fenced || newer || !admit() {
                Op::Nop
            } else {
                Op::Put(Slot {
                    fence: slot.fence,
                    value: Some(LocalValue {
                        version,
                        bytes,
                        expires_at,
                    }),
                })
            }
        });
    }

    /// Drops the value and fences off versions below `version`.
    fn fence(&self, key: &str, version: u64) {
        self.cache.entry_by_ref(key).and_compute_with(|entry| {
            let fence = entry
                .and_then(|e| e.into_value().fence)
                .map_or(version, |f| f.max(version));
            Op::Put(Slot {
                fence: Some(fence),
                value: None,
            })
        });
    }
}

/// The near cache in front of Redis.
struct Near {
    slots: Slots,
    /// Subscribed to the invalidation channel: only then may it serve or be filled.
    live: AtomicBool,
    /// Bumped by every invalidation this process applies and by every change of the
    /// subscription; a fill admitted only if it is unchanged since the fill's Redis read
    /// began, so no invalidation can slip between that read and the fill.
    changes: AtomicU64,
}

impl Near {
    fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            slots: Slots::new(capacity, ttl),
            live: AtomicBool::new(false),
            changes: AtomicU64::new(0),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        self.slots.get(key)
    }

    fn invalidate(&self, key: &str, version: u64) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.slots.fence(key, version);
    }

    /// Forgets everything: on (re)subscribing and on losing the subscription, when
    /// invalidations may have been missed.
    fn reset(&self, live: bool) {
        self.live.store(false, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.slots.cache.invalidate_all();
        self.live.store(live, Ordering::SeqCst);
    }

    /// Applies one published invalidation, `<version> <key>`; anything unreadable
    /// empties the near cache.
    fn apply(&self, message: &[u8]) {
        let parsed = std::str::from_utf8(message).ok().and_then(|text| {
            let (version, key) = text.split_once(' ')?;
            Some((version.parse::<u64>().ok()?, key))
        });
        match parsed {
            Some((version, key)) => self.invalidate(key, version),
            None => self.reset(self.live.load(Ordering::SeqCst)),
        }
    }
}

/// Keeps `near` subscribed to `channel`, for as long as the cache lives.
async fn follow_invalidations(client: redis::Client, channel: String, near: Arc<Near>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    near.reset(true);
                    let (mut sink, mut messages) = pubsub.split();
                    let mut heartbeat = tokio::time::interval(SUBSCRIPTION_HEARTBEAT);
                    heartbeat.tick().await;
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(message) => near.apply(message.get_payload_bytes()),
                                None => break,
                            },
                            _ = heartbeat.tick() => {
                                let pong = tokio::time::timeout(SUBSCRIPTION_HEARTBEAT, sink.ping::<redis::Value>()).await;
                                if !matches!(pong, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                    near.reset(false);
                    tracing::warn!("lost the cache invalidation channel; the near cache is off until it is back");
                }
                Err(err) => tracing::warn!(error = %err, "could not subscribe to cache invalidations"),
            },
            Err(err) => tracing::debug!(error = %err, "redis not reachable for cache invalidations"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn unavailable(err: redis::RedisError) -> tonic::Status {
    tonic::Status::unavailable(err.to_string())
}

/// Runs a script by its hash. Where Redis lost it (restart, `SCRIPT FLUSH`) redis-rs
/// answers NOSCRIPT by loading it and running it again. What fails after a restart
/// is the first call on the old connection (broken pipe; the connection manager
/// reconnects behind it), and a frozen Redis times calls out: both leave the key
/// pending, and the retry runs the script on the new connection.
async fn run_script(
    conn: &mut redis::aio::ConnectionManager,
    invocation: &redis::ScriptInvocation<'_>,
) -> Result<i64, tonic::Status> {
    invocation.invoke_async::<i64>(conn).await.map_err(unavailable)
}

/// Retries pending invalidations after each failure, with a growing pause while
/// Redis keeps failing, until none is left; for as long as the cache lives.
async fn retry_invalidations(cache: Weak<VersionedCache>, wake: Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        let mut pause = RETRY_FIRST_PAUSE;
        loop {
            tokio::time::sleep(pause).await;
            let Some(cache) = cache.upgrade() else { return };
            if cache.retry_pending().await {
                break;
            }
            pause = (pause * 2).min(RETRY_MAX_PAUSE);
        }
    }
}

type Flight = watch::Receiver<Option<Option<Arc<Vec<u8>>>>>;

/// Counts of what the cache did, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reads answered by the cache (near cache included).
    pub hits: AtomicU64,
    /// Of those, reads answered by the near cache without a Redis round trip.
    pub near_hits: AtomicU64,
    pub misses: AtomicU64,
    pub loads: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Invalidations that did not reach Redis at first and were retried until it
    /// took them.
    pub invalidations_retried: AtomicU64,
}

pub struct VersionedCache {
    backend: Backend,
    settings: CacheSettings,
    flights: Mutex<HashMap<String, Flight>>,
    pub stats: Arc<CacheStats>,
    fallback_counter: opentelemetry::metrics::Counter<u64>,
    /// Every Redis call goes through it.
    breaker: Breaker,
    /// Keys whose invalidation Redis has not confirmed, with the version to fence.
    pending: Mutex<HashMap<String, u64>>,
    /// `pending.len()`, read without the lock on every lookup.
    pending_count: AtomicUsize,
    /// Wakes the task that retries pending invalidations.
    retry: Arc<tokio::sync::Notify>,
    /// Background tasks (connection, invalidation subscription, retries), stopped
    /// with the cache.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for VersionedCache {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for VersionedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedCache")
            .field("namespace", &self.settings.namespace)
            .field("redis", &matches!(self.backend, Backend::Redis { .. }))
            .finish_non_exhaustive()
    }
}

/// What a loader returns: the row's version and its encoded value, or nothing.
pub type Loaded = Option<(u64, Vec<u8>)>;

impl VersionedCache {
    /// Builds the cache; with Redis, connects in the background (and keeps
    /// reconnecting), serving from the loader until Redis answers.
    pub fn new(settings: CacheSettings) -> anyhow::Result<Arc<Self>> {
        let mut tasks = Vec::new();
        let backend = match &settings.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = Arc::new(RwLock::new(None));
                let slot = manager.clone();
                let timeout = settings.timeout;
                let connector = client.clone();
                let connecting = tokio::spawn(async move {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(Some(timeout.max(Duration::from_millis(5))));
                    loop {
                        match redis::aio::ConnectionManager::new_with_config(connector.clone(), config.clone()).await {
                            Ok(conn) => {
                                *slot.write().await = Some(conn);
                                break;
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "redis not reachable; serving from the database");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
                tasks.push(connecting.abort_handle());
                let channel = format!("{}:invalidations", settings.namespace);
                let near =
                    (settings.local_capacity > 0).then(|| Arc::new(Near::new(settings.local_capacity, settings.ttl)));
                if let Some(near) = &near {
                    let following = tokio::spawn(follow_invalidations(client, channel.clone(), near.clone()));
                    tasks.push(following.abort_handle());
                }
                Backend::Redis {
                    manager,
                    write_back: redis::Script::new(WRITE_BACK),
                    invalidate: redis::Script::new(INVALIDATE),
                    near,
                    channel,
                }
            }
            None => Backend::Local {
                slots: Slots::new(settings.local_capacity, settings.ttl),
            },
        };
        let fallback_counter = opentelemetry::global::meter("retail")
            .u64_counter("cache.fallbacks")
            .with_description("Cache operations that fell back to the database because Redis was slow or down")
            .build();
        let breaker = Breaker::new(
            "redis cache",
            CallPolicy {
                timeout: settings.timeout,
                attempts: 1,
                backoff: Duration::ZERO,
                failure_threshold: BREAKER_FAILURES,
                cool_down: BREAKER_COOL_DOWN,
            },
        );
        let retry = Arc::new(tokio::sync::Notify::new());
        let redis = matches!(backend, Backend::Redis { .. });
        Ok(Arc::new_cyclic(|cache| {
            if redis {
                tasks.push(tokio::spawn(retry_invalidations(cache.clone(), retry.clone())).abort_handle());
            }
            Self {
                backend,
                settings,
                flights: Mutex::new(HashMap::new()),
                stats: Arc::default(),
                fallback_counter,
                breaker,
                pending: Mutex::new(HashMap::new()),
                pending_count: AtomicUsize::new(0),
                retry,
                tasks,
            }
        }))
    }

    /// The breaker in front of Redis (for tests and health reporting).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// How many keys wait for their invalidation to reach Redis; their reads go to
    /// the loader meanwhile.
    pub fn pending_invalidations(&self) -> usize {
        self.pending_count.load(Ordering::SeqCst)
    }

    fn is_pending(&self, key: &str) -> bool {
        self.pending_count.load(Ordering::SeqCst) > 0
            && self.pending.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }

    /// Marks `key` pending up to `version`, before Redis is asked to invalidate it.
    fn hold(&self, key: &str, version: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let fence = pending.entry(key.to_owned()).or_insert(version);
        *fence = (*fence).max(version);
        self.pending_count.store(pending.len(), Ordering::SeqCst);
    }

    /// Redis holds the fence at `version`: the key is no longer pending unless a
    /// newer invalidation is still on its way.
    fn release(&self, key: &str, version: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.get(key).is_some_and(|fence| *fence <= version) {
            pending.remove(key);
        }
        self.pending_count.store(pending.len(), Ordering::SeqCst);
    }

    /// Retries every pending invalidation once; true when none is left.
    async fn retry_pending(&self) -> bool {
        let due: Vec<(String, u64)> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (key, version) in due {
            if !self.invalidate_in_redis(&key, version).await {
                return false;
            }
            self.stats.invalidations_retried.fetch_add(1, Ordering::Relaxed);
            self.release(&key, version);
        }
        self.pending_invalidations() == 0
    }

    /// True once the near cache in front of Redis is subscribed to invalidations and
    /// serving (always false without Redis or with the near cache off).
    pub fn near_cache_live(&self) -> bool {
        match &self.backend {
            Backend::Redis { near: Some(near), .. } => near.live.load(Ordering::SeqCst),
            _ => false,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.settings.namespace)
    }

    fn fence_key(&self, key: &str) -> String {
        format!("{}:fence:{key}", self.settings.namespace)
    }

    fn fell_back(&self, op: &'static str, reason: &str) {
        self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.fallback_counter.add(1, &[KeyValue::new("op", op)]);
        tracing::debug!(op, reason, "cache fallback");
    }

    async fn connection(&self) -> Option<redis::aio::ConnectionManager> {
        match &self.backend {
            Backend::Redis { manager, .. } => manager.read().await.clone(),
            Backend::Local { .. } => None,
        }
    }

    /// Cached value, `Ok(None)` on a miss, `Err(())` when the cache could not answer
    /// or must not (an invalidation of the key is pending).
    async fn lookup(&self, key: &str) -> Result<Option<Arc<Vec<u8>>>, ()> {
        if self.is_pending(key) {
            self.fell_back("get", "invalidation pending");
            return Err(());
        }
        let near = match &self.backend {
            Backend::Local { slots } => return Ok(slots.get(key)),
            Backend::Redis { near, .. } => near.as_deref(),
        };
        if let Some(hit) = near.and_then(|near| near.get(key)) {
            self.stats.near_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit));
        }
        // Taken before the read: a fill is refused if anything was invalidated since.
        let changes = near.map(|near| near.changes.load(Ordering::SeqCst));
        let Some(mut conn) = self.connection().await else {
            self.fell_back("get", "not connected");
            return Err(());
        };
        let cmd = redis::cmd("HMGET").arg(self.key(key)).arg("v").arg("p").to_owned();
        let reply = self
            .breaker
            .call(|_| async move {
                cmd.query_async::<(Option<u64>, Option<Vec<u8>>)>(&mut conn)
                    .await
                    .map_err(unavailable)
            })
            .await;
        match reply {
            Ok((version, Some(bytes))) => {
                let bytes = Arc::new(bytes);
                if let (Some(near), Some(version), Some(changes)) = (near, version, changes) {
                    near.slots.put(key, version, bytes.clone(), || {
                        near.live.load(Ordering::SeqCst) && near.changes.load(Ordering::SeqCst) == changes
                    });
                }
                Ok(Some(bytes))
            }
            Ok((_, None)) => Ok(None),
            Err(status) => {
                self.fell_back("get", status.message());
                Err(())
            }
        }
    }

    async fn write_back(&self, key: &str, version: u64, value: Arc<Vec<u8>>) {
        match &self.backend {
            Backend::Local { slots } => slots.put(key, version, value, || true),
            Backend::Redis { write_back, .. } => {
                // Redis may not hold the fence of a change yet: nothing is written
                // back until it does.
                if self.is_pending(key) {
                    return;
                }
                let Some(mut conn) = self.connection().await else {
                    self.fell_back("write_back", "not connected");
                    return;
                };
                let mut invocation = write_back.key(self.key(key));
                invocation
                    .key(self.fence_key(key))
                    .arg(version)
                    .arg(value.as_slice())
                    .arg(self.settings.ttl.as_millis() as u64);
                let written = self
                    .breaker
                    .call(|_| async move { run_script(&mut conn, &invocation).await })
                    .await;
                if let Err(status) = written {
                    self.fell_back("write_back", status.message());
                }
            }
        }
    }

    /// Forgets `key` after a commit that produced `version`, and fences off older
    /// write-backs. Never fails the caller: false if Redis did not take it at once,
    /// in which case the key stays pending (read from the loader here, never from
    /// Redis) and the invalidation is retried in the background until Redis takes it.
    pub async fn invalidate(&self, key: &str, version: u64) -> bool {
        self.invalidate_here(key, version);
        if !matches!(self.backend, Backend::Redis { .. }) {
            return true;
        }
        // Pending before Redis is asked: no read here may trust Redis until it has
        // answered.
        self.hold(key, version);
        if self.invalidate_in_redis(key, version).await {
            self.release(key, version);
            true
        } else {
            tracing::warn!(
                "cache invalidation did not reach redis; the key is read from the database until a retry delivers it"
            );
            self.retry.notify_one();
            false
        }
    }

    /// Runs the invalidation script: true once Redis holds the fence.
    async fn invalidate_in_redis(&self, key: &str, version: u64) -> bool {
        let Backend::Redis {
            invalidate, channel, ..
        } = &self.backend
        else {
            return true;
        };
        let Some(mut conn) = self.connection().await else {
            self.fell_back("invalidate", "not connected");
            return false;
        };
        let mut invocation = invalidate.key(self.key(key));
        invocation
            .key(self.fence_key(key))
            .arg(version)
            .arg((self.settings.ttl * 2).as_millis() as u64)
            .arg(channel.as_str())
            .arg(key);
        // Invalidation matters more than latency: allow a few timeouts' worth.
        let bound = self.settings.timeout * 4;
        match self
            .breaker
            .call_within(bound, |_| async move { run_script(&mut conn, &invocation).await })
            .await
        {
            Ok(_) => true,
            Err(status) => {
                self.fell_back("invalidate", status.message());
                false
            }
        }
    }

    /// [`Self::invalidate`] in this process alone: its loads in flight, its near
    /// cache (or its whole cache without Redis). For a second invalidation after a
    /// commit whose fence Redis already holds: Redis refuses every older write-back
    /// since, so only a load in flight here, which may have read the row before the
    /// commit, could still hand out the old value.
    pub fn invalidate_here(&self, key: &str, version: u64) {
        // A load already in flight may have read the old row: readers from now on
        // start a load of their own instead of joining it.
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        match &self.backend {
            Backend::Local { slots } => slots.fence(key, version),
            Backend::Redis { near: Some(near), .. } => near.invalidate(key, version),
            Backend::Redis { near: None, .. } => {}
        }
    }

    /// The cached value of `key` if there is one; never loads. For a reader that
    /// needs less than the cached value and reads that part itself on a miss.
    pub async fn peek(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        let hit = self.lookup(key).await.ok().flatten();
        if hit.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// The cached value of `key`, or what `load` returns (written back with its
    /// version). Concurrent misses of one key call `load` once.
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> ServiceResult<Option<Arc<Vec<u8>>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ServiceResult<Loaded>>,
    {
        let cache_up = match self.lookup(key).await {
            Ok(Some(hit)) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(hit));
            }
            Ok(None) => true,
            Err(()) => false,
        };
        self.stats.misses.fetch_add(1, Ordering::Relaxed);

        // Join a load in flight, or lead one.
        enum Role {
            Lead(watch::Sender<Option<Option<Arc<Vec<u8>>>>>, Flight),
            Follow(Flight),
        }
        let role = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(key) {
                Some(rx) => Role::Follow(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(key.to_owned(), rx.clone());
                    Role::Lead(tx, rx)
                }
            }
        };
        match role {
            Role::Lead(tx, own) => return self.lead(key, tx, own, cache_up, load).await,
            Role::Follow(mut rx) => loop {
                if let Some(result) = rx.borrow_and_update().clone() {
                    return Ok(result);
                }
                if rx.changed().await.is_err() {
                    break;
                }
            },
        }
        // The leader failed or was cancelled: load without the cache's help.
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        Ok(load().await?.map(|(_, v)| Arc::new(v)))
    }

    async fn lead<F, Fut>(
        &self,
        key: &str,
        tx: watch::Sender<Option<Option<Arc<Vec<u8>>>>>,
        own: Flight,
        cache_up: bool,
        load: F,
    ) -> ServiceResult<Option<Arc<Vec<u8>>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ServiceResult<Loaded>>,
    {
        // Removes the flight however this ends, so a cancelled leader cannot wedge
        // its followers (they see the sender dropped and load themselves). Only its own
        // flight: after an invalidation the key may already lead a newer one.
        struct Landing<'a> {
            flights: &'a Mutex<HashMap<String, Flight>>,
            key: &'a str,
            own: Flight,
        }
        impl Drop for Landing<'_> {
            fn drop(&mut self) {
                let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
                if flights.get(self.key).is_some_and(|rx| rx.same_channel(&self.own)) {
                    flights.remove(self.key);
                }
            }
        }
        let _landing = Landing {
            flights: &self.flights,
            key,
            own,
        };
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = load().await?;
        let value = match loaded {
            Some((version, bytes)) => {
                let value = Arc::new(bytes);
                if cache_up {
                    self.write_back(key, version, value.clone()).await;
                }
                Some(value)
            }
            None => None,
        };
        let _ = tx.send(Some(value.clone()));
        Ok(value)
    }
}
