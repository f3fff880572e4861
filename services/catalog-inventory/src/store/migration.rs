//! Catalog-inventory's schema. Append-only migrations named
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
            Box::new(CreateCatalogTables),
            Box::new(CreatePricingTables),
            Box::new(CreateInventoryTables),
            Box::new(retail_kit::events::migration::PartialOutboxIndexes),
            Box::new(retail_kit::events::migration::OutboxPartitionKey),
            Box::new(CreateCouponTables),
        ]
    }
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    Category,
    TitlePartsJson,
    Title,
    MediaJson,
    Detail,
    Role,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ProductTags {
    Table,
    ProductId,
    Tag,
    Ordinal,
}

#[derive(DeriveIden)]
enum Skus {
    Table,
    Code,
    ProductId,
    AttributesJson,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Listings {
    Table,
    SkuCode,
    Channel,
    Listed,
    Actor,
    Reason,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ListingChanges {
    Table,
    Id,
    SkuCode,
    Channel,
    Listed,
    Actor,
    Reason,
    CreatedAt,
}

async fn index(m: &SchemaManager<'_>, name: &str, table: impl IntoIden, cols: Vec<DynIden>) -> Result<(), DbErr> {
    let mut idx = Index::create();
    idx.name(name).table(table).if_not_exists();
    for col in cols {
        idx.col(col);
    }
    m.create_index(idx.to_owned()).await
}

#[derive(Debug)]
struct CreateCatalogTables;

impl MigrationName for CreateCatalogTables {
    fn name(&self) -> &str {
        "m20261123_000010_create_catalog_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateCatalogTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Products::Table)
                .if_not_exists()
                .col(string_len(Products::Id, 36).primary_key())
                .col(string_len(Products::Category, 200))
                .col(text(Products::TitlePartsJson))
                .col(string_len(Products::Title, 2000))
                .col(text(Products::MediaJson))
                .col(text(Products::Detail))
                .col(string_len(Products::Role, 16))
                .col(timestamp_with_time_zone(Products::CreatedAt))
                .col(timestamp_with_time_zone(Products::UpdatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_products_category",
            Products::Table,
            vec![Products::Category.into_iden()],
        )
        .await?;
        index(
            m,
            "idx_products_role",
            Products::Table,
            vec![Products::Role.into_iden()],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ProductTags::Table)
                .if_not_exists()
                .col(string_len(ProductTags::ProductId, 36))
                .col(string_len(ProductTags::Tag, 200))
                .col(integer(ProductTags::Ordinal))
                .primary_key(Index::create().col(ProductTags::ProductId).col(ProductTags::Tag))
                .foreign_key(
                    ForeignKey::create()
                        .from(ProductTags::Table, ProductTags::ProductId)
                        .to(Products::Table, Products::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_product_tags_tag",
            ProductTags::Table,
            vec![ProductTags::Tag.into_iden()],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Skus::Table)
                .if_not_exists()
                .col(string_len(Skus::Code, 64).primary_key())
                .col(string_len(Skus::ProductId, 36))
                .col(text(Skus::AttributesJson))
                .col(timestamp_with_time_zone(Skus::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Skus::Table, Skus::ProductId)
                        .to(Products::Table, Products::Id),
                )
                .to_owned(),
        )
        .await?;
        index(m, "idx_skus_product", Skus::Table, vec![Skus::ProductId.into_iden()]).await?;

        m.create_table(
            Table::create()
                .table(Listings::Table)
                .if_not_exists()
                .col(string_len(Listings::SkuCode, 64))
                .col(string_len(Listings::Channel, 16))
                .col(boolean(Listings::Listed))
                .col(string_len(Listings::Actor, 200))
                .col(string_len(Listings::Reason, 200))
                .col(timestamp_with_time_zone(Listings::UpdatedAt))
                .primary_key(Index::create().col(Listings::SkuCode).col(Listings::Channel))
                .foreign_key(
                    ForeignKey::create()
                        .from(Listings::Table, Listings::SkuCode)
                        .to(Skus::Table, Skus::Code),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_listings_channel",
            Listings::Table,
            vec![Listings::Channel.into_iden(), Listings::Listed.into_iden()],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ListingChanges::Table)
                .if_not_exists()
                .col(string_len(ListingChanges::Id, 36).primary_key())
                .col(string_len(ListingChanges::SkuCode, 64))
                .col(string_len(ListingChanges::Channel, 16))
                .col(boolean(ListingChanges::Listed))
                .col(string_len(ListingChanges::Actor, 200))
                .col(string_len(ListingChanges::Reason, 200))
                .col(timestamp_with_time_zone(ListingChanges::CreatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_listing_changes_sku",
            ListingChanges::Table,
            vec![ListingChanges::SkuCode.into_iden(), ListingChanges::Id.into_iden()],
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            ListingChanges::Table.into_iden(),
            Listings::Table.into_iden(),
            Skus::Table.into_iden(),
            ProductTags::Table.into_iden(),
            Products::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ListPrices {
    Table,
    SkuCode,
    Currency,
    AmountMinor,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TierDiscounts {
    Table,
    Tier,
    DiscountBp,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Promotions {
    Table,
    Id,
    DisplayName,
    AllSkus,
    DiscountBp,
    StartsAt,
    EndsAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PromotionSkus {
    Table,
    PromotionId,
    SkuCode,
}

#[derive(DeriveIden)]
enum PartnerPrices {
    Table,
    Level,
    SkuCode,
    Currency,
    AmountMinor,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CompetitorPrices {
    Table,
    SkuCode,
    Source,
    Currency,
    AmountMinor,
    OurAmountMinor,
    UndercutBp,
    Alert,
    ObservedAt,
}

#[derive(Debug)]
struct CreatePricingTables;

impl MigrationName for CreatePricingTables {
    fn name(&self) -> &str {
        "m20261123_000020_create_pricing_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePricingTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ListPrices::Table)
                .if_not_exists()
                .col(string_len(ListPrices::SkuCode, 64))
                .col(string_len(ListPrices::Currency, 3))
                .col(big_integer(ListPrices::AmountMinor))
                .col(timestamp_with_time_zone(ListPrices::UpdatedAt))
                .primary_key(Index::create().col(ListPrices::SkuCode).col(ListPrices::Currency))
                .check(Expr::col(ListPrices::AmountMinor).gt(0))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(TierDiscounts::Table)
                .if_not_exists()
                .col(string_len(TierDiscounts::Tier, 32).primary_key())
                .col(integer(TierDiscounts::DiscountBp))
                .col(timestamp_with_time_zone(TierDiscounts::UpdatedAt))
                .check(Expr::col(TierDiscounts::DiscountBp).between(0, 9_000))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Promotions::Table)
                .if_not_exists()
                .col(string_len(Promotions::Id, 36).primary_key())
                .col(string_len(Promotions::DisplayName, 200))
                .col(boolean(Promotions::AllSkus))
                .col(integer(Promotions::DiscountBp))
                .col(timestamp_with_time_zone(Promotions::StartsAt))
                .col(timestamp_with_time_zone(Promotions::EndsAt))
                .col(timestamp_with_time_zone(Promotions::CreatedAt))
                .check(Expr::col(Promotions::DiscountBp).between(1, 9_000))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_promotions_window",
            Promotions::Table,
            vec![Promotions::EndsAt.into_iden(), Promotions::StartsAt.into_iden()],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PromotionSkus::Table)
                .if_not_exists()
                .col(string_len(PromotionSkus::PromotionId, 36))
                .col(string_len(PromotionSkus::SkuCode, 64))
                .primary_key(
                    Index::create()
                        .col(PromotionSkus::PromotionId)
                        .col(PromotionSkus::SkuCode),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(PromotionSkus::Table, PromotionSkus::PromotionId)
                        .to(Promotions::Table, Promotions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_promotion_skus_sku",
            PromotionSkus::Table,
            vec![PromotionSkus::SkuCode.into_iden()],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PartnerPrices::Table)
                .if_not_exists()
                .col(string_len(PartnerPrices::Level, 32))
                .col(string_len(PartnerPrices::SkuCode, 64))
                .col(string_len(PartnerPrices::Currency, 3))
                .col(big_integer(PartnerPrices::AmountMinor))
                .col(timestamp_with_time_zone(PartnerPrices::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(PartnerPrices::Level)
                        .col(PartnerPrices::SkuCode)
                        .col(PartnerPrices::Currency),
                )
                .check(Expr::col(PartnerPrices::AmountMinor).gt(0))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(CompetitorPrices::Table)
                .if_not_exists()
                .col(string_len(CompetitorPrices::SkuCode, 64))
                .col(string_len(CompetitorPrices::Source, 200))
                .col(string_len(CompetitorPrices::Currency, 3))
                .col(big_integer(CompetitorPrices::AmountMinor))
                .col(big_integer(CompetitorPrices::OurAmountMinor))
                .col(integer(CompetitorPrices::UndercutBp))
                .col(boolean(CompetitorPrices::Alert))
                .col(timestamp_with_time_zone(CompetitorPrices::ObservedAt))
                .primary_key(
                    Index::create()
                        .col(CompetitorPrices::SkuCode)
                        .col(CompetitorPrices::Source),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            CompetitorPrices::Table.into_iden(),
            PartnerPrices::Table.into_iden(),
            PromotionSkus::Table.into_iden(),
            Promotions::Table.into_iden(),
            TierDiscounts::Table.into_iden(),
            ListPrices::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Warehouses {
    Table,
    Code,
    DisplayName,
    Priority,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Stock {
    Table,
    SkuCode,
    WarehouseCode,
    Total,
    Sellable,
    Reserved,
    Unsellable,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StockMovements {
    Table,
    Id,
    SkuCode,
    WarehouseCode,
    Kind,
    SellableDelta,
    ReservedDelta,
    UnsellableDelta,
    Reason,
    Actor,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    OrderId,
    Fingerprint,
    LinesJson,
    State,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ReservationAllocations {
    Table,
    OrderId,
    SkuCode,
    WarehouseCode,
    Ordinal,
    Quantity,
    ReturnedQuantity,
}

#[derive(Debug)]
struct CreateInventoryTables;

impl MigrationName for CreateInventoryTables {
    fn name(&self) -> &str {
        "m20261123_000030_create_inventory_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateInventoryTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Warehouses::Table)
                .if_not_exists()
                .col(string_len(Warehouses::Code, 32).primary_key())
                .col(string_len(Warehouses::DisplayName, 200))
                .col(integer(Warehouses::Priority))
                .col(timestamp_with_time_zone(Warehouses::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Stock::Table)
                .if_not_exists()
                .col(string_len(Stock::SkuCode, 64))
                .col(string_len(Stock::WarehouseCode, 32))
                .col(big_integer(Stock::Total))
                .col(big_integer(Stock::Sellable))
                .col(big_integer(Stock::Reserved))
                .col(big_integer(Stock::Unsellable))
                .col(timestamp_with_time_zone(Stock::UpdatedAt))
                .primary_key(Index::create().col(Stock::SkuCode).col(Stock::WarehouseCode))
                .foreign_key(
                    ForeignKey::create()
                        .from(Stock::Table, Stock::SkuCode)
                        .to(Skus::Table, Skus::Code),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Stock::Table, Stock::WarehouseCode)
                        .to(Warehouses::Table, Warehouses::Code),
                )
                // The stock formula and non-negative parts hold in every committed
                // state, whatever the code does: the database refuses the rest.
                .check(
                    Expr::col(Stock::Total).eq(Expr::col(Stock::Sellable)
                        .add(Expr::col(Stock::Reserved))
                        .add(Expr::col(Stock::Unsellable))),
                )
                .check(Expr::col(Stock::Sellable).gte(0))
                .check(Expr::col(Stock::Reserved).gte(0))
                .check(Expr::col(Stock::Unsellable).gte(0))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(StockMovements::Table)
                .if_not_exists()
                .col(string_len(StockMovements::Id, 36).primary_key())
                .col(string_len(StockMovements::SkuCode, 64))
                .col(string_len(StockMovements::WarehouseCode, 32))
                .col(string_len(StockMovements::Kind, 16))
                .col(big_integer(StockMovements::SellableDelta))
                .col(big_integer(StockMovements::ReservedDelta))
                .col(big_integer(StockMovements::UnsellableDelta))
                .col(string_len(StockMovements::Reason, 200))
                .col(string_len(StockMovements::Actor, 200))
                .col(timestamp_with_time_zone(StockMovements::CreatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_stock_movements_sku",
            StockMovements::Table,
            vec![StockMovements::SkuCode.into_iden(), StockMovements::Id.into_iden()],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Reservations::Table)
                .if_not_exists()
                .col(string_len(Reservations::OrderId, 128).primary_key())
                .col(binary(Reservations::Fingerprint))
                .col(text(Reservations::LinesJson))
                .col(string_len(Reservations::State, 16))
                .col(timestamp_with_time_zone(Reservations::ExpiresAt))
                .col(timestamp_with_time_zone(Reservations::CreatedAt))
                .col(timestamp_with_time_zone(Reservations::UpdatedAt))
                .to_owned(),
        )
        .await?;
        // The sweeper looks for active reservations past their time.
        index(
            m,
            "idx_reservations_state_expiry",
            Reservations::Table,
            vec![Reservations::State.into_iden(), Reservations::ExpiresAt.into_iden()],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ReservationAllocations::Table)
                .if_not_exists()
                .col(string_len(ReservationAllocations::OrderId, 128))
                .col(string_len(ReservationAllocations::SkuCode, 64))
                .col(string_len(ReservationAllocations::WarehouseCode, 32))
                .col(integer(ReservationAllocations::Ordinal))
                .col(big_integer(ReservationAllocations::Quantity))
                .col(big_integer(ReservationAllocations::ReturnedQuantity))
                .primary_key(
                    Index::create()
                        .col(ReservationAllocations::OrderId)
                        .col(ReservationAllocations::SkuCode)
                        .col(ReservationAllocations::WarehouseCode),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(ReservationAllocations::Table, ReservationAllocations::OrderId)
                        .to(Reservations::Table, Reservations::OrderId)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .check(Expr::col(ReservationAllocations::Quantity).gt(0))
                .check(Expr::col(ReservationAllocations::ReturnedQuantity).gte(0))
                .check(
                    Expr::col(ReservationAllocations::ReturnedQuantity)
                        .lte(Expr::col(ReservationAllocations::Quantity)),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            ReservationAllocations::Table.into_iden(),
            Reservations::Table.into_iden(),
            StockMovements::Table.into_iden(),
            Stock::Table.into_iden(),
            Warehouses::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Coupons {
    Table,
    Id,
    DisplayName,
    Kind,
    PercentOffBp,
    AmountOffMinor,
    Currency,
    StartsAt,
    EndsAt,
    SkusJson,
    CategoriesJson,
    ChannelsJson,
    MinOrderMinor,
    UsageCap,
    DisabledAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CouponCodes {
    Table,
    Code,
    CouponId,
    MemberId,
    UsageCap,
    UsedCount,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CouponRedemptions {
    Table,
    OrderId,
    Code,
    CouponId,
    MemberId,
    State,
    CreatedAt,
    UpdatedAt,
}

/// Coupons, their codes (a shared coupon's one code, or one per member) with their
/// uses, and the redemptions by order. A code's uses stay within its cap by CHECK.
struct CreateCouponTables;

impl MigrationName for CreateCouponTables {
    fn name(&self) -> &str {
        "m20261204_000040_create_coupon_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateCouponTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Coupons::Table)
                .if_not_exists()
                .col(string_len(Coupons::Id, 36).primary_key())
                .col(string_len(Coupons::DisplayName, 200))
                .col(string_len(Coupons::Kind, 16))
                .col(integer(Coupons::PercentOffBp))
                .col(big_integer(Coupons::AmountOffMinor))
                .col(string_len(Coupons::Currency, 3))
                .col(timestamp_with_time_zone(Coupons::StartsAt))
                .col(timestamp_with_time_zone(Coupons::EndsAt))
                .col(text(Coupons::SkusJson))
                .col(text(Coupons::CategoriesJson))
                .col(text(Coupons::ChannelsJson))
                .col(big_integer(Coupons::MinOrderMinor))
                .col(big_integer(Coupons::UsageCap))
                .col(timestamp_with_time_zone_null(Coupons::DisabledAt))
                .col(timestamp_with_time_zone(Coupons::CreatedAt))
                .check(Expr::col(Coupons::PercentOffBp).between(0, 10_000))
                .check(Expr::col(Coupons::AmountOffMinor).gte(0))
                .check(Expr::col(Coupons::MinOrderMinor).gte(0))
                .check(Expr::col(Coupons::UsageCap).gte(0))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(CouponCodes::Table)
                .if_not_exists()
                .col(string_len(CouponCodes::Code, 32).primary_key())
                .col(string_len(CouponCodes::CouponId, 36))
                .col(string_len(CouponCodes::MemberId, 64))
                .col(big_integer(CouponCodes::UsageCap))
                .col(big_integer(CouponCodes::UsedCount))
                .col(timestamp_with_time_zone(CouponCodes::CreatedAt))
                .check(Expr::col(CouponCodes::UsedCount).gte(0))
                .check(Expr::col(CouponCodes::UsedCount).lte(Expr::col(CouponCodes::UsageCap)))
                .foreign_key(
                    ForeignKey::create()
                        .from(CouponCodes::Table, CouponCodes::CouponId)
                        .to(Coupons::Table, Coupons::Id),
                )
                .to_owned(),
        )
        .await?;
        // One code per coupon and member (a shared coupon's code has no member).
        m.create_index(
            Index::create()
                .name("uq_coupon_codes_member")
                .table(CouponCodes::Table)
                .col(CouponCodes::CouponId)
                .col(CouponCodes::MemberId)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(CouponRedemptions::Table)
                .if_not_exists()
                .col(string_len(CouponRedemptions::OrderId, 128).primary_key())
                .col(string_len(CouponRedemptions::Code, 32))
                .col(string_len(CouponRedemptions::CouponId, 36))
                .col(string_len(CouponRedemptions::MemberId, 64))
                .col(string_len(CouponRedemptions::State, 16))
                .col(timestamp_with_time_zone(CouponRedemptions::CreatedAt))
                .col(timestamp_with_time_zone(CouponRedemptions::UpdatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "idx_coupon_redemptions_code",
            CouponRedemptions::Table,
            vec![CouponRedemptions::Code.into_iden()],
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            CouponRedemptions::Table.into_iden(),
            CouponCodes::Table.into_iden(),
            Coupons::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
