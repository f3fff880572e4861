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
                let error = without_credentials(&err, settings.url.expose_secret());
                tracing::warn!(
                    error,
                    retry_in_ms = delay.as_millis() as u64,
                    "database not reachable yet"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            // The cause is kept as text only: its chain would print the URL again.
            Err(err) => {
                return Err(anyhow::anyhow!(without_credentials(&err, settings.url.expose_secret())))
                    .context("failed to connect to the database");
            }
        }
    }
}

/// The error's text without the database URL or its password: sea-orm quotes the
/// whole connection string when it cannot parse it.
fn without_credentials(err: &DbErr, url: &str) -> String {
    let mut text = err.to_string().replace(url, "<database url>");
    if let Some(password) = password_of(url).filter(|p| !p.is_empty()) {
        text = text.replace(password, "<redacted>");
    }
    text
}

/// The password of `scheme://user:password@host/...`; everything up to the last `@`
/// counts, so a password with unescaped `/` or `@` is still found.
fn password_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password)
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

/// The database lacks migrations this build needs: a service refuses to start on it
/// rather than serve and fail every request on a missing table or column.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database schema is {pending} migration(s) behind this build (next: {next}); apply them with the \
     service's migrate command first (or set database.migrate_on_start = true)"
)]
pub struct SchemaBehind {
    pub pending: usize,
    pub next: String,
}

