//! Placing an order: a saga driven by orders over membership and catalog-inventory.
//!
//! 1. Claim: a saga row keyed by the caller's request id is written before any remote
//!    step (a racing retry finds it and waits for, then replays, the first result).
//! 2. Price: the member's tier from membership, unit prices from catalog.
//! 3. Reserve: stock for every line, idempotent by order id, with the payment window
//!    as its TTL (a crashed saga cannot hold stock forever).
//! 4. Store: the order, its lines, its timeline entry and `OrderPlaced`, in one
//!    guarded write with the update that marks the saga done (only if it is still
//!    started: a saga taken over by the recovery is never stored late).
//!
//! The saga row holds only `started` until the store step: whatever the step an
//! abandoned saga stopped at, compensation releases the reservation of its order id
//! (none made counts as released), so recording each remote step would cost a
//! transaction per order and tell recovery nothing it needs.
//!
//! Any failure compensates: the saga turns `compensating` (which the recovery also
//! does for sagas whose process died), the reservation is released, and the saga is
//! `failed`. The sweeper retries releases that failed and recovers stale sagas.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use retail_kit::convert::now;
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events;
use retail_kit::idempotency;
use retail_proto::common::Money;
use retail_proto::events as ev;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryTrait};
use tonic::{Code, Status};

use crate::api::State;
use crate::downstream::Units;
use crate::store::{self, OrderView, saga_state};

/// A saga step, for fault injection in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Price,
    Reserve,
    Store,
}

/// Called before each step; the default does nothing. Tests fail or stall steps.
#[async_trait::async_trait]
pub trait StepHook: Send + Sync + std::fmt::Debug {
    async fn before(&self, step: Step, order_id: &str) -> ServiceResult<()>;
}

#[derive(Debug)]
pub struct NoHook;

#[async_trait::async_trait]
impl StepHook for NoHook {
    async fn before(&self, _: Step, _: &str) -> ServiceResult<()> {
        Ok(())
    }
}

/// Where and for whom an order is placed, parsed.
#[derive(Debug, Clone)]
pub struct PlaceInput {
    /// Caller and request id; unique per idempotent request.
    pub request_key: Option<String>,
    /// Hash of the request, to refuse a reused request id with another request.
    pub fingerprint: Vec<u8>,
    pub member_id: Option<String>,
    pub channel: String,
    pub partner_id: String,
    pub sales_rep: String,
    pub store: String,
    pub lines: Vec<Units>,
}

const COMPENSATING: &str = "compensating";

/// A downstream's answer as the caller of PlaceOrder should see it.
pub fn from_downstream(what: &str, status: Status) -> ServiceError {
    match status.code() {
        // Catalog names what it did not find: "sku not found: skus/X".
        Code::NotFound => {
            let message = status.message();
            let id = message.split_once("not found: ").map_or(message, |(_, id)| id);
            ServiceError::NotFound {
                entity: "sku",
                id: id.to_owned(),
            }
        }
        Code::FailedPrecondition | Code::AlreadyExists => ServiceError::FailedPrecondition(status.message().to_owned()),
        Code::InvalidArgument => ServiceError::FailedPrecondition(format!("{what} refused: {}", status.message())),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            ServiceError::Unavailable(format!("{what} is unavailable, retry: {}", status.message()))
        }
        _ => ServiceError::internal(anyhow::anyhow!("{what} failed: {} {}", status.code(), status.message())),
    }
}

impl State {
    /// Places an order; see the module documentation.
    pub async fn place(&self, input: PlaceInput) -> ServiceResult<OrderView> {
        let order_id = match self.claim(&input).await? {
            Claim::New(order_id) => order_id,
            Claim::Replay(view) => return Ok(*view),
        };
        match self.run_saga(&order_id, &input).await {
            Ok(view) => {
                self.log.committed();
                Ok(view)
            }
            Err(err) => {
                self.compensate(&order_id, &err.to_string()).await;
                Err(err)
            }
        }
    }

