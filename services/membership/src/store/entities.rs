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
