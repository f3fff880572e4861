//! Analytics' schema. Append-only migrations named `mYYYYMMDD_NNNNNN_<verb>_<noun>`.
//!
//! On PostgreSQL the event archive and the raw touchpoints are range-partitioned by
//! month (`yyyymm`), with a default partition; the month partitions are created as
//! the first row of a month arrives, and old touchpoint months are dropped whole.
//! On SQLite both are plain tables with an index on the month.

use sea_orm::{ConnectionTrait, DatabaseBackend};
use sea_orm_migration::prelude::*;

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(retail_kit::events::migration::CreateOutbox),
            Box::new(retail_kit::events::migration::CreateConsumerPositions),
            Box::new(retail_kit::events::migration::PartialOutboxIndexes),
            Box::new(retail_kit::events::migration::OutboxPartitionKey),
            Box::new(retail_kit::events::migration::CreateConsumerPartitions),
            Box::new(CreateAnalyticsTables),
            Box::new(CreatePartnerProjections),
            Box::new(CreateCampaignProjections),
            Box::new(CreateScoresPublished),
            Box::new(DropTouchpointsKey),
            Box::new(CreateBuyers),
            Box::new(RekeyRollups),
            Box::new(CreateTriers),
        ]
    }
}

#[derive(Debug)]
pub struct CreateAnalyticsTables;