/// Connects and, when configured, migrates: what every service does at start.
/// Without `migrate_on_start` it checks instead that every migration of `M` has
/// been applied (without writing anything), and refuses with [`SchemaBehind`].
pub async fn connect_and_migrate<M: MigratorTrait>(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let db = connect(settings).await?;
    if settings.migrate_on_start {
        migrate::<M>(&db).await?;
    } else {
        let pending = M::get_pending_migrations_read_only(&db)
            .await
            .context("failed to read which database migrations were applied")?;
        if let Some(next) = pending.first() {
            return Err(SchemaBehind {
                pending: pending.len(),
                next: next.name().to_owned(),
            }
            .into());
        }
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
    // By the database's own code only: PostgreSQL's SQLSTATE (serialization
    // failure, deadlock), SQLite's result codes (busy, locked, and their extended
    // forms). An error's text may quote anything, a value holding "40001" included.
    database_error(err).and_then(|d| d.code()).is_some_and(|code| {
        matches!(
            code.as_ref(),
            "40001" | "40P01" | "5" | "6" | "261" | "262" | "517" | "773"
        )
    })
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

/// Writes that take effect together, and only if their guard matches a row: a state
/// change and what it records, such as an order turning paid with its timeline
/// entry, its outbox event and its idempotency key. The guard is an `UPDATE` (its
/// conditions are the state the writes expect) or the insert of a new row (which
/// either happens or fails the whole write, e.g. on a duplicate key).
///
/// On PostgreSQL this is one autocommit statement: the guard, the updates and the
/// inserts are data-modifying CTEs, every update conditioned on and every insert
/// selecting its rows from the guard's result, so nothing else is written unless the
/// guard matched. That is one round trip, against a BEGIN, a statement per write and
/// a COMMIT for the same transaction; the statement is atomic like the transaction
/// (a failing part, such as a CHECK constraint, undoes all of it), and under READ
/// COMMITTED its guard re-checks a row a concurrent writer changed exactly as in a
/// transaction. The parts cannot see each other's effects: none may read what
/// another writes. SQLite has no data-modifying CTEs: there the same writes run in
/// one write transaction, in order.
///
/// A guard matching several rows applies the writes once. An update applies to
/// whichever rows its conditions match, possibly none: a condition that must hold
/// belongs in the guard or in a constraint.
#[derive(Debug, Clone)]
pub struct GuardedWrite {
    guard: Guard,
    updates: Vec<sea_orm::sea_query::UpdateStatement>,
    inserts: Vec<Rows>,
}

#[derive(Debug, Clone)]
enum Guard {
    Update(Box<sea_orm::sea_query::UpdateStatement>),
    Insert(Rows),
}

/// Rows for one table: the columns the first model sets, and every model's values.
#[derive(Debug, Clone)]
struct Rows {
    table: sea_orm::sea_query::TableRef,
    columns: Vec<sea_orm::sea_query::DynIden>,
    /// Each value as the column saves it (`ColumnTrait::save_as`: casts for enums).
    values: Vec<Vec<sea_orm::sea_query::Expr>>,
}

/// A value that goes into a PostgreSQL array parameter as it is: not null, and of a
/// type the driver binds as an array.
fn arrayable(value: &sea_orm::sea_query::Value) -> bool {
    use sea_orm::sea_query::Value;
    matches!(
        value,
        Value::Bool(Some(_))
            | Value::Int(Some(_))
            | Value::BigInt(Some(_))
            | Value::String(Some(_))
            | Value::Bytes(Some(_))
            | Value::ChronoDateTimeUtc(Some(_))
    )
}

impl Rows {
    /// The rows of `models`; every model must set the same columns.
    fn of<A: sea_orm::ActiveModelTrait>(models: impl IntoIterator<Item = A>) -> Result<Option<Self>, DbErr> {
        use sea_orm::sea_query::{Expr, IntoIden};
        use sea_orm::{ColumnTrait, EntityName, EntityTrait, Iterable};
        let table = || A::Entity::default().table_name();
        let mut rows: Option<Rows> = None;
        for model in models {
            let (columns, values): (Vec<_>, Vec<_>) = <A::Entity as EntityTrait>::Column::iter()
                .filter_map(|c| {
                    let value = model.get(c).into_value()?;
                    Some((c.into_iden(), c.save_as(Expr::val(value))))
                })
                .unzip();
            match &mut rows {
                None => {
                    rows = Some(Rows {
                        table: A::Entity::default().table_ref(),
                        columns,
                        values: vec![values],
                    })
                }
                Some(rows) if rows.columns == columns => rows.values.push(values),
                Some(_) => return Err(DbErr::Custom(format!("rows for {} set different columns", table()))),
            }
        }
        Ok(rows)
    }

    /// `INSERT ... VALUES`, every row.
    fn insert_values(&self) -> Result<sea_orm::sea_query::InsertStatement, DbErr> {
        let mut insert = sea_orm::sea_query::Query::insert();
        insert.into_table(self.table.clone()).columns(self.columns.clone());
        for values in &self.values {
            insert
                .values(values.iter().cloned())
                .map_err(|e| DbErr::Custom(e.to_string()))?;
        }
        Ok(insert)
    }

    /// One array per column, if there are several rows and every value is a plain
    /// one ([`arrayable`], saved by its column as it is, of its column's one type).
    fn arrays(&self) -> Option<Vec<sea_orm::sea_query::Value>> {
        use sea_orm::sea_query::{Expr, Value};
        if self.values.len() < 2 {
            return None;
        }
        (0..self.columns.len())
            .map(|i| {
                let mut column = Vec::with_capacity(self.values.len());
                for row in &self.values {
                    match &row[i] {
                        Expr::Value(v) if arrayable(v) => column.push(v.clone()),
                        _ => return None,
                    }
                }
                let kind = column[0].array_type();
                column
                    .iter()
                    .all(|v| v.array_type() == kind)
                    .then(|| Value::Array(kind, Some(Box::new(column))))
            })
            .collect()
    }

    /// `INSERT ... SELECT <row> WHERE EXISTS (SELECT 1 FROM guard) UNION ALL ...`:
    /// the rows once if the guard matched, whatever the number of rows it matched.
    ///
    /// Several rows of plain values go as one array per column instead, `SELECT
    /// unnest($1), unnest($2), ... WHERE EXISTS (...)`: the text is then the same for
    /// any number of rows, so PostgreSQL plans it once per connection (a text that
    /// changes with every batch's shape is planned at every execution, which for a
    /// batch of dozens of rows costs more than running it).
    fn insert_from_guard(&self) -> Result<Option<sea_orm::sea_query::InsertStatement>, DbErr> {
        use sea_orm::sea_query::{Expr, Func, Query, UnionType};
        let select = match self.arrays() {
            Some(arrays) => {
                let columns = arrays.into_iter().map(|a| Func::cust("unnest").arg(Expr::val(a)));
                Query::select().exprs(columns).and_where(guard_matched()).to_owned()
            }
            None => {
                let mut selects = self.values.iter().map(|values| {
                    Query::select()
                        .exprs(values.iter().cloned())
                        .and_where(guard_matched())
                        .to_owned()
                });
                let Some(mut select) = selects.next() else {
                    return Ok(None);
                };
                for more in selects {
                    select.union(UnionType::All, more);
                }
                select
            }
        };
        let mut insert = Query::insert();
        insert
            .into_table(self.table.clone())
            .columns(self.columns.clone())
            .select_from(select)
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        Ok(Some(insert))
    }
}

/// The name the guard's CTE goes by in the PostgreSQL statement (lower case, so
/// that quoted and unquoted uses name the same thing).
const GUARD: &str = "guard";

/// `EXISTS (SELECT 1 FROM guard)`.
fn guard_matched() -> sea_orm::sea_query::Expr {
    use sea_orm::sea_query::{Alias, Expr, Query};
    Expr::exists(Query::select().expr(Expr::val(1)).from(Alias::new(GUARD)).to_owned())
}

impl GuardedWrite {
    /// Writes guarded by `guard`, an `UPDATE` that must match a row.
    pub fn new(guard: sea_orm::sea_query::UpdateStatement) -> Self {
        Self {
            guard: Guard::Update(Box::new(guard)),
            updates: Vec::new(),
            inserts: Vec::new(),
        }
    }

    /// Writes that go with inserting `model`, a new row: all of them take effect or,
    /// if the insert fails, none.
    pub fn inserting<A: sea_orm::ActiveModelTrait>(model: A) -> Result<Self, DbErr> {
        let rows = Rows::of([model])?.ok_or_else(|| DbErr::Custom("nothing to insert".into()))?;
        Ok(Self {
            guard: Guard::Insert(rows),
            updates: Vec::new(),
            inserts: Vec::new(),
        })
    }

    /// Adds an update to apply with the guard.
    pub fn update(mut self, update: sea_orm::sea_query::UpdateStatement) -> Self {
        self.updates.push(update);
        self
    }

    /// Adds rows to insert with the guard. Every model must set the same columns.
    pub fn insert<A: sea_orm::ActiveModelTrait>(mut self, models: impl IntoIterator<Item = A>) -> Result<Self, DbErr> {
        self.inserts.extend(Rows::of(models)?);
        Ok(self)
    }

    /// Applies every write if the guard matches a row: true if it did, false if the
    /// guard matched nothing and nothing was written.
    pub async fn run(&self, db: &DatabaseConnection) -> Result<bool, DbErr> {
        if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            return Ok(self.apply(db).await? > 0);
        }
        let txn = begin_write(db).await?;
        let matched = self.apply(&txn).await? > 0;
        if matched {
            txn.commit().await?;
        }
        Ok(matched)
    }

    /// [`Self::run`] inside the caller's transaction, which commits (or rolls back)
    /// the writes with its own. Returns the number of rows the guard matched (0:
    /// nothing was written). A guard that must match several rows, say one per
    /// member of a batch, is checked by the caller, who rolls the transaction back
    /// when fewer matched: the rows that did match were changed.
    pub async fn run_in(&self, txn: &DatabaseTransaction) -> Result<u64, DbErr> {
        self.apply(txn).await
    }

    /// The writes on `conn`, and how many rows the guard matched: one statement on
    /// PostgreSQL; on SQLite the guard, then (if it matched) every other write, in
    /// order.
    async fn apply(&self, conn: &impl sea_orm::ConnectionTrait) -> Result<u64, DbErr> {
        if conn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            let matched: i64 = match conn.query_one_raw(self.postgres_statement()?).await? {
                Some(row) => row.try_get("", "matched")?,
                None => 0,
            };
            return Ok(matched.max(0) as u64);
        }
        let matched = match &self.guard {
            Guard::Update(update) => conn.execute(update.as_ref()).await?.rows_affected(),
            Guard::Insert(rows) => conn.execute(&rows.insert_values()?).await?.rows_affected(),
        };
        if matched == 0 {
            return Ok(0);
        }
        for update in &self.updates {
            conn.execute(update).await?;
        }
        for rows in &self.inserts {
            conn.execute(&rows.insert_values()?).await?;
        }
        Ok(matched)
    }

    /// `WITH "guard" AS (UPDATE ... RETURNING 1), u0 AS (UPDATE ... AND EXISTS
    /// (SELECT 1 FROM "guard")), w0 AS (INSERT ... SELECT ... WHERE EXISTS (...)),
    /// ... SELECT COUNT(*) AS matched FROM "guard"`, parameters numbered across the
    /// parts. The text varies only with the number of rows per table, and for plain
    /// values only with whether a table has one row or several (see
    /// [`Rows::insert_from_guard`]).
    fn postgres_statement(&self) -> Result<sea_orm::Statement, DbErr> {
        use std::fmt::Write;

        use sea_orm::sea_query::{Expr, PostgresQueryBuilder, Query, SqlWriterValues};
        let builder = PostgresQueryBuilder;
        let mut sql = SqlWriterValues::new("$", true);
        let fmt = |e: std::fmt::Error| DbErr::Custom(e.to_string());
        let returning_one = || Query::returning().expr(Expr::val(1));
        // Quoted as the builder quotes it where the parts refer to it.
        write!(sql, "WITH \"{GUARD}\" AS (").map_err(fmt)?;
        match &self.guard {
            Guard::Update(update) => {
                let mut guard = update.as_ref().clone();
                guard.returning(returning_one());
                guard.build_collect_any_into(&builder, &mut sql);
            }
            Guard::Insert(rows) => {
                let mut guard = rows.insert_values()?;
                guard.returning(returning_one());
                guard.build_collect_any_into(&builder, &mut sql);
            }
        }
        sql.write_str(")").map_err(fmt)?;
        for (i, update) in self.updates.iter().enumerate() {
            let mut update = update.clone();
            update.and_where(guard_matched());
            write!(sql, ", u{i} AS (").map_err(fmt)?;
            update.build_collect_any_into(&builder, &mut sql);
            sql.write_str(")").map_err(fmt)?;
        }
        for (i, rows) in self.inserts.iter().enumerate() {
            let Some(insert) = rows.insert_from_guard()? else {
                continue;
            };
            write!(sql, ", w{i} AS (").map_err(fmt)?;
            insert.build_collect_any_into(&builder, &mut sql);
            sql.write_str(")").map_err(fmt)?;
        }
        write!(sql, " SELECT COUNT(*) AS matched FROM \"{GUARD}\"").map_err(fmt)?;
        let (text, values) = sql.into_parts();
        Ok(sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            text,
            values,
        ))
    }
}

