//! Outbound webhooks: partners subscribe a URL to event types; the gateway follows
//! orders' and channel-partner's event logs, enqueues one delivery per event and
//! matching subscription (in the transaction that stores the log position, so
//! exactly once), and a worker POSTs each delivery, signed, with retries and
//! backoff, until the receiver accepts it or it is dead-lettered.
//!
//! Layout: [`domain`] the rules (types, URLs, signature, backoff), [`store`] the
//! tables, `consume` the event handlers, `deliver` the worker and its HTTP client,
//! this module the use cases the routes call.

pub mod consume;
pub mod deliver;
pub mod domain;
pub mod settings;
pub mod store;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use tokio::sync::Notify;

pub use settings::WebhooksSection;

use self::domain::EventType;
use self::store::{DEAD, DELIVERED, PENDING, attempt, delivery, subscription};

/// The webhooks' use cases, on the gateway's database.
#[derive(Debug)]
pub struct Webhooks {
    pub db: DatabaseConnection,
    pub settings: WebhooksSection,
    /// Wakes the delivery worker (new deliveries, replays).
    pub wake: Arc<Notify>,
}

/// A subscription to create.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub url: String,
    pub event_types: Vec<EventType>,
    pub description: String,
}

/// A delivery with its attempts, oldest first.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub delivery: delivery::Model,
    pub attempts: Vec<attempt::Model>,
}

impl Webhooks {
    pub fn new(db: DatabaseConnection, settings: WebhooksSection) -> Self {
        Self {
            db,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Creates a subscription with a fresh secret; FAILED_PRECONDITION past
    /// `webhooks.max_subscriptions` for the partner.
    pub async fn create(&self, partner: &str, new: NewSubscription) -> ServiceResult<subscription::Model> {
        let txn = retail_kit::db::begin_write(&self.db).await?;
        // One create per partner at a time, so concurrent ones cannot pass the cap
        // together (SQLite's write transaction is exclusive already).
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            txn.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                [format!("retail.gateway.webhook_subscriptions:{partner}").into()],
            ))
            .await?;
        }
        let count = subscription::Entity::find()
            .filter(subscription::Column::PartnerId.eq(partner))
            .count(&txn)
            .await?;
        if count >= u64::from(self.settings.max_subscriptions) {
            return Err(ServiceError::FailedPrecondition(format!(
                "a partner may have at most {} webhook subscriptions",
                self.settings.max_subscriptions
            )));
        }
        let now = Utc::now();
        let model = subscription::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            partner_id: Set(partner.to_owned()),
            url: Set(new.url),
            event_types: Set(domain::join_types(&new.event_types)),
            description: Set(new.description),
            secret: Set(domain::new_secret()),
            created_at: Set(now),
            secret_rotated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    /// The partner's subscriptions, oldest first.
    pub async fn list(&self, partner: &str, page: &Page) -> ServiceResult<(Vec<subscription::Model>, String)> {
        let mut query = subscription::Entity::find()
            .filter(subscription::Column::PartnerId.eq(partner))
            .order_by_asc(subscription::Column::Id)
            .limit(page.size + 1);
        if let Some(after) = &page.after {
            query = query.filter(subscription::Column::Id.gt(after.as_str()));
        }
        let mut rows = query.all(&self.db).await?;
        let next = next_token(&mut rows, page, |r| r.id.clone());
        Ok((rows, next))
    }

    /// One of the partner's subscriptions: NOT_FOUND for another partner's.
    pub async fn get(&self, partner: &str, id: &str) -> ServiceResult<subscription::Model> {
        subscription::Entity::find_by_id(id.to_owned())
            .filter(subscription::Column::PartnerId.eq(partner))
            .one(&self.db)
            .await?
            .ok_or_else(|| ServiceError::not_found("webhook subscription", id))
    }

