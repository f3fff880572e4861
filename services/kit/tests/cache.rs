//! The versioned cache against a real Redis when `RETAIL_TEST_REDIS_URL` is set, and
//! the in-process cache otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use retail_kit::cache::{CacheSettings, VersionedCache};

async fn cache() -> Arc<VersionedCache> {
    let cache = VersionedCache::new(CacheSettings {
        redis_url: retail_testkit::redis_url(),
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        timeout: Duration::from_millis(200),
        ..CacheSettings::default()
    })
    .unwrap();
    // Let the background connection come up before measuring anything.
    for _ in 0..50 {
        if cache.get_or_load("warm-up", || async { Ok(None) }).await.is_ok()
            && cache.stats.fallbacks.load(Ordering::Relaxed) == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cache
}

fn value(s: &str) -> Option<Arc<Vec<u8>>> {
    Some(Arc::new(s.as_bytes().to_vec()))
}

#[tokio::test]
async fn a_hit_is_served_without_loading_and_invalidation_reloads() {
    let cache = cache().await;
    let loads = AtomicUsize::new(0);
    let load = |v: u64, s: &'static str| {
        loads.fetch_add(1, Ordering::SeqCst);
        async move { Ok(Some((v, s.as_bytes().to_vec()))) }
    };
    assert_eq!(cache.get_or_load("m1", || load(1, "one")).await.unwrap(), value("one"));
    assert_eq!(cache.get_or_load("m1", || load(1, "one")).await.unwrap(), value("one"));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    cache.invalidate("m1", 2).await;
    assert_eq!(cache.get_or_load("m1", || load(2, "two")).await.unwrap(), value("two"));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// A reader of `key` that has read version 1 ("old") from the database and stalls
/// before writing it back, until the returned sender fires.
async fn stalled_reader(
    cache: &Arc<VersionedCache>,
    key: &'static str,
) -> (
    tokio::task::JoinHandle<Option<Arc<Vec<u8>>>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let cache = cache.clone();
    let reader = tokio::spawn(async move {
        cache
            .get_or_load(key, || async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
                Ok(Some((1, b"old".to_vec())))
            })
            .await
            .unwrap()
    });
    started_rx.await.unwrap();
    (reader, release_tx)
}

#[tokio::test]
async fn a_slow_reader_never_writes_back_a_value_older_than_a_commit() {
    let cache = cache().await;
    let (slow, release_tx) = stalled_reader(&cache, "m2").await;
    // The update commits version 2 and invalidates while the reader is stalled.
    cache.invalidate("m2", 2).await;
    release_tx.send(()).unwrap();
    assert_eq!(
        slow.await.unwrap(),
        value("old"),
        "the slow reader itself saw its snapshot"
    );
    let after = cache
        .get_or_load("m2", || async { Ok(Some((2, b"new".to_vec()))) })
        .await
        .unwrap();
    assert_eq!(
        after,
        value("new"),
        "a read after the commit never returns the old value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_racing_commits_always_end_on_the_last_committed_version() {
    let cache = cache().await;
    // The "database": the committed version of one hot record.
    let committed = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let load = |committed: Arc<std::sync::atomic::AtomicU64>| async move {
        let version = committed.load(Ordering::SeqCst);
        // A reader may stall between its read and its write-back.
        tokio::task::yield_now().await;
        Ok(Some((version, version.to_string().into_bytes())))
    };
    for round in 0..20 {
        let key = format!("raced-{round}");
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (cache, committed, key) = (cache.clone(), committed.clone(), key.clone());
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let version = committed.fetch_add(1, Ordering::SeqCst) + 1;
                        cache.invalidate(&key, version).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..6)
            .map(|_| {
                let (cache, committed, key) = (cache.clone(), committed.clone(), key.clone());
                tokio::spawn(async move {
                    for _ in 0..40 {
                        cache.get_or_load(&key, || load(committed.clone())).await.unwrap();
                    }
                })
            })
            .collect();
        for task in writers.into_iter().chain(readers) {
            task.await.unwrap();
        }
        let last = committed.load(Ordering::SeqCst);
        let seen = cache.get_or_load(&key, || load(committed.clone())).await.unwrap();
        assert_eq!(
            seen,
            value(&last.to_string()),
            "round {round}: after the last commit the cache must not serve an older version"
        );
    }
}

