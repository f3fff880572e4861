//! The projections: what each consumed event adds to the rollups and the facts
//! (members, purchases, SKUs, stock), applied inside the consumer's transaction,
//! and the same code replays the archive into shadow tables for a rebuild.
//!
//! Rollups are additive figures per hour and day (and week and month for the
//! active members) by dimension; a batch's increments are summed in memory and
//! written as one upsert per batch. Distinct counts go through `seen`: a subject
//! counts once per set and bucket, when it is first inserted.
//!
//! A batch is applied in memory and written at its end: the members, purchases
//! and order lines its events touch are read once ([`Projector::apply_all`]
//! reads them all in one statement per table; on PostgreSQL the rows are locked
//! for the transaction, in key order, so batches of other sources wait rather than
//! overwrite), every event applies to those rows in log order, and
//! [`Projector::finish`] writes what changed in multi-row statements. The effects
//! are those of applying the events one by one, in a few statements a batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use prost::{Message, Name};
use retail_kit::convert::from_timestamp;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::{ConnectionTrait, DatabaseBackend, Value};

use crate::store::buyers::{self, Cell};
use crate::store::{self, Col, exec, insert_rows, rows};

pub const HOUR: i64 = 3_600;
pub const DAY: i64 = crate::domain::DAY;

pub fn hour(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

pub fn day(t: i64) -> i64 {
    t - t.rem_euclid(DAY)
}

/// Monday 00:00 of `t`'s ISO week (1970-01-01 was a Thursday).
pub fn week(t: i64) -> i64 {
    let d = day(t);
    d - ((d / DAY + 3).rem_euclid(7)) * DAY
}

fn datetime(t: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(t, 0).single().unwrap_or_default()
}

/// The first second of `t`'s calendar month.
pub fn month(t: i64) -> i64 {
    let d = datetime(t);
    Utc.with_ymd_and_hms(d.year(), d.month(), 1, 0, 0, 0)
        .single()
        .map(|m| m.timestamp())
        .unwrap_or(0)
}

/// `yyyymm` of `t`: the partition key of the archive and the touchpoints.
pub fn month_key(t: i64) -> i32 {
    let d = datetime(t);
    d.year() * 100 + d.month() as i32
}

/// Rollup increments, summed before they are written.
#[derive(Debug, Default)]
pub struct Increments(BTreeMap<(&'static str, String, String, &'static str, i64), i64>);

impl Increments {
    /// Adds `value` to `metric` of `dim`=`key` in `t`'s hour and day.
    pub fn add(&mut self, t: i64, dim: &str, key: &str, metric: &'static str, value: i64) {
        if value == 0 {
            return;
        }
        for (grain, bucket) in [("h", hour(t)), ("d", day(t))] {
            self.at(grain, bucket, dim, key, metric, value);
        }
    }

    /// Adds `value` to one bucket of one grain.
    pub fn at(&mut self, grain: &'static str, bucket: i64, dim: &str, key: &str, metric: &'static str, value: i64) {
        *self
            .0
            .entry((grain, dim.to_owned(), key.to_owned(), metric, bucket))
            .or_default() += value;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the increments into `table` in one multi-row upsert.
    pub async fn flush(self, db: &impl ConnectionTrait, table: &str) -> ServiceResult<()> {
        self.write(db, table, None).await
    }

    /// Writes the increments into the rows of one writer's `shard` of a table
    /// keyed by shard too (`touch_rollups`): concurrent writers holding different
    /// shards never wait for each other's row locks, and readers sum the shards
    /// as they sum buckets.
    pub async fn flush_shard(self, db: &impl ConnectionTrait, table: &str, shard: i64) -> ServiceResult<()> {
        self.write(db, table, Some(shard)).await
    }

    async fn write(self, db: &impl ConnectionTrait, table: &str, shard: Option<i64>) -> ServiceResult<()> {
        let rows: Vec<Vec<Value>> = self
            .0
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|((grain, dim, key, metric, bucket), value)| {
                let mut row = vec![
                    grain.into(),
                    dim.into(),
                    key.into(),
                    metric.into(),
                    bucket.into(),
                    value.into(),
                ];
                row.extend(shard.map(Value::from));
                row
            })
            .collect();
        let (text, int) = (Col::Text, Col::BigInt);
        let (columns, key, types) = match shard {
            Some(_) => (
                "grain, dim, dim_key, metric, bucket, value, shard",
                "grain, dim, dim_key, bucket, metric, shard",
                &[text, text, text, text, int, int, int][..],
            ),
            None => (
                "grain, dim, dim_key, metric, bucket, value",
                "grain, dim, dim_key, bucket, metric",
                &[text, text, text, text, int, int][..],
            ),
        };
        insert_rows(
            db,
            &format!("{table} ({columns})"),
            types,
            rows,
            &format!("ON CONFLICT ({key}) DO UPDATE SET value = {table}.value + excluded.value"),
        )
        .await?;
        Ok(())
    }
}

/// Inserts `subject` into a distinct set's bucket; whether it was new.
pub async fn first_seen(
    db: &impl ConnectionTrait,
    table: &str,
    set: &str,
    bucket: i64,
    subject: &str,
) -> ServiceResult<bool> {
    let sql = format!(
        "INSERT INTO {table} (set_name, bucket, subject) VALUES (?,?,?) ON CONFLICT (set_name, bucket, subject) DO NOTHING"
    );
    Ok(exec(db, &sql, vec![set.into(), bucket.into(), subject.into()]).await? == 1)
}

/// The dimensions a paid order is counted under.
#[derive(Debug, Clone, Default)]
struct Dims {
    member: String,
    channel: String,
    store: String,
    partner: String,
    rep: String,
    region: String,
    tier: String,
}

impl Dims {
    /// `(dimension, value)` pairs, "all" first; empty values are left out.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("all", String::new())];
        for (dim, value) in [
            ("channel", &self.channel),
            ("store", &self.store),
            ("partner", &self.partner),
            ("region", &self.region),
            ("tier", &self.tier),
        ] {
            if !value.is_empty() {
                out.push((dim, value.clone()));
            }
        }
        if !self.rep.is_empty() {
            out.push(("rep", format!("{}/{}", self.partner, self.rep)));
        }
        out
    }

    /// A purchase's dimensions as stored: `member`, then channel, store, partner,
    /// rep, region and tier in the row's columns from `first` on.
    fn stored(row: &sea_orm::QueryResult, member: String, first: usize) -> ServiceResult<Self> {
        Ok(Self {
            member,
            channel: store::text(row, first)?,
            store: store::text(row, first + 1)?,
            partner: store::text(row, first + 2)?,
            rep: store::text(row, first + 3)?,
            region: store::text(row, first + 4)?,
            tier: store::text(row, first + 5)?,
        })
    }

    /// The buyers bitmaps a payment at `t` adds its member to: its hour and its
    /// day under each of [`Self::pairs`].
    fn buyer_cells(&self, t: i64) -> Vec<Cell> {
        let mut out = Vec::new();
        for (dim, key) in self.pairs() {
            for (grain, bucket) in [("h", hour(t)), ("d", day(t))] {
                out.push(Cell {
                    grain,
                    dim,
                    key: key.clone(),
                    bucket,
                });
            }
        }
        out
    }
}

