//! Returns after delivery: requested (by line, never more than bought), received at
//! the warehouse (the goods go back to stock, see [`super::stock`]), refunded.

use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use sea_orm::ActiveModelTrait;

use super::{App, Caller, state_of};
use crate::domain::ids::{OrderId, ReturnName, SkuCode};
use crate::domain::lifecycle::{self as rules, Action};
use crate::domain::returns::{self, ReturnState};
use crate::events;
use crate::store::{self, ReturnView, order};

/// A return to request, parsed.
#[derive(Debug, Clone)]
pub struct ReturnRequest {
    pub reason: String,
    /// Each SKU once, with its units.
    pub lines: Vec<(SkuCode, i64)>,
}

impl App {
    async fn find_return(&self, name: &ReturnName) -> ServiceResult<ReturnView> {
        store::find_return(&self.db, name.order.as_str(), &name.id)
            .await?
            .ok_or_else(|| ServiceError::not_found("return", name.resource_name()))
    }

    /// Requests a return of delivered goods. Idempotent by `key`: a replay answers
    /// what the first request answered, as `render` made it.
    pub async fn request_return<R>(
        &self,
        caller: &Caller,
        id: &OrderId,
        request: ReturnRequest,
        key: Option<&IdempotencyKey>,
        render: fn(&order::Model, &ReturnView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let order = self.visible(caller, id).await?;
        let lines: Vec<(String, i64)> = request
            .lines
            .into_iter()
            .map(|(sku, q)| (sku.into_inner(), q))
            .collect();
        let reason = request.reason;
        idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (order, lines, reason) = (order.clone(), lines.clone(), reason.clone());
            Box::pin(async move {
                let at = now();
                let from = state_of(&order)?;
                let to = rules::next(from, Action::RequestReturn).map_err(ServiceError::FailedPrecondition)?;
                let bought: Vec<returns::Bought> = store::lines_of(txn, &order.id)
                    .await?
                    .into_iter()
                    .map(|l| returns::Bought {
                        sku: l.sku_code,
                        quantity: l.quantity,
                        unit_minor: l.unit_minor,
                        discount_minor: l.discount_minor,
                        returned: l.returned_quantity,
                    })
                    .collect();
                let refund = returns::check(&bought, &lines).map_err(|problems| {
                    ServiceError::FailedPrecondition(
                        problems.into_iter().map(|(_, why)| why).collect::<Vec<_>>().join("; "),
                    )
                })?;
                if !store::transition(txn, &order.id, &[from.as_str()], to.as_str(), vec![], at).await? {
                    return Err(ServiceError::FailedPrecondition(
                        "the order changed meanwhile; read it again".into(),
                    ));
                }
                for (sku, q) in &lines {
                    if !store::add_returned(txn, &order.id, sku, *q).await? {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "more of skus/{sku} would come back than was bought"
                        )));
                    }
                }
                let ret = store::order_return::Model {
                    id: store::new_id(),
                    order_id: order.id.clone(),
                    state: ReturnState::Requested.as_str().into(),
                    reason,
                    refund_minor: refund,
                    created_at: at,
                    updated_at: at,
                };
                let rows = lines
                    .iter()
                    .map(|(sku, q)| store::return_line::Model {
                        return_id: ret.id.clone(),
                        sku_code: sku.clone(),
                        quantity: *q,
                        damaged: false,
                    })
                    .collect();
                store::insert_return(txn, ret.clone(), rows).await?;
                store::timeline_row(&order.id, "return_requested", "", &ret.id, to.as_str(), at)
                    .insert(txn)
                    .await?;
                let view = store::find_return(txn, &order.id, &ret.id)
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("return vanished")))?;
                Ok(render(&order, &view))
            })
        })
        .await
    }

    /// Records the returned goods at the warehouse, `damaged` ones to unsellable
    /// stock. A return already received (or refunded) is answered as it is.
    pub async fn receive_return(
        &self,
        caller: &Caller,
        name: &ReturnName,
        damaged: &[SkuCode],
    ) -> ServiceResult<(order::Model, ReturnView)> {
        let order = self.visible(caller, &name.order).await?;
        let ret = self.find_return(name).await?;
        if let Some(stray) = damaged
            .iter()
            .find(|d| !ret.lines.iter().any(|l| l.sku_code == d.as_str()))
        {
            return Err(ServiceError::invalid(
                "damaged_skus",
                format!("skus/{} is not in the return", stray.as_str()),
            ));
        }
        match ReturnState::parse(&ret.ret.state) {
            Some(ReturnState::Requested) => {}
            Some(ReturnState::Received | ReturnState::Refunded) => return Ok((order, ret)),
            None => return Err(ServiceError::internal(anyhow::anyhow!("unknown stored return state"))),
        }
        let from = state_of(&order)?;
        let to = rules::next(from, Action::ReceiveReturn).map_err(ServiceError::FailedPrecondition)?;
        // The goods are here: the return is received, and its stock work is written
        // with it; catalog gets the units right after.
        let at = now();
        let (id, return_id) = (name.order.as_str().to_owned(), name.id.clone());
        let damaged: Vec<String> = damaged.iter().map(|d| d.as_str().to_owned()).collect();
        idempotency::transaction(&self.db, |txn| {
            let (id, return_id, damaged) = (id.clone(), return_id.clone(), damaged.clone());
            Box::pin(async move {
                if !store::return_transition(txn, &return_id, "requested", "received", at).await? {
                    return Err(ServiceError::FailedPrecondition("the return changed meanwhile".into()));
                }
                for sku in &damaged {
                    store::mark_damaged(txn, &return_id, sku).await?;
                }
                if !store::transition(txn, &id, &[from.as_str()], to.as_str(), vec![], at).await? {
                    return Err(ServiceError::FailedPrecondition("the order changed meanwhile".into()));
                }
                store::timeline_row(&id, "return_received", "", &return_id, to.as_str(), at)
                    .insert(txn)
                    .await?;
                store::return_work(&id, &return_id, at).insert(txn).await?;
                Ok(())
            })
        })
        .await?;
        self.follow_up(&store::return_work_id(&name.id)).await;
        Ok((order, self.find_return(name).await?))
    }

    /// Refunds a received return; a refunded one is answered as it is.
    pub async fn refund_return(&self, caller: &Caller, name: &ReturnName) -> ServiceResult<(order::Model, ReturnView)> {
        let order = self.visible(caller, &name.order).await?;
        let ret = self.find_return(name).await?;
        match ReturnState::parse(&ret.ret.state) {
            Some(ReturnState::Received) => {}
            Some(ReturnState::Refunded) => return Ok((order, ret)),
            _ => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "the return is {}; goods must be received before the refund",
                    ret.ret.state
                )));
            }
        }
        let from = state_of(&order)?;
        let to = rules::next(from, Action::Refund).map_err(ServiceError::FailedPrecondition)?;
        let at = now();
        let view = store::view(&self.db, order.clone()).await?;
        let event = events::refunded(&view, &ret, at);
        let (id, return_id, amount) = (name.order.as_str().to_owned(), name.id.clone(), ret.ret.refund_minor);
        idempotency::transaction(&self.db, |txn| {
            let (id, return_id, event) = (id.clone(), return_id.clone(), event.clone());
            Box::pin(async move {
                if !store::return_transition(txn, &return_id, "received", "refunded", at).await? {
                    return Err(ServiceError::FailedPrecondition("the return changed meanwhile".into()));
                }
                if !store::add_refund(txn, &id, amount).await? {
                    return Err(ServiceError::FailedPrecondition(
                        "refunds would exceed the payment".into(),
                    ));
                }
                if !store::transition(txn, &id, &[from.as_str()], to.as_str(), vec![], at).await? {
                    return Err(ServiceError::FailedPrecondition("the order changed meanwhile".into()));
                }
                store::timeline_row(&id, "refunded", "", &return_id, to.as_str(), at)
                    .insert(txn)
                    .await?;
                event.outbox_row(&id).insert(txn).await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        Ok((order, self.find_return(name).await?))
    }
}
