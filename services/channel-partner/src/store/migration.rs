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
            Box::new(CreateProgrammeTables),
            Box::new(retail_kit::events::migration::CreateConsumerPositions),
            Box::new(retail_kit::events::migration::CreateConsumerPartitions),
            Box::new(CreatePolicyTables),
            Box::new(AddDiscountRuleDisplayName),
            Box::new(CreateSalesTables),
            Box::new(CreateVisitTables),
            Box::new(CreateQuoteTables),
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

pub(crate) use retail_kit::db::create_index as index;

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

fn col(name: &str) -> Alias {
    Alias::new(name)
}

/// A table whose columns are all NOT NULL but those named `*_null` below.
fn table(name: &str, columns: Vec<ColumnDef>, primary: &[&str]) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(col(name)).if_not_exists();
    for mut c in columns {
        t.col(&mut c);
    }
    let mut pk = Index::create();
    for p in primary {
        pk.col(col(p));
    }
    t.primary_key(&mut pk);
    t.to_owned()
}

fn text(name: &str, len: u32) -> ColumnDef {
    string_len(col(name), len)
}

fn int(name: &str) -> ColumnDef {
    big_integer(col(name))
}

fn time(name: &str) -> ColumnDef {
    timestamp_with_time_zone(col(name))
}

fn time_null(name: &str) -> ColumnDef {
    timestamp_with_time_zone_null(col(name))
}

async fn plain_index(m: &SchemaManager<'_>, name: &str, table: &str, cols: &[&str], unique: bool) -> Result<(), DbErr> {
    index(
        m,
        name,
        col(table),
        cols.iter().map(|c| col(c).into_iden()).collect(),
        unique,
    )
    .await
}

/// Sales reps, level changes, attributed sales, targets, the points ledgers, the
/// redemption catalog and redemptions.
#[derive(Debug)]
struct CreateProgrammeTables;