/// Fills the buyers bitmaps from the purchases stored before they existed.
pub async fn backfill_buyers(db: &impl ConnectionTrait) -> ServiceResult<()> {
    let mut after = String::new();
    loop {
        let sql = "SELECT order_id, member_id, paid_at, channel, store, partner, rep, region, tier FROM purchases \
                   WHERE order_id > ? AND member_id <> '' ORDER BY order_id LIMIT 5000";
        let page = rows(db, sql, vec![after.clone().into()]).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = store::text(last, 0)?;
        let mut cells: BTreeMap<Cell, BTreeSet<String>> = BTreeMap::new();
        for row in &page {
            let dims = Dims::stored(row, store::text(row, 1)?, 3)?;
            for cell in dims.buyer_cells(store::int(row, 2)?) {
                cells.entry(cell).or_default().insert(dims.member.clone());
            }
        }
        buyers::add(db, "", cells).await?;
    }
}

fn decode<M: Message + Default>(event: &EventEnvelope) -> ServiceResult<M> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    M::decode(bytes).map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable event")))
}

/// The envelope's time in seconds (0 when missing).
pub fn occur_at(event: &EventEnvelope) -> i64 {
    event
        .occur_time
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn time_or(ts: &Option<prost_types::Timestamp>, event: &EventEnvelope) -> i64 {
    ts.as_ref()
        .and_then(from_timestamp)
        .map(|t| t.timestamp())
        .unwrap_or_else(|| occur_at(event))
}

/// Statements write at most this many rows.
const ROWS_PER_STATEMENT: usize = 500;

/// A member's row as this batch sees it.
#[derive(Debug, Clone, Default)]
struct Member {
    registered_at: Option<i64>,
    region: String,
    tier: String,
    activated_at: Option<i64>,
    erased: i64,
    acquisition_channel: String,
    first_purchase: Option<i64>,
    last_purchase: Option<i64>,
    /// Changed by this batch: written by `finish`.
    dirty: bool,
}

/// A paid order as this batch sees it.
#[derive(Debug, Clone)]
struct Purchase {
    dims: Dims,
    cancelled: bool,
    refunded: i64,
    /// Paid in this batch: `(paid_at, amount, units)`, inserted by `finish`.
    new: Option<(i64, i64, i64)>,
    /// A stored purchase refunded or cancelled by this batch.
    dirty: bool,
}

/// The rows a batch read and what it writes at its end.
#[derive(Debug, Default)]
struct Batch {
    /// Members read (`None`: no row).
    members: HashMap<String, Option<Member>>,
    /// Purchases read or paid (`None`: not paid).
    purchases: HashMap<String, Option<Purchase>>,
    /// The orders paid in this batch, in order.
    paid: Vec<String>,
    /// Order lines to insert: order, ordinal, SKU, quantity, unit price.
    lines: Vec<(String, i32, String, i64, i64)>,
    /// Lines per order (SKU, quantity, unit price), read or paid in this batch.
    lines_of: HashMap<String, Vec<(String, i64, i64)>>,
    /// Categories per SKU (empty when unknown).
    categories: HashMap<String, String>,
    /// The member each paying member answers as (itself unless merged).
    survivors: HashMap<String, String>,
    /// Latest sale per SKU.
    last_sales: BTreeMap<String, i64>,
    /// Sellable stock per (SKU, warehouse), the last of the batch.
    stock: BTreeMap<(String, String), i64>,
    /// Distinct-set entries `(set, bucket, subject)` and the rollup each counts
    /// into `(grain, dim, key, metric)` when it is new.
    seen: BTreeMap<(String, i64, String), RollupCell>,
    /// The members paying in this batch, by buyers bitmap.
    buyers: BTreeMap<Cell, BTreeSet<String>>,
}

/// A rollup cell a distinct-set entry counts into: grain, dimension, key, metric.
type RollupCell = (&'static str, &'static str, String, &'static str);

/// Applies events to the projection tables with `prefix` inside one transaction.
pub struct Projector<'a, C: ConnectionTrait> {
    db: &'a C,
    p: &'a str,
    pub increments: Increments,
    batch: Batch,
}

impl<C: ConnectionTrait> std::fmt::Debug for Projector<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("prefix", &self.p)
            .finish_non_exhaustive()
    }
}

impl<'a, C: ConnectionTrait> Projector<'a, C> {
    pub fn new(db: &'a C, prefix: &'a str) -> Self {
        Self {
            db,
            p: prefix,
            increments: Increments::default(),
            batch: Batch::default(),
        }
    }

    fn postgres(&self) -> bool {
        self.db.get_database_backend() == DatabaseBackend::Postgres
    }

    /// Applies a batch in log order: reads the rows its events touch first, in
    /// one statement per table, then applies each event. `finish` writes it.
    /// A merge rewrites stored member and purchase rows in place, so the batch
    /// is written before it and read afresh after it.
    pub async fn apply_all(&mut self, events: &[&EventEnvelope]) -> ServiceResult<()> {
        self.prefetch(events).await?;
        for event in events {
            let merge = event.r#type == ev::MembersMerged::full_name();
            if merge {
                self.write().await?;
            }
            self.apply(event).await?;
            if merge {
                self.write().await?;
            }
        }
        Ok(())
    }

