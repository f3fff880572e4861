//! Analytics' tables and the SQL over them. Statements are written once with `?`
//! placeholders and numbered for PostgreSQL ([`stmt`]); times are seconds since the
//! epoch in BIGINT columns, so both backends compare and bucket them alike.
//!
//! Projections (rebuilt from the archive, [`PROJECTIONS`]) live in tables with a
//! prefix: none for the serving ones, `rebuild_` for a rebuild's shadow copies.

pub mod migration;

use sea_orm::{ConnectionTrait, DatabaseBackend, QueryResult, Statement, Value};

use retail_kit::error::ServiceResult;

/// The projection tables, each rebuilt from the event archive.
pub const PROJECTIONS: &[&str] = &[
    "rollups",
    "seen",
    "members",
    "consents",
    "purchases",
    "order_lines",
    "skus",
    "stock",
    "listings",
    "last_sales",
    "targets",
    "partners",
    "opportunity_stages",
    "campaigns",
    "campaign_contacts",
    "member_merges",
];

/// The table prefix of the rebuild's shadow projections.
pub const SHADOW: &str = "rebuild_";

/// A statement with `?` placeholders, numbered `$1, $2, ...` on PostgreSQL.
pub fn stmt(backend: DatabaseBackend, sql: &str, values: Vec<Value>) -> Statement {
    if backend == DatabaseBackend::Postgres {
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Statement::from_sql_and_values(backend, out, values)
    } else {
        Statement::from_sql_and_values(backend, sql, values)
    }
}

