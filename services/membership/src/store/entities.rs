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
        /// The survivor this member was merged into; it answers as the survivor.
        pub merged_into: Option<String>,
        pub merged_at: Option<DateTimeUtc>,
        /// The RFM segment analytics last scored the member in (`MemberScored`).
        pub rfm_segment: Option<String>,
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
        /// When the tag stops being true; `None` = never.
        pub expires_at: Option<DateTimeUtc>,
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

pub mod segment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "engagement_segments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub display_name: String,
        /// The domain's `Rule` as JSON.
        pub rule_json: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod campaign {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "engagement_campaigns")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub display_name: String,
        pub segment_id: String,
        pub channel: String,
        pub trigger_kind: String,
        pub send_at: Option<DateTimeUtc>,
        pub action_kind: String,
        pub message_template: String,
        pub bonus_points: i64,
        pub control_share_bp: i32,
        pub window_start: DateTimeUtc,
        pub window_end: DateTimeUtc,
        /// 0 = no limit.
        pub budget_contacts: i64,
        /// What one contact costs (message and bonus), in the loyalty currency.
        pub cost_per_contact_minor: i64,
        pub state: String,
        /// A planned campaign's audience was contacted.
        pub sent: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// The catalog coupon (its id) a coupon campaign hands out.
        pub coupon_id: Option<String>,
        /// A recurring planned campaign's schedule (`domain::schedule::Schedule`
        /// as JSON).
        pub schedule_json: Option<String>,
        /// When a planned campaign contacts its audience next; `None` once nothing
        /// is due.
        pub next_run_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod contact {
    //! One decision per campaign and member: contacted, control, capped, over budget.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "engagement_contacts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub campaign_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub member_id: String,
        pub outcome: String,
        pub decided_at: DateTimeUtc,
        /// The member's code of the campaign's coupon, when contacted by a coupon
        /// campaign.
        pub coupon_code: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod message {
    //! The outbox of rendered messages; `sent_at` is set when the sender took one,
    //! `dead_at` when the last try failed; `attempts` and `next_attempt_at` pace the
    //! tries.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "engagement_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub campaign_id: String,
        pub member_id: String,
        pub channel: String,
        pub body: String,
        pub created_at: DateTimeUtc,
        pub sent_at: Option<DateTimeUtc>,
        pub attempts: i32,
        pub next_attempt_at: Option<DateTimeUtc>,
        pub dead_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod member_merge {
    //! The record of each merge; a member is merged at most once.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "member_merges")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub survivor_id: String,
        pub merged_id: String,
        pub points_transferred: i64,
        pub debt_transferred: i64,
        pub identifiers_moved: i32,
        pub purchases_moved: i32,
        pub reason: String,
        pub created_by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod anonymous_contact {
    //! People seen at touchpoints who are not (yet) members: no personal data.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "anonymous_contacts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub created_at: DateTimeUtc,
        pub last_seen_at: DateTimeUtc,
        /// The member it turned out to be.
        pub merged_into: Option<String>,
        pub merged_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod contact_identifier {
    //! The ids an anonymous contact was seen with; each belongs to one contact.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "contact_identifiers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub value: String,
        pub contact_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod touchpoint {
    //! Touches of members and contacts; a merged contact's stay, with the member set.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "touchpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub member_id: Option<String>,
        pub contact_id: Option<String>,
        pub scene: String,
        pub place: String,
        pub kind: String,
        /// The SKU viewed or tried; '' otherwise.
        pub product: String,
        pub occurred_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod member_lifecycle {
    //! Each member's lifecycle state as last seen by the periodic run.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "member_lifecycle")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub member_id: String,
        pub state: String,
        pub changed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