#[tokio::test]
async fn fifty_concurrent_misses_of_one_key_load_once() {
    let cache = cache().await;
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("hot", || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(Some((7, b"profile".to_vec())))
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), value("profile"));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_redis_unreachable_reads_fall_back_to_the_loader_and_are_counted() {
    let cache = VersionedCache::new(CacheSettings {
        // Nothing listens on port 1: the cache must answer from the loader.
        redis_url: Some("redis://127.0.0.1:1".into()),
        namespace: "down".into(),
        timeout: Duration::from_millis(20),
        ..CacheSettings::default()
    })
    .unwrap();
    for i in 0..3u64 {
        let got = cache
            .get_or_load("m3", || async move { Ok(Some((i, b"from-db".to_vec()))) })
            .await
            .unwrap();
        assert_eq!(got, value("from-db"));
    }
    cache.invalidate("m3", 9).await;
    assert!(cache.stats.fallbacks.load(Ordering::Relaxed) >= 3);
}

#[tokio::test]
async fn a_missing_record_is_not_cached() {
    let cache = cache().await;
    assert_eq!(cache.get_or_load("ghost", || async { Ok(None) }).await.unwrap(), None);
    assert_eq!(
        cache
            .get_or_load("ghost", || async { Ok(Some((1, b"born".to_vec()))) })
            .await
            .unwrap(),
        value("born")
    );
}

#[tokio::test]
async fn a_reader_arriving_after_an_invalidation_does_not_join_a_load_that_began_before_it() {
    let cache = cache().await;
    let (early, release_tx) = stalled_reader(&cache, "m4").await;
    cache.invalidate("m4", 2).await;
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        cache.get_or_load("m4", || async { Ok(Some((2, b"new".to_vec()))) }),
    )
    .await
    .expect("the late reader must not wait for the load that began before the commit")
    .unwrap();
    assert_eq!(late, value("new"));
    release_tx.send(()).unwrap();
    assert_eq!(early.await.unwrap(), value("old"));
    let after = cache
        .get_or_load("m4", || async { Ok(Some((2, b"new".to_vec()))) })
        .await
        .unwrap();
    assert_eq!(after, value("new"));
}

struct Replicas {
    a: Arc<VersionedCache>,
    b: Arc<VersionedCache>,
    url: String,
    namespace: String,
}

/// Two replicas sharing one Redis namespace, each with its near cache subscribed, on
/// Redis database `db` (which lets a test find their connections). `None` without a
/// test Redis.
async fn replicas(db: u8) -> Option<Replicas> {
    let url = retail_testkit::redis_url()?;
    let base = url.trim_end_matches('/');
    let base = match base.rsplit_once('/') {
        Some((server, db)) if !db.is_empty() && db.chars().all(|c| c.is_ascii_digit()) => server,
        _ => base,
    };
    let url = format!("{base}/{db}");
    let namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    let replica = || {
        VersionedCache::new(CacheSettings {
            redis_url: Some(url.clone()),
            namespace: namespace.clone(),
            timeout: Duration::from_millis(200),
            ..CacheSettings::default()
        })
        .unwrap()
    };
    let (a, b) = (replica(), replica());
    eventually("both near caches subscribe", || async {
        a.near_cache_live() && b.near_cache_live()
    })
    .await;
    // Let the command connections come up too.
    for cache in [&a, &b] {
        eventually("redis answers", || async {
            let before = cache.stats.fallbacks.load(Ordering::SeqCst);
            cache.get_or_load("warm-up", || async { Ok(None) }).await.is_ok()
                && cache.stats.fallbacks.load(Ordering::SeqCst) == before
        })
        .await;
    }
    Some(Replicas { a, b, url, namespace })
}

/// Waits (up to 10 s) for `check`: invalidation messages reach other replicas
/// asynchronously.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn loader(version: u64) -> retail_kit::ServiceResult<retail_kit::cache::Loaded> {
    Ok(Some((version, version.to_string().into_bytes())))
}

#[tokio::test]
async fn near_caches_serve_repeated_reads_and_drop_what_another_replica_invalidates() {
    let Some(Replicas { a, b, .. }) = replicas(0).await else {
        return;
    };
    assert_eq!(a.get_or_load("n1", || loader(1)).await.unwrap(), value("1"));
    // b finds it in Redis, then in its near cache.
    let loads = b.stats.loads.load(Ordering::SeqCst);
    assert_eq!(b.get_or_load("n1", || loader(1)).await.unwrap(), value("1"));
    let before = b.stats.near_hits.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(b.get_or_load("n1", || loader(1)).await.unwrap(), value("1"));
    }
    assert_eq!(b.stats.near_hits.load(Ordering::SeqCst) - before, 5);
    assert_eq!(
        b.stats.loads.load(Ordering::SeqCst),
        loads,
        "b never loaded from the database"
    );

    // Version 2 commits on a: a itself never serves version 1 again ...
    a.invalidate("n1", 2).await;
    assert_eq!(a.get_or_load("n1", || loader(2)).await.unwrap(), value("2"));
    // ... and b stops as soon as the published invalidation arrives.
    eventually("b serves version 2", || async {
        b.get_or_load("n1", || loader(2)).await.unwrap() == value("2")
    })
    .await;
}

