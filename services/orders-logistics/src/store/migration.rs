//! Orders-logistics' schema. Append-only migrations named
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
            Box::new(CreateOrderTables),
            Box::new(retail_kit::events::migration::PartialOutboxIndexes),
            Box::new(DropOrdersDueIndex),
            Box::new(CreateStockWork),
            Box::new(retail_kit::events::migration::OutboxPartitionKey),
            Box::new(AddPartnerPricing),
            Box::new(AddOrderCustomer),
            Box::new(AddOrderCoupon),
            Box::new(AddOrderQuote),
        ]
    }
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    MemberId,
    MemberTier,
    Channel,
    PartnerId,
    SalesRep,
    Store,
    Currency,
    TotalMinor,
    State,
    PaymentReference,
    PaidMinor,
    PaidAt,
    RefundedMinor,
    Carrier,
    TrackingNumber,
    ShippedAt,
    DeliveredAt,
    TrackingStage,
    LastTrackingAt,
    CancelReason,
    PaymentDueAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrderLines {
    Table,
    OrderId,
    SkuCode,
    Ordinal,
    Quantity,
    UnitMinor,
    ReturnedQuantity,
}

#[derive(DeriveIden)]
enum OrderEvents {
    Table,
    Id,
    OrderId,
    Kind,
    TrackingKind,
    Detail,
    State,
    OccurredAt,
}

