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

#[tokio::test]
async fn a_slow_reader_never_writes_back_a_value_older_than_a_commit() {
    let cache = cache().await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let slow = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("m2", || async move {
                    // Read version 1 from the database, then stall before writing back.
                    let _ = started_tx.send(());
                    let _ = release_rx.await;
                    Ok(Some((1, b"old".to_vec())))
                })
                .await
                .unwrap()
        })
    };
    started_rx.await.unwrap();
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
