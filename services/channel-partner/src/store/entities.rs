//! sea-orm entities of channel-partner's tables.

pub mod partner {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "partners")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub display_name: String,
        pub partner_type: String,
        pub region: String,
        pub state: String,
        pub level: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod status_change {
    use sea_orm::entity::prelude::*;

    /// One change of a partner's status, with who made it and why (append-only).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "partner_status_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        /// Empty for the creation.
        pub from_state: String,
        pub to_state: String,
        pub reason: String,
        /// The principal's subject.
        pub actor: String,
        pub changed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sales_rep {
    use sea_orm::entity::prelude::*;

    /// A sales rep; `partner_id` empty for the brand's own.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sales_reps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub user_id: String,
        pub display_name: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod level_change {
    use sea_orm::entity::prelude::*;

    /// One change of a partner's level (append-only).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "level_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub from_level: String,
        pub to_level: String,
        pub reason: String,
        pub trailing_minor: i64,
        pub changed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod sale {
    use sea_orm::entity::prelude::*;

    /// A paid order or a refund attributed to a partner (and maybe a rep); `amount_minor` is negative for refunds. One row per (order, kind, reference): each source counts once.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "attributed_sales")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub order_id: String,
        pub kind: String,
        pub reference: String,
        pub partner_id: String,
        pub rep_id: String,
        pub amount_minor: i64,
        pub occurred_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod target {
    use sea_orm::entity::prelude::*;

    /// A target of a partner (`rep_id` empty) or of a rep (`partner_id` its partner's, empty for the brand's reps).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "targets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub subject_kind: String,
        pub partner_id: String,
        pub rep_id: String,
        pub period_kind: String,
        pub period_start: DateTimeUtc,
        pub period_end: DateTimeUtc,
        pub amount_minor: i64,
        pub attained_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod ledger {
    use sea_orm::entity::prelude::*;

    /// A points ledger: `id` is its owner's resource name. balance = sum(entries.points), debt = sum(entries.debt_change); neither negative.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledgers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub partner_id: String,
        pub balance: i64,
        pub debt: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod entry {
    use sea_orm::entity::prelude::*;

    /// One immutable ledger entry; `source` is unique per ledger.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledger_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub ledger_id: String,
        pub kind: String,
        pub points: i64,
        pub debt_change: i64,
        pub source: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod lot {
    use sea_orm::entity::prelude::*;

    /// Points credited together, spent first-expiring-first.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "point_lots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub ledger_id: String,
        pub points: i64,
        pub remaining: i64,
        pub credited_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod order_points {
    use sea_orm::entity::prelude::*;

    /// What an order earned on a ledger, and what its refunds took back.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_points")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub ledger_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        pub earned: i64,
        pub paid_minor: i64,
        pub refunded_minor: i64,
        pub reversed: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod catalog_item {
    use sea_orm::entity::prelude::*;

    /// An item of the redemption catalog; `stock` NULL = unlimited.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "catalog_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub category: String,
        pub ledger_kind: String,
        pub display_name: String,
        pub points_price: i64,
        pub stock: Option<i64>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod redemption {
    use sea_orm::entity::prelude::*;

    /// A redemption of a ledger's points for a catalog item.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "redemptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub ledger_id: String,
        pub partner_id: String,
        pub item_id: String,
        pub quantity: i64,
        pub points: i64,
        pub state: String,
        pub reason: String,
        pub decided_by: String,
        pub created_at: DateTimeUtc,
        pub decided_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod redemption_take {
    use sea_orm::entity::prelude::*;

    /// The lots a redemption took from, so a rejection gives them back.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "redemption_takes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub redemption_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub lot_id: String,
        pub points: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod discount_rule {
    use sea_orm::entity::prelude::*;

    /// A price-policy discount rule; `bands` is JSON, `levels` comma-separated.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "discount_rules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub bands: String,
        pub period_kind: String,
        pub function: String,
        pub rate_bp: i64,
        pub levels: String,
        pub valid_from: DateTimeUtc,
        pub valid_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub display_name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod special_discount {
    use sea_orm::entity::prelude::*;

    /// A partner's special discount request; `state` moves by conditional updates.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "special_discounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub reference: String,
        pub rate_bp: i64,
        pub ceiling_bp: i64,
        pub reason: String,
        pub state: String,
        pub consumed_reference: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod special_discount_decision {
    use sea_orm::entity::prelude::*;

    /// One step of a special discount request's trail.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "special_discount_decisions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub special_discount_id: String,
        pub decision: String,
        pub actor: String,
        pub reason: String,
        pub decided_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod deal_lock {
    use sea_orm::entity::prelude::*;

    /// A deal registration; `state` moves by conditional updates.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deal_locks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub subject_kind: String,
        pub subject_ref: String,
        pub customer_name: String,
        pub customer_region: String,
        pub customer_tax_id: String,
        pub state: String,
        pub registered_by: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub extended: bool,
        pub extension_reason: String,
        pub ended_at: Option<DateTimeUtc>,
        pub end_reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod deal_lock_key {
    use sea_orm::entity::prelude::*;

    /// A normalised key held by an active lock: the primary key makes the first
    /// registration win.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deal_lock_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub lock_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod lead {
    use sea_orm::entity::prelude::*;

    /// A lead with its MAN inputs and the scores computed from them.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "leads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub customer_name: String,
        pub customer_region: String,
        pub customer_tax_id: String,
        pub customer_class: String,
        pub annual_budget_minor: i64,
        pub special_budget_minor: i64,
        pub trend: String,
        pub authority_score: i64,
        pub need_score: i64,
        pub need: String,
        pub money_score: i64,
        pub total_tenths: i64,
        pub scored_at: DateTimeUtc,
        pub state: String,
        /// Empty when unassigned.
        pub partner_id: String,
        pub accept_deadline: Option<DateTimeUtc>,
        pub assignment_reason: String,
        pub outcome_reason: String,
        pub created_by: String,
        pub created_at: DateTimeUtc,
        /// The rep of the holder partner the lead is assigned to; empty if none.
        pub rep_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod lead_offer {
    use sea_orm::entity::prelude::*;

    /// One offer of a lead to a partner and how it ended.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "lead_offers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub lead_id: String,
        pub partner_id: String,
        pub reason: String,
        pub offered_at: DateTimeUtc,
        pub accept_deadline: DateTimeUtc,
        pub outcome: String,
        pub outcome_reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod opportunity {
    use sea_orm::entity::prelude::*;

    /// A partner's opportunity; `stage` moves by conditional updates.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "opportunities")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub rep_id: String,
        pub title: String,
        pub customer_name: String,
        pub customer_region: String,
        pub customer_tax_id: String,
        pub amount_minor: i64,
        pub lead_id: String,
        pub stage: String,
        pub stage_since: DateTimeUtc,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod stage_change {
    use sea_orm::entity::prelude::*;

    /// One stage change of an opportunity (append-only).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "opportunity_stage_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub opportunity_id: String,
        pub partner_id: String,
        pub rep_id: String,
        /// Empty at creation.
        pub from_stage: String,
        pub to_stage: String,
        pub actor: String,
        pub reason: String,
        pub changed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod visit {
    use sea_orm::entity::prelude::*;

    /// A rep's visit at a customer; `check_out_at` is set once.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "visits")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub rep_id: String,
        pub customer_name: String,
        pub customer_region: String,
        pub customer_key: String,
        pub place: String,
        pub latitude_e6: i64,
        pub longitude_e6: i64,
        pub check_in_at: DateTimeUtc,
        pub check_out_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub mod key_customer {
    use sea_orm::entity::prelude::*;

    /// A partner's key customer with its visit cycle; `notified_due_at` is the due
    /// time of the last overdue period published.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "key_customers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub customer_name: String,
        pub customer_region: String,
        pub customer_key: String,
        pub cycle_days: i64,
        pub since: DateTimeUtc,
        pub last_visit_at: Option<DateTimeUtc>,
        pub notified_due_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod price_range {
    use sea_orm::entity::prelude::*;

    /// One row of the quotes' range table, unique by its key.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "price_ranges")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub level: String,
        pub customer_class: String,
        pub relationship: String,
        pub volume_from_minor: i64,
        pub min_discount_bp: i64,
        pub max_discount_bp: i64,
        pub updated_by: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod quote {
    use sea_orm::entity::prelude::*;

    /// A quote of an opportunity; `lines` is JSON of
    /// [`crate::domain::quotes::PricedLine`]s; `order_id` is set once, on acceptance.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "quotes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub opportunity_id: String,
        pub customer_class: String,
        pub relationship: String,
        pub expected_volume_minor: i64,
        pub level: String,
        pub price_range_id: String,
        pub currency: String,
        pub total_minor: i64,
        pub lines: String,
        pub state: String,
        pub valid_until: DateTimeUtc,
        pub order_id: String,
        pub created_by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod quote_trail {
    use sea_orm::entity::prelude::*;

    /// One entry of a quote's trail (immutable).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "quote_trail")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub quote_id: String,
        pub action: String,
        pub actor: String,
        pub reason: String,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