#[derive(DeriveIden)]
enum OrderReturns {
    Table,
    Id,
    OrderId,
    State,
    Reason,
    RefundMinor,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ReturnLines {
    Table,
    ReturnId,
    SkuCode,
    Quantity,
    Damaged,
}

#[derive(DeriveIden)]
enum OrderRatings {
    Table,
    OrderId,
    Satisfaction,
    Recommend,
    Comment,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OrderSagas {
    Table,
    OrderId,
    RequestKey,
    Fingerprint,
    State,
    Step,
    Error,
    CreatedAt,
    UpdatedAt,
}

use retail_kit::db::create_index as index;

#[derive(Debug)]
struct CreateOrderTables;

impl MigrationName for CreateOrderTables {
    fn name(&self) -> &str {
        "m20261123_000010_create_order_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOrderTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Orders::Table)
                .if_not_exists()
                .col(string_len(Orders::Id, 36).primary_key())
                .col(string_len(Orders::MemberId, 36))
                .col(string_len(Orders::MemberTier, 32))
                .col(string_len(Orders::Channel, 16))
                .col(string_len(Orders::PartnerId, 64))
                .col(string_len(Orders::SalesRep, 64))
                .col(string_len(Orders::Store, 32))
                .col(string_len(Orders::Currency, 3))
                .col(big_integer(Orders::TotalMinor))
                .col(string_len(Orders::State, 24))
                .col(string_len(Orders::PaymentReference, 128))
                .col(big_integer(Orders::PaidMinor))
                .col(timestamp_with_time_zone_null(Orders::PaidAt))
                .col(big_integer(Orders::RefundedMinor))
                .col(string_len(Orders::Carrier, 32))
                .col(string_len(Orders::TrackingNumber, 64))
                .col(timestamp_with_time_zone_null(Orders::ShippedAt))
                .col(timestamp_with_time_zone_null(Orders::DeliveredAt))
                .col(integer(Orders::TrackingStage))
                .col(timestamp_with_time_zone_null(Orders::LastTrackingAt))
                .col(string_len(Orders::CancelReason, 200))
                .col(timestamp_with_time_zone(Orders::PaymentDueAt))
                .col(timestamp_with_time_zone(Orders::CreatedAt))
                .col(timestamp_with_time_zone(Orders::UpdatedAt))
                // Never refund more than was paid.
                .check(Expr::col(Orders::RefundedMinor).gte(0))
                .check(Expr::col(Orders::RefundedMinor).lte(Expr::col(Orders::PaidMinor)))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("idx_orders_member", Orders::MemberId),
            ("idx_orders_partner", Orders::PartnerId),
            ("idx_orders_state", Orders::State),
        ] {
            index(
                m,
                name,
                Orders::Table,
                vec![col.into_iden(), Orders::Id.into_iden()],
                false,
            )
            .await?;
        }
        index(
            m,
            "idx_orders_due",
            Orders::Table,
            vec![Orders::State.into_iden(), Orders::PaymentDueAt.into_iden()],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(OrderLines::Table)
                .if_not_exists()
                .col(string_len(OrderLines::OrderId, 36))
                .col(string_len(OrderLines::SkuCode, 64))
                .col(integer(OrderLines::Ordinal))
                .col(big_integer(OrderLines::Quantity))
                .col(big_integer(OrderLines::UnitMinor))
                .col(big_integer(OrderLines::ReturnedQuantity))
                .primary_key(Index::create().col(OrderLines::OrderId).col(OrderLines::SkuCode))
                .foreign_key(
                    ForeignKey::create()
                        .from(OrderLines::Table, OrderLines::OrderId)
                        .to(Orders::Table, Orders::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                // Never more back than bought.
                .check(Expr::col(OrderLines::Quantity).gt(0))
                .check(Expr::col(OrderLines::ReturnedQuantity).gte(0))
                .check(Expr::col(OrderLines::ReturnedQuantity).lte(Expr::col(OrderLines::Quantity)))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(OrderEvents::Table)
                .if_not_exists()
                .col(string_len(OrderEvents::Id, 36).primary_key())
                .col(string_len(OrderEvents::OrderId, 36))
                .col(string_len(OrderEvents::Kind, 24))
                .col(string_len(OrderEvents::TrackingKind, 24))
                .col(string_len(OrderEvents::Detail, 300))
                .col(string_len(OrderEvents::State, 24))
                .col(timestamp_with_time_zone(OrderEvents::OccurredAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_order_events_order",
            OrderEvents::Table,
            vec![OrderEvents::OrderId.into_iden(), OrderEvents::Id.into_iden()],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(OrderReturns::Table)
                .if_not_exists()
                .col(string_len(OrderReturns::Id, 36).primary_key())
                .col(string_len(OrderReturns::OrderId, 36))
                .col(string_len(OrderReturns::State, 16))
                .col(string_len(OrderReturns::Reason, 500))
                .col(big_integer(OrderReturns::RefundMinor))
                .col(timestamp_with_time_zone(OrderReturns::CreatedAt))
                .col(timestamp_with_time_zone(OrderReturns::UpdatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_order_returns_order",
            OrderReturns::Table,
            vec![OrderReturns::OrderId.into_iden()],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ReturnLines::Table)
                .if_not_exists()
                .col(string_len(ReturnLines::ReturnId, 36))
                .col(string_len(ReturnLines::SkuCode, 64))
                .col(big_integer(ReturnLines::Quantity))
                .col(boolean(ReturnLines::Damaged))
                .primary_key(Index::create().col(ReturnLines::ReturnId).col(ReturnLines::SkuCode))
                .foreign_key(
                    ForeignKey::create()
                        .from(ReturnLines::Table, ReturnLines::ReturnId)
                        .to(OrderReturns::Table, OrderReturns::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(OrderRatings::Table)
                .if_not_exists()
                .col(string_len(OrderRatings::OrderId, 36).primary_key())
                .col(integer(OrderRatings::Satisfaction))
                .col(integer(OrderRatings::Recommend))
                .col(string_len(OrderRatings::Comment, 2000))
                .col(timestamp_with_time_zone(OrderRatings::CreatedAt))
                .check(Expr::col(OrderRatings::Satisfaction).between(1, 5))
                .check(Expr::col(OrderRatings::Recommend).between(0, 10))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(OrderSagas::Table)
                .if_not_exists()
                .col(string_len(OrderSagas::OrderId, 36).primary_key())
                .col(string_len(OrderSagas::RequestKey, 200))
                .col(binary(OrderSagas::Fingerprint))
                .col(string_len(OrderSagas::State, 16))
                .col(string_len(OrderSagas::Step, 16))
                .col(string_len(OrderSagas::Error, 500))
                .col(timestamp_with_time_zone(OrderSagas::CreatedAt))
                .col(timestamp_with_time_zone(OrderSagas::UpdatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_order_sagas_request",
            OrderSagas::Table,
            vec![OrderSagas::RequestKey.into_iden()],
            true,
        )
        .await?;
        index(
            m,
            "idx_order_sagas_state",
            OrderSagas::Table,
            vec![OrderSagas::State.into_iden(), OrderSagas::UpdatedAt.into_iden()],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            OrderSagas::Table.into_iden(),
            OrderRatings::Table.into_iden(),
            ReturnLines::Table.into_iden(),
            OrderReturns::Table.into_iden(),
            OrderEvents::Table.into_iden(),
            OrderLines::Table.into_iden(),
            Orders::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

/// Drops `idx_orders_due` (state, payment_due_at). Every order write paid for it
/// (place, pay and each later state change, none of which can be HOT while the state
/// is indexed), and only the expiry sweep read it: the sweep finds the unpaid orders
/// through `idx_orders_state` (state, id) and sorts the few still inside their
/// payment window by due time.
#[derive(Debug)]
struct DropOrdersDueIndex;

impl MigrationName for DropOrdersDueIndex {
    fn name(&self) -> &str {
        "m20261124_000020_drop_orders_due_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DropOrdersDueIndex {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("idx_orders_due")
                .table(Orders::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        index(
            m,
            "idx_orders_due",
            Orders::Table,
            vec![Orders::State.into_iden(), Orders::PaymentDueAt.into_iden()],
            false,
        )
        .await
    }
}

#[derive(DeriveIden)]
enum OrderStockWork {
    Table,
    Id,
    OrderId,
    Kind,
    ReturnId,
    State,
    Attempts,
    LastError,
    CreatedAt,
    UpdatedAt,
}

/// Creates `order_stock_work`: the stock each cancellation and received return owes
/// catalog, kept until catalog has it (see `store::stock_work`).
#[derive(Debug)]
struct CreateStockWork;

impl MigrationName for CreateStockWork {
    fn name(&self) -> &str {
        "m20261203_000030_create_order_stock_work"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateStockWork {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(OrderStockWork::Table)
                .if_not_exists()
                .col(string_len(OrderStockWork::Id, 80).primary_key())
                .col(string_len(OrderStockWork::OrderId, 36))
                .col(string_len(OrderStockWork::Kind, 16))
                .col(string_len(OrderStockWork::ReturnId, 36))
                .col(string_len(OrderStockWork::State, 16))
                .col(integer(OrderStockWork::Attempts))
                .col(string_len(OrderStockWork::LastError, 500))
                .col(timestamp_with_time_zone(OrderStockWork::CreatedAt))
                .col(timestamp_with_time_zone(OrderStockWork::UpdatedAt))
                .check(Expr::col(OrderStockWork::Kind).is_in(["cancel", "return"]))
                .check(Expr::col(OrderStockWork::State).is_in(["pending", "done", "failed"]))
                .to_owned(),
        )
        .await?;
        // The sweeper reads the pending work, oldest first.
        index(
            m,
            "idx_order_stock_work_state",
            OrderStockWork::Table,
            vec![OrderStockWork::State.into_iden(), OrderStockWork::UpdatedAt.into_iden()],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OrderStockWork::Table).to_owned())
            .await
    }
}

/// What partner orders priced by the price policy keep: the level and special
/// discount on the order, each line's discounts.
#[derive(Debug)]
struct AddPartnerPricing;

impl MigrationName for AddPartnerPricing {
    fn name(&self) -> &str {
        "m20261203_000040_add_partner_pricing"
    }
}

const PARTNER_PRICING_COLUMNS: [(&str, &str, u32); 4] = [
    ("orders", "special_discount", 200),
    ("orders", "partner_level", 64),
    ("order_lines", "discount_minor", 0),
    ("order_lines", "discounts", 4000),
];

#[async_trait::async_trait]
impl MigrationTrait for AddPartnerPricing {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite adds no more at once.
        for (table, column, len) in PARTNER_PRICING_COLUMNS {
            let def = if len == 0 {
                big_integer(Alias::new(column)).default(0).to_owned()
            } else {
                string_len(Alias::new(column), len).default("").to_owned()
            };
            m.alter_table(Table::alter().table(Alias::new(table)).add_column(def).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, column, _) in PARTNER_PRICING_COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(Alias::new(table))
                    .drop_column(Alias::new(column))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

/// The end customer a partner order names (empty when it names none).
#[derive(Debug)]
struct AddOrderCustomer;

impl MigrationName for AddOrderCustomer {
    fn name(&self) -> &str {
        "m20261204_000050_add_order_customer"
    }
}

const CUSTOMER_COLUMNS: [(&str, u32); 3] = [("customer_name", 200), ("customer_region", 32), ("customer_tax_id", 32)];

#[async_trait::async_trait]
impl MigrationTrait for AddOrderCustomer {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite adds no more at once.
        for (column, len) in CUSTOMER_COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("orders"))
                    .add_column(string_len(Alias::new(column), len).default("").to_owned())
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (column, _) in CUSTOMER_COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("orders"))
                    .drop_column(Alias::new(column))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

/// The coupon code a consumer order redeemed (empty when it names none).
#[derive(Debug)]
struct AddOrderCoupon;

impl MigrationName for AddOrderCoupon {
    fn name(&self) -> &str {
        "m20261204_000060_add_order_coupon"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddOrderCoupon {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("orders"))
                .add_column(string_len(Alias::new("coupon_code"), 32).default("").to_owned())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("orders"))
                .drop_column(Alias::new("coupon_code"))
                .to_owned(),
        )
        .await
    }
}

/// The quote a partner order was placed from: at most one order per quote.
#[derive(Debug)]
struct AddOrderQuote;

impl MigrationName for AddOrderQuote {
    fn name(&self) -> &str {
        "m20261204_000061_add_order_quote"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddOrderQuote {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("orders"))
                .add_column(string_len_null(Alias::new("quote"), 200))
                .to_owned(),
        )
        .await?;
        // NULLs (orders without a quote) never collide.
        m.create_index(
            Index::create()
                .name("idx_orders_quote")
                .table(Alias::new("orders"))
                .col(Alias::new("quote"))
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("idx_orders_quote")
                .table(Alias::new("orders"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Alias::new("orders"))
                .drop_column(Alias::new("quote"))
                .to_owned(),
        )
        .await
    }
}
