//! The paying members of each hour and day under each sales dimension, as
//! compressed bitmaps of member numbers, so a period's distinct customers are the
//! union of a bounded number of bitmaps (the hours at its edges, the days in
//! between) however many purchases the period holds.
//!
//! - `customer_numbers` gives every paying member a dense number (a bitmap holds
//!   32-bit numbers); numbers are handed out under a transaction-wide lock on
//!   PostgreSQL, so two batches never give one number twice.
//! - `buyers` holds one bitmap per cell `grain|dim|key|bucket` (grain `h` or `d`,
//!   the dimensions of [`crate::projection`]'s sales rollups).
//!
//! Both are projections: the rebuild replays them into its shadow tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use retail_kit::error::{ServiceError, ServiceResult};
use roaring::RoaringBitmap;
use sea_orm::{ConnectionTrait, DatabaseBackend, QueryResult, Value};

use super::{Col, exec, insert_rows, one_of, rows, scalar};

/// Rows a statement reads or writes at most.
const CHUNK: usize = 500;

/// The tables' DDL with `prefix`; index names carry `tag`.
pub fn ddl(prefix: &str, tag: &str) -> Vec<String> {
    let p = prefix;
    vec![
        format!("CREATE TABLE {p}customer_numbers (member_id TEXT PRIMARY KEY, number BIGINT NOT NULL UNIQUE)"),
        format!(
            "CREATE TABLE {p}buyers (cell TEXT PRIMARY KEY, grain TEXT NOT NULL, dim TEXT NOT NULL, \
             dim_key TEXT NOT NULL, bucket BIGINT NOT NULL, members BYTEA NOT NULL)"
        ),
        format!("CREATE INDEX {p}buyers_range_{tag} ON {p}buyers (grain, dim, dim_key, bucket)"),
    ]
}

/// A bitmap's place: grain, dimension, key and bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub grain: &'static str,
    pub dim: &'static str,
    pub key: String,
    pub bucket: i64,
}

impl Cell {
    fn id(&self) -> String {
        format!("{}|{}|{}|{}", self.grain, self.dim, self.key, self.bucket)
    }
}

fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> ServiceError {
    ServiceError::internal(anyhow::Error::new(e).context("unreadable buyers bitmap"))
}

pub(super) fn bitmap(row: &QueryResult, i: usize) -> ServiceResult<RoaringBitmap> {
    let bytes = row.try_get_by_index::<Vec<u8>>(i)?;
    RoaringBitmap::deserialize_from(&bytes[..]).map_err(corrupt)
}

pub(super) fn encode(members: &RoaringBitmap) -> ServiceResult<Vec<u8>> {
    let mut bytes = Vec::with_capacity(members.serialized_size());
    members.serialize_into(&mut bytes).map_err(corrupt)?;
    Ok(bytes)
}

/// The numbers of `members`, handing out new ones to those without.
pub async fn numbers(
    db: &impl ConnectionTrait,
    p: &str,
    members: &BTreeSet<String>,
) -> ServiceResult<HashMap<String, u32>> {
    let wanted: Vec<String> = members.iter().filter(|m| !m.is_empty()).cloned().collect();
    let mut out = read_numbers(db, p, &wanted).await?;
    let missing: Vec<String> = wanted.into_iter().filter(|m| !out.contains_key(m)).collect();
    if missing.is_empty() {
        return Ok(out);
    }
    if db.get_database_backend() == DatabaseBackend::Postgres {
        exec(
            db,
            "SELECT pg_advisory_xact_lock(hashtext(?))",
            vec![format!("{p}customer_numbers").into()],
        )
        .await?;
    }
    // Read again under the lock: another batch may have numbered some meanwhile.
    out.extend(read_numbers(db, p, &missing).await?);
    let missing: Vec<String> = missing.into_iter().filter(|m| !out.contains_key(m)).collect();
    let mut next = scalar(db, &format!("SELECT MAX(number) FROM {p}customer_numbers"), vec![]).await? + 1;
    let mut new_rows = Vec::with_capacity(missing.len());
    for member in missing {
        let number = u32::try_from(next)
            .map_err(|_| ServiceError::internal(anyhow::anyhow!("customer numbers exceed 32 bits")))?;
        new_rows.push(vec![member.clone().into(), next.into()]);
        out.insert(member, number);
        next += 1;
    }
    insert_rows(
        db,
        &format!("{p}customer_numbers (member_id, number)"),
        &[Col::Text, Col::BigInt],
        new_rows,
        "",
    )
    .await?;
    Ok(out)
}

async fn read_numbers(db: &impl ConnectionTrait, p: &str, members: &[String]) -> ServiceResult<HashMap<String, u32>> {
    read_numbers_of(db, &format!("{p}customer_numbers"), "member_id", members).await
}

