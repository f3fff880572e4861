//! Channel-partner's schema. Append-only migrations named
//! `mYYYYMMDD_NNNNNN_<verb>_<noun>`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(retail_kit::idempotency::migration::Migration),
            Box::new(retail_kit::events::migration::CreateOutbox),
            Box::new(retail_kit::events::migration::PartialOutboxIndexes),
            Box::new(retail_kit::events::migration::OutboxPartitionKey),
            Box::new(CreatePartnerTables),
        ]
    }
}

#[derive(DeriveIden)]
enum Partners {
    Table,
    Id,
    DisplayName,
    PartnerType,
    Region,
    State,
    Level,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PartnerStatusChanges {
    Table,
    Id,
    PartnerId,
    FromState,
    ToState,
    Reason,
    Actor,
    ChangedAt,
}

pub(crate) async fn index(
    m: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    cols: Vec<DynIden>,
    unique: bool,
) -> Result<(), DbErr> {
    let mut idx = Index::create();
    idx.name(name).table(table).if_not_exists();
    if unique {
        idx.unique();
    }
    for col in cols {
        idx.col(col);
    }
    m.create_index(idx.to_owned()).await
}

#[derive(Debug)]
struct CreatePartnerTables;

impl MigrationName for CreatePartnerTables {
    fn name(&self) -> &str {
        "m20261203_000010_create_partner_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePartnerTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Partners::Table)
                .if_not_exists()
                .col(string_len(Partners::Id, 64).primary_key())
                .col(string_len(Partners::DisplayName, 200))
                .col(string_len(Partners::PartnerType, 16))
                .col(string_len(Partners::Region, 32))
                .col(string_len(Partners::State, 16))
                .col(string_len(Partners::Level, 32))
                .col(timestamp_with_time_zone(Partners::CreatedAt))
                .col(timestamp_with_time_zone(Partners::UpdatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_partners_state",
            Partners::Table,
            vec![Partners::State.into_iden(), Partners::Id.into_iden()],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(PartnerStatusChanges::Table)
                .if_not_exists()
                .col(string_len(PartnerStatusChanges::Id, 36).primary_key())
                .col(string_len(PartnerStatusChanges::PartnerId, 64))
                .col(string_len(PartnerStatusChanges::FromState, 16))
                .col(string_len(PartnerStatusChanges::ToState, 16))
                .col(string_len(PartnerStatusChanges::Reason, 500))
                .col(string_len(PartnerStatusChanges::Actor, 64))
                .col(timestamp_with_time_zone(PartnerStatusChanges::ChangedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(PartnerStatusChanges::Table, PartnerStatusChanges::PartnerId)
                        .to(Partners::Table, Partners::Id),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_partner_status_changes_partner",
            PartnerStatusChanges::Table,
            vec![
                PartnerStatusChanges::PartnerId.into_iden(),
                PartnerStatusChanges::Id.into_iden(),
            ],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(PartnerStatusChanges::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Partners::Table).to_owned()).await
    }
}