/// Runs a statement, returning the rows it affected.
pub async fn exec(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> ServiceResult<u64> {
    let backend = db.get_database_backend();
    Ok(db.execute_raw(stmt(backend, sql, values)).await?.rows_affected())
}

/// Reads every row of a query.
pub async fn rows(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> ServiceResult<Vec<QueryResult>> {
    let backend = db.get_database_backend();
    Ok(db.query_all_raw(stmt(backend, sql, values)).await?)
}

/// Reads one BIGINT (0 when there is no row or it is NULL).
pub async fn scalar(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> ServiceResult<i64> {
    let backend = db.get_database_backend();
    let row = db.query_one_raw(stmt(backend, sql, values)).await?;
    Ok(match row {
        Some(row) => row.try_get_by_index::<Option<i64>>(0)?.unwrap_or(0),
        None => 0,
    })
}

/// Column `i` of a row as i64 (NULL as 0).
pub fn int(row: &QueryResult, i: usize) -> ServiceResult<i64> {
    Ok(row.try_get_by_index::<Option<i64>>(i)?.unwrap_or(0))
}

/// Column `i` of a row as an optional i64.
pub fn opt_int(row: &QueryResult, i: usize) -> ServiceResult<Option<i64>> {
    Ok(row.try_get_by_index::<Option<i64>>(i)?)
}

/// Column `i` of a row as text (NULL as empty).
pub fn text(row: &QueryResult, i: usize) -> ServiceResult<String> {
    Ok(row.try_get_by_index::<Option<String>>(i)?.unwrap_or_default())
}

/// The projection tables' DDL with `prefix` (the serving tables have none).
/// Index names carry `tag`, since index names are global to a schema and a
/// rebuild's shadow tables take the serving names when swapped in.
pub fn projection_ddl(prefix: &str, tag: &str) -> Vec<String> {
    let mut ddl = sales_ddl(prefix, tag);
    ddl.extend(partner_ddl(prefix, tag));
    ddl.extend(campaign_ddl(prefix, tag));
    ddl
}

/// The projections of membership's campaign events: campaigns by id (names and
/// states), every audience decision with the member's lifecycle state at it and
/// its attribution window, and which member each merged duplicate went into.
pub fn campaign_ddl(prefix: &str, tag: &str) -> Vec<String> {
    let p = prefix;
    vec![
        format!(
            "CREATE TABLE {p}campaigns (campaign_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, \
             state TEXT NOT NULL, segment_id TEXT NOT NULL, channel TEXT NOT NULL, changed_at BIGINT NOT NULL)"
        ),
        // One row per campaign and member: membership decides for a member once.
        format!(
            "CREATE TABLE {p}campaign_contacts (campaign_id TEXT NOT NULL, member_id TEXT NOT NULL, \
             channel TEXT NOT NULL, outcome TEXT NOT NULL, control BIGINT NOT NULL, lifecycle TEXT NOT NULL, \
             contacted_at BIGINT NOT NULL, window_end BIGINT NOT NULL, PRIMARY KEY (campaign_id, member_id))"
        ),
        format!("CREATE INDEX {p}campaign_contacts_at_{tag} ON {p}campaign_contacts (lifecycle, contacted_at)"),
        format!(
            "CREATE TABLE {p}member_merges (merged_id TEXT PRIMARY KEY, survivor_id TEXT NOT NULL, \
             merged_at BIGINT NOT NULL)"
        ),
    ]
}

/// The projections of channel-partner's log: targets, partners' levels and
/// states, and the stages each opportunity reached.
pub fn partner_ddl(prefix: &str, tag: &str) -> Vec<String> {
    let p = prefix;
    vec![
        format!(
            "CREATE TABLE {p}targets (target_id TEXT PRIMARY KEY, subject_kind TEXT NOT NULL, partner TEXT NOT NULL, \
             rep TEXT NOT NULL, period_kind TEXT NOT NULL, start_at BIGINT NOT NULL, end_at BIGINT NOT NULL, \
             amount BIGINT NOT NULL, attained_at BIGINT)"
        ),
        format!("CREATE INDEX {p}targets_period_{tag} ON {p}targets (start_at, end_at)"),
        format!(
            "CREATE TABLE {p}partners (partner_id TEXT PRIMARY KEY, level TEXT NOT NULL DEFAULT '', \
             status TEXT NOT NULL DEFAULT '')"
        ),
        // The first time each opportunity reached each stage.
        format!(
            "CREATE TABLE {p}opportunity_stages (opportunity TEXT NOT NULL, stage TEXT NOT NULL, \
             partner TEXT NOT NULL, rep TEXT NOT NULL, reached_at BIGINT NOT NULL, PRIMARY KEY (opportunity, stage))"
        ),
        format!("CREATE INDEX {p}opportunity_stages_at_{tag} ON {p}opportunity_stages (stage, reached_at)"),
    ]
}

/// The projections of the orders, membership and catalog logs.
pub fn sales_ddl(prefix: &str, tag: &str) -> Vec<String> {
    let p = prefix;
    vec![
        // Additive figures per time bucket: grain h (hour), d (day), w (ISO week),
        // m (month); a dimension and its value ("all" / ""), a metric.
        format!(
            "CREATE TABLE {p}rollups (grain TEXT NOT NULL, dim TEXT NOT NULL, dim_key TEXT NOT NULL, \
             metric TEXT NOT NULL, bucket BIGINT NOT NULL, value BIGINT NOT NULL, \
             PRIMARY KEY (grain, dim, dim_key, metric, bucket))"
        ),
        // Distinct subjects per set and bucket: counted into a rollup when first seen.
        format!(
            "CREATE TABLE {p}seen (set_name TEXT NOT NULL, bucket BIGINT NOT NULL, subject TEXT NOT NULL, \
             PRIMARY KEY (set_name, bucket, subject))"
        ),
        format!(
            "CREATE TABLE {p}members (member_id TEXT PRIMARY KEY, registered_at BIGINT, \
             region TEXT NOT NULL DEFAULT '', tier TEXT NOT NULL DEFAULT '', activated_at BIGINT, \
             erased BIGINT NOT NULL DEFAULT 0, acquisition_channel TEXT NOT NULL DEFAULT '', \
             first_purchase BIGINT, last_purchase BIGINT)"
        ),
        format!(
            "CREATE TABLE {p}consents (member_id TEXT NOT NULL, channel TEXT NOT NULL, granted BIGINT NOT NULL, \
             PRIMARY KEY (member_id, channel))"
        ),
        // Paid orders (guests with an empty member), with the dimensions at payment.
        format!(
            "CREATE TABLE {p}purchases (order_id TEXT PRIMARY KEY, member_id TEXT NOT NULL, \
             channel TEXT NOT NULL, store TEXT NOT NULL, partner TEXT NOT NULL, rep TEXT NOT NULL, \
             region TEXT NOT NULL, tier TEXT NOT NULL, paid_at BIGINT NOT NULL, amount BIGINT NOT NULL, \
             units BIGINT NOT NULL, refunded BIGINT NOT NULL DEFAULT 0, cancelled BIGINT NOT NULL DEFAULT 0)"
        ),
        format!("CREATE INDEX {p}purchases_member_{tag} ON {p}purchases (member_id, paid_at)"),
        format!("CREATE INDEX {p}purchases_paid_{tag} ON {p}purchases (paid_at)"),
        format!(
            "CREATE TABLE {p}order_lines (order_id TEXT NOT NULL, ordinal BIGINT NOT NULL, sku TEXT NOT NULL, \
             quantity BIGINT NOT NULL, unit_minor BIGINT NOT NULL, PRIMARY KEY (order_id, ordinal))"
        ),
        format!("CREATE TABLE {p}skus (sku TEXT PRIMARY KEY, product_id TEXT NOT NULL, category TEXT NOT NULL)"),
        format!(
            "CREATE TABLE {p}stock (sku TEXT NOT NULL, warehouse TEXT NOT NULL, sellable BIGINT NOT NULL, \
             PRIMARY KEY (sku, warehouse))"
        ),
        format!(
            "CREATE TABLE {p}listings (sku TEXT NOT NULL, channel TEXT NOT NULL, listed BIGINT NOT NULL, \
             PRIMARY KEY (sku, channel))"
        ),
        format!("CREATE TABLE {p}last_sales (sku TEXT PRIMARY KEY, sold_at BIGINT NOT NULL)"),
    ]
}
