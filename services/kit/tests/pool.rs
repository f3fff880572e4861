//! Connections going back to the pool, on a real PostgreSQL when
//! `RETAIL_TEST_DATABASE_URL` is set and on SQLite otherwise. The pool pings a
//! released connection only when it still has messages to send (the patched
//! sqlx-core, see vendor/README.md), so these check what that ping used to cover:
//! the rollback of a dropped transaction reaches the server at once, a statement
//! cancelled midway leaves its connection in step for the next one, and a
//! connection that broke is closed rather than handed out again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::time::Duration;

use retail_kit::config::DatabaseSettings;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement, TransactionTrait};

async fn pool(test_db: &retail_testkit::TestDatabase, max_connections: u32) -> DatabaseConnection {
    let settings = DatabaseSettings {
        url: test_db.secret_url(),
        max_connections,
        ..DatabaseSettings::default()
    };
    retail_kit::db::connect(&settings).await.expect("a pool")
}

async fn value(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .expect("a row");
    row.try_get::<i64>("", "v").unwrap()
}

#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_and_releases_its_locks_at_once() {
    let test_db = retail_testkit::TestDatabase::new().await.unwrap();
    let db = pool(&test_db, 2).await;
    db.execute_unprepared("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
        .await
        .unwrap();
    db.execute_unprepared("INSERT INTO t (id, v) VALUES (1, 0)")
        .await
        .unwrap();

    // Each round: a transaction changes the row and is dropped uncommitted; its
    // connection goes back to the pool and sits idle. A writer on another pool must
    // get the row: the connection's queued ROLLBACK has to reach the server on
    // release, not when the connection is next used.
    let other = pool(&test_db, 1).await;
    for round in 1..=5_i64 {
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("UPDATE t SET v = -1 WHERE id = 1")
            .await
            .unwrap();
        drop(txn);
        let update = format!("UPDATE t SET v = {round} WHERE id = 1");
        let written = tokio::time::timeout(Duration::from_secs(10), other.execute_unprepared(&update))
            .await
            .expect("the dropped transaction still holds the row")
            .unwrap();
        assert_eq!(written.rows_affected(), 1);
        assert_eq!(value(&db, "SELECT v FROM t WHERE id = 1").await, round);
    }
}

#[tokio::test]
async fn a_statement_cancelled_midway_leaves_its_connection_usable() {
    let test_db = retail_testkit::TestDatabase::new().await.unwrap();
    if test_db.backend != "postgres" {
        // SQLite statements run to the end on the pool's worker thread: nothing is
        // left half-read on the connection.
        return;
    }
    // One connection, so every statement after a cancelled one runs on it.
    let db = pool(&test_db, 1).await;
    for round in 0..5_i64 {
        let slow = db.query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT 7::int8 AS v FROM pg_sleep(0.2)",
        ));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), slow).await.is_err(),
            "the slow statement finished within its timeout"
        );
        // The next statement gets its own result, not the cancelled one's.
        assert_eq!(value(&db, &format!("SELECT {round}::int8 AS v")).await, round);
        assert_eq!(value(&db, "SELECT 40::int8 + 2 AS v").await, 42);
    }
}

#[tokio::test]
async fn a_connection_that_broke_in_use_is_closed_not_handed_out_again() {
    let test_db = retail_testkit::TestDatabase::new().await.unwrap();
    if test_db.backend != "postgres" {
        // An embedded SQLite connection has no server end to lose.
        return;
    }
    let db = pool(&test_db, 1).await;
    let admin = pool(&test_db, 1).await;
    for _ in 0..3 {
        let pid = value(&db, "SELECT pg_backend_pid()::int8 AS v").await;
        let ended = value(&admin, &format!("SELECT pg_terminate_backend({pid})::int::int8 AS v")).await;
        assert_eq!(ended, 1);
        // The server closed the connection: the first statement on it fails...
        let failed = db
            .query_one_raw(Statement::from_string(DatabaseBackend::Postgres, "SELECT 1::int8 AS v"))
            .await;
        assert!(failed.is_err(), "a statement on a terminated connection succeeded");
        // ...and the pool, which has room for one connection only, opens a new one
        // for the next statement instead of handing the broken one out again.
        assert_eq!(value(&db, "SELECT 42::int8 AS v").await, 42);
        assert_ne!(value(&db, "SELECT pg_backend_pid()::int8 AS v").await, pid);
    }
}

/// A TCP proxy in front of PostgreSQL that counts the `Sync` messages clients send:
/// each is one round trip the client waits for.
async fn sync_counting_proxy(upstream: String) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let syncs = Arc::new(AtomicU64::new(0));
    let counter = syncs.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            let counter = counter.clone();
            tokio::spawn(async move {
                // The first message (startup) has no type byte; every later one is a
                // type byte and a length that counts itself.
                let mut pending: Vec<u8> = Vec::new();
                let mut started = false;
                let mut chunk = [0u8; 8192];
                loop {
                    let n = match client_read.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if server_write.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    loop {
                        let header = if started { 5 } else { 4 };
                        if pending.len() < header {
                            break;
                        }
                        let at = if started { 1 } else { 0 };
                        let len = u32::from_be_bytes(pending[at..at + 4].try_into().unwrap()) as usize;
                        if pending.len() < at + len {
                            break;
                        }
                        if started && pending[0] == b'S' {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        pending.drain(..at + len);
                        started = true;
                    }
                }
            });
        }
    });
    (addr, syncs)
}

#[tokio::test]
async fn a_statement_on_the_pool_costs_one_round_trip_not_two() {
    // Guards the vendored sqlx patch (vendor/README.md): without it, every connection
    // released to the pool is pinged (one more Sync and wait per statement).
    let test_db = retail_testkit::TestDatabase::new().await.unwrap();
    if test_db.backend != "postgres" {
        eprintln!("PostgreSQL only: set RETAIL_TEST_DATABASE_URL");
        return;
    }
    use secrecy::ExposeSecret;
    let url = test_db.secret_url().expose_secret().to_owned();
    let (scheme_auth, rest) = url.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let (proxy, syncs) = sync_counting_proxy(host_port.to_owned()).await;
    let separator = if path.contains('?') { '&' } else { '?' };
    let proxied = format!("{scheme_auth}@{proxy}/{path}{separator}sslmode=disable");
    let settings = DatabaseSettings {
        url: secrecy::SecretString::from(proxied),
        max_connections: 1,
        ..DatabaseSettings::default()
    };
    let db = retail_kit::db::connect(&settings).await.unwrap();
    // Warm up: the statement gets prepared and cached on the connection.
    for _ in 0..3 {
        value(&db, "SELECT 1::int8 AS v").await;
    }
    let before = syncs.load(std::sync::atomic::Ordering::SeqCst);
    const STATEMENTS: u64 = 20;
    for _ in 0..STATEMENTS {
        value(&db, "SELECT 1::int8 AS v").await;
    }
    let spent = syncs.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(spent, STATEMENTS, "round trips for {STATEMENTS} statements");
}