    /// Deletes a subscription with its deliveries and their attempts.
    pub async fn delete(&self, partner: &str, id: &str) -> ServiceResult<()> {
        let txn = retail_kit::db::begin_write(&self.db).await?;
        let deleted = subscription::Entity::delete_many()
            .filter(subscription::Column::Id.eq(id))
            .filter(subscription::Column::PartnerId.eq(partner))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(ServiceError::not_found("webhook subscription", id));
        }
        let deliveries = delivery::Entity::find()
            .select_only()
            .column(delivery::Column::Id)
            .filter(delivery::Column::SubscriptionId.eq(id))
            .into_tuple::<String>()
            .all(&txn)
            .await?;
        for ids in deliveries.chunks(500) {
            attempt::Entity::delete_many()
                .filter(attempt::Column::DeliveryId.is_in(ids.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        delivery::Entity::delete_many()
            .filter(delivery::Column::SubscriptionId.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Replaces a subscription's secret: deliveries from now on are signed with
    /// the new one.
    pub async fn rotate_secret(&self, partner: &str, id: &str) -> ServiceResult<subscription::Model> {
        let secret = domain::new_secret();
        let now = Utc::now();
        let updated = subscription::Entity::update_many()
            .col_expr(subscription::Column::Secret, Expr::value(secret))
            .col_expr(subscription::Column::SecretRotatedAt, Expr::value(now))
            .filter(subscription::Column::Id.eq(id))
            .filter(subscription::Column::PartnerId.eq(partner))
            .exec(&self.db)
            .await?;
        if updated.rows_affected == 0 {
            return Err(ServiceError::not_found("webhook subscription", id));
        }
        self.get(partner, id).await
    }

    /// A subscription's deliveries, newest first, each with its attempts.
    pub async fn deliveries(
        &self,
        partner: &str,
        subscription_id: &str,
        page: &Page,
    ) -> ServiceResult<(Vec<DeliveryView>, String)> {
        self.get(partner, subscription_id).await?;
        let mut query = delivery::Entity::find()
            .filter(delivery::Column::SubscriptionId.eq(subscription_id))
            .filter(delivery::Column::PartnerId.eq(partner))
            .order_by_desc(delivery::Column::Id)
            .limit(page.size + 1);
        if let Some(after) = &page.after {
            query = query.filter(delivery::Column::Id.lt(after.as_str()));
        }
        let mut rows = query.all(&self.db).await?;
        let next = next_token(&mut rows, page, |r| r.id.clone());
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut attempts = if ids.is_empty() {
            Vec::new()
        } else {
            attempt::Entity::find()
                .filter(attempt::Column::DeliveryId.is_in(ids))
                .order_by_asc(attempt::Column::DeliveryId)
                .order_by_asc(attempt::Column::Number)
                .all(&self.db)
                .await?
        };
        let views = rows
            .into_iter()
            .map(|d| {
                let (mine, rest): (Vec<_>, Vec<_>) = attempts.drain(..).partition(|a| a.delivery_id == d.id);
                attempts = rest;
                DeliveryView {
                    delivery: d,
                    attempts: mine,
                }
            })
            .collect();
        Ok((views, next))
    }

    /// One delivery of one of the partner's subscriptions.
    pub async fn delivery(&self, partner: &str, subscription_id: &str, id: &str) -> ServiceResult<DeliveryView> {
        let delivery = delivery::Entity::find_by_id(id.to_owned())
            .filter(delivery::Column::SubscriptionId.eq(subscription_id))
            .filter(delivery::Column::PartnerId.eq(partner))
            .one(&self.db)
            .await?
            .ok_or_else(|| ServiceError::not_found("webhook delivery", id))?;
        let attempts = attempt::Entity::find()
            .filter(attempt::Column::DeliveryId.eq(id))
            .order_by_asc(attempt::Column::Number)
            .all(&self.db)
            .await?;
        Ok(DeliveryView { delivery, attempts })
    }

    /// Sends a delivery again, in a new round of `webhooks.max_attempts` attempts,
    /// whatever its state (a dead-lettered one, or one delivered that the receiver
    /// lost). One still being tried is left as it is.
    pub async fn replay(&self, partner: &str, subscription_id: &str, id: &str) -> ServiceResult<DeliveryView> {
        let current = self.delivery(partner, subscription_id, id).await?.delivery;
        if current.state != PENDING {
            let now = Utc::now();
            let txn = self.db.begin().await?;
            let replayed = delivery::Entity::update_many()
                .col_expr(delivery::Column::State, Expr::value(PENDING))
                .col_expr(delivery::Column::RoundStart, Expr::col(delivery::Column::AttemptCount))
                .col_expr(delivery::Column::NextAttemptAt, Expr::value(now))
                .col_expr(delivery::Column::Version, Expr::value(current.version + 1))
                .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
                .filter(delivery::Column::Id.eq(id))
                .filter(delivery::Column::Version.eq(current.version))
                .filter(delivery::Column::State.is_in([DELIVERED, DEAD]))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            if replayed.rows_affected == 1 {
                self.wake.notify_one();
            }
        }
        self.delivery(partner, subscription_id, id).await
    }
}

/// Cuts `rows` (one more than the page was asked) to the page and returns the
/// token of the next page, empty on the last.
fn next_token<T>(rows: &mut Vec<T>, page: &Page, key: impl Fn(&T) -> String) -> String {
    if rows.len() as u64 > page.size {
        rows.truncate(page.size as usize);
        rows.last().map(|r| page.token_after(&key(r))).unwrap_or_default()
    } else {
        String::new()
    }
}

/// RFC 3339 in UTC, as the JSON shows times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
