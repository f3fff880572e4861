//! What analytics consumes and publishes.
//!
//! Consumers: one per source log (orders, membership, catalog, partner), each a
//! registration of [`SourceEvents`] under its source name ([`SOURCES`]). Every
//! batch is archived raw (`event_archive`, by month) and projected ([`Projector`])
//! in the transaction that stores the consumer's position, so each event takes
//! effect exactly once and the archive holds exactly the events applied. A new
//! source log is one more entry in [`SOURCES`] plus its arms in the projector.
//!
//! Published: `MemberOverdue` and `MemberScored` (retail.events.v1) on analytics'
//! own log, through the outbox.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use retail_kit::error::ServiceResult;
use retail_kit::events::{AfterCommit, EventHandler, Outgoing};
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Value};

use crate::projection::{Projector, month_key, occur_at};
use crate::store::{Col, exec, insert_rows};

/// The consumer name positions are stored under.
pub const CONSUMER: &str = "analytics";

/// The logs analytics follows.
pub const SOURCES: [&str; 4] = ["orders", "membership", "catalog", "partner"];

/// The source of backfilled history (`ImportEvents`).
pub const IMPORT: &str = "import";

/// Every source in the archive: the followed logs and the import.
pub const ARCHIVED: [&str; 5] = ["orders", "membership", "catalog", "partner", IMPORT];

/// Lock a rebuild takes exclusively to swap its tables in, and every consumer
/// batch shared (PostgreSQL): no batch commits between the rebuild's last catch-up
/// and the swap.
pub const PROJECTION_LOCK: i64 = 0x616e_616c_7974_6963;

/// Batches this process committed that moved a position (consumed, imported or
/// ingested): the positions an answer gives are read again after any
/// ([`crate::app::App::recent_freshness`]).
pub static COMMITTED: AtomicU64 = AtomicU64::new(0);

/// Counts a committed batch.
pub fn committed() {
    COMMITTED.fetch_add(1, Ordering::Release);
}

/// The consumer of one source log.
#[derive(Debug, Clone)]
pub struct SourceEvents {
    pub source: &'static str,
}

#[async_trait::async_trait]
impl EventHandler for SourceEvents {
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            exec(
                txn,
                "SELECT pg_advisory_xact_lock_shared(?)",
                vec![PROJECTION_LOCK.into()],
            )
            .await?;
        }
        archive(txn, self.source, events).await?;
        let mut projector = Projector::new(txn, "");
        projector.apply_all(events).await?;
        projector.finish().await?;
        Ok(vec![Box::pin(async { committed() })])
    }
}

/// Archives events raw, each under the month of its time.
pub async fn archive(txn: &DatabaseTransaction, source: &str, events: &[&EventEnvelope]) -> ServiceResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let months: BTreeSet<i32> = events.iter().map(|e| month_key(occur_at(e))).collect();
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        for month in months {
            ensure_month_partition(txn, "event_archive", month).await?;
        }
    }
    let archived_at = chrono::Utc::now().timestamp_micros();
    let rows: Vec<Vec<Value>> = events
        .iter()
        .map(|e| {
            let at = occur_at(e);
            vec![
                source.into(),
                (e.position as i64).into(),
                i64::from(month_key(at)).into(),
                e.id.clone().into(),
                e.r#type.clone().into(),
                e.aggregate_id.clone().into(),
                e.partition_key.clone().into(),
                at.into(),
                archived_at.into(),
                e.payload.as_ref().map(|p| p.value.clone()).unwrap_or_default().into(),
            ]
        })
        .collect();
    let (text, int) = (Col::Text, Col::BigInt);
    insert_rows(
        txn,
        "event_archive (source, log_position, month, event_id, event_type, aggregate_id, partition_key, occur_at, \
         archived_at, payload)",
        &[text, int, int, text, text, text, text, int, int, Col::Bytes],
        rows,
        "",
    )
    .await?;
    Ok(())
}

/// Creates `table`'s partition for `month` (`yyyymm`) if it has none (PostgreSQL),
/// under a transaction lock so concurrent batches do not race to create it.
pub async fn ensure_month_partition(db: &impl ConnectionTrait, table: &str, month: i32) -> ServiceResult<()> {
    let name = format!("{table}_{month}");
    let exists = crate::store::scalar(
        db,
        "SELECT CASE WHEN to_regclass(?) IS NULL THEN 0 ELSE 1 END::BIGINT",
        vec![name.clone().into()],
    )
    .await?;
    if exists == 1 {
        return Ok(());
    }
    exec(db, "SELECT pg_advisory_xact_lock(hashtext(?))", vec![table.into()]).await?;
    let (year, m) = (month / 100, month % 100);
    let next = if m == 12 { (year + 1) * 100 + 1 } else { month + 1 };
    db.execute_unprepared(&format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({month}) TO ({next})"
    ))
    .await?;
    Ok(())
}

/// The event published for an overdue member.
pub fn member_overdue(
    member_id: &str,
    cycle_days: f64,
    days_since_last: i64,
    last: chrono::DateTime<chrono::Utc>,
    next: chrono::DateTime<chrono::Utc>,
) -> Outgoing {
    Outgoing::of(&ev::MemberOverdue {
        member_id: member_id.to_owned(),
        cycle_days,
        days_since_last,
        last_purchase_time: Some(retail_kit::convert::timestamp(last)),
        next_purchase_time: Some(retail_kit::convert::timestamp(next)),
    })
}

/// The event published for a member whose RFM segment or predicted tags changed:
/// its scores (0 when not scored) and the tags that hold, each until `expires`.
pub fn member_scored(
    member_id: &str,
    rfm: Option<crate::domain::kpi::RfmScore>,
    predicted: &[&str],
    scored: chrono::DateTime<chrono::Utc>,
    expires: chrono::DateTime<chrono::Utc>,
) -> Outgoing {
    Outgoing::of(&ev::MemberScored {
        member_id: member_id.to_owned(),
        recency_score: rfm.map_or(0, |s| i32::from(s.r)),
        frequency_score: rfm.map_or(0, |s| i32::from(s.f)),
        monetary_score: rfm.map_or(0, |s| i32::from(s.m)),
        rfm_segment: rfm.map(|s| s.segment.as_str().to_owned()).unwrap_or_default(),
        predicted_tags: predicted
            .iter()
            .map(|name| ev::PredictedTag {
                name: (*name).to_owned(),
                expire_time: Some(retail_kit::convert::timestamp(expires)),
            })
            .collect(),
        score_time: Some(retail_kit::convert::timestamp(scored)),
    })
}

/// The handlers of every source, for the runner.
pub fn handlers() -> Vec<(&'static str, Arc<dyn EventHandler>)> {
    SOURCES
        .iter()
        .map(|source| (*source, Arc::new(SourceEvents { source }) as Arc<dyn EventHandler>))
        .collect()
}