#[tokio::test]
async fn a_lost_invalidation_subscription_empties_the_near_cache() {
    // Only this test uses database 7, so only its subscribers are cut below.
    let Some(Replicas { a, b, url, namespace }) = replicas(7).await else {
        return;
    };
    assert_eq!(a.get_or_load("n2", || loader(1)).await.unwrap(), value("1"));
    assert_eq!(b.get_or_load("n2", || loader(1)).await.unwrap(), value("1"));
    let before = b.stats.near_hits.load(Ordering::SeqCst);
    assert_eq!(b.get_or_load("n2", || loader(1)).await.unwrap(), value("1"));
    assert_eq!(b.stats.near_hits.load(Ordering::SeqCst), before + 1, "b holds n2 near");

    // A change whose message nobody receives: Redis gets version 2 directly, then the
    // subscribers' connections are cut.
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{namespace}:n2");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("v")
        .arg(2)
        .arg("p")
        .arg("2")
        .query_async(&mut raw)
        .await
        .unwrap();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut raw)
        .await
        .unwrap();
    let ours: Vec<&str> = clients
        .lines()
        .filter(|line| line.split(' ').any(|field| field == "db=7"))
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .collect();
    assert_eq!(ours.len(), 2, "both replicas' subscriptions: {clients}");
    for id in ours {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    // b stops serving from its near cache when the connection drops, and once it has
    // resubscribed it has forgotten version 1.
    eventually("b notices the lost subscription", || async { !b.near_cache_live() }).await;
    eventually("b resubscribes", || async { b.near_cache_live() }).await;
    for _ in 0..3 {
        assert_eq!(b.get_or_load("n2", || loader(2)).await.unwrap(), value("2"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_commits_both_end_on_the_last_committed_version() {
    let Some(Replicas { a, b, .. }) = replicas(0).await else {
        return;
    };
    let committed = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let load = |committed: Arc<std::sync::atomic::AtomicU64>| async move {
        let version = committed.load(Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(Some((version, version.to_string().into_bytes())))
    };
    for round in 0..10 {
        let key = format!("raced-near-{round}");
        let mut tasks = Vec::new();
        for writer in 0..2 {
            let cache = if writer == 0 { a.clone() } else { b.clone() };
            let (committed, key) = (committed.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    let version = committed.fetch_add(1, Ordering::SeqCst) + 1;
                    cache.invalidate(&key, version).await;
                    tokio::task::yield_now().await;
                }
            }));
        }
        for reader in 0..6 {
            let cache = if reader % 2 == 0 { a.clone() } else { b.clone() };
            let (committed, key) = (committed.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..40 {
                    cache.get_or_load(&key, || load(committed.clone())).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let last = value(&committed.load(Ordering::SeqCst).to_string());
        for (name, cache) in [("a", &a), ("b", &b)] {
            eventually(
                &format!("round {round}: replica {name} serves the last version"),
                || async { cache.get_or_load(&key, || load(committed.clone())).await.unwrap() == last },
            )
            .await;
            // ... and keeps serving it: nothing older lingers in its near cache.
            for _ in 0..20 {
                assert_eq!(cache.get_or_load(&key, || load(committed.clone())).await.unwrap(), last);
            }
        }
    }
}

/// A cache on a redis-server of the test's own (see [`RedisServer`]), connected.
async fn cache_on(redis: &retail_testkit::redis_server::RedisServer) -> Arc<VersionedCache> {
    let cache = VersionedCache::new(CacheSettings {
        redis_url: Some(redis.url()),
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        timeout: Duration::from_millis(25),
        ..CacheSettings::default()
    })
    .unwrap();
    eventually("redis answers", || async {
        let before = cache.stats.fallbacks.load(Ordering::SeqCst);
        cache.get_or_load("warm-up", || async { Ok(None) }).await.is_ok()
            && cache.stats.fallbacks.load(Ordering::SeqCst) == before
    })
    .await;
    cache
}

/// With Redis frozen every read used to wait out its timeout (25 ms, twice with the
/// write-back): once the breaker is open, reads go to the loader without asking
/// Redis, and a probe after the cool-down closes it again.
#[tokio::test]
async fn with_redis_frozen_the_breaker_opens_and_reads_stop_waiting_for_redis_until_a_probe_succeeds() {
    let Some(redis) = retail_testkit::redis_server::RedisServer::start() else {
        return;
    };
    let cache = cache_on(&redis).await;
    redis.freeze();
    for i in 0..20u64 {
        let got = cache.get_or_load(&format!("frozen-{i}"), || loader(i)).await.unwrap();
        assert_eq!(got, value(&i.to_string()), "reads keep succeeding from the loader");
    }
    assert!(cache.breaker().is_open(), "repeated timeouts open the breaker");
    assert!(
        cache.breaker().rejected() >= 17,
        "after the breaker opened, reads did not ask Redis (only the first few waited): {} refused",
        cache.breaker().rejected()
    );
    redis.resume();
    eventually("a probe closes the breaker", || async {
        cache.get_or_load("probe", || loader(1)).await.unwrap();
        !cache.breaker().is_open()
    })
    .await;
    let hits = cache.stats.hits.load(Ordering::SeqCst);
    cache.get_or_load("frozen-after", || loader(1)).await.unwrap();
    cache.get_or_load("frozen-after", || loader(1)).await.unwrap();
    assert_eq!(cache.stats.hits.load(Ordering::SeqCst), hits + 1, "Redis serves again");
}

/// An invalidation Redis does not take (frozen, or restarted and without its
/// scripts) used to be given up, leaving the old value to be served for its TTL:
/// the key is now read from the loader until a retry delivers the invalidation.
#[tokio::test]
async fn an_invalidation_redis_misses_while_frozen_or_restarted_is_retried_and_the_old_value_is_never_served() {
    let Some(mut redis) = retail_testkit::redis_server::RedisServer::start() else {
        return;
    };
    let cache = cache_on(&redis).await;
    let committed = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let read = |cache: Arc<VersionedCache>, committed: Arc<std::sync::atomic::AtomicU64>| async move {
        let got = cache
            .get_or_load("profile", || loader(committed.load(Ordering::SeqCst)))
            .await
            .unwrap();
        assert_eq!(
            got,
            value(&committed.load(Ordering::SeqCst).to_string()),
            "a read after a commit returned an older value"
        );
    };
    // Cached in Redis at version 1.
    read(cache.clone(), committed.clone()).await;
    read(cache.clone(), committed.clone()).await;

    redis.freeze();
    committed.store(2, Ordering::SeqCst);
    assert!(!cache.invalidate("profile", 2).await, "frozen Redis cannot take it");
    assert_eq!(cache.pending_invalidations(), 1);
    read(cache.clone(), committed.clone()).await;
    redis.resume();
    // Reads right after Redis answers again, while the retry is on its way.
    let deadline = tokio::time::Instant::now() + retail_kit::cache::STALENESS_BOUND * 2;
    while tokio::time::Instant::now() < deadline {
        read(cache.clone(), committed.clone()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cache.pending_invalidations(), 0, "the retry delivered the invalidation");
    assert!(cache.stats.invalidations_retried.load(Ordering::SeqCst) >= 1);

    // Scripts gone while values stay: the invalidation loads its script.
    read(cache.clone(), committed.clone()).await;
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).as_deref(), Some("+OK"));
    committed.store(3, Ordering::SeqCst);
    assert!(
        cache.invalidate("profile", 3).await,
        "NOSCRIPT is answered by loading the script"
    );
    read(cache.clone(), committed.clone()).await;

    // A restart: values, fences and scripts are gone, connections broken.
    read(cache.clone(), committed.clone()).await;
    redis.restart();
    committed.store(4, Ordering::SeqCst);
    cache.invalidate("profile", 4).await;
    let deadline = tokio::time::Instant::now() + retail_kit::cache::STALENESS_BOUND * 2;
    while tokio::time::Instant::now() < deadline {
        read(cache.clone(), committed.clone()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cache.pending_invalidations(), 0);
    // And the cache serves from Redis again (its write-back loaded its script).
    eventually("the cache serves hits again", || async {
        let hits = cache.stats.hits.load(Ordering::SeqCst);
        read(cache.clone(), committed.clone()).await;
        cache.stats.hits.load(Ordering::SeqCst) > hits
    })
    .await;
}