impl MigrationName for CreateAnalyticsTables {
    fn name(&self) -> &str {
        "m20261203_000001_create_analytics_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAnalyticsTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let pg = db.get_database_backend() == DatabaseBackend::Postgres;
        let bytes = if pg { "BYTEA" } else { "BLOB" };
        let mut ddl = super::sales_ddl("", "v1");
        let archive = format!(
            "CREATE TABLE event_archive (source TEXT NOT NULL, log_position BIGINT NOT NULL, month BIGINT NOT NULL, \
             event_id TEXT NOT NULL, event_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, \
             partition_key TEXT NOT NULL, occur_at BIGINT NOT NULL, archived_at BIGINT NOT NULL, \
             payload {bytes} NOT NULL, PRIMARY KEY (source, log_position, month))"
        );
        let touchpoints = "CREATE TABLE touchpoints (event_id TEXT NOT NULL, month BIGINT NOT NULL, \
             kind TEXT NOT NULL, occur_at BIGINT NOT NULL, store TEXT NOT NULL, place TEXT NOT NULL, \
             sku TEXT NOT NULL, subject TEXT NOT NULL, staff TEXT NOT NULL, count BIGINT NOT NULL, \
             seconds BIGINT NOT NULL, reception_seconds BIGINT NOT NULL, amount_minor BIGINT NOT NULL, \
             skus TEXT NOT NULL, home_page BIGINT NOT NULL, received_at BIGINT NOT NULL, \
             PRIMARY KEY (event_id, month))"
            .to_owned();
        if pg {
            ddl.push(format!("{archive} PARTITION BY RANGE (month)"));
            ddl.push("CREATE TABLE event_archive_default PARTITION OF event_archive DEFAULT".into());
            ddl.push(format!("{touchpoints} PARTITION BY RANGE (month)"));
            ddl.push("CREATE TABLE touchpoints_default PARTITION OF touchpoints DEFAULT".into());
        } else {
            ddl.push(archive);
            ddl.push("CREATE INDEX event_archive_month ON event_archive (month)".into());
            ddl.push(touchpoints);
            ddl.push("CREATE INDEX touchpoints_month ON touchpoints (month)".into());
        }
        ddl.extend([
            // Idempotency of ingestion: an id is stored once, with its month for retention.
            "CREATE TABLE touchpoint_ids (event_id TEXT PRIMARY KEY, month BIGINT NOT NULL)".to_owned(),
            "CREATE INDEX touchpoint_ids_month ON touchpoint_ids (month)".to_owned(),
            "CREATE TABLE touch_rollups (grain TEXT NOT NULL, dim TEXT NOT NULL, dim_key TEXT NOT NULL, \
             metric TEXT NOT NULL, bucket BIGINT NOT NULL, value BIGINT NOT NULL, \
             PRIMARY KEY (grain, dim, dim_key, metric, bucket))"
                .to_owned(),
            // Per store, SKU and shopper: first try-on and touch, last purchase.
            "CREATE TABLE subject_skus (store TEXT NOT NULL, sku TEXT NOT NULL, subject TEXT NOT NULL, \
             tried_at BIGINT, touched_at BIGINT, bought_at BIGINT, PRIMARY KEY (store, sku, subject))"
                .to_owned(),
            "CREATE INDEX subject_skus_tried ON subject_skus (store, tried_at)".to_owned(),
            "CREATE INDEX subject_skus_touched ON subject_skus (store, touched_at)".to_owned(),
            "CREATE TABLE touchpoint_stats (id BIGINT PRIMARY KEY, ingested BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
                .to_owned(),
            "INSERT INTO touchpoint_stats (id, ingested, updated_at) VALUES (1, 0, 0)".to_owned(),
            "CREATE TABLE acquisition_costs (channel TEXT PRIMARY KEY, cac_minor BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
                .to_owned(),
            // The last purchase each overdue member was published for.
            "CREATE TABLE overdue_published (member_id TEXT PRIMARY KEY, last_purchase BIGINT NOT NULL)".to_owned(),
        ]);
        for sql in ddl {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}

/// The projections of channel-partner's log.
#[derive(Debug)]
pub struct CreatePartnerProjections;

impl MigrationName for CreatePartnerProjections {
    fn name(&self) -> &str {
        "m20261204_000001_create_partner_projections"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePartnerProjections {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in super::partner_ddl("", "v1") {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}

/// The projections of membership's campaign decisions and merges.
#[derive(Debug)]
pub struct CreateCampaignProjections;

impl MigrationName for CreateCampaignProjections {
    fn name(&self) -> &str {
        "m20261204_093000_create_campaign_projections"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateCampaignProjections {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in super::campaign_ddl("", "v1") {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}

/// What was last published of each member's scoring (`MemberScored`): the RFM
/// segment (empty = not scored), the predicted tags (sorted names joined by `,`)
/// and when they are due to be published again (before they expire; far in the
/// future without tags).
#[derive(Debug)]
pub struct CreateScoresPublished;

impl MigrationName for CreateScoresPublished {
    fn name(&self) -> &str {
        "m20261204_000101_create_scores_published"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateScoresPublished {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE scores_published (member_id TEXT PRIMARY KEY, segment TEXT NOT NULL, \
                 tags TEXT NOT NULL, renew_at BIGINT NOT NULL)",
            )
            .await?;
        Ok(())
    }
}

/// The raw touchpoints lose their primary key on PostgreSQL: `touchpoint_ids`
/// already keeps each id once, and the raw rows are only ever dropped by month,
/// so the key was a second unique index to maintain on every ingested row. SQLite
/// keeps its table as it is (a key cannot be dropped there without copying it).
#[derive(Debug)]
pub struct DropTouchpointsKey;

impl MigrationName for DropTouchpointsKey {
    fn name(&self) -> &str {
        "m20261204_000002_drop_touchpoints_key"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DropTouchpointsKey {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared("ALTER TABLE touchpoints DROP CONSTRAINT IF EXISTS touchpoints_pkey")
                .await?;
        }
        Ok(())
    }
}

/// The paying members per hour and day as bitmaps (`customer_numbers`,
/// `buyers`), filled from the purchases already stored.
#[derive(Debug)]
pub struct CreateBuyers;

impl MigrationName for CreateBuyers {
    fn name(&self) -> &str {
        "m20261205_000001_create_buyers"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateBuyers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in super::buyers::ddl("", "v1") {
            db.execute_unprepared(&sql).await?;
        }
        crate::projection::backfill_buyers(db)
            .await
            .map_err(|e| DbErr::Custom(format!("filling the buyers bitmaps: {e}")))
    }
}

/// Both rollup tables are keyed bucket before metric: a period of one dimension
/// value is then one range of the key, where with the metric first a query for
/// some metrics walked the value's entries of every bucket ever written (the
/// metrics are a filter, not a key range, to PostgreSQL's planner), so its cost
/// grew with the history kept. Each also gets an index by bucket within a
/// dimension, for the figures of all of a dimension's values over a period.
///
/// The touchpoint rollups also get a `shard` in their key (what was there
/// becomes shard 0): each concurrent ingestion adds to its own shard's rows, so
/// ingestions of the same store and hour no longer wait for each other's row
/// locks; readers sum the shards.
///
/// The tables are copied, since SQLite cannot change a key in place.
#[derive(Debug)]
pub struct RekeyRollups;

impl MigrationName for RekeyRollups {
    fn name(&self) -> &str {
        "m20261206_000001_rekey_rollups"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RekeyRollups {
    /// One transaction on every backend: without it SQLite runs the statements
    /// on whichever pooled connection is free, and the rename was seen to fail
    /// on the name of the table dropped by the statement before.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "CREATE TABLE rollups_rekeyed (grain TEXT NOT NULL, dim TEXT NOT NULL, dim_key TEXT NOT NULL, \
             metric TEXT NOT NULL, bucket BIGINT NOT NULL, value BIGINT NOT NULL, \
             PRIMARY KEY (grain, dim, dim_key, bucket, metric))",
            "INSERT INTO rollups_rekeyed (grain, dim, dim_key, metric, bucket, value) \
             SELECT grain, dim, dim_key, metric, bucket, value FROM rollups",
            "DROP TABLE rollups",
            "ALTER TABLE rollups_rekeyed RENAME TO rollups",
            "CREATE INDEX rollups_by_bucket ON rollups (grain, dim, bucket)",
            "CREATE TABLE touch_rollups_rekeyed (grain TEXT NOT NULL, dim TEXT NOT NULL, dim_key TEXT NOT NULL, \
             metric TEXT NOT NULL, bucket BIGINT NOT NULL, shard BIGINT NOT NULL, value BIGINT NOT NULL, \
             PRIMARY KEY (grain, dim, dim_key, bucket, metric, shard))",
            "INSERT INTO touch_rollups_rekeyed (grain, dim, dim_key, metric, bucket, shard, value) \
             SELECT grain, dim, dim_key, metric, bucket, 0, value FROM touch_rollups",
            "DROP TABLE touch_rollups",
            "ALTER TABLE touch_rollups_rekeyed RENAME TO touch_rollups",
            "CREATE INDEX touch_rollups_by_bucket ON touch_rollups (grain, dim, bucket)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

/// The shoppers who tried something on per store, hour and day as bitmaps
/// (`shopper_numbers`, `triers`), filled from the raw try-ons still kept: the
/// store funnel's distinct triers no longer read every shopper's facts.
#[derive(Debug)]
pub struct CreateTriers;

impl MigrationName for CreateTriers {
    fn name(&self) -> &str {
        "m20261206_000002_create_triers"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTriers {
    /// One transaction on every backend: without it SQLite runs the statements
    /// on whichever pooled connection is free, and the rename was seen to fail
    /// on the name of the table dropped by the statement before.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in super::triers::ddl(db.get_database_backend()) {
            db.execute_unprepared(&sql).await?;
        }
        super::triers::backfill(db)
            .await
            .map_err(|e| DbErr::Custom(format!("filling the triers bitmaps: {e}")))
    }
}