    async fn claim(&self, input: &PlaceInput) -> ServiceResult<Claim> {
        let waited_since = std::time::Instant::now();
        loop {
            let order_id = store::new_id();
            let at = now();
            let row = store::saga::Model {
                order_id: order_id.clone(),
                request_key: input
                    .request_key
                    .clone()
                    .unwrap_or_else(|| format!("anonymous:{order_id}")),
                fingerprint: input.fingerprint.clone(),
                state: saga_state::STARTED.into(),
                step: "started".into(),
                error: String::new(),
                created_at: at,
                updated_at: at,
            };
            // One statement: the unique request key settles a race between twins.
            if store::insert_saga(&self.db, row).await? {
                return Ok(Claim::New(order_id));
            }
            let Some(key) = &input.request_key else {
                continue;
            };
            let Some(existing) = store::saga_by_key(&self.db, key).await? else {
                continue;
            };
            if existing.fingerprint != input.fingerprint {
                return Err(ServiceError::invalid(
                    "request_id",
                    "was already used for a different request",
                ));
            }
            match existing.state.as_str() {
                saga_state::DONE => {
                    let order = store::find_order(&self.db, &existing.order_id)
                        .await?
                        .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("a finished saga has no order")))?;
                    return Ok(Claim::Replay(Box::new(store::view(&self.db, order).await?)));
                }
                saga_state::FAILED => {
                    // The earlier attempt failed and was compensated: try again.
                    store::forget_failed_saga(&self.db, &existing.order_id).await?;
                }
                _ if waited_since.elapsed() < self.settings.orders.placement_wait() => {
                    // A twin is placing this order right now: wait for its outcome.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                // Still unfinished (a slow downstream, or a process that died placing it
                // and whose saga the sweeper has not taken over yet): answer now, well
                // inside the request's deadline, with a status clients retry.
                _ => {
                    return Err(ServiceError::Aborted(
                        "this order is still being placed; retry with the same request id".into(),
                    ));
                }
            }
        }
    }

    async fn run_saga(&self, order_id: &str, input: &PlaceInput) -> ServiceResult<OrderView> {
        let settings = &self.settings.orders;
        self.hook.before(Step::Price, order_id).await?;
        let tier = match &input.member_id {
            Some(member) => self.downstream.member_tier(member).await.map_err(|s| match s.code() {
                Code::NotFound => ServiceError::not_found("member", format!("members/{member}")),
                _ => from_downstream("membership", s),
            })?,
            None => String::new(),
        };
        let prices = self
            .downstream
            .quote(&settings.currency, &tier, &input.lines)
            .await
            .map_err(|s| from_downstream("catalog", s))?;

        self.hook.before(Step::Reserve, order_id).await?;
        let window = Duration::from_secs(settings.payment_window_secs);
        self.downstream
            .reserve(order_id, &input.lines, window)
            .await
            .map_err(|s| from_downstream("catalog", s))?;
        // No separate "reserved" step is stored: the store write below only
        // completes a saga still STARTED, and a compensation releases by order id
        // whether or not a reservation was made.

        self.hook.before(Step::Store, order_id).await?;
        let at = now();
        let total: i64 = input.lines.iter().zip(&prices).map(|((_, q), p)| q * p).sum();
        let order = store::order::Model {
            id: order_id.to_owned(),
            member_id: input.member_id.clone().unwrap_or_default(),
            member_tier: tier,
            channel: input.channel.clone(),
            partner_id: input.partner_id.clone(),
            sales_rep: input.sales_rep.clone(),
            store: input.store.clone(),
            currency: settings.currency.clone(),
            total_minor: total,
            state: "pending_payment".into(),
            payment_reference: String::new(),
            paid_minor: 0,
            paid_at: None,
            refunded_minor: 0,
            carrier: String::new(),
            tracking_number: String::new(),
            shipped_at: None,
            delivered_at: None,
            tracking_stage: 0,
            last_tracking_at: None,
            cancel_reason: String::new(),
            payment_due_at: at + chrono::Duration::seconds(settings.payment_window_secs as i64),
            created_at: at,
            updated_at: at,
        };
        let lines: Vec<store::line::Model> = input
            .lines
            .iter()
            .zip(&prices)
            .enumerate()
            .map(|(i, ((sku, quantity), unit))| store::line::Model {
                order_id: order_id.to_owned(),
                sku_code: sku.clone(),
                ordinal: i as i32,
                quantity: *quantity,
                unit_minor: *unit,
                returned_quantity: 0,
            })
            .collect();
        // One guarded write: stored only if the saga is still started, so a saga the
        // recovery took over is never stored late.
        let event = ev::OrderPlaced {
            order_id: order.id.clone(),
            parties: Some(parties(&order)),
            lines: ordered_units(&order.currency, &lines),
            total: money(&order.currency, order.total_minor),
        };
        let writes = GuardedWrite::new(
            store::saga_progress_update(&order.id, saga_state::DONE, "stored", "", order.created_at).into_query(),
        )
        .insert([store::order::ActiveModel::from(order.clone())])?
        .insert(lines.iter().cloned().map(store::line::ActiveModel::from))?
        .insert([store::timeline_row(
            &order.id,
            "placed",
            "",
            "",
            "pending_payment",
            order.created_at,
        )])?
        .insert([events::outbox_row(
            "retail.events.v1.OrderPlaced",
            &order.id,
            event.encode_to_vec(),
        )])?;
        if !idempotency::apply(&self.db, &writes).await? {
            return Err(ServiceError::Aborted("placing the order was abandoned; retry".into()));
        }
        // Exactly what was written (`now()` is already at the database's precision).
        Ok(OrderView { order, lines })
    }

    /// Undoes a saga that will not finish: marks it compensating (unless it finished
    /// meanwhile), releases its reservation, marks it failed. A release that fails is
    /// retried by the sweeper.
    pub async fn compensate(&self, order_id: &str, why: &str) {
        let taken = idempotency::transaction(&self.db, |txn| {
            let (order_id, why) = (order_id.to_owned(), why.to_owned());
            Box::pin(
                async move { store::saga_progress(txn, &order_id, COMPENSATING, "compensating", &why, now()).await },
            )
        })
        .await;
        match taken {
            Ok(true) => self.finish_compensation(order_id).await,
            Ok(false) => {}
            Err(err) => tracing::warn!(order_id, error = %err, "could not mark the saga for compensation"),
        }
    }

    async fn finish_compensation(&self, order_id: &str) {
        if let Err(status) = self.downstream.release(order_id).await {
            tracing::warn!(order_id, error = %status.message(), "releasing the reservation failed; will retry");
            return;
        }
        let result = store::saga::Entity::update_many()
            .col_expr(
                store::saga::Column::State,
                sea_orm::sea_query::Expr::value(saga_state::FAILED),
            )
            .col_expr(store::saga::Column::UpdatedAt, sea_orm::sea_query::Expr::value(now()))
            .filter(store::saga::Column::OrderId.eq(order_id))
            .filter(store::saga::Column::State.eq(COMPENSATING))
            .exec(&self.db)
            .await;
        if let Err(err) = result {
            tracing::warn!(order_id, error = %err, "could not mark the saga failed; will retry");
        }
    }

    /// Compensates sagas whose process died (untouched since `stale_after`) and
    /// retries unfinished compensations. Runs at start and then periodically.
    pub async fn recover_sagas(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let stale_after = chrono::Duration::seconds(self.settings.orders.saga_stale_after_secs as i64);
        let stale = store::stale_sagas(&self.db, as_of - stale_after, 200).await?;
        let mut recovered = 0;
        for saga in &stale {
            tracing::warn!(order_id = %saga.order_id, step = %saga.step, "compensating an abandoned saga");
            self.compensate(&saga.order_id, &format!("abandoned at step {}", saga.step))
                .await;
            recovered += 1;
        }
        let unfinished = store::saga::Entity::find()
            .filter(store::saga::Column::State.eq(COMPENSATING))
            .all(&self.db)
            .await?;
        for saga in unfinished {
            self.finish_compensation(&saga.order_id).await;
        }
        Ok(recovered)
    }

    /// Cancels unpaid orders whose payment window closed at `as_of`.
    pub async fn expire_unpaid(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let due = store::overdue_unpaid(&self.db, as_of, 500).await?;
        let mut expired = 0;
        for order_id in due {
            match self.cancel(&order_id, None, "payment window elapsed", as_of).await {
                Ok(_) => expired += 1,
                Err(ServiceError::FailedPrecondition(_)) => {}
                Err(err) => tracing::warn!(order_id, error = %err, "cancelling an unpaid order failed"),
            }
        }
        Ok(expired)
    }

    /// Runs recovery, expiry and unfinished stock work until the task is aborted.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        let every = Duration::from_secs(self.settings.orders.sweep_every_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(err) = state.recover_sagas(now()).await {
                    tracing::warn!(error = %err, "saga recovery failed");
                }
                if let Err(err) = state.expire_unpaid(now()).await {
                    tracing::warn!(error = %err, "expiring unpaid orders failed");
                }
                if let Err(err) = state.finish_stock_work().await {
                    tracing::warn!(error = %err, "finishing stock work failed");
                }
            }
        })
    }
}

enum Claim {
    New(String),
    Replay(Box<OrderView>),
}

pub fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
}

pub fn parties(o: &store::order::Model) -> ev::OrderParties {
    ev::OrderParties {
        member_id: o.member_id.clone(),
        channel: o.channel.clone(),
        partner_id: o.partner_id.clone(),
        sales_rep: o.sales_rep.clone(),
        store: o.store.clone(),
    }
}

pub fn ordered_units(currency: &str, lines: &[store::line::Model]) -> Vec<ev::OrderedUnits> {
    lines
        .iter()
        .map(|l| ev::OrderedUnits {
            sku_code: l.sku_code.clone(),
            quantity: l.quantity,
            unit_price: money(currency, l.unit_minor),
        })
        .collect()
}

/// An order column set to a value, for [`store::transition`].
pub fn set<V: Into<sea_orm::Value>>(
    col: store::order::Column,
    value: V,
) -> (store::order::Column, sea_orm::sea_query::SimpleExpr) {
    (col, sea_orm::sea_query::Expr::value(value.into()))
}
