//! Touchpoint ingestion: each event is checked on its own (a bad one is rejected
//! with its reason, the good ones of the batch are kept), deduplicated by event id
//! (a repeated id is ignored, in the batch or against what is stored), stored raw
//! under its month, and added to the touchpoint rollups, all in one transaction.

use std::collections::{BTreeSet, HashSet};

use retail_kit::error::ServiceResult;
use sea_orm::{ConnectionTrait, DatabaseBackend, TransactionTrait, Value};

use super::App;
use crate::domain::touchpoint::{self, Kind, Raw, Touchpoint, Window};
use crate::projection::{Increments, month_key};
use crate::store::{self, Col, exec, insert_rows, rows, triers};

/// Most touchpoints in one request (or one message of a stream).
pub const MAX_BATCH: usize = 1_000;

/// Shards of the touchpoint rollups and counters: concurrent ingestions of this
/// process each write their own, so none waits for another's row locks (every
/// batch of a store adds to the same hour and day rows).
pub const SHARDS: i64 = 8;

/// The shards not held by an ingestion of this process.
#[derive(Debug)]
pub struct Shards {
    free: std::sync::Mutex<Vec<i64>>,
    next: std::sync::atomic::AtomicI64,
}

impl Default for Shards {
    fn default() -> Self {
        Self {
            free: std::sync::Mutex::new((0..SHARDS).rev().collect()),
            next: std::sync::atomic::AtomicI64::new(0),
        }
    }
}

/// A shard held until dropped; when every shard is held, one is shared (its
/// writers then take turns at its rows, as they would with one shard).
#[derive(Debug)]
pub struct Shard<'a> {
    shards: &'a Shards,
    id: i64,
    owned: bool,
}

impl Shards {
    pub fn take(&self) -> Shard<'_> {
        let free = self.free.lock().ok().and_then(|mut free| free.pop());
        match free {
            Some(id) => Shard {
                shards: self,
                id,
                owned: true,
            },
            None => Shard {
                shards: self,
                id: self
                    .next
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .rem_euclid(SHARDS),
                owned: false,
            },
        }
    }
}

impl Drop for Shard<'_> {
    fn drop(&mut self) {
        if self.owned
            && let Ok(mut free) = self.shards.free.lock()
        {
            free.push(self.id);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub index: usize,
    pub event_id: String,
    pub field: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejections: Vec<Rejection>,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejections.extend(other.rejections);
    }
}

/// What one touchpoint adds to the rollups, and to the per-shopper SKU facts.
fn increments(t: &Touchpoint, inc: &mut Increments) {
    let at = t.at;
    let store = t.store.as_str();
    let place = t.place.as_str();
    let n = t.count;
    match t.kind {
        Kind::DoorPassed => inc.add(at, "store", store, "passed_by", n),
        Kind::DoorEntered => inc.add(at, "store", store, "entered", n),
        Kind::AislesSurveyed => inc.add(at, &format!("aisle:{store}"), place, "surveyed", n),
        Kind::AislePassed => inc.add(at, &format!("aisle:{store}"), place, "passed", n),
        Kind::FloorEntered => inc.add(at, &format!("floor:{store}"), place, "entered", n),
        Kind::FloorWentUp => inc.add(at, &format!("floor:{store}"), place, "went_up", n),
        Kind::ZonePassed => inc.add(at, &format!("zone:{store}"), place, "passed", n),
        Kind::ZoneStayed => {
            inc.add(at, &format!("zone:{store}"), place, "stayed", n);
            inc.add(at, &format!("zone:{store}"), place, "dwell_secs", t.seconds);
        }
        Kind::TryOn => {
            inc.add(at, "store", store, "tries", 1);
            inc.add(at, &format!("sku:{store}"), &t.sku, "tries", 1);
        }
        Kind::ShelfTouch => {
            inc.add(at, "store", store, "touches", 1);
            inc.add(at, &format!("sku:{store}"), &t.sku, "touches", 1);
        }
        Kind::StaffSteps => inc.add(at, &format!("staff:{store}"), &t.staff, "steps", n),
        Kind::StaffServed => inc.add(at, &format!("staff:{store}"), &t.staff, "served", n),
        Kind::StaffShown => inc.add(at, &format!("staff:{store}"), &t.staff, "shown", n),
        Kind::StaffTryOn => inc.add(at, &format!("staff:{store}"), &t.staff, "try_ons", n),
        Kind::PosReceipt => {
            inc.add(at, "store", store, "receipts", 1);
            inc.add(at, "store", store, "sales", t.amount_minor);
            inc.add(at, "store", store, "transaction_secs", t.seconds);
            inc.add(at, "store", store, "reception_secs", t.reception_seconds);
            if !t.staff.is_empty() {
                inc.add(at, &format!("staff:{store}"), &t.staff, "receipts", 1);
                inc.add(at, &format!("staff:{store}"), &t.staff, "sales", t.amount_minor);
            }
            if !place.is_empty() {
                inc.add(at, &format!("zone:{store}"), place, "purchasers", 1);
            }
        }
        Kind::OnlineReach => inc.add(at, "online", "", "reach", n),
        Kind::OnlineVisit => {
            inc.add(at, "online", "", "visits", 1);
            inc.add(at, "online", "", "page_views", n);
            inc.add(at, "online", "", "home_visits", i64::from(t.home_page));
            inc.add(at, "online", "", "bounces", i64::from(n <= 1));
        }
        Kind::OnlineInquiry => inc.add(at, "online", "", "inquiries", 1),
        Kind::OnlineAddToCart => {
            inc.add(at, "online", "", "add_to_carts", 1);
            inc.add(at, "sku", &t.sku, "add_to_carts", 1);
        }
        Kind::OnlineImpression => inc.add(at, "sku", &t.sku, "impressions", n),
        Kind::OnlineClick => inc.add(at, "sku", &t.sku, "clicks", n),
    }
}

