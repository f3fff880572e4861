//! An order's way from payment to completion: pay, cancel, ship, track, deliver,
//! complete, and the lists that find orders.

use chrono::{DateTime, Utc};
use retail_kit::convert::now;
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::QueryTrait;

use super::{App, Caller, Change, state_of};
use crate::domain::ids::OrderId;
use crate::domain::lifecycle::{self as rules, Action, State as OrderState};
use crate::domain::tracking;
use crate::downstream::from_downstream;
use crate::events;
use crate::store::{self, OrderView, order};

/// A payment of an order's whole total.
#[derive(Debug, Clone)]
pub struct Payment {
    /// The payment provider's reference.
    pub reference: String,
    pub currency: String,
    pub amount_minor: i64,
}

/// A carrier's tracking event.
#[derive(Debug, Clone)]
pub struct TrackingEvent {
    pub kind: tracking::Kind,
    pub at: DateTime<Utc>,
    pub detail: String,
}

impl App {
    /// Lists the orders `filter` selects; a partner principal only its own partner's,
    /// whatever it asked for. Returns the page and the next page's token.
    pub async fn list(
        &self,
        caller: &Caller,
        mut filter: store::OrderFilter,
        page: &Page,
    ) -> ServiceResult<(Vec<OrderView>, String)> {
        if let Some(own) = &caller.partner {
            if filter.partner_id.as_ref().is_some_and(|p| p != own) {
                return Ok((Vec::new(), String::new()));
            }
            filter.partner_id = Some(own.clone());
        }
        let rows = store::list_orders(&self.db, page, &filter).await?;
        let (rows, next_page_token) = page.finish(rows, |o| o.id.clone());
        Ok((store::views(&self.db, rows).await?, next_page_token))
    }

