//! Connecting to a service's own database (PostgreSQL or SQLite, chosen by URL),
//! retrying while it comes up, and running its migrations.

use std::time::Duration;

use anyhow::Context;
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr, SqlErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use secrecy::ExposeSecret;

use crate::config::DatabaseSettings;

/// Connects with the pool settings, retrying with backoff for `startup_retry_ms`.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let url = settings.url.expose_secret().to_owned();
    let is_sqlite = url.starts_with("sqlite:");
    if is_sqlite {
        ensure_sqlite_dir(&url)?;
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
        // Ping only connections idle long enough to have been dropped by the server or
        // a proxy; a ping on every checkout would add a round trip to most statements.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false);
    if is_sqlite {
        // WAL lets readers proceed while one writer commits; the busy timeout makes a
        // second writer wait for the lock instead of failing at once.
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }

    let deadline = tokio::time::Instant::now() + Duration::from_millis(settings.startup_retry_ms);
    let mut delay = Duration::from_millis(100);
    loop {
        match Database::connect(options.clone()).await {
            Ok(db) => return Ok(db),
            Err(err) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("failed to connect to the database"),
        }
    }
}

/// Creates the directory of a SQLite file so a fresh checkout can start at once.
fn ensure_sqlite_dir(url: &str) -> anyhow::Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create the database directory {}", parent.display()))?;
    }
    Ok(())
}

/// Applies every pending migration of `M`.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> anyhow::Result<()> {
    M::up(db, None).await.context("failed to run database migrations")
}

/// Connects and, when configured, migrates: what every service does at start.
pub async fn connect_and_migrate<M: MigratorTrait>(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let db = connect(settings).await?;
    if settings.migrate_on_start {
        migrate::<M>(&db).await?;
    }
    Ok(db)
}

/// True when the error is a unique-constraint violation, which stores translate to
/// `AlreadyExists` or to an idempotent replay.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// True for errors a retry of the whole transaction may cure: serialization
/// failures and deadlocks on PostgreSQL, a busy database on SQLite.
pub fn is_retryable(err: &DbErr) -> bool {
    let text = err.to_string();
    text.contains("40001")
        || text.contains("40P01")
        || text.contains("database is locked")
        || text.contains("could not serialize")
}

/// Begins a transaction that will write. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`), so that concurrent writers queue on the busy timeout instead
/// of failing when a read lock cannot be upgraded; on PostgreSQL it is a plain BEGIN.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// `column IN (values)`, written for the backend: on PostgreSQL one array parameter
/// (`column = ANY($1)`), so every batch size shares one prepared statement and its
/// plan; on SQLite the usual list of parameters.
pub fn one_of(
    backend: sea_orm::DatabaseBackend,
    column: impl sea_orm::sea_query::IntoColumnRef,
    values: &[String],
) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Expr, ExprTrait, PgFunc};
    match backend {
        sea_orm::DatabaseBackend::Postgres => Expr::col(column).eq(PgFunc::any(Expr::val(values.to_vec()))),
        _ => Expr::col(column).is_in(values.iter().cloned()),
    }
}