/// The per-shopper SKU facts a touchpoint sets: first try-on, first touch, last
/// purchase (of every SKU on a receipt).
fn subject_facts(t: &Touchpoint) -> Vec<(&str, &str, &'static str, i64)> {
    match t.kind {
        Kind::TryOn => vec![(t.sku.as_str(), t.subject.as_str(), "tried_at", t.at)],
        Kind::ShelfTouch => vec![(t.sku.as_str(), t.subject.as_str(), "touched_at", t.at)],
        Kind::PosReceipt if !t.subject.is_empty() => t
            .skus
            .iter()
            .map(|sku| (sku.as_str(), t.subject.as_str(), "bought_at", t.at))
            .collect(),
        _ => Vec::new(),
    }
}

impl App {
    pub fn window(&self, now: i64) -> Window {
        let a = &self.settings.analytics;
        Window {
            now,
            lateness: a.lateness_secs as i64,
            future_skew: a.future_skew_secs as i64,
        }
    }

    /// Ingests one batch; `offset` numbers the events over a stream.
    pub async fn ingest(&self, raws: Vec<Raw>, offset: usize, now: i64) -> ServiceResult<Outcome> {
        let window = self.window(now);
        let mut outcome = Outcome::default();
        let mut good = Vec::with_capacity(raws.len());
        let mut ids = HashSet::with_capacity(raws.len());
        for (i, raw) in raws.into_iter().enumerate() {
            let event_id = raw.event_id.clone();
            match touchpoint::check(raw, window) {
                Ok(t) if ids.insert(t.event_id.clone()) => good.push(t),
                Ok(_) => outcome.duplicates += 1,
                Err((field, reason)) => outcome.rejections.push(Rejection {
                    index: offset + i,
                    event_id,
                    field,
                    reason,
                }),
            }
        }
        if good.is_empty() {
            return Ok(outcome);
        }
        let shard = self.touch_shards.take();
        let txn = retail_kit::db::begin_write(&self.db).await?;
        let fresh = store_new(&txn, &good, now).await?;
        outcome.duplicates += good.len() - fresh.len();
        outcome.accepted = fresh.len();
        let mut inc = Increments::default();
        for t in &fresh {
            increments(t, &mut inc);
        }
        inc.flush_shard(&txn, "touch_rollups", shard.id).await?;
        store_subject_facts(&txn, &fresh).await?;
        let mut triers: std::collections::BTreeMap<triers::Cell, BTreeSet<String>> = Default::default();
        for t in fresh.iter().filter(|t| t.kind == Kind::TryOn && !t.subject.is_empty()) {
            for cell in triers::cells(&t.store, t.at) {
                triers.entry(cell).or_default().insert(t.subject.clone());
            }
        }
        triers::add(&txn, shard.id, triers).await?;
        exec(
            &txn,
            "INSERT INTO touchpoint_stats (id, ingested, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) \
             DO UPDATE SET ingested = touchpoint_stats.ingested + excluded.ingested, updated_at = excluded.updated_at",
            vec![(shard.id + 1).into(), (fresh.len() as i64).into(), now.into()],
        )
        .await?;
        txn.commit().await?;
        crate::events::committed();
        Ok(outcome)
    }

