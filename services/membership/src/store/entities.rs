//! sea-orm entities of membership's tables.

pub mod member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Personal data: emptied on erasure.
        pub display_name: String,
        pub gender: String,
        pub birth_date: Option<String>,
        pub region: String,
        /// JSON object of further static attributes (personal data).
        pub attributes_json: String,
        pub tier: String,
        /// Usable points; equals the sum of the ledger entries (same transaction).
        pub points_balance: i64,
        /// Reversed points not yet repaid.
        pub points_debt: i64,
        pub registered_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub erased_at: Option<DateTimeUtc>,
        /// Increases with every committed change; guards the cache.
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod identifier {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "member_identifiers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub value: String,
        pub member_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "member_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub member_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub path: String,
        pub value: String,
        pub dynamic: bool,
        pub source: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod consent {
    //! Every consent decision; the current one per channel is the newest.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consent_decisions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub member_id: String,
        pub channel: String,
        pub granted: bool,
        pub source: String,
        pub decided_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod purchase {
    //! Paid orders and refunds as membership counts them.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "purchases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub member_id: String,
        pub order_id: String,
        /// `paid` or `refund`.
        pub kind: String,
        /// '' for the paid record (one per order); the request id for a refund.
        pub reference: String,
        /// Positive for paid, negative for refunds.
        pub amount_minor: i64,
        pub currency: String,
        pub channel: String,
        pub occurred_at: DateTimeUtc,
        /// Points earned (positive) or reversed (negative) by this record.
        pub points: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod points_lot {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "points_lots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub member_id: String,
        /// The order that earned it; '' for grants.
        pub order_id: String,
        pub earned_at: DateTimeUtc,
        /// Usable before this instant.
        pub expires_at: DateTimeUtc,
        pub points: i64,
        pub remaining: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod points_entry {
    //! Immutable ledger entries; the balance is their sum.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "points_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub member_id: String,
        /// `earn`, `grant`, `redeem`, `expire`, `reverse`.
        pub kind: String,
        pub points: i64,
        pub reference: String,
        pub lot_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tier_change {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tier_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub member_id: String,
        pub from_tier: String,
        pub to_tier: String,
        pub reason: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
