//! Orders' use cases, one method each, on parsed input: placing (a saga over
//! membership and catalog, [`place`]), paying, cancelling, shipping and tracking
//! ([`lifecycle`]), returns and refunds ([`returns`]), ratings and the timeline
//! ([`feedback`]), and the stock each state change owes catalog ([`stock`]).
//!
//! Every state change is one transaction whose update is conditional on the state
//! read (two racing changes of one order cannot both pass), with its timeline entry,
//! its event in the outbox and, where stock must follow, its stock work.

mod feedback;
mod lifecycle;
pub mod place;
mod returns;
mod stock;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use retail_kit::auth::Principal;
use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::EventLog;
use retail_kit::idempotency::{self, IdempotencyKey};
use sea_orm::{ActiveModelTrait, DatabaseConnection};

use crate::domain::ids::OrderId;
use crate::domain::lifecycle::{self as rules, Action, State as OrderState};
use crate::downstream::Downstream;
use crate::settings::Settings;
use crate::store::{self, OrderView, order};
use retail_kit::events::Outgoing;

pub use feedback::Rating;
pub use lifecycle::{Payment, TrackingEvent};
pub use place::PlaceOrder;
pub use returns::ReturnRequest;

/// The service's state and its use cases.
pub struct App {
    pub(crate) db: DatabaseConnection,
    pub(crate) log: Arc<EventLog>,
    pub(crate) settings: Settings,
    pub(crate) downstream: Arc<dyn Downstream>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// Who is asking, as orders needs it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Whose request ids these are (a partner's, for partner principals).
    pub owner: String,
    /// The partner a partner principal is confined to.
    pub partner: Option<String>,
}

impl From<&Principal> for Caller {
    fn from(p: &Principal) -> Self {
        Self {
            owner: p.request_owner(),
            partner: p.partner_scope().map(str::to_owned),
        }
    }
}

/// An order's state as stored; a value this build does not know is an internal error.
pub(crate) fn state_of(order: &order::Model) -> ServiceResult<OrderState> {
    OrderState::parse(&order.state)
        .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored order state {:?}", order.state)))
}

fn not_found(id: &OrderId) -> ServiceError {
    ServiceError::not_found("order", id.resource_name())
}

/// `order` if the caller may see it: a partner sees only its own partner's orders,
/// any other is NOT_FOUND like a missing one.
fn visible_to(caller: &Caller, id: &OrderId, order: Option<order::Model>) -> ServiceResult<order::Model> {
    let order = order.ok_or_else(|| not_found(id))?;
    match &caller.partner {
        Some(partner) if *partner != order.partner_id => Err(not_found(id)),
        _ => Ok(order),
    }
}

/// A state change of one order: the action, the columns it sets, its timeline entry,
/// and what goes with it in the same transaction.
pub(crate) struct Change {
    action: Action,
    columns: store::Changes,
    /// Timeline entry kind (`shipped`, `tracking`, ...).
    kind: &'static str,
    tracking_kind: &'static str,
    detail: String,
    at: DateTime<Utc>,
    event: Option<Outgoing>,
    work: Option<store::stock_work::ActiveModel>,
}

impl Change {
    pub(crate) fn new(action: Action, kind: &'static str, at: DateTime<Utc>) -> Self {
        Self {
            action,
            columns: Vec::new(),
            kind,
            tracking_kind: "",
            detail: String::new(),
            at,
            event: None,
            work: None,
        }
    }

    pub(crate) fn set<V: Into<sea_orm::Value>>(mut self, col: order::Column, value: V) -> Self {
        self.columns.push((col, sea_orm::sea_query::Expr::value(value.into())));
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub(crate) fn tracking(mut self, kind: &'static str) -> Self {
        self.tracking_kind = kind;
        self
    }

    pub(crate) fn event(mut self, event: Option<Outgoing>) -> Self {
        self.event = event;
        self
    }

    pub(crate) fn work(mut self, work: store::stock_work::ActiveModel) -> Self {
        self.work = Some(work);
        self
    }
}

impl App {
    pub(crate) fn new(
        db: DatabaseConnection,
        log: Arc<EventLog>,
        settings: Settings,
        downstream: Arc<dyn Downstream>,
    ) -> Self {
        Self {
            db,
            log,
            settings,
            downstream,
        }
    }

    /// The order if the caller may see it; NOT_FOUND otherwise (existence never leaks).
    pub(crate) async fn visible(&self, caller: &Caller, id: &OrderId) -> ServiceResult<order::Model> {
        let order = store::find_order(&self.db, id.as_str()).await?;
        visible_to(caller, id, order)
    }

    /// The order with its lines if `caller` may see it, and what `key` stored if
    /// this request ran before, in one read.
    async fn visible_view(
        &self,
        caller: &Caller,
        id: &OrderId,
        key: Option<&IdempotencyKey>,
    ) -> ServiceResult<(OrderView, retail_kit::idempotency::Stored)> {
        let (view, stored) = store::find_view_keyed(&self.db, id.as_str(), key).await?;
        let (order, lines) = match view {
            Some(OrderView { order, lines }) => (Some(order), lines),
            None => (None, Vec::new()),
        };
        // Visibility first: to a caller who may not see the order, a request id it
        // used elsewhere must not tell that the order exists.
        let order = visible_to(caller, id, order)?;
        Ok((OrderView { order, lines }, stored))
    }

    /// The order as it is now.
    pub(crate) async fn view(&self, id: &OrderId) -> ServiceResult<OrderView> {
        store::find_view(&self.db, id.as_str())
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Gets an order the caller may see.
    pub async fn get(&self, caller: &Caller, id: &OrderId) -> ServiceResult<OrderView> {
        let order = self.visible(caller, id).await?;
        store::view(&self.db, order).await
    }

    /// Applies `change` to `order` if it is still in the state read; FAILED_PRECONDITION
    /// if the rules forbid it or the state moved meanwhile.
    pub(crate) async fn change(&self, order: &order::Model, change: Change) -> ServiceResult<()> {
        let from = state_of(order)?;
        let to = rules::next(from, change.action).map_err(ServiceError::FailedPrecondition)?;
        let id = order.id.clone();
        idempotency::transaction(&self.db, |txn| {
            let (id, columns, event, work) = (
                id.clone(),
                change.columns.clone(),
                change.event.clone(),
                change.work.clone(),
            );
            let (kind, tracking_kind, detail, at) =
                (change.kind, change.tracking_kind, change.detail.clone(), change.at);
            Box::pin(async move {
                if !store::transition(txn, &id, &[from.as_str()], to.as_str(), columns, at).await? {
                    return Err(ServiceError::FailedPrecondition(
                        "the order changed meanwhile; read it again".into(),
                    ));
                }
                store::timeline_row(&id, kind, tracking_kind, &detail, to.as_str(), at)
                    .insert(txn)
                    .await?;
                if let Some(event) = event {
                    event.outbox_row(&id).insert(txn).await?;
                }
                if let Some(work) = work {
                    work.insert(txn).await?;
                }
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        Ok(())
    }

    /// Runs saga recovery, the expiry of unpaid orders and unfinished stock work
    /// every `orders.sweep_every_secs`, until the task is aborted.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        let every = Duration::from_secs(self.settings.orders.sweep_every_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(err) = app.recover_sagas(now()).await {
                    tracing::warn!(error = %err, "saga recovery failed");
                }
                if let Err(err) = app.expire_unpaid(now()).await {
                    tracing::warn!(error = %err, "expiring unpaid orders failed");
                }
                if let Err(err) = app.finish_stock_work().await {
                    tracing::warn!(error = %err, "finishing stock work failed");
                }
            }
        })
    }
}