    /// Drops raw touchpoints (and their ids) of months wholly older than the
    /// retention; on PostgreSQL whole month partitions.
    pub async fn purge_touchpoints(&self, now: i64) -> ServiceResult<()> {
        let cutoff = month_key(now - self.settings.analytics.retention_days as i64 * crate::domain::DAY);
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            let children = rows(
                &self.db,
                "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'touchpoints'",
                vec![],
            )
            .await?;
            for row in children {
                let name = store::text(&row, 0)?;
                let month = name.strip_prefix("touchpoints_").and_then(|m| m.parse::<i32>().ok());
                if month.is_some_and(|m| m < cutoff) {
                    self.db
                        .execute_unprepared(&format!("DROP TABLE IF EXISTS {name}"))
                        .await?;
                }
            }
        }
        let txn = self.db.begin().await?;
        exec(&txn, "DELETE FROM touchpoints WHERE month < ?", vec![cutoff.into()]).await?;
        exec(&txn, "DELETE FROM touchpoint_ids WHERE month < ?", vec![cutoff.into()]).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// Sets the batch's per-shopper SKU facts: one upsert of up to 500 rows per
/// column, each key once (the earliest try-on and touch, the latest purchase).
async fn store_subject_facts(txn: &sea_orm::DatabaseTransaction, fresh: &[&Touchpoint]) -> ServiceResult<()> {
    let mut facts: std::collections::BTreeMap<(&'static str, &str, &str, &str), i64> = Default::default();
    for t in fresh {
        for (sku, subject, column, at) in subject_facts(t) {
            let entry = facts.entry((column, t.store.as_str(), sku, subject)).or_insert(at);
            *entry = if column == "bought_at" {
                (*entry).max(at)
            } else {
                (*entry).min(at)
            };
        }
    }
    for column in ["tried_at", "touched_at", "bought_at"] {
        let rows: Vec<Vec<Value>> = facts
            .iter()
            .filter(|((c, ..), _)| *c == column)
            .map(|((_, store, sku, subject), at)| vec![(*store).into(), (*sku).into(), (*subject).into(), (*at).into()])
            .collect();
        let keep = if column == "bought_at" { ">" } else { "<" };
        insert_rows(
            txn,
            &format!("subject_skus (store, sku, subject, {column})"),
            &[Col::Text, Col::Text, Col::Text, Col::BigInt],
            rows,
            &format!(
                "ON CONFLICT (store, sku, subject) DO UPDATE SET {column} = CASE \
                 WHEN subject_skus.{column} IS NULL OR excluded.{column} {keep} subject_skus.{column} \
                 THEN excluded.{column} ELSE subject_skus.{column} END"
            ),
        )
        .await?;
    }
    Ok(())
}

/// Stores the ids and raw rows of the touchpoints not stored before; returns those.
async fn store_new<'a>(
    txn: &sea_orm::DatabaseTransaction,
    good: &'a [Touchpoint],
    now: i64,
) -> ServiceResult<Vec<&'a Touchpoint>> {
    let mut fresh_ids: HashSet<String> = HashSet::with_capacity(good.len());
    let ids = good
        .iter()
        .map(|t| vec![t.event_id.clone().into(), i64::from(month_key(t.at)).into()])
        .collect();
    let stored = insert_rows(
        txn,
        "touchpoint_ids (event_id, month)",
        &[Col::Text, Col::BigInt],
        ids,
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .await?;
    for row in stored {
        fresh_ids.insert(store::text(&row, 0)?);
    }
    let fresh: Vec<&Touchpoint> = good.iter().filter(|t| fresh_ids.contains(&t.event_id)).collect();
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        let months: BTreeSet<i32> = fresh.iter().map(|t| month_key(t.at)).collect();
        for month in months {
            crate::events::ensure_month_partition(txn, "touchpoints", month).await?;
        }
    }
    let raw = fresh
        .iter()
        .map(|t| {
            vec![
                t.event_id.clone().into(),
                i64::from(month_key(t.at)).into(),
                t.kind.as_str().into(),
                t.at.into(),
                t.store.clone().into(),
                t.place.clone().into(),
                t.sku.clone().into(),
                t.subject.clone().into(),
                t.staff.clone().into(),
                t.count.into(),
                t.seconds.into(),
                t.reception_seconds.into(),
                t.amount_minor.into(),
                t.skus.join(",").into(),
                i64::from(t.home_page).into(),
                now.into(),
            ]
        })
        .collect();
    let (text, int) = (Col::Text, Col::BigInt);
    insert_rows(
        txn,
        "touchpoints (event_id, month, kind, occur_at, store, place, sku, subject, staff, count, seconds, \
         reception_seconds, amount_minor, skus, home_page, received_at)",
        &[
            text, int, text, int, text, text, text, text, text, int, int, int, int, text, int, int,
        ],
        raw,
        "",
    )
    .await?;
    Ok(fresh)
}