    /// Reads the purchases, members, order lines and SKU categories the batch's
    /// sales and membership events touch. Rows it does not read are read when
    /// needed, one at a time.
    async fn prefetch(&mut self, events: &[&EventEnvelope]) -> ServiceResult<()> {
        let (mut orders, mut cancelled, mut skus) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        // Members whose row the batch creates if missing, and those it only reads.
        let (mut ensured, mut read) = (BTreeSet::new(), BTreeSet::new());
        let mut paid = Vec::new();
        for event in events {
            let ty = event.r#type.as_str();
            if ty == ev::OrderPaid::full_name() {
                let e: ev::OrderPaid = decode(event)?;
                orders.insert(e.order_id.clone());
                skus.extend(e.lines.iter().map(|l| l.sku_code.clone()));
                paid.push((e.order_id, e.parties.map(|p| p.member_id).unwrap_or_default()));
            } else if ty == ev::OrderCancelled::full_name() {
                let e: ev::OrderCancelled = decode(event)?;
                orders.insert(e.order_id.clone());
                cancelled.insert(e.order_id);
            } else if ty == ev::OrderRefunded::full_name() {
                let e: ev::OrderRefunded = decode(event)?;
                orders.insert(e.order_id);
                skus.extend(e.lines.into_iter().map(|l| l.sku_code));
            } else if ty == ev::OrderRated::full_name() {
                let e: ev::OrderRated = decode(event)?;
                orders.insert(e.order_id);
                read.insert(e.parties.map(|p| p.member_id).unwrap_or_default());
            } else if ty == ev::MemberRegistered::full_name() {
                ensured.insert(decode::<ev::MemberRegistered>(event)?.member_id);
            } else if ty == ev::MemberUpdated::full_name() {
                ensured.insert(decode::<ev::MemberUpdated>(event)?.member_id);
            } else if ty == ev::ConsentChanged::full_name() {
                ensured.insert(decode::<ev::ConsentChanged>(event)?.member_id);
            } else if ty == ev::MemberErased::full_name() {
                ensured.insert(decode::<ev::MemberErased>(event)?.member_id);
            } else if ty == ev::TierChanged::full_name() {
                ensured.insert(decode::<ev::TierChanged>(event)?.member_id);
            } else if ty == ev::PointsChanged::full_name() {
                let e: ev::PointsChanged = decode(event)?;
                if e.kind == "redeem" {
                    ensured.insert(e.member_id);
                }
            }
        }
        self.load_purchases(orders.into_iter().collect()).await?;
        self.load_survivors(paid.iter().map(|(_, member)| member.clone()).collect())
            .await?;
        // A payment of an order not paid before creates its (surviving) member's row.
        let mut new_orders = BTreeSet::new();
        for (order, member) in paid {
            let member = self.batch.survivors.get(&member).cloned().unwrap_or(member);
            read.insert(member.clone());
            if matches!(self.batch.purchases.get(&order), Some(None)) && new_orders.insert(order) {
                ensured.insert(member);
            }
        }
        ensured.remove("");
        read.remove("");
        let read: Vec<String> = read.difference(&ensured).cloned().collect();
        self.load_members(ensured.into_iter().collect(), true).await?;
        self.load_members(read, false).await?;
        self.load_lines(cancelled.into_iter().collect()).await?;
        self.load_categories(skus.into_iter().collect()).await?;
        Ok(())
    }