    /// Records the payment of the whole total and ships the reserved stock out.
    /// Idempotent by `key`: a replay answers what the first request answered, as
    /// `render` made it.
    pub async fn pay<R>(
        &self,
        caller: &Caller,
        id: &OrderId,
        payment: Payment,
        key: Option<&IdempotencyKey>,
        render: fn(&OrderView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone,
    {
        let (OrderView { order, lines }, stored) = self.visible_view(caller, id, key).await?;
        if let Some(key) = key
            && let Some(first) = key.replay::<R>(stored)?
        {
            return Ok(first);
        }
        if payment.currency != order.currency || payment.amount_minor != order.total_minor {
            return Err(ServiceError::invalid(
                "payment.amount",
                format!("must be the order total, {} {}", order.total_minor, order.currency),
            ));
        }
        let from = state_of(&order)?;
        rules::next(from, Action::Pay).map_err(ServiceError::FailedPrecondition)?;
        let at = now();
        if order.payment_due_at <= at {
            return Err(ServiceError::FailedPrecondition(
                "the payment window of the order has closed".into(),
            ));
        }
        // Stock first: should the state write below lose (a cancellation won the
        // race), the cancellation gives back what this commit shipped out.
        self.downstream
            .commit(id.as_str())
            .await
            .map_err(|st| from_downstream("catalog", st))?;
        let reference = payment.reference;
        // The order as the transition below leaves it (it changes only these columns).
        let paid = OrderView {
            order: order::Model {
                state: OrderState::Paid.as_str().into(),
                payment_reference: reference.clone(),
                paid_minor: order.total_minor,
                paid_at: Some(at),
                updated_at: at,
                ..order
            },
            lines,
        };
        let event = events::paid(&paid, at);
        let change = Change::new(Action::Pay, "paid", at)
            .set(order::Column::PaymentReference, reference.clone())
            .set(order::Column::PaidMinor, paid.order.paid_minor)
            .set(order::Column::PaidAt, at);
        // One guarded write: paid only if the order is still in the state read above.
        let writes = GuardedWrite::new(
            store::transition_update(id.as_str(), &[from.as_str()], "paid", change.columns, at).into_query(),
        )
        .insert([store::timeline_row(id.as_str(), "paid", "", &reference, "paid", at)])
        .and_then(|w| w.insert([event.outbox_row(id.as_str())]))
        .map_err(ServiceError::from)?;
        match idempotency::write_guarded(&self.db, key, render(&paid), Clone::clone, writes).await? {
            Some(response) => {
                self.log.committed();
                Ok(response)
            }
            None => Err(ServiceError::FailedPrecondition(
                "the order changed meanwhile; read it again".into(),
            )),
        }
    }

    /// Cancels an order before shipping, refunding a payment in full; its stock
    /// follows (see [`super::stock`]). `caller` is `None` for the service itself (the
    /// payment window's end).
    pub async fn cancel(
        &self,
        caller: Option<&Caller>,
        id: &OrderId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> ServiceResult<OrderView> {
        let order = match caller {
            Some(c) => self.visible(c, id).await?,
            None => self.view(id).await?.order,
        };
        let refunded = if state_of(&order)? == OrderState::Paid {
            order.paid_minor
        } else {
            0
        };
        let change = Change::new(Action::Cancel, "cancelled", at)
            .set(order::Column::CancelReason, reason.to_owned())
            .set(order::Column::RefundedMinor, refunded)
            .detail(reason)
            .event(Some(events::cancelled(&order, refunded, reason, at)))
            .work(store::cancel_work(id.as_str(), at));
        self.change(&order, change).await?;
        self.follow_up(&store::cancel_work_id(id.as_str())).await;
        self.view(id).await
    }

    /// Cancels unpaid orders whose payment window closed at `as_of`.
    pub async fn expire_unpaid(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let due = store::overdue_unpaid(&self.db, as_of, 500).await?;
        let mut expired = 0;
        for order_id in due {
            let id = OrderId::from_stored(order_id);
            match self.cancel(None, &id, "payment window elapsed", as_of).await {
                Ok(_) => expired += 1,
                Err(ServiceError::FailedPrecondition(_)) => {}
                Err(err) => tracing::warn!(order_id = %id, error = %err, "cancelling an unpaid order failed"),
            }
        }
        Ok(expired)
    }

    /// Binds a carrier and tracking number at the warehouse scan of a paid order.
    pub async fn ship(
        &self,
        caller: &Caller,
        id: &OrderId,
        carrier: &str,
        tracking_number: &str,
    ) -> ServiceResult<OrderView> {
        let order = self.visible(caller, id).await?;
        let at = now();
        let change = Change::new(Action::Ship, "shipped", at)
            .set(order::Column::Carrier, carrier.to_owned())
            .set(order::Column::TrackingNumber, tracking_number.to_owned())
            .set(order::Column::ShippedAt, at)
            .detail(format!("{carrier} {tracking_number}"))
            .event(Some(events::progressed(&order, "shipped", at)));
        self.change(&order, change).await?;
        self.view(id).await
    }

    /// Appends a carrier's tracking event; a `delivered` event delivers the order.
    pub async fn track(&self, caller: &Caller, id: &OrderId, event: TrackingEvent) -> ServiceResult<OrderView> {
        let TrackingEvent { kind, at, detail } = event;
        let order = self.visible(caller, id).await?;
        let furthest = (order.tracking_stage > 0).then_some(order.tracking_stage as u8);
        if state_of(&order)? == OrderState::Shipped {
            tracking::may_follow(kind, at, furthest, order.last_tracking_at)
                .map_err(|e| ServiceError::FailedPrecondition(format!("the tracking event {e}")))?;
        }
        let action = if kind == tracking::Kind::Delivered {
            Action::Deliver
        } else {
            Action::Track
        };
        let mut change = Change::new(action, "tracking", at)
            .tracking(kind.as_str())
            .detail(detail)
            .set(order::Column::LastTrackingAt, at);
        if let Some(stage) = kind.stage() {
            change = change.set(order::Column::TrackingStage, i32::from(stage).max(order.tracking_stage));
        }
        if action == Action::Deliver {
            change = change
                .set(order::Column::DeliveredAt, at)
                .event(Some(events::progressed(&order, "delivered", at)));
        }
        self.change(&order, change).await?;
        self.view(id).await
    }

    /// The customer confirms the delivery.
    pub async fn confirm_delivery(&self, caller: &Caller, id: &OrderId) -> ServiceResult<OrderView> {
        let order = self.visible(caller, id).await?;
        let at = now();
        let change = Change::new(Action::Deliver, "delivered", at)
            .set(order::Column::DeliveredAt, at)
            .detail("confirmed by the customer")
            .event(Some(events::progressed(&order, "delivered", at)));
        self.change(&order, change).await?;
        self.view(id).await
    }

    /// Closes a delivered order.
    pub async fn complete(&self, caller: &Caller, id: &OrderId) -> ServiceResult<OrderView> {
        let order = self.visible(caller, id).await?;
        let at = now();
        let change =
            Change::new(Action::Complete, "completed", at).event(Some(events::progressed(&order, "completed", at)));
        self.change(&order, change).await?;
        self.view(id).await
    }
}
