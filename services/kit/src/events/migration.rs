//! `outbox` (for publishers), `consumer_positions` and `consumer_partitions` (for
//! consumers).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    LogPosition,
    EventType,
    AggregateId,
    Payload,
    OccurredAt,
    PartitionKey,
}

#[derive(DeriveIden)]
enum ConsumerPositions {
    Table,
    Consumer,
    Source,
    LogPosition,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ConsumerPartitions {
    Table,
    Consumer,
    Source,
    Partitions,
    Carried,
    UpdatedAt,
}

#[derive(Debug)]
pub struct CreateOutbox;

impl MigrationName for CreateOutbox {
    fn name(&self) -> &str {
        "m20261122_000003_create_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOutbox {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .if_not_exists()
                .col(string_len(Outbox::Id, 36).primary_key())
                .col(big_integer_null(Outbox::LogPosition).unique_key())
                .col(string_len(Outbox::EventType, 200))
                .col(string_len(Outbox::AggregateId, 128))
                .col(blob(Outbox::Payload))
                .col(timestamp_with_time_zone(Outbox::OccurredAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_outbox_unpositioned")
                .table(Outbox::Table)
                .col(Outbox::LogPosition)
                .col(Outbox::OccurredAt)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Outbox::Table).to_owned()).await
    }
}

/// Keeps each of the outbox's position indexes to the rows it serves:
/// `idx_outbox_queue`, replacing `idx_outbox_unpositioned`, to the rows waiting
/// for a position (the appender's queue, in its order), and the unique position
/// index to positioned rows. A row then enters one of them when it is written
/// and the other when it is positioned, where before it entered both each time;
/// and a read of the newest positions never walks entries of unpositioned rows.
/// (SQLite keeps the table's inline unique constraint, which it cannot drop and
/// which holds no NULLs anyway.)
#[derive(Debug)]
pub struct PartialOutboxIndexes;

impl MigrationName for PartialOutboxIndexes {
    fn name(&self) -> &str {
        "m20261124_000005_partial_outbox_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PartialOutboxIndexes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared("CREATE INDEX idx_outbox_queue ON outbox (occurred_at, id) WHERE log_position IS NULL")
            .await?;
        db.execute_unprepared("DROP INDEX idx_outbox_unpositioned").await?;
        if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            db.execute_unprepared(
                "CREATE UNIQUE INDEX uq_outbox_log_position ON outbox (log_position) \
                 WHERE log_position IS NOT NULL",
            )
            .await?;
            db.execute_unprepared("ALTER TABLE outbox DROP CONSTRAINT outbox_log_position_key")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            db.execute_unprepared("ALTER TABLE outbox ADD CONSTRAINT outbox_log_position_key UNIQUE (log_position)")
                .await?;
            db.execute_unprepared("DROP INDEX uq_outbox_log_position").await?;
        }
        db.execute_unprepared("CREATE INDEX idx_outbox_unpositioned ON outbox (log_position, occurred_at)")
            .await?;
        db.execute_unprepared("DROP INDEX idx_outbox_queue").await?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct CreateConsumerPositions;

impl MigrationName for CreateConsumerPositions {
    fn name(&self) -> &str {
        "m20261122_000004_create_consumer_positions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateConsumerPositions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ConsumerPositions::Table)
                .if_not_exists()
                .col(string_len(ConsumerPositions::Consumer, 64))
                .col(string_len(ConsumerPositions::Source, 64))
                .col(big_integer(ConsumerPositions::LogPosition))
                .col(timestamp_with_time_zone(ConsumerPositions::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(ConsumerPositions::Consumer)
                        .col(ConsumerPositions::Source),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ConsumerPositions::Table).to_owned())
            .await
    }
}

/// `outbox.partition_key`: the key a partitioned consumer routes an event by, set
/// when the event is written and carried in its envelope. Rows written before stay
/// NULL (their envelopes carry no key, and consumers fall back to the payload).
#[derive(Debug)]
pub struct OutboxPartitionKey;

impl MigrationName for OutboxPartitionKey {
    fn name(&self) -> &str {
        "m20261203_000007_outbox_partition_key"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxPartitionKey {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Outbox::Table)
                .add_column(string_len_null(Outbox::PartitionKey, 128))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Outbox::Table)
                .drop_column(Outbox::PartitionKey)
                .to_owned(),
        )
        .await
    }
}

/// `consumer_partitions`: how many partitions a consumer's positions are for, and
/// the positions of an earlier count that still decide what was applied, so that
/// a change of the count carries the positions over instead of starting again.
#[derive(Debug)]
pub struct CreateConsumerPartitions;

impl MigrationName for CreateConsumerPartitions {
    fn name(&self) -> &str {
        "m20261203_000008_create_consumer_partitions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateConsumerPartitions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ConsumerPartitions::Table)
                .if_not_exists()
                .col(string_len(ConsumerPartitions::Consumer, 64))
                .col(string_len(ConsumerPartitions::Source, 64))
                .col(integer(ConsumerPartitions::Partitions))
                .col(text_null(ConsumerPartitions::Carried))
                .col(timestamp_with_time_zone(ConsumerPartitions::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(ConsumerPartitions::Consumer)
                        .col(ConsumerPartitions::Source),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ConsumerPartitions::Table).to_owned())
            .await
    }
}
