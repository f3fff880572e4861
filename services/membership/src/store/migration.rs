//! Membership's schema. Append-only migrations named `mYYYYMMDD_NNNNNN_<verb>_<noun>`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug)]
pub(crate) struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(retail_kit::idempotency::migration::Migration),
            Box::new(retail_kit::events::migration::CreateOutbox),
            Box::new(retail_kit::events::migration::CreateConsumerPositions),
            Box::new(CreateMemberTables),
            Box::new(CreateLoyaltyTables),
            Box::new(retail_kit::events::migration::PartialOutboxIndexes),
            Box::new(BoundPoints),
            Box::new(retail_kit::events::migration::OutboxPartitionKey),
            Box::new(retail_kit::events::migration::CreateConsumerPartitions),
            Box::new(CreateEngagementTables),
            Box::new(CreateIdentityResolutionTables),
            Box::new(CampaignCoupons),
            Box::new(TrackMessageDelivery),
            Box::new(CampaignSchedules),
            Box::new(MemberRfmSegment),
        ]
    }
}

/// The column type of a UTC timestamp on the migrated database (sea-orm keeps
/// SQLite's as text).
fn timestamp_type(m: &SchemaManager) -> &'static str {
    if m.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
        "TEXT"
    } else {
        "TIMESTAMPTZ"
    }
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
    DisplayName,
    Gender,
    BirthDate,
    Region,
    AttributesJson,
    Tier,
    PointsBalance,
    PointsDebt,
    RegisteredAt,
    UpdatedAt,
    ErasedAt,
    Version,
}

