//! The delivery worker: claims due deliveries, POSTs each once, signed, and
//! records the attempt; a 2xx answer delivers it, anything else (another status,
//! a timeout, a refused or failed connection) schedules the next attempt after
//! the backoff, and the last attempt of a round dead-letters it.
//!
//! Claims are conditional updates on the delivery's version that move its next
//! attempt past the attempt's deadline, so replicas never send a delivery at once,
//! and one whose sender died is taken up again after that.
//!
//! The HTTP client and the signature are the kit's ([`retail_kit::webhook`]):
//! unless `webhooks.allow_private_addresses`, it refuses hosts that are or resolve
//! to non-public addresses.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use retail_kit::error::ServiceResult;
pub use retail_kit::webhook::{Client as Sender, Outcome};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::Webhooks;
use super::domain;
use super::store::{DEAD, DELIVERED, PENDING, attempt, delivery, subscription};

/// A delivery claimed for one attempt.
struct Claimed {
    delivery: delivery::Model,
    version: i64,
}

impl Webhooks {
    /// Runs the worker until `shutdown`: due deliveries are sent, then it waits for
    /// a wake-up or `webhooks.poll_ms`.
    pub async fn run_worker(self: Arc<Self>, sender: Sender, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // Attempts cut short by the shutdown are tried again once their claim
            // runs out (at least once, never lost).
            let delivered = tokio::select! {
                () = &mut shutdown => return,
                delivered = self.deliver_due(&sender) => delivered,
            };
            let busy = match delivered {
                Ok(n) => n > 0,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook deliveries could not be read");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll()) => {}
            }
        }
    }

    /// Sends the deliveries due now (at most a batch); returns how many were tried.
    pub async fn deliver_due(&self, sender: &Sender) -> ServiceResult<usize> {
        let now = Utc::now();
        let due = delivery::Entity::find()
            .filter(delivery::Column::State.eq(PENDING))
            .filter(delivery::Column::NextAttemptAt.lte(now))
            .order_by_asc(delivery::Column::NextAttemptAt)
            .limit((self.settings.concurrency * 4) as u64)
            .all(&self.db)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let tried = futures::stream::iter(due)
            .map(|d| async move {
                match self.claim(d).await {
                    Ok(Some(claimed)) => {
                        if let Err(err) = self.attempt(sender, claimed).await {
                            tracing::warn!(error = %err, "a webhook attempt could not be recorded");
                        }
                        1
                    }
                    Ok(None) => 0,
                    Err(err) => {
                        tracing::warn!(error = %err, "a webhook delivery could not be claimed");
                        0
                    }
                }
            })
            .buffer_unordered(self.settings.concurrency)
            .fold(0usize, |n, tried| async move { n + tried })
            .await;
        Ok(tried)
    }

    /// Takes a delivery for one attempt: its next attempt moves past the attempt's
    /// deadline, on condition that nobody changed it since it was read.
    async fn claim(&self, d: delivery::Model) -> ServiceResult<Option<Claimed>> {
        let lease = chrono::Duration::from_std(self.settings.timeout() + Duration::from_secs(30))
            .unwrap_or_else(|_| chrono::Duration::minutes(1));
        let version = d.version + 1;
        let claimed = delivery::Entity::update_many()
            .col_expr(delivery::Column::NextAttemptAt, Expr::value(Utc::now() + lease))
            .col_expr(delivery::Column::Version, Expr::value(version))
            .filter(delivery::Column::Id.eq(d.id.as_str()))
            .filter(delivery::Column::Version.eq(d.version))
            .filter(delivery::Column::State.eq(PENDING))
            .exec(&self.db)
            .await?;
        Ok((claimed.rows_affected == 1).then_some(Claimed { delivery: d, version }))
    }

    /// Sends a claimed delivery once and records the attempt and what follows.
    async fn attempt(&self, sender: &Sender, claimed: Claimed) -> ServiceResult<()> {
        let d = &claimed.delivery;
        let Some(sub) = subscription::Entity::find_by_id(d.subscription_id.clone())
            .one(&self.db)
            .await?
        else {
            // Deleted meanwhile, with its deliveries.
            return Ok(());
        };
        let started = Instant::now();
        let attempted_at = Utc::now();
        let outcome = sender.send(&sub.url, &d.event_id, &sub.secret, &d.body).await;
        let duration_ms = started.elapsed().as_millis().min(i64::MAX as u128) as i64;
        let number = d.attempt_count + 1;
        let in_round = u32::try_from(number - d.round_start).unwrap_or(u32::MAX);
        let now = Utc::now();
        let (state, next) = if outcome.accepted() {
            (DELIVERED, now)
        } else if in_round >= self.settings.max_attempts {
            (DEAD, now)
        } else {
            let wait = domain::backoff(self.settings.backoff_base(), self.settings.backoff_max(), in_round);
            (
                PENDING,
                now + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(1)),
            )
        };
        let (status, error) = match &outcome {
            Outcome::Status(s) => (Some(i32::from(*s)), None),
            Outcome::Failed(why) => (None, Some(why.chars().take(500).collect::<String>())),
        };
        match &outcome {
            Outcome::Status(s) => {
                tracing::info!(delivery_id = %d.id, subscription_id = %d.subscription_id, attempt = number, status = s, state, "webhook attempt")
            }
            Outcome::Failed(why) => {
                tracing::info!(delivery_id = %d.id, subscription_id = %d.subscription_id, attempt = number, error = %why, state, "webhook attempt")
            }
        }
        let txn = retail_kit::db::begin_write(&self.db).await?;
        let updated = delivery::Entity::update_many()
            .col_expr(delivery::Column::State, Expr::value(state))
            .col_expr(delivery::Column::AttemptCount, Expr::value(number))
            .col_expr(delivery::Column::NextAttemptAt, Expr::value(next))
            .col_expr(delivery::Column::Version, Expr::value(claimed.version + 1))
            .col_expr(delivery::Column::LastStatus, Expr::value(status))
            .col_expr(delivery::Column::LastError, Expr::value(error.clone()))
            .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                delivery::Column::DeliveredAt,
                Expr::value((state == DELIVERED).then_some(now).or(d.delivered_at)),
            )
            .filter(delivery::Column::Id.eq(d.id.as_str()))
            .filter(delivery::Column::Version.eq(claimed.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            // Deleted or taken over meanwhile: this attempt is not recorded.
            return Ok(());
        }
        attempt::Entity::insert(attempt::ActiveModel {
            delivery_id: Set(d.id.clone()),
            number: Set(number),
            attempted_at: Set(attempted_at),
            status_code: Set(status),
            error: Set(error),
            duration_ms: Set(duration_ms),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }
}
