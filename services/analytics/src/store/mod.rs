//! Analytics' tables and the SQL over them. Statements are written once with `?`
//! placeholders and numbered for PostgreSQL ([`stmt`]); times are seconds since the
//! epoch in BIGINT columns, so both backends compare and bucket them alike.
//!
//! Projections (rebuilt from the archive, [`PROJECTIONS`]) live in tables with a
//! prefix: none for the serving ones, `rebuild_` for a rebuild's shadow copies.

pub mod buyers;
pub mod migration;
pub mod triers;

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
    "customer_numbers",
    "buyers",
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

/// A column's type for [`insert_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Text,
    BigInt,
    /// A BIGINT that may be NULL.
    OptBigInt,
    Bytes,
}

/// Stands for NULL in a BIGINT array (PostgreSQL's arrays are bound without NULLs).
const NULL_BIGINT: i64 = i64::MIN + 1;

/// `value` as an element of `col`'s array.
fn array_element(col: Col, value: Value) -> ServiceResult<Value> {
    Ok(match (col, value) {
        (Col::Text, v @ Value::String(Some(_))) | (Col::Bytes, v @ Value::Bytes(Some(_))) => v,
        (Col::BigInt | Col::OptBigInt, Value::BigInt(Some(n))) if n != NULL_BIGINT => Value::BigInt(Some(n)),
        (Col::BigInt | Col::OptBigInt, Value::Int(Some(n))) => Value::BigInt(Some(i64::from(n))),
        (Col::OptBigInt, Value::BigInt(None)) => Value::BigInt(Some(NULL_BIGINT)),
        (col, value) => {
            return Err(retail_kit::error::ServiceError::internal(anyhow::anyhow!(
                "a {value:?} does not fit a {col:?} column"
            )));
        }
    })
}

/// Inserts `rows` (values in `columns`' order and types) into `target`
/// (`"table (a, b)"`), with `tail` after the rows (`ON CONFLICT ...`,
/// `RETURNING ...`); returns the rows `RETURNING` gives.
///
/// On PostgreSQL the rows go as one array per column (`FROM unnest($1::text[],
/// ...)`): one statement whatever the number of rows, whose text PostgreSQL plans
/// once per connection, with a parameter per column rather than per value. On
/// SQLite as `VALUES` of at most 500 rows.
pub async fn insert_rows(
    db: &impl ConnectionTrait,
    target: &str,
    columns: &[Col],
    rows: Vec<Vec<Value>>,
    tail: &str,
) -> ServiceResult<Vec<QueryResult>> {
    use sea_orm::sea_query::ArrayType;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    if backend == DatabaseBackend::Postgres {
        let mut arrays: Vec<Vec<Value>> = columns.iter().map(|_| Vec::with_capacity(rows.len())).collect();
        for row in rows {
            if row.len() != columns.len() {
                return Err(retail_kit::error::ServiceError::internal(anyhow::anyhow!(
                    "a row of {} values for {} columns",
                    row.len(),
                    columns.len()
                )));
            }
            for ((array, value), col) in arrays.iter_mut().zip(row).zip(columns) {
                array.push(array_element(*col, value)?);
            }
        }
        let (mut casts, mut picks, mut names) = (Vec::new(), Vec::new(), Vec::new());
        let mut values = Vec::new();
        for (i, (col, array)) in columns.iter().zip(arrays).enumerate() {
            let (ty, kind) = match col {
                Col::Text => ("text", ArrayType::String),
                Col::BigInt | Col::OptBigInt => ("bigint", ArrayType::BigInt),
                Col::Bytes => ("bytea", ArrayType::Bytes),
            };
            casts.push(format!("${}::{ty}[]", i + 1));
            names.push(format!("c{i}"));
            picks.push(if *col == Col::OptBigInt {
                format!("NULLIF(c{i}, CAST({NULL_BIGINT} AS BIGINT))")
            } else {
                format!("c{i}")
            });
            values.push(Value::Array(kind, Some(Box::new(array))));
        }
        let sql = format!(
            "INSERT INTO {target} SELECT {} FROM unnest({}) AS u({}) {tail}",
            picks.join(","),
            casts.join(","),
            names.join(",")
        );
        return Ok(db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?);
    }
    let mut out = Vec::new();
    let group = format!("({})", vec!["?"; columns.len()].join(","));
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO {target} VALUES {} {tail}",
            vec![group.as_str(); chunk.len()].join(",")
        );
        let values: Vec<Value> = chunk.iter().flatten().cloned().collect();
        out.extend(db.query_all_raw(stmt(backend, &sql, values)).await?);
    }
    Ok(out)
}

/// `column` is one of `keys`: `= ANY(?)` with one array on PostgreSQL (one text
/// for any number of keys), `IN (?,..)` on SQLite; with its values.
pub fn one_of(backend: DatabaseBackend, column: &str, keys: &[String]) -> (String, Vec<Value>) {
    if backend == DatabaseBackend::Postgres {
        let array: Vec<Value> = keys.iter().map(|k| k.clone().into()).collect();
        (
            format!("{column} = ANY(?::text[])"),
            vec![Value::Array(
                sea_orm::sea_query::ArrayType::String,
                Some(Box::new(array)),
            )],
        )
    } else {
        (
            format!("{column} IN ({})", vec!["?"; keys.len()].join(",")),
            keys.iter().map(|k| k.clone().into()).collect(),
        )
    }
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
    ddl.extend(buyers::ddl(prefix, tag));
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
        // Keyed bucket before metric, so that a period of one dimension value is
        // one range of the key (whatever the metrics asked for), and indexed by
        // bucket within a dimension for the figures of all its values.
        format!(
            "CREATE TABLE {p}rollups (grain TEXT NOT NULL, dim TEXT NOT NULL, dim_key TEXT NOT NULL, \
             metric TEXT NOT NULL, bucket BIGINT NOT NULL, value BIGINT NOT NULL, \
             PRIMARY KEY (grain, dim, dim_key, bucket, metric))"
        ),
        format!("CREATE INDEX {p}rollups_by_bucket_{tag} ON {p}rollups (grain, dim, bucket)"),
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