/// The numbers `table` gives the ids in its `column` (those it has).
pub(super) async fn read_numbers_of(
    db: &impl ConnectionTrait,
    table: &str,
    column: &str,
    ids: &[String],
) -> ServiceResult<HashMap<String, u32>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let (wanted, values) = one_of(db.get_database_backend(), column, chunk);
        let sql = format!("SELECT {column}, number FROM {table} WHERE {wanted}");
        for row in rows(db, &sql, values).await? {
            let (id, number) = number_row(&row, table)?;
            out.insert(id, number);
        }
    }
    Ok(out)
}

/// An (id, number) row of `table`.
pub(super) fn number_row(row: &QueryResult, table: &str) -> ServiceResult<(String, u32)> {
    let number = u32::try_from(super::int(row, 1)?)
        .map_err(|_| ServiceError::internal(anyhow::anyhow!("a number of {table} out of range")))?;
    Ok((super::text(row, 0)?, number))
}

/// Changes the bitmaps of `cells` with `change` and writes them back, reading
/// them first (locked on PostgreSQL, in key order); a missing cell starts empty.
pub async fn update(
    db: &impl ConnectionTrait,
    p: &str,
    cells: BTreeMap<Cell, Vec<u32>>,
    change: impl Fn(&mut RoaringBitmap, &[u32]),
) -> ServiceResult<()> {
    if cells.is_empty() {
        return Ok(());
    }
    let lock = if db.get_database_backend() == DatabaseBackend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let by_id: BTreeMap<String, (Cell, Vec<u32>)> = cells.into_iter().map(|(c, n)| (c.id(), (c, n))).collect();
    let ids: Vec<String> = by_id.keys().cloned().collect();
    let mut stored: HashMap<String, RoaringBitmap> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let (wanted, values) = one_of(db.get_database_backend(), "cell", chunk);
        let sql = format!("SELECT cell, members FROM {p}buyers WHERE {wanted} ORDER BY cell{lock}");
        for row in rows(db, &sql, values).await? {
            stored.insert(super::text(&row, 0)?, bitmap(&row, 1)?);
        }
    }
    let mut out = Vec::with_capacity(by_id.len());
    for (id, (cell, numbers)) in by_id {
        let mut members = stored.remove(&id).unwrap_or_default();
        change(&mut members, &numbers);
        out.push(vec![
            id.into(),
            cell.grain.into(),
            cell.dim.into(),
            cell.key.into(),
            cell.bucket.into(),
            encode(&members)?.into(),
        ]);
    }
    insert_rows(
        db,
        &format!("{p}buyers (cell, grain, dim, dim_key, bucket, members)"),
        &[Col::Text, Col::Text, Col::Text, Col::Text, Col::BigInt, Col::Bytes],
        out,
        "ON CONFLICT (cell) DO UPDATE SET members = excluded.members",
    )
    .await?;
    Ok(())
}

/// Adds members to cells: `buyers` maps each cell to the member ids that paid in it.
pub async fn add(db: &impl ConnectionTrait, p: &str, buyers: BTreeMap<Cell, BTreeSet<String>>) -> ServiceResult<()> {
    if buyers.is_empty() {
        return Ok(());
    }
    let members: BTreeSet<String> = buyers.values().flatten().cloned().collect();
    let numbers = numbers(db, p, &members).await?;
    let cells = buyers
        .into_iter()
        .map(|(cell, ids)| (cell, ids.iter().filter_map(|id| numbers.get(id).copied()).collect()))
        .collect();
    update(db, p, cells, |bitmap, add| bitmap.extend(add.iter().copied())).await
}

/// The distinct members in the union of each group's ranges: `groups[i]` holds
/// `(grain, from, to)` bucket ranges (`from` inclusive), all under `dim`=`key`.
/// One statement for all of them.
pub async fn count_distinct(
    db: &impl ConnectionTrait,
    groups: &[Vec<(&'static str, i64, i64)>],
    dim: &str,
    key: &str,
) -> ServiceResult<Vec<i64>> {
    let mut selects = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for (i, ranges) in groups.iter().enumerate() {
        for (grain, from, to) in ranges {
            selects.push(format!(
                "SELECT CAST({i} AS BIGINT), members FROM buyers WHERE grain = ? AND dim = ? AND dim_key = ? \
                 AND bucket >= ? AND bucket < ?"
            ));
            values.extend([(*grain).into(), dim.into(), key.into(), (*from).into(), (*to).into()]);
        }
    }
    let mut unions = vec![RoaringBitmap::new(); groups.len()];
    if !selects.is_empty() {
        for row in rows(db, &selects.join(" UNION ALL "), values).await? {
            if let Some(union) = usize::try_from(super::int(&row, 0)?)
                .ok()
                .and_then(|i| unions.get_mut(i))
            {
                *union |= bitmap(&row, 1)?;
            }
        }
    }
    Ok(unions.iter().map(|u| u.len() as i64).collect())
}
