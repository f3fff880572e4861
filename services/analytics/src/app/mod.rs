//! Analytics' use cases: who sees which stores ([`access`]), the KPI queries ([`kpis`], [`members`], [`stores`],
//! [`partners`]), the
//! touchpoint ingestion ([`touchpoints`]), the rebuild of projections from the
//! archive ([`rebuild`]) and the overdue members' and member scores' events
//! ([`overdue`], [`scores`]).

pub mod access;
pub mod import;
pub mod kpis;
pub mod members;
pub mod overdue;
pub mod partners;
pub mod rebuild;
pub mod scores;
pub mod stores;
pub mod touchpoints;

use std::sync::Arc;

use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::EventLog;
use sea_orm::DatabaseConnection;

use crate::events::{ARCHIVED, CONSUMER};
use crate::settings::Settings;
use crate::store::{self, rows};

/// A half-open time range in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

impl Period {
    /// The period of the same length just before.
    pub fn previous(self) -> Self {
        let len = self.end - self.start;
        Self {
            start: self.start - len,
            end: self.start,
        }
    }

    pub fn days(self) -> f64 {
        (self.end - self.start) as f64 / crate::domain::DAY as f64
    }
}

/// How far one source has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub source: String,
    pub position: u64,
    /// Seconds since the epoch.
    pub updated_at: i64,
}

/// Positions read this long ago are read again even if this process committed
/// nothing since (other replicas may have).
const FRESHNESS_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(500);

/// The positions read last: the commit count they were read after, when, and them.
type CachedPositions = (u64, std::time::Instant, Vec<SourcePosition>);

#[derive(Debug)]
pub struct App {
    pub db: DatabaseConnection,
    pub log: Arc<EventLog>,
    pub settings: Settings,
    positions: std::sync::Mutex<Option<CachedPositions>>,
    touch_shards: touchpoints::Shards,
}

impl App {
    pub fn new(db: DatabaseConnection, log: Arc<EventLog>, settings: Settings) -> Self {
        Self {
            db,
            log,
            settings,
            positions: std::sync::Mutex::new(None),
            touch_shards: touchpoints::Shards::default(),
        }
    }

    /// [`Self::freshness`] as read by an earlier answer if this process committed
    /// no batch since and it is under half a second old: every answer still
    /// reflects at least the positions it gives (they only grow), without two
    /// reads per answer.
    pub async fn recent_freshness(&self) -> ServiceResult<Vec<SourcePosition>> {
        use std::sync::atomic::Ordering;
        let committed = crate::events::COMMITTED.load(Ordering::Acquire);
        if let Ok(cached) = self.positions.lock()
            && let Some((at, read, positions)) = cached.as_ref()
            && *at == committed
            && read.elapsed() < FRESHNESS_MAX_AGE
        {
            return Ok(positions.clone());
        }
        let positions = self.freshness().await?;
        if let Ok(mut cached) = self.positions.lock() {
            *cached = Some((committed, std::time::Instant::now(), positions.clone()));
        }
        Ok(positions)
    }

    /// The positions every KPI answer reflects: each source log's, and the
    /// touchpoints ingested.
    pub async fn freshness(&self) -> ServiceResult<Vec<SourcePosition>> {
        let found = rows(
            &self.db,
            "SELECT source, log_position, updated_at FROM consumer_positions WHERE consumer = ?",
            vec![CONSUMER.into()],
        )
        .await?;
        let mut out = Vec::new();
        for source in ARCHIVED {
            let mut position = SourcePosition {
                source: source.to_owned(),
                position: 0,
                updated_at: 0,
            };
            for row in &found {
                if store::text(row, 0)? == source {
                    position.position = store::int(row, 1)?.max(0) as u64;
                    let at: chrono::DateTime<chrono::Utc> = row.try_get_by_index(2)?;
                    position.updated_at = at.timestamp();
                }
            }
            out.push(position);
        }
        let stats = rows(
            &self.db,
            "SELECT CAST(COALESCE(SUM(ingested), 0) AS BIGINT), CAST(COALESCE(MAX(updated_at), 0) AS BIGINT) \
             FROM touchpoint_stats",
            vec![],
        )
        .await?;
        if let Some(row) = stats.first() {
            out.push(SourcePosition {
                source: "touchpoints".into(),
                position: store::int(row, 0)?.max(0) as u64,
                updated_at: store::int(row, 1)?,
            });
        }
        Ok(out)
    }
}