    /// Reads members not read yet (all of them with `ensure`, creating the
    /// missing rows first), locking them on PostgreSQL.
    async fn load_members(&mut self, ids: Vec<String>, ensure: bool) -> ServiceResult<()> {
        let mut ids: Vec<String> = ids
            .into_iter()
            .filter(|id| {
                !id.is_empty()
                    && match self.batch.members.get(id) {
                        None => true,
                        Some(None) => ensure,
                        Some(Some(_)) => false,
                    }
            })
            .collect();
        ids.sort();
        ids.dedup();
        let lock = if self.postgres() { " FOR UPDATE" } else { "" };
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            if ensure {
                insert_rows(
                    self.db,
                    &format!("{}members (member_id)", self.p),
                    &[Col::Text],
                    chunk.iter().map(|id| vec![id.clone().into()]).collect(),
                    "ON CONFLICT (member_id) DO NOTHING",
                )
                .await?;
            }
            let (wanted, values) = store::one_of(self.db.get_database_backend(), "member_id", chunk);
            let sql = format!(
                "SELECT member_id, registered_at, region, tier, activated_at, erased, acquisition_channel, \
                 first_purchase, last_purchase FROM {}members WHERE {wanted} ORDER BY member_id{lock}",
                self.p,
            );
            for id in chunk {
                self.batch.members.insert(id.clone(), None);
            }
            for row in rows(self.db, &sql, values).await? {
                let member = Member {
                    registered_at: store::opt_int(&row, 1)?,
                    region: store::text(&row, 2)?,
                    tier: store::text(&row, 3)?,
                    activated_at: store::opt_int(&row, 4)?,
                    erased: store::int(&row, 5)?,
                    acquisition_channel: store::text(&row, 6)?,
                    first_purchase: store::opt_int(&row, 7)?,
                    last_purchase: store::opt_int(&row, 8)?,
                    dirty: false,
                };
                self.batch.members.insert(store::text(&row, 0)?, Some(member));
            }
        }
        Ok(())
    }

    /// Reads purchases not read yet, locking them on PostgreSQL.
    async fn load_purchases(&mut self, ids: Vec<String>) -> ServiceResult<()> {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.batch.purchases.contains_key(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let lock = if self.postgres() { " FOR UPDATE" } else { "" };
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let (wanted, values) = store::one_of(self.db.get_database_backend(), "order_id", chunk);
            let sql = format!(
                "SELECT order_id, member_id, channel, store, partner, rep, region, tier, cancelled, refunded \
                 FROM {}purchases WHERE {wanted} ORDER BY order_id{lock}",
                self.p,
            );
            for id in chunk {
                self.batch.purchases.insert(id.clone(), None);
            }
            for row in rows(self.db, &sql, values).await? {
                let purchase = Purchase {
                    dims: Dims::stored(&row, store::text(&row, 1)?, 2)?,
                    cancelled: store::int(&row, 8)? != 0,
                    refunded: store::int(&row, 9)?,
                    new: None,
                    dirty: false,
                };
                self.batch.purchases.insert(store::text(&row, 0)?, Some(purchase));
            }
        }
        Ok(())
    }

    /// Reads the lines of orders whose lines are not known yet.
    async fn load_lines(&mut self, ids: Vec<String>) -> ServiceResult<()> {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.batch.lines_of.contains_key(id))
            .collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let (wanted, values) = store::one_of(self.db.get_database_backend(), "order_id", chunk);
            let sql = format!(
                "SELECT order_id, sku, quantity, unit_minor FROM {}order_lines WHERE {wanted} ORDER BY order_id, ordinal",
                self.p,
            );
            for id in chunk {
                self.batch.lines_of.insert(id.clone(), Vec::new());
            }
            for row in rows(self.db, &sql, values).await? {
                let line = (store::text(&row, 1)?, store::int(&row, 2)?, store::int(&row, 3)?);
                self.batch.lines_of.entry(store::text(&row, 0)?).or_default().push(line);
            }
        }
        Ok(())
    }

    /// Reads the categories of SKUs not read yet.
    async fn load_categories(&mut self, skus: Vec<String>) -> ServiceResult<()> {
        let skus: Vec<String> = skus
            .into_iter()
            .filter(|sku| !self.batch.categories.contains_key(sku))
            .collect();
        for chunk in skus.chunks(ROWS_PER_STATEMENT) {
            let (wanted, values) = store::one_of(self.db.get_database_backend(), "sku", chunk);
            let sql = format!("SELECT sku, category FROM {}skus WHERE {wanted}", self.p);
            for sku in chunk {
                self.batch.categories.insert(sku.clone(), String::new());
            }
            for row in rows(self.db, &sql, values).await? {
                self.batch
                    .categories
                    .insert(store::text(&row, 0)?, store::text(&row, 1)?);
            }
        }
        Ok(())
    }

    /// Counts `(grain, bucket, dim, key, metric)` once when `subject` is new in the
    /// distinct set `set` and `bucket` (decided when the batch is written).
    fn count_first(
        &mut self,
        set: String,
        subject: &str,
        (grain, bucket): (&'static str, i64),
        dim: &'static str,
        key: &str,
        metric: &'static str,
    ) {
        self.batch
            .seen
            .entry((set, bucket, subject.to_owned()))
            .or_insert_with(|| (grain, dim, key.to_owned(), metric));
    }

    /// Writes what the batch changed, then the summed rollups.
    pub async fn finish(mut self) -> ServiceResult<()> {
        self.write().await
    }

    /// Writes what the batch changed so far and empties it; rows are read again
    /// when next needed.
    async fn write(&mut self) -> ServiceResult<()> {
        let batch = std::mem::take(&mut self.batch);
        self.write_members(&batch).await?;
        self.write_purchases(&batch).await?;
        let p = self.p;
        buyers::add(self.db, p, batch.buyers).await?;
        let (text, int) = (Col::Text, Col::BigInt);
        let lines = batch
            .lines
            .into_iter()
            .map(|(order, ordinal, sku, quantity, unit)| {
                vec![
                    order.into(),
                    i64::from(ordinal).into(),
                    sku.into(),
                    quantity.into(),
                    unit.into(),
                ]
            })
            .collect();
        insert_rows(
            self.db,
            &format!("{p}order_lines (order_id, ordinal, sku, quantity, unit_minor)"),
            &[text, int, text, int, int],
            lines,
            "ON CONFLICT (order_id, ordinal) DO NOTHING",
        )
        .await?;
        let last_sales = batch
            .last_sales
            .into_iter()
            .map(|(sku, at)| vec![sku.into(), at.into()])
            .collect();
        insert_rows(
            self.db,
            &format!("{p}last_sales (sku, sold_at)"),
            &[text, int],
            last_sales,
            &format!(
                "ON CONFLICT (sku) DO UPDATE SET sold_at = CASE WHEN excluded.sold_at > {p}last_sales.sold_at \
                 THEN excluded.sold_at ELSE {p}last_sales.sold_at END"
            ),
        )
        .await?;
        let stock = batch
            .stock
            .into_iter()
            .map(|((sku, warehouse), sellable)| vec![sku.into(), warehouse.into(), sellable.into()])
            .collect();
        insert_rows(
            self.db,
            &format!("{p}stock (sku, warehouse, sellable)"),
            &[text, text, int],
            stock,
            "ON CONFLICT (sku, warehouse) DO UPDATE SET sellable = excluded.sellable",
        )
        .await?;
        let entries = batch
            .seen
            .keys()
            .map(|(set, bucket, subject)| vec![set.clone().into(), (*bucket).into(), subject.clone().into()])
            .collect();
        let new = insert_rows(
            self.db,
            &format!("{p}seen (set_name, bucket, subject)"),
            &[text, int, text],
            entries,
            "ON CONFLICT (set_name, bucket, subject) DO NOTHING RETURNING set_name, bucket, subject",
        )
        .await?;
        for row in new {
            let key = (store::text(&row, 0)?, store::int(&row, 1)?, store::text(&row, 2)?);
            if let Some((grain, dim, dim_key, metric)) = batch.seen.get(&key) {
                self.increments.at(grain, key.1, dim, dim_key, metric, 1);
            }
        }
        let table = format!("{}rollups", self.p);
        std::mem::take(&mut self.increments).flush(self.db, &table).await
    }

    async fn write_members(&self, batch: &Batch) -> ServiceResult<()> {
        let mut changed: Vec<(&String, &Member)> = batch
            .members
            .iter()
            .filter_map(|(id, m)| m.as_ref().filter(|m| m.dirty).map(|m| (id, m)))
            .collect();
        changed.sort_by(|a, b| a.0.cmp(b.0));
        let opt = Col::OptBigInt;
        let rows = changed
            .into_iter()
            .map(|(id, m)| {
                vec![
                    id.clone().into(),
                    m.registered_at.into(),
                    m.region.clone().into(),
                    m.tier.clone().into(),
                    m.activated_at.into(),
                    m.erased.into(),
                    m.acquisition_channel.clone().into(),
                    m.first_purchase.into(),
                    m.last_purchase.into(),
                ]
            })
            .collect();
        let (text, int) = (Col::Text, Col::BigInt);
        insert_rows(
            self.db,
            &format!(
                "{}members (member_id, registered_at, region, tier, activated_at, erased, acquisition_channel, \
                 first_purchase, last_purchase)",
                self.p
            ),
            &[text, opt, text, text, opt, int, text, opt, opt],
            rows,
            "ON CONFLICT (member_id) DO UPDATE SET registered_at = excluded.registered_at, region = excluded.region, \
             tier = excluded.tier, activated_at = excluded.activated_at, erased = excluded.erased, \
             acquisition_channel = excluded.acquisition_channel, first_purchase = excluded.first_purchase, \
             last_purchase = excluded.last_purchase",
        )
        .await?;
        Ok(())
    }

    async fn write_purchases(&self, batch: &Batch) -> ServiceResult<()> {
        let p = self.p;
        let paid: Vec<(&String, &Purchase, (i64, i64, i64))> = batch
            .paid
            .iter()
            .filter_map(|id| {
                let purchase = batch.purchases.get(id)?.as_ref()?;
                Some((id, purchase, purchase.new?))
            })
            .collect();
        let rows = paid
            .into_iter()
            .map(|(id, purchase, (paid_at, amount, units))| {
                let d = &purchase.dims;
                vec![
                    id.clone().into(),
                    d.member.clone().into(),
                    d.channel.clone().into(),
                    d.store.clone().into(),
                    d.partner.clone().into(),
                    d.rep.clone().into(),
                    d.region.clone().into(),
                    d.tier.clone().into(),
                    paid_at.into(),
                    amount.into(),
                    units.into(),
                    purchase.refunded.into(),
                    i64::from(purchase.cancelled).into(),
                ]
            })
            .collect();
        let (text, int) = (Col::Text, Col::BigInt);
        // A plain insert: a payment another transaction stored meanwhile fails the
        // batch, which is then applied again from the stored position.
        insert_rows(
            self.db,
            &format!(
                "{p}purchases (order_id, member_id, channel, store, partner, rep, region, tier, paid_at, amount, \
                 units, refunded, cancelled)"
            ),
            &[text, text, text, text, text, text, text, text, int, int, int, int, int],
            rows,
            "",
        )
        .await?;
        let sql = format!("UPDATE {p}purchases SET refunded = ?, cancelled = ? WHERE order_id = ?");
        for (id, purchase) in &batch.purchases {
            if let Some(purchase) = purchase
                && purchase.dirty
                && purchase.new.is_none()
            {
                exec(
                    self.db,
                    &sql,
                    vec![
                        purchase.refunded.into(),
                        i64::from(purchase.cancelled).into(),
                        id.clone().into(),
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Applies one event of any source; events analytics does not project are
    /// only archived.
    pub async fn apply(&mut self, event: &EventEnvelope) -> ServiceResult<()> {
        let ty = event.r#type.as_str();
        if ty == ev::OrderPaid::full_name() {
            self.paid(event, decode(event)?).await
        } else if ty == ev::OrderCancelled::full_name() {
            self.cancelled(event, decode(event)?).await
        } else if ty == ev::OrderRefunded::full_name() {
            self.refunded(event, decode(event)?).await
        } else if ty == ev::OrderRated::full_name() {
            self.rated(event, decode(event)?).await
        } else if ty == ev::OrderPlaced::full_name() {
            let e: ev::OrderPlaced = decode(event)?;
            let channel = e.parties.unwrap_or_default().channel;
            self.increments.add(occur_at(event), "all", "", "placed", 1);
            self.increments.add(occur_at(event), "channel", &channel, "placed", 1);
            Ok(())
        } else if ty == ev::MemberRegistered::full_name() {
            self.registered(event, decode(event)?).await
        } else if ty == ev::MemberUpdated::full_name() {
            let e: ev::MemberUpdated = decode(event)?;
            self.activity(&e.member_id, occur_at(event)).await
        } else if ty == ev::ConsentChanged::full_name() {
            let e: ev::ConsentChanged = decode(event)?;
            let sql = format!(
                "INSERT INTO {}consents (member_id, channel, granted) VALUES (?,?,?) \
                 ON CONFLICT (member_id, channel) DO UPDATE SET granted = excluded.granted",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.member_id.clone().into(),
                    e.channel.into(),
                    i32::from(e.granted).into(),
                ],
            )
            .await?;
            self.activity(&e.member_id, occur_at(event)).await
        } else if ty == ev::CampaignMemberDecided::full_name() {
            self.campaign_decision(event, decode(event)?).await
        } else if ty == ev::CampaignChanged::full_name() {
            let e: ev::CampaignChanged = decode(event)?;
            let t = time_or(&e.change_time, event);
            let sql = format!(
                "INSERT INTO {}campaigns (campaign_id, display_name, state, segment_id, channel, changed_at) \
                 VALUES (?,?,?,?,?,?) ON CONFLICT (campaign_id) DO UPDATE SET display_name = excluded.display_name, \
                 state = excluded.state, segment_id = excluded.segment_id, channel = excluded.channel, \
                 changed_at = excluded.changed_at",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.campaign_id.into(),
                    e.display_name.into(),
                    e.state.into(),
                    e.segment_id.into(),
                    e.channel.into(),
                    t.into(),
                ],
            )
            .await?;
            Ok(())
        } else if ty == ev::MembersMerged::full_name() {
            self.merged(event, decode(event)?).await
        } else if ty == ev::MemberErased::full_name() {
            let e: ev::MemberErased = decode(event)?;
            if let Some(m) = self.ensure_member(&e.member_id).await? {
                m.erased = 1;
                m.dirty = true;
            }
            Ok(())
        } else if ty == ev::TierChanged::full_name() {
            let e: ev::TierChanged = decode(event)?;
            if let Some(m) = self.ensure_member(&e.member_id).await? {
                m.tier = e.to_tier;
                m.dirty = true;
            }
            Ok(())
        } else if ty == ev::PointsChanged::full_name() {
            let e: ev::PointsChanged = decode(event)?;
            if e.kind == "redeem" {
                self.activity(&e.member_id, occur_at(event)).await?;
            }
            Ok(())
        } else if ty == ev::ProductCreated::full_name() {
            let e: ev::ProductCreated = decode(event)?;
            let sql = format!(
                "INSERT INTO {}skus (sku, product_id, category) VALUES (?,?,?) \
                 ON CONFLICT (sku) DO UPDATE SET product_id = excluded.product_id, category = excluded.category",
                self.p
            );
            for sku in e.sku_codes {
                exec(
                    self.db,
                    &sql,
                    vec![
                        sku.clone().into(),
                        e.product_id.clone().into(),
                        e.category.clone().into(),
                    ],
                )
                .await?;
                self.batch.categories.insert(sku, e.category.clone());
            }
            Ok(())
        } else if ty == ev::ListingChanged::full_name() {
            let e: ev::ListingChanged = decode(event)?;
            let sql = format!(
                "INSERT INTO {}listings (sku, channel, listed) VALUES (?,?,?) \
                 ON CONFLICT (sku, channel) DO UPDATE SET listed = excluded.listed",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![e.sku_code.into(), e.channel.into(), i32::from(e.listed).into()],
            )
            .await?;
            Ok(())
        } else if ty == ev::StockChanged::full_name() {
            let e: ev::StockChanged = decode(event)?;
            self.batch.stock.insert((e.sku_code, e.warehouse_code), e.sellable);
            Ok(())
        } else {
            self.apply_partner(event).await
        }
    }

    /// Channel-partner's events: targets, partners' levels and states, points,
    /// deal locks, leads, opportunity stages and overdue visits. Counts go into
    /// the rollups under "all" and the partner.
    async fn apply_partner(&mut self, event: &EventEnvelope) -> ServiceResult<()> {
        let ty = event.r#type.as_str();
        if ty == ev::TargetSet::full_name() {
            let e: ev::TargetSet = decode(event)?;
            let start = time_or(&e.period_start_time, event);
            let end = time_or(&e.period_end_time, event);
            let sql = format!(
                "INSERT INTO {}targets (target_id, subject_kind, partner, rep, period_kind, start_at, end_at, amount) \
                 VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (target_id) DO UPDATE SET subject_kind = excluded.subject_kind, \
                 partner = excluded.partner, rep = excluded.rep, period_kind = excluded.period_kind, \
                 start_at = excluded.start_at, end_at = excluded.end_at, amount = excluded.amount",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.target_id.into(),
                    e.subject_kind.into(),
                    e.partner_id.into(),
                    e.sales_rep_id.into(),
                    e.period_kind.into(),
                    start.into(),
                    end.into(),
                    e.amount_minor.into(),
                ],
            )
            .await?;
        } else if ty == ev::TargetAttained::full_name() {
            let e: ev::TargetAttained = decode(event)?;
            let sql = format!(
                "UPDATE {}targets SET attained_at = ? WHERE target_id = ? AND attained_at IS NULL",
                self.p
            );
            exec(self.db, &sql, vec![occur_at(event).into(), e.target_id.into()]).await?;
        } else if ty == ev::PartnerStatusChanged::full_name() {
            let e: ev::PartnerStatusChanged = decode(event)?;
            self.partner_fact(&e.partner_id, "status", &e.to_state).await?;
        } else if ty == ev::PartnerLevelChanged::full_name() {
            let e: ev::PartnerLevelChanged = decode(event)?;
            self.partner_fact(&e.partner_id, "level", &e.to_level).await?;
        } else if ty == ev::PartnerPointsChanged::full_name() {
            let e: ev::PartnerPointsChanged = decode(event)?;
            let metric = match e.kind.as_str() {
                "earn" | "action" => "points_earned",
                "redeem" => "points_redeemed",
                "reverse" | "return" => "points_reversed",
                "expire" => "points_expired",
                _ => return Ok(()),
            };
            self.partner_count(occur_at(event), &e.partner_id, metric, e.points.abs());
        } else if ty == ev::DealLockChanged::full_name() {
            let e: ev::DealLockChanged = decode(event)?;
            let metric = match e.change.as_str() {
                "registered" => "locks_registered",
                "extended" => "locks_extended",
                "released" => "locks_released",
                "expired" => "locks_expired",
                _ => return Ok(()),
            };
            self.partner_count(time_or(&e.change_time, event), &e.partner_id, metric, 1);
        } else if ty == ev::LeadChanged::full_name() {
            let e: ev::LeadChanged = decode(event)?;
            let metric = match e.change.as_str() {
                "offered" => "leads_offered",
                "accepted" => "leads_accepted",
                "declined" => "leads_declined",
                "timed_out" => "leads_timed_out",
                "unassigned" => "leads_unassigned",
                "won" => "leads_won",
                "lost" => "leads_lost",
                _ => return Ok(()),
            };
            self.partner_count(time_or(&e.change_time, event), &e.partner_id, metric, 1);
        } else if ty == ev::OpportunityStageChanged::full_name() {
            let e: ev::OpportunityStageChanged = decode(event)?;
            let sql = format!(
                "INSERT INTO {}opportunity_stages (opportunity, stage, partner, rep, reached_at) VALUES (?,?,?,?,?) \
                 ON CONFLICT (opportunity, stage) DO NOTHING",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.opportunity.into(),
                    e.to_stage.into(),
                    e.partner_id.into(),
                    e.sales_rep_id.into(),
                    time_or(&e.change_time, event).into(),
                ],
            )
            .await?;
        } else if ty == ev::VisitOverdue::full_name() {
            let e: ev::VisitOverdue = decode(event)?;
            self.partner_count(time_or(&e.due_time, event), &e.partner_id, "visits_overdue", 1);
        } else if ty == ev::SpecialDiscountDecided::full_name() {
            let e: ev::SpecialDiscountDecided = decode(event)?;
            let metric = match e.decision.as_str() {
                "granted" => "discounts_granted",
                "approved" => "discounts_approved",
                "rejected" => "discounts_rejected",
                _ => return Ok(()),
            };
            self.partner_count(time_or(&e.decide_time, event), &e.partner_id, metric, 1);
        }
        Ok(())
    }

    /// Counts `value` of `metric` under "all" and, when known, the partner.
    fn partner_count(&mut self, t: i64, partner: &str, metric: &'static str, value: i64) {
        self.increments.add(t, "all", "", metric, value);
        if !partner.is_empty() {
            self.increments.add(t, "partner", partner, metric, value);
        }
    }

    /// Sets a partner's `level` or `status`.
    async fn partner_fact(&self, partner: &str, column: &'static str, value: &str) -> ServiceResult<()> {
        let sql = format!(
            "INSERT INTO {p}partners (partner_id, {column}) VALUES (?,?) \
             ON CONFLICT (partner_id) DO UPDATE SET {column} = excluded.{column}",
            p = self.p
        );
        exec(self.db, &sql, vec![partner.into(), value.into()]).await?;
        Ok(())
    }

    /// The member's row, created if missing (`None` for an empty id).
    async fn ensure_member(&mut self, member: &str) -> ServiceResult<Option<&mut Member>> {
        if member.is_empty() {
            return Ok(None);
        }
        if !matches!(self.batch.members.get(member), Some(Some(_))) {
            self.load_members(vec![member.to_owned()], true).await?;
        }
        Ok(self.batch.members.get_mut(member).and_then(Option::as_mut))
    }

    /// Resolves the members not resolved yet to the members they answer as
    /// ([`Self::survivor`]), one statement per chunk.
    async fn load_survivors(&mut self, ids: Vec<String>) -> ServiceResult<()> {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !id.is_empty() && !self.batch.survivors.contains_key(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            for id in chunk {
                self.batch.survivors.insert(id.clone(), id.clone());
            }
            let (wanted, values) = store::one_of(self.db.get_database_backend(), "merged_id", chunk);
            let sql = format!(
                "SELECT merged_id, survivor_id FROM {}member_merges WHERE {wanted}",
                self.p
            );
            for row in rows(self.db, &sql, values).await? {
                self.batch
                    .survivors
                    .insert(store::text(&row, 0)?, store::text(&row, 1)?);
            }
        }
        Ok(())
    }

    /// The member `member` answers as: the survivor it was merged into (chains
    /// resolved, [`Self::merged`]), else itself. A merge empties the batch, so a
    /// resolution read before it is not used after it.
    async fn survivor(&mut self, member: &str) -> ServiceResult<String> {
        if member.is_empty() {
            return Ok(String::new());
        }
        self.load_survivors(vec![member.to_owned()]).await?;
        Ok(self
            .batch
            .survivors
            .get(member)
            .cloned()
            .unwrap_or_else(|| member.to_owned()))
    }

    /// A duplicate merged into a survivor is one person from then on: its
    /// purchases become the survivor's (and so do later ones, [`Self::paid`]),
    /// the survivor's first and last purchase span both, and members merged into
    /// the duplicate before now resolve to the survivor too, so `member_merges`
    /// maps every merged id to its final survivor in one step. Applied once: a
    /// merge delivered again finds its row and changes nothing; replayed in log
    /// order it gives the same tables.
    async fn merged(&mut self, event: &EventEnvelope, e: ev::MembersMerged) -> ServiceResult<()> {
        let merged = e.merged_id;
        let survivor = self.survivor(&e.survivor_id).await?;
        if merged.is_empty() || survivor.is_empty() || survivor == merged {
            return Ok(());
        }
        let p = self.p;
        let sql = format!(
            "INSERT INTO {p}member_merges (merged_id, survivor_id, merged_at) VALUES (?,?,?) \
             ON CONFLICT (merged_id) DO NOTHING"
        );
        let at = time_or(&e.merge_time, event);
        if exec(
            self.db,
            &sql,
            vec![merged.clone().into(), survivor.clone().into(), at.into()],
        )
        .await?
            == 0
        {
            return Ok(());
        }
        let pair = || vec![survivor.clone().into(), merged.clone().into()];
        exec(
            self.db,
            &format!("UPDATE {p}member_merges SET survivor_id = ? WHERE survivor_id = ?"),
            pair(),
        )
        .await?;
        self.move_buyers(&merged, &survivor).await?;
        exec(
            self.db,
            &format!("UPDATE {p}purchases SET member_id = ? WHERE member_id = ?"),
            pair(),
        )
        .await?;
        let sql =
            format!("SELECT first_purchase, acquisition_channel, last_purchase FROM {p}members WHERE member_id = ?");
        let Some(row) = rows(self.db, &sql, vec![merged.clone().into()])
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let (first, channel, last) = (
            store::opt_int(&row, 0)?,
            store::text(&row, 1)?,
            store::opt_int(&row, 2)?,
        );
        let sql = format!("INSERT INTO {p}members (member_id) VALUES (?) ON CONFLICT (member_id) DO NOTHING");
        exec(self.db, &sql, vec![survivor.clone().into()]).await?;
        if let Some(first) = first {
            let sql = format!(
                "UPDATE {p}members SET first_purchase = ?, acquisition_channel = ? \
                 WHERE member_id = ? AND (first_purchase IS NULL OR first_purchase > ?)"
            );
            exec(
                self.db,
                &sql,
                vec![first.into(), channel.into(), survivor.clone().into(), first.into()],
            )
            .await?;
        }
        if let Some(last) = last {
            let sql = format!(
                "UPDATE {p}members SET last_purchase = ? WHERE member_id = ? AND (last_purchase IS NULL OR last_purchase < ?)"
            );
            exec(self.db, &sql, vec![last.into(), survivor.clone().into(), last.into()]).await?;
        }
        let sql = format!(
            "UPDATE {p}members SET first_purchase = NULL, last_purchase = NULL, acquisition_channel = '' \
             WHERE member_id = ?"
        );
        exec(self.db, &sql, vec![merged.into()]).await?;
        Ok(())
    }

    /// Puts the survivor where the duplicate is in the buyers bitmaps: in the
    /// cells of the duplicate's purchases, which become the survivor's.
    async fn move_buyers(&self, merged: &str, survivor: &str) -> ServiceResult<()> {
        let sql = format!(
            "SELECT paid_at, channel, store, partner, rep, region, tier FROM {}purchases WHERE member_id = ?",
            self.p
        );
        let mut cells = BTreeSet::new();
        for row in rows(self.db, &sql, vec![merged.into()]).await? {
            let dims = Dims::stored(&row, merged.to_owned(), 1)?;
            cells.extend(dims.buyer_cells(store::int(&row, 0)?));
        }
        if cells.is_empty() {
            return Ok(());
        }
        let both = BTreeSet::from([merged.to_owned(), survivor.to_owned()]);
        let numbers = buyers::numbers(self.db, self.p, &both).await?;
        let (Some(&gone), Some(&stays)) = (numbers.get(merged), numbers.get(survivor)) else {
            return Ok(());
        };
        let cells = cells.into_iter().map(|cell| (cell, vec![gone, stays])).collect();
        buyers::update(self.db, self.p, cells, |bitmap, pair| {
            if let [gone, stays] = pair {
                bitmap.remove(*gone);
                bitmap.insert(*stays);
            }
        })
        .await
    }

    /// A member did something: activated (first time after registering) and
    /// counted among the day's, week's and month's active members.
    async fn activity(&mut self, member: &str, t: i64) -> ServiceResult<()> {
        let Some(m) = self.ensure_member(member).await? else {
            return Ok(());
        };
        if m.activated_at.is_none() {
            m.activated_at = Some(t);
            m.dirty = true;
        }
        for (grain, bucket) in [("d", day(t)), ("w", week(t)), ("m", month(t))] {
            self.count_first(
                format!("active|{grain}"),
                member,
                (grain, bucket),
                "all",
                "",
                "active_members",
            );
        }
        Ok(())
    }

    /// A campaign's decision for a member: one row per campaign and member (a
    /// decision delivered again changes nothing).
    async fn campaign_decision(&mut self, event: &EventEnvelope, e: ev::CampaignMemberDecided) -> ServiceResult<()> {
        if e.campaign_id.is_empty() || e.member_id.is_empty() {
            return Ok(());
        }
        let at = time_or(&e.decide_time, event);
        let window_end = e
            .attribution_end_time
            .as_ref()
            .and_then(from_timestamp)
            .map(|t| t.timestamp())
            .unwrap_or(at);
        let sql = format!(
            "INSERT INTO {}campaign_contacts (campaign_id, member_id, channel, outcome, control, lifecycle, \
             contacted_at, window_end) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (campaign_id, member_id) DO NOTHING",
            self.p
        );
        exec(
            self.db,
            &sql,
            vec![
                e.campaign_id.into(),
                e.member_id.into(),
                e.channel.into(),
                e.outcome.into(),
                i32::from(e.control).into(),
                e.lifecycle_state.into(),
                at.into(),
                window_end.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn registered(&mut self, event: &EventEnvelope, e: ev::MemberRegistered) -> ServiceResult<()> {
        let t = time_or(&e.register_time, event);
        if let Some(m) = self.ensure_member(&e.member_id).await? {
            m.registered_at = Some(t);
            m.region = e.region.clone();
            m.dirty = true;
        }
        self.increments.add(t, "all", "", "registered", 1);
        if !e.region.is_empty() {
            self.increments.add(t, "region", &e.region, "registered", 1);
        }
        Ok(())
    }

    /// The dimensions of an order: its parties, and the member's region and tier
    /// as analytics knows them when the payment is applied.
    async fn dims(&mut self, parties: ev::OrderParties) -> ServiceResult<Dims> {
        let mut dims = Dims {
            member: parties.member_id,
            channel: parties.channel,
            store: parties.store,
            partner: parties.partner_id,
            rep: parties.sales_rep,
            ..Default::default()
        };
        if !dims.member.is_empty() {
            if !self.batch.members.contains_key(&dims.member) {
                self.load_members(vec![dims.member.clone()], false).await?;
            }
            if let Some(Some(m)) = self.batch.members.get(&dims.member) {
                dims.region = m.region.clone();
                dims.tier = m.tier.clone();
            }
        }
        Ok(dims)
    }

    /// The paid order, if analytics has it.
    async fn purchase(&mut self, order_id: &str) -> ServiceResult<Option<&mut Purchase>> {
        if !self.batch.purchases.contains_key(order_id) {
            self.load_purchases(vec![order_id.to_owned()]).await?;
        }
        Ok(self.batch.purchases.get_mut(order_id).and_then(Option::as_mut))
    }

    async fn category(&mut self, sku: &str) -> ServiceResult<String> {
        if !self.batch.categories.contains_key(sku) {
            self.load_categories(vec![sku.to_owned()]).await?;
        }
        Ok(self.batch.categories.get(sku).cloned().unwrap_or_default())
    }

    async fn paid(&mut self, event: &EventEnvelope, e: ev::OrderPaid) -> ServiceResult<()> {
        let t = time_or(&e.pay_time, event);
        let amount = e.amount.unwrap_or_default().amount_minor;
        if self.purchase(&e.order_id).await?.is_some() {
            // One payment per order: a second OrderPaid for it changes nothing.
            return Ok(());
        }
        let mut parties = e.parties.unwrap_or_default();
        // A merged member's payment is its survivor's.
        parties.member_id = self.survivor(&parties.member_id).await?;
        let dims = self.dims(parties).await?;
        let units: i64 = e.lines.iter().map(|l| l.quantity).sum();
        self.batch.purchases.insert(
            e.order_id.clone(),
            Some(Purchase {
                dims: dims.clone(),
                cancelled: false,
                refunded: 0,
                new: Some((t, amount, units)),
                dirty: false,
            }),
        );
        self.batch.paid.push(e.order_id.clone());
        if !dims.member.is_empty() {
            for cell in dims.buyer_cells(t) {
                self.batch.buyers.entry(cell).or_default().insert(dims.member.clone());
            }
        }
        for (dim, key) in dims.pairs() {
            self.increments.add(t, dim, &key, "revenue", amount);
            self.increments.add(t, dim, &key, "orders", 1);
            self.increments.add(t, dim, &key, "units", units);
        }
        let mut lines = Vec::with_capacity(e.lines.len());
        for (ordinal, line) in e.lines.iter().enumerate() {
            let unit = line.unit_price.as_ref().map(|m| m.amount_minor).unwrap_or(0);
            self.batch.lines.push((
                e.order_id.clone(),
                ordinal as i32,
                line.sku_code.clone(),
                line.quantity,
                unit,
            ));
            lines.push((line.sku_code.clone(), line.quantity, unit));
            let sold = self.batch.last_sales.entry(line.sku_code.clone()).or_insert(t);
            *sold = (*sold).max(t);
            let category = self.category(&line.sku_code).await?;
            for (dim, key) in [("sku", line.sku_code.clone()), ("category", category)] {
                if key.is_empty() {
                    continue;
                }
                self.increments.add(t, dim, &key, "revenue", line.quantity * unit);
                self.increments.add(t, dim, &key, "units", line.quantity);
                self.increments.add(t, dim, &key, "orders", 1);
                if !dims.member.is_empty() {
                    self.count_first(
                        format!("customers|{dim}|{key}"),
                        &dims.member,
                        ("d", day(t)),
                        dim,
                        &key,
                        "customers",
                    );
                }
            }
        }
        // An order not paid before has no stored lines.
        self.batch.lines_of.insert(e.order_id.clone(), lines);
        let Some(m) = self.ensure_member(&dims.member).await? else {
            return Ok(());
        };
        // The first purchase sets the acquisition channel.
        let new_customer = m.first_purchase.is_none_or(|first| first > t);
        if new_customer {
            m.first_purchase = Some(t);
            m.acquisition_channel = dims.channel.clone();
            m.dirty = true;
        }
        if m.last_purchase.is_none_or(|last| last < t) {
            m.last_purchase = Some(t);
            m.dirty = true;
        }
        if new_customer {
            self.increments.add(t, "all", "", "new_customers", 1);
            self.increments.add(t, "channel", &dims.channel, "new_customers", 1);
        }
        self.activity(&dims.member, t).await
    }

    /// Counts a refund (of a return or of a cancelled paid order) at its own time,
    /// under the dimensions of the payment, and per SKU.
    async fn refund(
        &mut self,
        t: i64,
        order_id: &str,
        amount: i64,
        lines: Vec<(String, i64, i64)>,
        cancel: bool,
    ) -> ServiceResult<()> {
        let Some(purchase) = self.purchase(order_id).await? else {
            // A payment analytics never saw (before the log it has): nothing to reverse.
            return Ok(());
        };
        if cancel && purchase.cancelled {
            return Ok(());
        }
        purchase.refunded += amount;
        purchase.cancelled |= cancel;
        purchase.dirty = true;
        let dims = purchase.dims.clone();
        let units: i64 = lines.iter().map(|l| l.1).sum();
        for (dim, key) in dims.pairs() {
            self.increments.add(t, dim, &key, "refunded", amount);
            self.increments.add(t, dim, &key, "units_returned", units);
            if cancel {
                self.increments.add(t, dim, &key, "cancelled", 1);
            }
        }
        for (sku, quantity, unit) in lines {
            let category = self.category(&sku).await?;
            for (dim, key) in [("sku", sku.clone()), ("category", category)] {
                if !key.is_empty() {
                    self.increments.add(t, dim, &key, "refunded", quantity * unit);
                    self.increments.add(t, dim, &key, "units_returned", quantity);
                }
            }
        }
        Ok(())
    }

    async fn cancelled(&mut self, event: &EventEnvelope, e: ev::OrderCancelled) -> ServiceResult<()> {
        let amount = e.refunded.unwrap_or_default().amount_minor;
        if amount <= 0 {
            return Ok(());
        }
        let t = time_or(&e.cancel_time, event);
        self.load_lines(vec![e.order_id.clone()]).await?;
        let lines = self.batch.lines_of.get(&e.order_id).cloned().unwrap_or_default();
        self.refund(t, &e.order_id, amount, lines, true).await
    }

    async fn refunded(&mut self, event: &EventEnvelope, e: ev::OrderRefunded) -> ServiceResult<()> {
        let t = time_or(&e.refund_time, event);
        let amount = e.amount.unwrap_or_default().amount_minor;
        let lines = e
            .lines
            .into_iter()
            .map(|l| {
                let unit = l.unit_price.as_ref().map(|m| m.amount_minor).unwrap_or(0);
                (l.sku_code, l.quantity, unit)
            })
            .collect();
        self.refund(t, &e.order_id, amount, lines, false).await
    }

    async fn rated(&mut self, event: &EventEnvelope, e: ev::OrderRated) -> ServiceResult<()> {
        let t = occur_at(event);
        let dims = match self.purchase(&e.order_id).await? {
            Some(purchase) => purchase.dims.clone(),
            None => self.dims(e.parties.unwrap_or_default()).await?,
        };
        let mut pairs = vec![("all", String::new())];
        for (dim, key) in [
            ("channel", &dims.channel),
            ("store", &dims.store),
            ("partner", &dims.partner),
        ] {
            if !key.is_empty() {
                pairs.push((dim, key.clone()));
            }
        }
        for (dim, key) in pairs {
            if (1..=5).contains(&e.satisfaction) {
                self.increments.add(t, dim, &key, "ratings", 1);
                self.increments
                    .add(t, dim, &key, "rating_sum", i64::from(e.satisfaction));
            }
            if (0..=10).contains(&e.recommend) {
                self.increments.add(t, dim, &key, "nps_respondents", 1);
                match crate::domain::kpi::nps_class(e.recommend) {
                    Some(true) => self.increments.add(t, dim, &key, "nps_promoters", 1),
                    Some(false) => self.increments.add(t, dim, &key, "nps_detractors", 1),
                    None => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_hand() {
        // 2026-12-03 19:41:10 UTC is a Thursday.
        let t = 1_796_326_870;
        assert_eq!(hour(t), 1_796_324_400);
        assert_eq!(day(t), 1_796_256_000);
        // Monday 2026-11-30.
        assert_eq!(week(t), 1_796_256_000 - 3 * DAY);
        // 2026-12-01.
        assert_eq!(month(t), 1_796_256_000 - 2 * DAY);
        assert_eq!(month_key(t), 202_612);
    }
}
