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

/// Writes that take effect together, and only if their guard (an `UPDATE`) matches a
/// row: a state change and what it records, such as an order turning paid with its
/// timeline entry, its outbox event and its idempotency key.
///
/// On PostgreSQL this is one autocommit statement: the guard and the inserts are
/// data-modifying CTEs, every insert selecting its rows from the guard's result, so
/// nothing is inserted unless the guard matched. That is one round trip, against a
/// BEGIN, a statement per write and a COMMIT for the same transaction; the
/// statement is atomic like the transaction, and under READ COMMITTED its guard
/// re-checks a row a concurrent writer changed exactly as in a transaction.
/// SQLite has no data-modifying CTEs: there the same writes run in one write
/// transaction, in order.
#[derive(Debug, Clone)]
pub struct GuardedWrite {
    guard: sea_orm::sea_query::UpdateStatement,
    inserts: Vec<Rows>,
}

/// Rows for one table: the columns the first model sets, and every model's values.
#[derive(Debug, Clone)]
struct Rows {
    table: sea_orm::sea_query::DynIden,
    columns: Vec<sea_orm::sea_query::DynIden>,
    values: Vec<Vec<sea_orm::sea_query::Value>>,
}

/// The name the guard's CTE goes by in the PostgreSQL statement.
const GUARD: &str = "guard";

impl GuardedWrite {
    pub fn new(guard: sea_orm::sea_query::UpdateStatement) -> Self {
        Self {
            guard,
            inserts: Vec::new(),
        }
    }

    /// Adds rows to insert with the guard. Every model must set the same columns.
    pub fn insert<A: sea_orm::ActiveModelTrait>(mut self, models: impl IntoIterator<Item = A>) -> Result<Self, DbErr> {
        use sea_orm::sea_query::IntoIden;
        use sea_orm::{EntityName, EntityTrait, Iterable};
        let table = || A::Entity::default().table_name();
        let mut rows: Option<Rows> = None;
        for model in models {
            let (columns, values): (Vec<_>, Vec<_>) = <A::Entity as EntityTrait>::Column::iter()
                .filter_map(|c| model.get(c).into_value().map(|v| (c.into_iden(), v)))
                .unzip();
            match &mut rows {
                None => {
                    rows = Some(Rows {
                        table: table().into_iden(),
                        columns,
                        values: vec![values],
                    })
                }
                Some(rows) if rows.columns == columns => rows.values.push(values),
                Some(_) => return Err(DbErr::Custom(format!("rows for {} set different columns", table()))),
            }
        }
        self.inserts.extend(rows);
        Ok(self)
    }

    /// Applies every write if the guard matches a row: true if it did, false if the
    /// guard matched nothing and nothing was written.
    pub async fn run(&self, db: &DatabaseConnection) -> Result<bool, DbErr> {
        use sea_orm::ConnectionTrait;
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                let row = db.query_one_raw(self.postgres_statement()?).await?;
                let matched: i64 = match row {
                    Some(row) => row.try_get("", "matched")?,
                    None => 0,
                };
                Ok(matched > 0)
            }
            _ => {
                let txn = begin_write(db).await?;
                if txn.execute(&self.guard).await?.rows_affected() == 0 {
                    return Ok(false);
                }
                for rows in &self.inserts {
                    let mut insert = sea_orm::sea_query::Query::insert();
                    insert.into_table(rows.table.clone()).columns(rows.columns.clone());
                    for values in &rows.values {
                        insert
                            .values(values.iter().cloned().map(sea_orm::sea_query::Expr::val))
                            .map_err(|e| DbErr::Custom(e.to_string()))?;
                    }
                    txn.execute(&insert).await?;
                }
                txn.commit().await?;
                Ok(true)
            }
        }
    }

    /// `WITH guard AS (UPDATE ... RETURNING 1), w0 AS (INSERT ... SELECT ... FROM
    /// guard), ... SELECT COUNT(*) AS matched FROM guard`, parameters numbered across
    /// the parts.
    fn postgres_statement(&self) -> Result<sea_orm::Statement, DbErr> {
        use std::fmt::Write;

        use sea_orm::sea_query::{Alias, Expr, PostgresQueryBuilder, Query, SqlWriterValues, UnionType};
        let builder = PostgresQueryBuilder;
        let mut sql = SqlWriterValues::new("$", true);
        let mut guard = self.guard.clone();
        guard.returning(Query::returning().expr(Expr::val(1)));
        let fmt = |e: std::fmt::Error| DbErr::Custom(e.to_string());
        write!(sql, "WITH {GUARD} AS (").map_err(fmt)?;
        guard.build_collect_any_into(&builder, &mut sql);
        sql.write_str(")").map_err(fmt)?;
        for (i, rows) in self.inserts.iter().enumerate() {
            let mut selects = rows.values.iter().map(|values| {
                Query::select()
                    .exprs(values.iter().cloned().map(Expr::val))
                    .from(Alias::new(GUARD))
                    .to_owned()
            });
            let Some(mut select) = selects.next() else {
                continue;
            };
            for more in selects {
                select.union(UnionType::All, more);
            }
            let mut insert = Query::insert();
            insert
                .into_table(rows.table.clone())
                .columns(rows.columns.clone())
                .select_from(select)
                .map_err(|e| DbErr::Custom(e.to_string()))?;
            write!(sql, ", w{i} AS (").map_err(fmt)?;
            insert.build_collect_any_into(&builder, &mut sql);
            sql.write_str(")").map_err(fmt)?;
        }
        write!(sql, " SELECT COUNT(*) AS matched FROM {GUARD}").map_err(fmt)?;
        let (text, values) = sql.into_parts();
        Ok(sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            text,
            values,
        ))
    }
}