/// The buckets that make up a period: whole days from the day grain, the partial
/// days at the edges from the hour grain (at most days + 48 rows per metric).
fn buckets(period: Period) -> Vec<(&'static str, i64, i64)> {
    let day = crate::projection::DAY;
    let first_full = period.start + (day - period.start.rem_euclid(day)) % day;
    let last_full = period.end - period.end.rem_euclid(day);
    if first_full < last_full {
        vec![
            ("d", first_full, last_full),
            ("h", period.start, first_full),
            ("h", last_full, period.end),
        ]
    } else {
        vec![("h", period.start, period.end)]
    }
}

/// Sums of rollup metrics of one dimension value over a period, by metric.
pub async fn rollup_sums(
    db: &DatabaseConnection,
    table: &str,
    period: Period,
    dim: &str,
    key: &str,
    metrics: &[&str],
) -> ServiceResult<std::collections::BTreeMap<String, i64>> {
    Ok(rollup_sums_of(db, table, &[period], dim, key, metrics)
        .await?
        .pop()
        .unwrap_or_default())
}

/// [`rollup_sums`] of several periods in one statement, in their order.
pub async fn rollup_sums_of(
    db: &DatabaseConnection,
    table: &str,
    periods: &[Period],
    dim: &str,
    key: &str,
    metrics: &[&str],
) -> ServiceResult<Vec<std::collections::BTreeMap<String, i64>>> {
    let placeholders = vec!["?"; metrics.len()].join(",");
    let mut selects = Vec::new();
    let mut values: Vec<sea_orm::Value> = Vec::new();
    for (i, period) in periods.iter().enumerate() {
        for (grain, from, to) in buckets(*period) {
            selects.push(format!(
                "SELECT CAST({i} AS BIGINT), metric, CAST(SUM(value) AS BIGINT) FROM {table} WHERE grain = ? \
                 AND dim = ? AND dim_key = ? AND metric IN ({placeholders}) AND bucket >= ? AND bucket < ? \
                 GROUP BY metric"
            ));
            values.extend([grain.into(), dim.into(), key.into()]);
            values.extend(metrics.iter().map(|m| (*m).into()));
            values.extend([from.into(), to.into()]);
        }
    }
    let mut out = vec![std::collections::BTreeMap::new(); periods.len()];
    if selects.is_empty() {
        return Ok(out);
    }
    for row in rows(db, &selects.join(" UNION ALL "), values).await? {
        if let Some(sums) = out.get_mut(store::int(&row, 0)? as usize) {
            *sums.entry(store::text(&row, 1)?).or_insert(0) += store::int(&row, 2)?;
        }
    }
    Ok(out)
}

/// Sums of rollup metrics of every value of a dimension over a period, by value
/// and metric (the same buckets as [`rollup_sums`]).
pub async fn rollup_sums_by_key(
    db: &DatabaseConnection,
    table: &str,
    period: Period,
    dim: &str,
    metrics: &[&str],
) -> ServiceResult<std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>> {
    let placeholders = vec!["?"; metrics.len()].join(",");
    let mut selects = Vec::new();
    let mut values: Vec<sea_orm::Value> = Vec::new();
    for (grain, from, to) in buckets(period) {
        selects.push(format!(
            "SELECT dim_key, metric, CAST(SUM(value) AS BIGINT) FROM {table} WHERE grain = ? AND dim = ? \
             AND metric IN ({placeholders}) AND bucket >= ? AND bucket < ? GROUP BY dim_key, metric"
        ));
        values.extend([grain.into(), dim.into()]);
        values.extend(metrics.iter().map(|m| (*m).into()));
        values.extend([from.into(), to.into()]);
    }
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> = Default::default();
    for row in rows(db, &selects.join(" UNION ALL "), values).await? {
        *out.entry(store::text(&row, 0)?)
            .or_default()
            .entry(store::text(&row, 1)?)
            .or_insert(0) += store::int(&row, 2)?;
    }
    Ok(out)
}

/// Rejects a period that is empty or reversed.
pub fn check_period(period: Period) -> ServiceResult<Period> {
    if period.end <= period.start {
        return Err(ServiceError::invalid("period", "end_time must be after start_time"));
    }
    Ok(period)
}

impl App {
    /// The values a dimension has taken in the sales rollups ("channel", "store",
    /// "region", "tier", "partner", "category"), sorted; for "store" also the stores
    /// that reported touchpoints.
    pub async fn dimension_values(&self, dim: &str) -> ServiceResult<Vec<String>> {
        let mut out = std::collections::BTreeSet::new();
        for table in ["rollups", "touch_rollups"] {
            if table == "touch_rollups" && dim != "store" {
                continue;
            }
            let sql = format!("SELECT DISTINCT dim_key FROM {table} WHERE grain = 'd' AND dim = ? AND dim_key <> ''");
            for row in rows(&self.db, &sql, vec![dim.into()]).await? {
                out.insert(store::text(&row, 0)?);
            }
        }
        Ok(out.into_iter().collect())
    }
}
