//! sea-orm entities of catalog-inventory's tables.

pub mod product {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "products")]
    pub struct Model {
        /// UUID v7: ids sort by creation, which paging relies on.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub category: String,
        /// JSON of `domain::codes::TitleParts`.
        pub title_parts_json: String,
        /// Composed from the parts; stored for search and reconciliation.
        pub title: String,
        /// JSON array of `{kind, uri}`.
        pub media_json: String,
        pub detail: String,
        /// Empty when no role is assigned.
        pub role: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod product_tag {
    use sea_orm::entity::prelude::*;

    /// A tag of a product, one row each so that lists can filter by tag.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "product_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub product_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag: String,
        /// Position in the product's list, to show tags in the order given.
        pub ordinal: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sku {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "skus")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        pub product_id: String,
        /// JSON object of variant attributes.
        pub attributes_json: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod listing {
    use sea_orm::entity::prelude::*;

    /// The current listing state of a SKU on a channel; no row = never listed.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "listings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel: String,
        pub listed: bool,
        pub actor: String,
        pub reason: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod listing_change {
    use sea_orm::entity::prelude::*;

    /// History of listing decisions; never updated.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "listing_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub sku_code: String,
        pub channel: String,
        pub listed: bool,
        pub actor: String,
        pub reason: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod list_price {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "list_prices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub currency: String,
        pub amount_minor: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tier_discount {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tier_discounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tier: String,
        pub discount_bp: i32,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod promotion {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "promotions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub display_name: String,
        /// True when it applies to every SKU (no rows in `promotion_skus`).
        pub all_skus: bool,
        pub discount_bp: i32,
        pub starts_at: DateTimeUtc,
        pub ends_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod promotion_sku {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "promotion_skus")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub promotion_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod partner_price {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "partner_prices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub level: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub currency: String,
        pub amount_minor: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod competitor_price {
    use sea_orm::entity::prelude::*;

    /// The latest observation per SKU and source; older ones are superseded.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "competitor_prices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub source: String,
        pub currency: String,
        pub amount_minor: i64,
        pub our_amount_minor: i64,
        pub undercut_bp: i32,
        pub alert: bool,
        pub observed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod warehouse {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "warehouses")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        pub display_name: String,
        pub priority: i32,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod stock {
    use sea_orm::entity::prelude::*;

    /// Stock of a SKU in a warehouse. CHECK constraints hold
    /// `total = sellable + reserved + unsellable` and every part `>= 0`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stock")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub warehouse_code: String,
        pub total: i64,
        pub sellable: i64,
        pub reserved: i64,
        pub unsellable: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::warehouse::Entity",
            from = "Column::WarehouseCode",
            to = "super::warehouse::Column::Code"
        )]
        Warehouse,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod stock_movement {
    use sea_orm::entity::prelude::*;

    /// Audit trail of receipts, adjustments, moves and returns; never updated.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stock_movements")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub sku_code: String,
        pub warehouse_code: String,
        pub kind: String,
        pub sellable_delta: i64,
        pub reserved_delta: i64,
        pub unsellable_delta: i64,
        pub reason: String,
        pub actor: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod reservation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reservations")]
    pub struct Model {
        /// One reservation per order: the key that makes reserving idempotent.
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        /// Hash of the requested lines: a replay with other lines is refused.
        pub fingerprint: Vec<u8>,
        /// JSON array of `[sku_code, quantity]` as asked.
        pub lines_json: String,
        /// `active`, `committed`, `released`, `expired`.
        pub state: String,
        pub expires_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::allocation::Entity")]
        Allocations,
    }

    impl Related<super::allocation::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Allocations.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod allocation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reservation_allocations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub warehouse_code: String,
        /// Position in the reservation, so allocations read back in plan order.
        pub ordinal: i32,
        pub quantity: i64,
        pub returned_quantity: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::reservation::Entity",
            from = "Column::OrderId",
            to = "super::reservation::Column::OrderId"
        )]
        Reservation,
    }

    impl Related<super::reservation::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Reservation.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod coupon {
    use sea_orm::entity::prelude::*;

    /// A coupon; its scope lists are JSON arrays (SKU codes, category paths,
    /// channel names).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "coupons")]
    pub struct Model {
        /// UUID v7: ids sort by creation, which paging relies on.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub display_name: String,
        /// `single_use` or `shared`.
        pub kind: String,
        /// 0 for a fixed amount.
        pub percent_off_bp: i32,
        /// 0 for a percentage.
        pub amount_off_minor: i64,
        /// Of the fixed amount and the minimum order; empty when neither is set.
        pub currency: String,
        pub starts_at: DateTimeUtc,
        pub ends_at: DateTimeUtc,
        pub skus_json: String,
        pub categories_json: String,
        pub channels_json: String,
        /// 0: no minimum.
        pub min_order_minor: i64,
        /// Shared coupons' cap; 0 for single-use ones (each code has cap 1).
        pub usage_cap: i64,
        pub disabled_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod coupon_code {
    use sea_orm::entity::prelude::*;

    /// A code and its uses: `used_count <= usage_cap` by CHECK, and every use is one
    /// conditional update.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "coupon_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        pub coupon_id: String,
        /// The member it was issued to; empty for a shared coupon's code.
        pub member_id: String,
        pub usage_cap: i64,
        pub used_count: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod coupon_redemption {
    use sea_orm::entity::prelude::*;

    /// The use of a code by an order, one per order.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "coupon_redemptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        pub code: String,
        pub coupon_id: String,
        /// Empty for a guest.
        pub member_id: String,
        /// `active` or `released`.
        pub state: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
