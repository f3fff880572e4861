//! The gateway's own database: webhook subscriptions, deliveries and their
//! attempts, and the positions of the event logs it follows. Append-only
//! migrations named `mYYYYMMDD_NNNNNN_<verb>_<noun>`.

use sea_orm_migration::{prelude::*, schema::*};

pub mod subscription {
    //! A partner's subscription: where to send which events, and the secret that
    //! signs them (kept as issued: the gateway computes HMACs with it).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub partner_id: String,
        pub url: String,
        /// Space-separated event types.
        pub event_types: String,
        pub description: String,
        pub secret: String,
        pub created_at: DateTimeUtc,
        pub secret_rotated_at: DateTimeUtc,
    }

    /// Without the secret (nor the URL, which may carry a token of the partner's).
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Subscription")
                .field("id", &self.id)
                .field("partner_id", &self.partner_id)
                .field("event_types", &self.event_types)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    //! One event for one subscription: the body as sent on every attempt, and
    //! where its attempts stand.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub subscription_id: String,
        pub partner_id: String,
        /// The source event's id: `Webhook-Id` and the body's `id`.
        pub event_id: String,
        pub event_type: String,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        /// `pending`, `delivered` or `dead`.
        pub state: String,
        pub attempt_count: i32,
        /// `attempt_count` when the current round (the first, or a replay) began.
        pub round_start: i32,
        pub next_attempt_at: DateTimeUtc,
        /// Bumped by every change: claims and outcomes are conditional on it.
        pub version: i64,
        pub last_status: Option<i32>,
        pub last_error: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub delivered_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod attempt {
    //! One try of a delivery and its outcome.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_attempts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub number: i32,
        pub attempted_at: DateTimeUtc,
        /// The receiver's HTTP status, if it answered.
        pub status_code: Option<i32>,
        /// Why it failed without a status (timeout, refused, connection).
        pub error: Option<String>,
        pub duration_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const DEAD: &str = "dead";

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(retail_kit::events::migration::CreateConsumerPositions),
            Box::new(retail_kit::events::migration::CreateConsumerPartitions),
            Box::new(CreateWebhookTables),
        ]
    }
}

#[derive(DeriveIden)]
enum WebhookSubscriptions {
    Table,
    Id,
    PartnerId,
    Url,
    EventTypes,
    Description,
    Secret,
    CreatedAt,
    SecretRotatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    SubscriptionId,
    PartnerId,
    EventId,
    EventType,
    Body,
    State,
    AttemptCount,
    RoundStart,
    NextAttemptAt,
    Version,
    LastStatus,
    LastError,
    CreatedAt,
    UpdatedAt,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    DeliveryId,
    Number,
    AttemptedAt,
    StatusCode,
    Error,
    DurationMs,
}

use retail_kit::db::create_index as index;

#[derive(Debug)]
struct CreateWebhookTables;

impl MigrationName for CreateWebhookTables {
    fn name(&self) -> &str {
        "m20261204_000001_create_webhook_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateWebhookTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(WebhookSubscriptions::Table)
                .if_not_exists()
                .col(string_len(WebhookSubscriptions::Id, 36).primary_key())
                .col(string_len(WebhookSubscriptions::PartnerId, 64))
                .col(string_len(WebhookSubscriptions::Url, 2048))
                .col(string_len(WebhookSubscriptions::EventTypes, 400))
                .col(string_len(WebhookSubscriptions::Description, 500))
                .col(string_len(WebhookSubscriptions::Secret, 128))
                .col(timestamp_with_time_zone(WebhookSubscriptions::CreatedAt))
                .col(timestamp_with_time_zone(WebhookSubscriptions::SecretRotatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "webhook_subscriptions_partner",
            WebhookSubscriptions::Table,
            vec![
                WebhookSubscriptions::PartnerId.into_iden(),
                WebhookSubscriptions::Id.into_iden(),
            ],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(WebhookDeliveries::Table)
                .if_not_exists()
                .col(string_len(WebhookDeliveries::Id, 36).primary_key())
                .col(string_len(WebhookDeliveries::SubscriptionId, 36))
                .col(string_len(WebhookDeliveries::PartnerId, 64))
                .col(string_len(WebhookDeliveries::EventId, 64))
                .col(string_len(WebhookDeliveries::EventType, 32))
                .col(text(WebhookDeliveries::Body))
                .col(string_len(WebhookDeliveries::State, 16))
                .col(integer(WebhookDeliveries::AttemptCount))
                .col(integer(WebhookDeliveries::RoundStart))
                .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                .col(big_integer(WebhookDeliveries::Version))
                .col(integer_null(WebhookDeliveries::LastStatus))
                .col(string_len_null(WebhookDeliveries::LastError, 500))
                .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                .col(timestamp_with_time_zone(WebhookDeliveries::UpdatedAt))
                .col(timestamp_with_time_zone_null(WebhookDeliveries::DeliveredAt))
                .to_owned(),
        )
        .await?;
        // One delivery per event and subscription, however often the event arrives.
        index(
            m,
            "webhook_deliveries_event",
            WebhookDeliveries::Table,
            vec![
                WebhookDeliveries::SubscriptionId.into_iden(),
                WebhookDeliveries::EventId.into_iden(),
            ],
            true,
        )
        .await?;
        index(
            m,
            "webhook_deliveries_due",
            WebhookDeliveries::Table,
            vec![
                WebhookDeliveries::State.into_iden(),
                WebhookDeliveries::NextAttemptAt.into_iden(),
            ],
            false,
        )
        .await?;
        index(
            m,
            "webhook_deliveries_subscription",
            WebhookDeliveries::Table,
            vec![
                WebhookDeliveries::SubscriptionId.into_iden(),
                WebhookDeliveries::Id.into_iden(),
            ],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(WebhookAttempts::Table)
                .if_not_exists()
                .col(string_len(WebhookAttempts::DeliveryId, 36))
                .col(integer(WebhookAttempts::Number))
                .col(timestamp_with_time_zone(WebhookAttempts::AttemptedAt))
                .col(integer_null(WebhookAttempts::StatusCode))
                .col(string_len_null(WebhookAttempts::Error, 500))
                .col(big_integer(WebhookAttempts::DurationMs))
                .primary_key(
                    Index::create()
                        .col(WebhookAttempts::DeliveryId)
                        .col(WebhookAttempts::Number),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookSubscriptions::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_subscription_debugs_without_its_secret_or_url() {
        let now = chrono::Utc::now();
        let s = super::subscription::Model {
            id: "s1".into(),
            partner_id: "p1".into(),
            url: "https://hooks.example.com/in?token=abc".into(),
            event_types: "order.shipped".into(),
            description: String::new(),
            secret: "whsec_topsecret".into(),
            created_at: now,
            secret_rotated_at: now,
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("s1"));
        assert!(!shown.contains("topsecret") && !shown.contains("token=abc"), "{shown}");
    }
}