impl MigrationName for CreateProgrammeTables {
    fn name(&self) -> &str {
        "m20261203_000020_create_programme_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateProgrammeTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "sales_reps",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("user_id", 36),
                text("display_name", 200),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(m, "idx_sales_reps_user", "sales_reps", &["user_id"], true).await?;
        plain_index(m, "idx_sales_reps_partner", "sales_reps", &["partner_id", "id"], false).await?;

        m.create_table(table(
            "level_changes",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("from_level", 32),
                text("to_level", 32),
                text("reason", 16),
                int("trailing_minor"),
                time("changed_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_level_changes_partner",
            "level_changes",
            &["partner_id", "id"],
            false,
        )
        .await?;

        m.create_table(table(
            "attributed_sales",
            vec![
                text("id", 36),
                text("order_id", 64),
                text("kind", 8),
                text("reference", 80),
                text("partner_id", 64),
                text("rep_id", 36),
                int("amount_minor"),
                time("occurred_at"),
            ],
            &["id"],
        ))
        .await?;
        // Each paid order and each refund counts once, whatever delivers it twice.
        plain_index(
            m,
            "idx_attributed_sales_source",
            "attributed_sales",
            &["order_id", "kind", "reference"],
            true,
        )
        .await?;
        plain_index(
            m,
            "idx_attributed_sales_partner",
            "attributed_sales",
            &["partner_id", "occurred_at"],
            false,
        )
        .await?;
        plain_index(
            m,
            "idx_attributed_sales_rep",
            "attributed_sales",
            &["rep_id", "occurred_at"],
            false,
        )
        .await?;

        m.create_table(table(
            "targets",
            vec![
                text("id", 36),
                text("subject_kind", 8),
                text("partner_id", 64),
                text("rep_id", 36),
                text("period_kind", 8),
                time("period_start"),
                time("period_end"),
                int("amount_minor")
                    .check(Expr::col(col("amount_minor")).gt(0))
                    .to_owned(),
                time_null("attained_at"),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        // Two targets of one subject and period cannot both be created; overlaps of
        // other periods are refused under the subject's row lock.
        plain_index(
            m,
            "idx_targets_subject_period",
            "targets",
            &["subject_kind", "partner_id", "rep_id", "period_start", "period_kind"],
            true,
        )
        .await?;
        plain_index(
            m,
            "idx_targets_peers",
            "targets",
            &["subject_kind", "period_kind", "period_start"],
            false,
        )
        .await?;

        m.create_table(
            table(
                "ledgers",
                vec![
                    text("id", 80),
                    text("kind", 16),
                    text("partner_id", 64),
                    int("balance"),
                    int("debt"),
                    time("updated_at"),
                ],
                &["id"],
            )
            .check(Expr::col(col("balance")).gte(0))
            .check(Expr::col(col("debt")).gte(0))
            .to_owned(),
        )
        .await?;
        m.create_table(table(
            "ledger_entries",
            vec![
                text("id", 36),
                text("ledger_id", 80),
                text("kind", 16),
                int("points"),
                int("debt_change"),
                text("source", 160),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_ledger_entries_source",
            "ledger_entries",
            &["ledger_id", "source"],
            true,
        )
        .await?;
        m.create_table(
            table(
                "point_lots",
                vec![
                    text("id", 36),
                    text("ledger_id", 80),
                    int("points"),
                    int("remaining"),
                    time("credited_at"),
                    time("expires_at"),
                ],
                &["id"],
            )
            .check(Expr::col(col("remaining")).gte(0))
            .check(Expr::col(col("remaining")).lte(Expr::col(col("points"))))
            .to_owned(),
        )
        .await?;
        plain_index(
            m,
            "idx_point_lots_ledger",
            "point_lots",
            &["ledger_id", "expires_at"],
            false,
        )
        .await?;
        m.create_table(table(
            "order_points",
            vec![
                text("ledger_id", 80),
                text("order_id", 64),
                int("earned"),
                int("paid_minor"),
                int("refunded_minor"),
                int("reversed"),
            ],
            &["ledger_id", "order_id"],
        ))
        .await?;

        m.create_table(
            table(
                "catalog_items",
                vec![
                    text("id", 36),
                    text("category", 16),
                    text("ledger_kind", 16),
                    text("display_name", 200),
                    int("points_price"),
                    big_integer_null(col("stock")),
                    time("created_at"),
                ],
                &["id"],
            )
            .check(Expr::col(col("stock")).gte(0))
            .to_owned(),
        )
        .await?;
        m.create_table(table(
            "redemptions",
            vec![
                text("id", 36),
                text("ledger_id", 80),
                text("partner_id", 64),
                text("item_id", 36),
                int("quantity"),
                int("points"),
                text("state", 16),
                text("reason", 500),
                text("decided_by", 64),
                time("created_at"),
                time_null("decided_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(m, "idx_redemptions_ledger", "redemptions", &["ledger_id", "id"], false).await?;
        m.create_table(table(
            "redemption_takes",
            vec![text("redemption_id", 36), text("lot_id", 36), int("points")],
            &["redemption_id", "lot_id"],
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "redemption_takes",
            "redemptions",
            "catalog_items",
            "order_points",
            "point_lots",
            "ledger_entries",
            "ledgers",
            "targets",
            "attributed_sales",
            "level_changes",
            "sales_reps",
        ] {
            m.drop_table(Table::drop().table(col(t)).to_owned()).await?;
        }
        Ok(())
    }
}

/// The price policy: discount rules, special discount requests and their trail.
#[derive(Debug)]
struct CreatePolicyTables;

impl MigrationName for CreatePolicyTables {
    fn name(&self) -> &str {
        "m20261203_000030_create_policy_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePolicyTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "discount_rules",
            vec![
                text("id", 36),
                text("kind", 16),
                // JSON array of {from_minor, to_minor, rate_bp}.
                text("bands", 4000),
                text("period_kind", 16),
                text("function", 16),
                int("rate_bp"),
                // Level codes separated by ','; empty: every level.
                text("levels", 400),
                time("valid_from"),
                time_null("valid_until"),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        m.create_table(table(
            "special_discounts",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("reference", 100),
                int("rate_bp"),
                int("ceiling_bp"),
                text("reason", 500),
                text("state", 16),
                text("consumed_reference", 100),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_special_discounts_partner",
            "special_discounts",
            &["partner_id", "id"],
            false,
        )
        .await?;
        // The trail: who decided what, when and why.
        m.create_table(table(
            "special_discount_decisions",
            vec![
                text("id", 36),
                text("special_discount_id", 36),
                text("decision", 16),
                text("actor", 200),
                text("reason", 500),
                time("decided_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_special_discount_decisions",
            "special_discount_decisions",
            &["special_discount_id", "id"],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["special_discount_decisions", "special_discounts", "discount_rules"] {
            m.drop_table(Table::drop().table(col(t)).to_owned()).await?;
        }
        Ok(())
    }
}

/// A discount rule's display name (rules created before it have none).
#[derive(Debug)]
struct AddDiscountRuleDisplayName;

impl MigrationName for AddDiscountRuleDisplayName {
    fn name(&self) -> &str {
        "m20261203_000040_add_discount_rule_display_name"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddDiscountRuleDisplayName {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(col("discount_rules"))
                .add_column(text("display_name", 200).default(""))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(col("discount_rules"))
                .drop_column(col("display_name"))
                .to_owned(),
        )
        .await
    }
}

/// The sales side: deal locks and the keys active locks hold, leads and their
/// offers, opportunities and their stage changes.
#[derive(Debug)]
struct CreateSalesTables;

impl MigrationName for CreateSalesTables {
    fn name(&self) -> &str {
        "m20261203_000041_create_sales_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSalesTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "deal_locks",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("subject_kind", 16),
                text("subject_ref", 100),
                text("customer_name", 200),
                text("customer_region", 32),
                text("customer_tax_id", 32),
                text("state", 16),
                text("registered_by", 200),
                time("created_at"),
                time("expires_at"),
                boolean(col("extended")),
                text("extension_reason", 500),
                time_null("ended_at"),
                text("end_reason", 500),
            ],
            &["id"],
        ))
        .await?;
        plain_index(m, "idx_deal_locks_partner", "deal_locks", &["partner_id", "id"], false).await?;
        plain_index(m, "idx_deal_locks_due", "deal_locks", &["state", "expires_at"], false).await?;
        // One row per normalised key of an active lock: the first insert wins.
        m.create_table(table(
            "deal_lock_keys",
            vec![text("key", 300), text("lock_id", 36)],
            &["key"],
        ))
        .await?;
        plain_index(m, "idx_deal_lock_keys_lock", "deal_lock_keys", &["lock_id"], false).await?;
        m.create_table(table(
            "leads",
            vec![
                text("id", 36),
                text("customer_name", 200),
                text("customer_region", 32),
                text("customer_tax_id", 32),
                text("customer_class", 4),
                int("annual_budget_minor"),
                int("special_budget_minor"),
                text("trend", 16),
                int("authority_score"),
                int("need_score"),
                text("need", 1000),
                int("money_score"),
                int("total_tenths"),
                time("scored_at"),
                text("state", 16),
                text("partner_id", 64),
                time_null("accept_deadline"),
                text("assignment_reason", 500),
                text("outcome_reason", 500),
                text("created_by", 200),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(m, "idx_leads_partner", "leads", &["partner_id", "state"], false).await?;
        plain_index(m, "idx_leads_due", "leads", &["state", "accept_deadline"], false).await?;
        m.create_table(table(
            "lead_offers",
            vec![
                text("id", 36),
                text("lead_id", 36),
                text("partner_id", 64),
                text("reason", 500),
                time("offered_at"),
                time("accept_deadline"),
                text("outcome", 16),
                text("outcome_reason", 500),
            ],
            &["id"],
        ))
        .await?;
        plain_index(m, "idx_lead_offers_lead", "lead_offers", &["lead_id", "id"], false).await?;
        m.create_table(table(
            "opportunities",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("rep_id", 36),
                text("title", 200),
                text("customer_name", 200),
                text("customer_region", 32),
                text("customer_tax_id", 32),
                int("amount_minor"),
                text("lead_id", 36),
                text("stage", 16),
                time("stage_since"),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_opportunities_partner",
            "opportunities",
            &["partner_id", "id"],
            false,
        )
        .await?;
        m.create_table(table(
            "opportunity_stage_changes",
            vec![
                text("id", 36),
                text("opportunity_id", 36),
                text("partner_id", 64),
                text("rep_id", 36),
                text("from_stage", 16),
                text("to_stage", 16),
                text("actor", 200),
                text("reason", 500),
                time("changed_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_stage_changes_opportunity",
            "opportunity_stage_changes",
            &["opportunity_id", "id"],
            false,
        )
        .await?;
        plain_index(
            m,
            "idx_stage_changes_partner",
            "opportunity_stage_changes",
            &["partner_id", "rep_id"],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "opportunity_stage_changes",
            "opportunities",
            "lead_offers",
            "leads",
            "deal_lock_keys",
            "deal_locks",
        ] {
            m.drop_table(Table::drop().table(col(t)).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct CreateVisitTables;

impl MigrationName for CreateVisitTables {
    fn name(&self) -> &str {
        "m20261204_000050_create_visit_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateVisitTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "visits",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("rep_id", 36),
                text("customer_name", 200),
                text("customer_region", 32),
                text("customer_key", 240),
                text("place", 500),
                int("latitude_e6"),
                int("longitude_e6"),
                time("check_in_at"),
                time_null("check_out_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_visits_partner",
            "visits",
            &["partner_id", "rep_id", "id"],
            false,
        )
        .await?;
        plain_index(
            m,
            "idx_visits_customer",
            "visits",
            &["partner_id", "customer_key"],
            false,
        )
        .await?;
        m.create_table(table(
            "key_customers",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("customer_name", 200),
                text("customer_region", 32),
                text("customer_key", 240),
                int("cycle_days"),
                time("since"),
                time_null("last_visit_at"),
                time_null("notified_due_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(
            m,
            "idx_key_customers_customer",
            "key_customers",
            &["partner_id", "customer_key"],
            true,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["key_customers", "visits"] {
            m.drop_table(Table::drop().table(col(t)).to_owned()).await?;
        }
        Ok(())
    }
}

/// Quotes: the range table, quotes with their lines, their trail; and the rep a
/// lead is assigned to within its partner.
#[derive(Debug)]
struct CreateQuoteTables;

impl MigrationName for CreateQuoteTables {
    fn name(&self) -> &str {
        "m20261204_000060_create_quote_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateQuoteTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "price_ranges",
            vec![
                text("id", 36),
                text("level", 64),
                text("customer_class", 1),
                text("relationship", 16),
                int("volume_from_minor"),
                int("min_discount_bp"),
                int("max_discount_bp"),
                text("updated_by", 200),
                time("updated_at"),
            ],
            &["id"],
        ))
        .await?;
        // One row per key: concurrent sets of the same key meet here.
        plain_index(
            m,
            "idx_price_ranges_key",
            "price_ranges",
            &["level", "customer_class", "relationship", "volume_from_minor"],
            true,
        )
        .await?;
        m.create_table(table(
            "quotes",
            vec![
                text("id", 36),
                text("partner_id", 64),
                text("opportunity_id", 36),
                text("customer_class", 1),
                text("relationship", 16),
                int("expected_volume_minor"),
                text("level", 64),
                text("price_range_id", 36),
                text("currency", 3),
                int("total_minor"),
                // The lines as JSON (they never change).
                ColumnDef::new(col("lines")).text().not_null().to_owned(),
                text("state", 20),
                time("valid_until"),
                text("order_id", 64),
                text("created_by", 200),
                time("created_at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(m, "idx_quotes_partner", "quotes", &["partner_id", "id"], false).await?;
        m.create_table(table(
            "quote_trail",
            vec![
                text("id", 36),
                text("quote_id", 36),
                text("action", 16),
                text("actor", 200),
                text("reason", 500),
                time("at"),
            ],
            &["id"],
        ))
        .await?;
        plain_index(m, "idx_quote_trail_quote", "quote_trail", &["quote_id", "id"], false).await?;
        m.alter_table(
            Table::alter()
                .table(col("leads"))
                .add_column(text("rep_id", 36).default("").to_owned())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(col("leads")).drop_column(col("rep_id")).to_owned())
            .await?;
        for t in ["quote_trail", "quotes", "price_ranges"] {
            m.drop_table(Table::drop().table(col(t)).to_owned()).await?;
        }
        Ok(())
    }
}