#[derive(DeriveIden)]
enum MemberIdentifiers {
    Table,
    Kind,
    Channel,
    Value,
    MemberId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum MemberTags {
    Table,
    MemberId,
    Path,
    Value,
    Dynamic,
    Source,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ConsentDecisions {
    Table,
    Id,
    MemberId,
    Channel,
    Granted,
    Source,
    DecidedAt,
}

#[derive(Debug)]
struct CreateMemberTables;

impl MigrationName for CreateMemberTables {
    fn name(&self) -> &str {
        "m20261122_000010_create_member_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateMemberTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Members::Table)
                .if_not_exists()
                .col(string_len(Members::Id, 36).primary_key())
                .col(string_len(Members::DisplayName, 200))
                .col(string_len(Members::Gender, 32))
                .col(string_len_null(Members::BirthDate, 10))
                .col(string_len(Members::Region, 32))
                .col(text(Members::AttributesJson))
                .col(string_len(Members::Tier, 32))
                .col(big_integer(Members::PointsBalance))
                .col(big_integer(Members::PointsDebt))
                .col(timestamp_with_time_zone(Members::RegisteredAt))
                .col(timestamp_with_time_zone(Members::UpdatedAt))
                .col(timestamp_with_time_zone_null(Members::ErasedAt))
                .col(big_integer(Members::Version))
                // The ledger never goes negative, whatever the code does.
                .check(Expr::col(Members::PointsBalance).gte(0))
                .check(Expr::col(Members::PointsDebt).gte(0))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("idx_members_tier", Members::Tier),
            ("idx_members_region", Members::Region),
            ("idx_members_registered_at", Members::RegisteredAt),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(Members::Table)
                    .col(col)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        }

        m.create_table(
            Table::create()
                .table(MemberIdentifiers::Table)
                .if_not_exists()
                .col(string_len(MemberIdentifiers::Kind, 16))
                .col(string_len(MemberIdentifiers::Channel, 32))
                .col(string_len(MemberIdentifiers::Value, 128))
                .col(string_len(MemberIdentifiers::MemberId, 36))
                .col(timestamp_with_time_zone(MemberIdentifiers::CreatedAt))
                // One identifier, one member: the key is the identifier itself.
                .primary_key(
                    Index::create()
                        .col(MemberIdentifiers::Kind)
                        .col(MemberIdentifiers::Channel)
                        .col(MemberIdentifiers::Value),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(MemberIdentifiers::Table, MemberIdentifiers::MemberId)
                        .to(Members::Table, Members::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_member_identifiers_member")
                .table(MemberIdentifiers::Table)
                .col(MemberIdentifiers::MemberId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(MemberTags::Table)
                .if_not_exists()
                .col(string_len(MemberTags::MemberId, 36))
                .col(string_len(MemberTags::Path, 200))
                .col(string_len(MemberTags::Value, 200))
                .col(boolean(MemberTags::Dynamic))
                .col(string_len(MemberTags::Source, 64))
                .col(timestamp_with_time_zone(MemberTags::UpdatedAt))
                .primary_key(Index::create().col(MemberTags::MemberId).col(MemberTags::Path))
                .foreign_key(
                    ForeignKey::create()
                        .from(MemberTags::Table, MemberTags::MemberId)
                        .to(Members::Table, Members::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_member_tags_path")
                .table(MemberTags::Table)
                .col(MemberTags::Path)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ConsentDecisions::Table)
                .if_not_exists()
                .col(string_len(ConsentDecisions::Id, 36).primary_key())
                .col(string_len(ConsentDecisions::MemberId, 36))
                .col(string_len(ConsentDecisions::Channel, 16))
                .col(boolean(ConsentDecisions::Granted))
                .col(string_len(ConsentDecisions::Source, 64))
                .col(timestamp_with_time_zone(ConsentDecisions::DecidedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(ConsentDecisions::Table, ConsentDecisions::MemberId)
                        .to(Members::Table, Members::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_consent_decisions_member")
                .table(ConsentDecisions::Table)
                .col(ConsentDecisions::MemberId)
                .col(ConsentDecisions::Channel)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ConsentDecisions::Table.into_iden(),
            MemberTags::Table.into_iden(),
            MemberIdentifiers::Table.into_iden(),
            Members::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Purchases {
    Table,
    Id,
    MemberId,
    OrderId,
    Kind,
    Reference,
    AmountMinor,
    Currency,
    Channel,
    OccurredAt,
    Points,
}

#[derive(DeriveIden)]
enum PointsLots {
    Table,
    Id,
    MemberId,
    OrderId,
    EarnedAt,
    ExpiresAt,
    Points,
    Remaining,
}

#[derive(DeriveIden)]
enum PointsEntries {
    Table,
    Id,
    MemberId,
    Kind,
    Points,
    Reference,
    LotId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum TierChanges {
    Table,
    Id,
    MemberId,
    FromTier,
    ToTier,
    Reason,
    CreatedAt,
}

#[derive(Debug)]
struct CreateLoyaltyTables;

impl MigrationName for CreateLoyaltyTables {
    fn name(&self) -> &str {
        "m20261122_000011_create_loyalty_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLoyaltyTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Purchases::Table)
                .if_not_exists()
                .col(string_len(Purchases::Id, 36).primary_key())
                .col(string_len(Purchases::MemberId, 36))
                .col(string_len(Purchases::OrderId, 64))
                .col(string_len(Purchases::Kind, 8))
                .col(string_len(Purchases::Reference, 128))
                .col(big_integer(Purchases::AmountMinor))
                .col(string_len(Purchases::Currency, 3))
                .col(string_len(Purchases::Channel, 32))
                .col(timestamp_with_time_zone(Purchases::OccurredAt))
                .col(big_integer(Purchases::Points))
                .to_owned(),
        )
        .await?;
        // The same order earns once; the same refund request counts once.
        m.create_index(
            Index::create()
                .name("uq_purchases_order_kind_reference")
                .table(Purchases::Table)
                .col(Purchases::OrderId)
                .col(Purchases::Kind)
                .col(Purchases::Reference)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_purchases_member")
                .table(Purchases::Table)
                .col(Purchases::MemberId)
                .col(Purchases::OccurredAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PointsLots::Table)
                .if_not_exists()
                .col(string_len(PointsLots::Id, 36).primary_key())
                .col(string_len(PointsLots::MemberId, 36))
                .col(string_len(PointsLots::OrderId, 64))
                .col(timestamp_with_time_zone(PointsLots::EarnedAt))
                .col(timestamp_with_time_zone(PointsLots::ExpiresAt))
                .col(big_integer(PointsLots::Points))
                .col(big_integer(PointsLots::Remaining))
                .check(Expr::col(PointsLots::Remaining).gte(0))
                .check(Expr::col(PointsLots::Remaining).lte(Expr::col(PointsLots::Points)))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_points_lots_member")
                .table(PointsLots::Table)
                .col(PointsLots::MemberId)
                .col(PointsLots::ExpiresAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PointsEntries::Table)
                .if_not_exists()
                .col(string_len(PointsEntries::Id, 36).primary_key())
                .col(string_len(PointsEntries::MemberId, 36))
                .col(string_len(PointsEntries::Kind, 16))
                .col(big_integer(PointsEntries::Points))
                .col(string_len(PointsEntries::Reference, 128))
                .col(string_len(PointsEntries::LotId, 36))
                .col(timestamp_with_time_zone(PointsEntries::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_points_entries_member")
                .table(PointsEntries::Table)
                .col(PointsEntries::MemberId)
                .col(PointsEntries::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(TierChanges::Table)
                .if_not_exists()
                .col(string_len(TierChanges::Id, 36).primary_key())
                .col(string_len(TierChanges::MemberId, 36))
                .col(string_len(TierChanges::FromTier, 32))
                .col(string_len(TierChanges::ToTier, 32))
                .col(string_len(TierChanges::Reason, 32))
                .col(timestamp_with_time_zone(TierChanges::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_tier_changes_member")
                .table(TierChanges::Table)
                .col(TierChanges::MemberId)
                .col(TierChanges::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            TierChanges::Table.into_iden(),
            PointsEntries::Table.into_iden(),
            PointsLots::Table.into_iden(),
            Purchases::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// Bounds the points balance and debt above by `MAX_POINTS` (they are bounded below
/// by zero already), and on SQLite also to integers: SQLite turns an integer sum
/// that overflows into a REAL, which no reader of the row can decode. PostgreSQL
/// gets a CHECK constraint; SQLite, which cannot add one to a table, triggers that
/// abort the offending statement.
#[derive(Debug)]
struct BoundPoints;

impl MigrationName for BoundPoints {
    fn name(&self) -> &str {
        "m20261215_000001_bound_points"
    }
}

/// The members' points within range, as SQL over `row` (`NEW` in a trigger).
fn points_in_range(row: &str) -> String {
    let max = crate::domain::points::MAX_POINTS;
    format!("{row}points_balance BETWEEN 0 AND {max} AND {row}points_debt BETWEEN 0 AND {max}")
}

#[async_trait::async_trait]
impl MigrationTrait for BoundPoints {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if m.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            for event in ["INSERT", "UPDATE"] {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER IF NOT EXISTS members_points_range_{} BEFORE {event} ON members \
                     WHEN NOT ({} AND typeof(NEW.points_balance) = 'integer' AND typeof(NEW.points_debt) = 'integer') \
                     BEGIN SELECT RAISE(ABORT, 'members_points_range'); END",
                    event.to_lowercase(),
                    points_in_range("NEW.")
                ))
                .await?;
            }
        } else {
            db.execute_unprepared(&format!(
                "ALTER TABLE members ADD CONSTRAINT members_points_range CHECK ({})",
                points_in_range("")
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if m.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            for event in ["insert", "update"] {
                db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS members_points_range_{event}"))
                    .await?;
            }
        } else {
            db.execute_unprepared("ALTER TABLE members DROP CONSTRAINT IF EXISTS members_points_range")
                .await?;
        }
        Ok(())
    }
}

/// Engagement: tag expiry, segments, campaigns, each campaign's decision per
/// member (one row, so a member is decided for once), and the messages sent.
#[derive(Debug)]
struct CreateEngagementTables;

impl MigrationName for CreateEngagementTables {
    fn name(&self) -> &str {
        "m20261220_000001_create_engagement_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateEngagementTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let ts = timestamp_type(m);
        db.execute_unprepared(&format!("ALTER TABLE member_tags ADD COLUMN expires_at {ts} NULL"))
            .await?;
        for sql in [
            format!(
                "CREATE TABLE IF NOT EXISTS engagement_segments (id VARCHAR(36) PRIMARY KEY, \
                 display_name VARCHAR(200) NOT NULL, rule_json TEXT NOT NULL, created_at {ts} NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS engagement_campaigns (id VARCHAR(36) PRIMARY KEY, \
                 display_name VARCHAR(200) NOT NULL, segment_id VARCHAR(36) NOT NULL, channel VARCHAR(16) NOT NULL, \
                 trigger_kind VARCHAR(16) NOT NULL, send_at {ts} NULL, action_kind VARCHAR(16) NOT NULL, \
                 message_template TEXT NOT NULL, bonus_points BIGINT NOT NULL, control_share_bp INTEGER NOT NULL, \
                 window_start {ts} NOT NULL, window_end {ts} NOT NULL, budget_contacts BIGINT NOT NULL, \
                 cost_per_contact_minor BIGINT NOT NULL, state VARCHAR(16) NOT NULL, sent BOOLEAN NOT NULL, created_at {ts} NOT NULL, updated_at {ts} NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS engagement_contacts (campaign_id VARCHAR(36) NOT NULL, \
                 member_id VARCHAR(36) NOT NULL, outcome VARCHAR(16) NOT NULL, decided_at {ts} NOT NULL, \
                 PRIMARY KEY (campaign_id, member_id))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS engagement_messages (id VARCHAR(36) PRIMARY KEY, \
                 campaign_id VARCHAR(36) NOT NULL, member_id VARCHAR(36) NOT NULL, channel VARCHAR(16) NOT NULL, \
                 body TEXT NOT NULL, created_at {ts} NOT NULL, sent_at {ts} NULL)"
            ),
            "CREATE INDEX IF NOT EXISTS idx_engagement_messages_campaign ON engagement_messages (campaign_id, id)".into(),
            "CREATE INDEX IF NOT EXISTS idx_engagement_messages_cap ON engagement_messages (member_id, channel, created_at)"
                .into(),
            "CREATE INDEX IF NOT EXISTS idx_engagement_messages_pending ON engagement_messages (sent_at, id)".into(),
            "CREATE INDEX IF NOT EXISTS idx_engagement_contacts_outcome ON engagement_contacts (campaign_id, outcome, member_id)"
                .into(),
        ] {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for table in [
            "engagement_messages",
            "engagement_contacts",
            "engagement_campaigns",
            "engagement_segments",
        ] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
        db.execute_unprepared("ALTER TABLE member_tags DROP COLUMN expires_at")
            .await?;
        Ok(())
    }
}

/// Identity resolution: anonymous contacts with their ids and touchpoints, members
/// merged into a survivor (`merged_into`) with the merge records, and each member's
/// last seen lifecycle state (for the lifecycle-change trigger).
#[derive(Debug)]
struct CreateIdentityResolutionTables;

impl MigrationName for CreateIdentityResolutionTables {
    fn name(&self) -> &str {
        "m20261228_000001_create_identity_resolution_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateIdentityResolutionTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let ts = timestamp_type(m);
        for sql in [
            "ALTER TABLE members ADD COLUMN merged_into VARCHAR(36) NULL".to_owned(),
            format!("ALTER TABLE members ADD COLUMN merged_at {ts} NULL"),
            format!(
                "CREATE TABLE IF NOT EXISTS member_merges (id VARCHAR(36) PRIMARY KEY, \
                 survivor_id VARCHAR(36) NOT NULL, merged_id VARCHAR(36) NOT NULL UNIQUE, \
                 points_transferred BIGINT NOT NULL, debt_transferred BIGINT NOT NULL, \
                 identifiers_moved INTEGER NOT NULL, purchases_moved INTEGER NOT NULL, \
                 reason VARCHAR(500) NOT NULL, created_by VARCHAR(128) NOT NULL, created_at {ts} NOT NULL)"
            ),
            "CREATE INDEX IF NOT EXISTS idx_member_merges_survivor ON member_merges (survivor_id)".to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS anonymous_contacts (id VARCHAR(36) PRIMARY KEY, \
                 created_at {ts} NOT NULL, last_seen_at {ts} NOT NULL, merged_into VARCHAR(36) NULL, merged_at {ts} NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS contact_identifiers (kind VARCHAR(16) NOT NULL, \
                 channel VARCHAR(32) NOT NULL, value VARCHAR(128) NOT NULL, contact_id VARCHAR(36) NOT NULL, \
                 created_at {ts} NOT NULL, PRIMARY KEY (kind, channel, value))"
            ),
            "CREATE INDEX IF NOT EXISTS idx_contact_identifiers_contact ON contact_identifiers (contact_id)".to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS touchpoints (id VARCHAR(36) PRIMARY KEY, \
                 member_id VARCHAR(36) NULL, contact_id VARCHAR(36) NULL, scene VARCHAR(16) NOT NULL, \
                 place VARCHAR(64) NOT NULL, kind VARCHAR(16) NOT NULL, product VARCHAR(64) NOT NULL, \
                 occurred_at {ts} NOT NULL)"
            ),
            "CREATE INDEX IF NOT EXISTS idx_touchpoints_member ON touchpoints (member_id, id)".to_owned(),
            "CREATE INDEX IF NOT EXISTS idx_touchpoints_contact ON touchpoints (contact_id, id)".to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS member_lifecycle (member_id VARCHAR(36) PRIMARY KEY, \
                 state VARCHAR(16) NOT NULL, changed_at {ts} NOT NULL)"
            ),
        ] {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for table in [
            "member_lifecycle",
            "touchpoints",
            "contact_identifiers",
            "anonymous_contacts",
            "member_merges",
        ] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
        for column in ["merged_at", "merged_into"] {
            db.execute_unprepared(&format!("ALTER TABLE members DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}

/// Coupon campaigns: the catalog coupon a campaign hands out, and the code each
/// contacted member got with its decision.
#[derive(Debug)]
struct CampaignCoupons;

impl MigrationName for CampaignCoupons {
    fn name(&self) -> &str {
        "m20261230_000001_campaign_coupons"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CampaignCoupons {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "ALTER TABLE engagement_campaigns ADD COLUMN coupon_id VARCHAR(64) NULL",
            "ALTER TABLE engagement_contacts ADD COLUMN coupon_code VARCHAR(64) NULL",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "ALTER TABLE engagement_contacts DROP COLUMN coupon_code",
            "ALTER TABLE engagement_campaigns DROP COLUMN coupon_id",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

/// The outbox's delivery tries: how many were made, when the next is due, and
/// when the message was given up on (dead-lettered).
#[derive(Debug)]
struct TrackMessageDelivery;

impl MigrationName for TrackMessageDelivery {
    fn name(&self) -> &str {
        "m20261230_000002_track_message_delivery"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TrackMessageDelivery {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let ts = timestamp_type(m);
        for sql in [
            "ALTER TABLE engagement_messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0".to_owned(),
            format!("ALTER TABLE engagement_messages ADD COLUMN next_attempt_at {ts} NULL"),
            format!("ALTER TABLE engagement_messages ADD COLUMN dead_at {ts} NULL"),
        ] {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for column in ["dead_at", "next_attempt_at", "attempts"] {
            db.execute_unprepared(&format!("ALTER TABLE engagement_messages DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}

/// Recurring planned campaigns: the schedule, and when each planned campaign runs
/// next (a one-off's send time until it has been sent).
#[derive(Debug)]
struct CampaignSchedules;

impl MigrationName for CampaignSchedules {
    fn name(&self) -> &str {
        "m20261231_000021_campaign_schedules"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CampaignSchedules {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let ts = timestamp_type(m);
        for sql in [
            "ALTER TABLE engagement_campaigns ADD COLUMN schedule_json TEXT NULL".to_owned(),
            format!("ALTER TABLE engagement_campaigns ADD COLUMN next_run_at {ts} NULL"),
            "UPDATE engagement_campaigns SET next_run_at = send_at WHERE trigger_kind = 'planned' AND NOT sent"
                .to_owned(),
        ] {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for column in ["next_run_at", "schedule_json"] {
            db.execute_unprepared(&format!("ALTER TABLE engagement_campaigns DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}

/// The RFM segment analytics last scored each member in (`MemberScored`); its
/// predicted tags are rows of `member_tags` under `predicted/`.
#[derive(Debug)]
struct MemberRfmSegment;

impl MigrationName for MemberRfmSegment {
    fn name(&self) -> &str {
        "m20261231_000101_member_rfm_segment"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for MemberRfmSegment {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("ALTER TABLE members ADD COLUMN rfm_segment TEXT NULL")
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("ALTER TABLE members DROP COLUMN rfm_segment")
            .await?;
        Ok(())
    }
}
