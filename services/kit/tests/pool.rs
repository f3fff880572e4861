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
