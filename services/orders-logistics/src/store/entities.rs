//! sea-orm entities of orders-logistics' tables.

pub mod order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        /// UUID v7: ids sort by creation, which paging relies on.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Empty for guests.
        pub member_id: String,
        pub member_tier: String,
        pub channel: String,
        pub partner_id: String,
        pub sales_rep: String,
        pub store: String,
        pub currency: String,
        pub total_minor: i64,
        pub state: String,
        pub payment_reference: String,
        pub paid_minor: i64,
        pub paid_at: Option<DateTimeUtc>,
        pub refunded_minor: i64,
        pub carrier: String,
        pub tracking_number: String,
        pub shipped_at: Option<DateTimeUtc>,
        pub delivered_at: Option<DateTimeUtc>,
        /// Furthest tracking stage reached (1-4), 0 before the first scan.
        pub tracking_stage: i32,
        pub last_tracking_at: Option<DateTimeUtc>,
        pub cancel_reason: String,
        pub payment_due_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// For partner sales priced by the price policy: the special discount the
        /// order used (`partners/{p}/specialDiscounts/{id}`), if any.
        pub special_discount: String,
        /// For partner sales priced by the price policy: the partner's level.
        pub partner_level: String,
        /// For partner sales: the end customer's name; empty when the order names
        /// no customer.
        pub customer_name: String,
        pub customer_region: String,
        pub customer_tax_id: String,
        /// The coupon code redeemed for the order; empty when none.
        pub coupon_code: String,
        /// For partner sales placed from a quote: `partners/{p}/quotes/{id}`,
        /// unique (one order per quote); none otherwise.
        pub quote: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::line::Entity")]
        Lines,
    }

    impl Related<super::line::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Lines.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod line {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_lines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        pub ordinal: i32,
        pub quantity: i64,
        pub unit_minor: i64,
        /// Units in returns so far (requested or later).
        pub returned_quantity: i64,
        /// The line's discounts together (the line's total is `unit_minor` x
        /// `quantity` minus this).
        pub discount_minor: i64,
        /// The discounts, JSON `[{rule, rate_bp, amount_minor}]` in the order they
        /// applied; empty when there are none.
        pub discounts: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::order::Entity",
            from = "Column::OrderId",
            to = "super::order::Column::Id"
        )]
        Order,
    }

    impl Related<super::order::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Order.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order_event {
    use sea_orm::entity::prelude::*;

    /// The timeline: every state change and tracking event; never updated.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub order_id: String,
        pub kind: String,
        pub tracking_kind: String,
        pub detail: String,
        pub state: String,
        pub occurred_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order_return {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_returns")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub order_id: String,
        pub state: String,
        pub reason: String,
        pub refund_minor: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod return_line {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "return_lines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub return_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sku_code: String,
        pub quantity: i64,
        pub damaged: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rating {
    use sea_orm::entity::prelude::*;

    /// One per order: the key refuses a second.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_ratings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        pub satisfaction: i32,
        pub recommend: i32,
        pub comment: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod saga {
    use sea_orm::entity::prelude::*;

    /// The progress of placing an order, written before any remote step so that a
    /// crashed process can compensate on restart.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_sagas")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        /// Caller scope and request id: one saga per idempotent request.
        pub request_key: String,
        pub fingerprint: Vec<u8>,
        /// `started`, `done`, `failed`.
        pub state: String,
        /// Last step recorded: `started`, then `stored` (or `compensating`).
        pub step: String,
        pub error: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod stock_work {
    use sea_orm::entity::prelude::*;

    /// Stock that has to follow an order's state change in catalog (a cancellation
    /// gives back what the order holds, a received return puts goods back). Written
    /// in the transaction of the state change, so the intent survives a crash, and
    /// done from here until catalog has taken it: every catalog call it makes is
    /// idempotent, so doing it again after a crash counts nothing twice.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_stock_work")]
    pub struct Model {
        /// `cancel:{order_id}` or `return:{return_id}`: one per state change.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub order_id: String,
        /// `cancel` or `return`.
        pub kind: String,
        /// The return, for `return`; empty otherwise.
        pub return_id: String,
        /// `pending`, `done`, or `failed` (catalog refused it for good; logged).
        pub state: String,
        pub attempts: i32,
        pub last_error: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