/// True when a CHECK constraint refused a write (on stock, a quantity that would
/// turn negative).
pub fn is_check_violation(err: &DbErr) -> bool {
    database_error(err).is_some_and(|d| matches!(d.kind(), sea_orm::sqlx::error::ErrorKind::CheckViolation))
}

/// The database's own error behind `err`, if the database refused a statement.
fn database_error(err: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    use sea_orm::RuntimeErr;
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => e.as_database_error(),
        _ => None,
    }
}

/// Creates an index by name if it does not exist yet, unique or not, over `cols` in
/// order: the one index helper of every service's migrations.
pub async fn create_index(
    m: &sea_orm_migration::SchemaManager<'_>,
    name: &str,
    table: impl sea_orm::sea_query::IntoIden,
    cols: Vec<sea_orm::sea_query::DynIden>,
    unique: bool,
) -> Result<(), sea_orm::DbErr> {
    let mut idx = sea_orm::sea_query::Index::create();
    idx.name(name).table(table).if_not_exists();
    if unique {
        idx.unique();
    }
    for col in cols {
        idx.col(col);
    }
    m.create_index(idx.to_owned()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_error_quoting_the_url_prints_neither_url_nor_password() {
        let url = "postgres://u:s3/cr@t@127.0.0.1:port/db";
        let err = DbErr::Conn(sea_orm::RuntimeErr::Internal(format!(
            "The connection string '{url}' cannot be parsed; password s3/cr@t"
        )));
        let text = without_credentials(&err, url);
        assert!(!text.contains("s3/cr@t"), "{text}");
        assert!(text.contains("<database url>"), "{text}");
        assert_eq!(password_of("postgres://127.0.0.1/db"), None);
    }

    /// Regression: an error was taken for a serialization failure when its text
    /// held "40001" (an order number, a value in a constraint message), and the
    /// whole transaction was retried for it.
    #[test]
    fn an_error_is_retryable_by_its_sqlstate_not_by_its_text() {
        for text in [
            "duplicate key value violates unique constraint: order-40001",
            "40001",
            "could not serialize access due to concurrent update",
            "database is locked",
        ] {
            let custom = DbErr::Custom(text.to_owned());
            assert!(!is_retryable(&custom), "{custom}");
            let internal = DbErr::Query(sea_orm::RuntimeErr::Internal(text.to_owned()));
            assert!(!is_retryable(&internal), "{internal}");
        }
    }
}
