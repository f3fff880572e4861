//! Membership's reaction to the orders event log: a paid order adds spend, a purchase
//! (for the lifecycle) and points with the tier multiplier; a refunded return or a
//! cancelled paid order reverses spend and points (DOMAIN.md 2.3). The same
//! [`loyalty::record`] serves the back-office `RecordPurchase` RPC.
//!
//! The kit's consumer applies each event and stores its position in one transaction,
//! so every event takes effect exactly once; partitions by member apply the log in
//! parallel, each member's events in log order; an order already recorded (by the RPC,
//! say) is skipped, and so are members that no longer exist.

use std::sync::Arc;

use chrono::Utc;
use prost::Message;
use retail_kit::convert::from_timestamp;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::{AfterCommit, EventHandler};
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::DatabaseTransaction;

use crate::api::State;
use crate::loyalty::{self, PurchaseInput};
use crate::store::loyalty as db;

/// Consumer name and source, as stored with the position.
pub const CONSUMER: &str = "membership";
pub const SOURCE: &str = "orders";

#[derive(Debug, Clone)]
pub struct OrderEvents {
    state: Arc<State>,
}

impl OrderEvents {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

fn decode<M: Message + Default>(event: &EventEnvelope) -> ServiceResult<M> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    M::decode(bytes).map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable order event")))
}

/// The member and the purchase or refund an event stands for, if it stands for one.
fn purchase_of(event: &EventEnvelope) -> ServiceResult<Option<(String, String, PurchaseInput)>> {
    let at = |ts: &Option<prost_types::Timestamp>| ts.as_ref().and_then(from_timestamp).unwrap_or_else(Utc::now);
    let out = match event.r#type.as_str() {
        "retail.events.v1.OrderPaid" => {
            let e: ev::OrderPaid = decode(event)?;
            let parties = e.parties.unwrap_or_default();
            let amount = e.amount.unwrap_or_default();
            (
                parties.member_id.clone(),
                amount.currency_code,
                PurchaseInput {
                    order_id: e.order_id,
                    amount_minor: amount.amount_minor,
                    at: at(&e.pay_time),
                    channel: parties.channel,
                    refund: false,
                    reference: String::new(),
                },
            )
        }
        "retail.events.v1.OrderRefunded" => {
            let e: ev::OrderRefunded = decode(event)?;
            let parties = e.parties.unwrap_or_default();
            let amount = e.amount.unwrap_or_default();
            (
                parties.member_id.clone(),
                amount.currency_code,
                PurchaseInput {
                    order_id: e.order_id,
                    amount_minor: amount.amount_minor,
                    at: at(&e.refund_time),
                    channel: parties.channel,
                    refund: true,
                    reference: format!("return-{}", e.return_id),
                },
            )
        }
        "retail.events.v1.OrderCancelled" => {
            let e: ev::OrderCancelled = decode(event)?;
            let parties = e.parties.unwrap_or_default();
            let amount = e.refunded.unwrap_or_default();
            (
                parties.member_id.clone(),
                amount.currency_code,
                PurchaseInput {
                    order_id: e.order_id.clone(),
                    amount_minor: amount.amount_minor,
                    at: at(&e.cancel_time),
                    channel: parties.channel,
                    refund: true,
                    reference: format!("cancel-{}", e.order_id),
                },
            )
        }
        _ => return Ok(None),
    };
    let (member, currency, input) = out;
    if member.is_empty() || input.amount_minor <= 0 {
        return Ok(None);
    }
    Ok(Some((member, currency, input)))
}

#[async_trait::async_trait]
impl EventHandler for OrderEvents {
    async fn handle(&self, txn: &DatabaseTransaction, event: &EventEnvelope) -> ServiceResult<Option<AfterCommit>> {
        let Some((member, currency, input)) = purchase_of(event)? else {
            return Ok(None);
        };
        let rules = &self.state.rules;
        if currency != rules.currency {
            tracing::warn!(order_id = %input.order_id, %currency, "order in another currency than membership's; not recorded");
            return Ok(None);
        }
        let kind = if input.refund { "refund" } else { "paid" };
        // A refund applied before would fail the refund checks (as exceeding the
        // payment): it is looked for first. A payment applied before is found by
        // the purchase insert itself (ALREADY_EXISTS below), without a read.
        if input.refund
            && db::find_purchase(txn, &input.order_id, kind, &input.reference)
                .await?
                .is_some()
        {
            return Ok(None);
        }
        // Checks that refuse before anything is written, so the transaction stays usable.
        match loyalty::record(txn, rules, &member, &input, Utc::now()).await {
            Ok(recorded) => {
                // Fence the cache at the version this transaction commits, before
                // the commit: from then on no older profile can be written back (if
                // the process dies right after the commit, the fence in Redis still
                // holds). After the commit it is invalidated again at that version,
                // in case Redis missed this, and the appender is woken for the
                // events the change published.
                let key = crate::api::member_key(&member);
                let version = recorded.version.max(0) as u64;
                self.state.cache.invalidate(&key, version).await;
                let state = self.state.clone();
                Ok(Some(Box::pin(async move {
                    state.cache.invalidate(&key, version).await;
                    state.log.committed();
                })))
            }
            // Recorded already (through the admin RPC, or by a replay of the log): once.
            Err(ServiceError::AlreadyExists(_)) => Ok(None),
            Err(
                ServiceError::NotFound { .. } | ServiceError::FailedPrecondition(_) | ServiceError::InvalidArgument(_),
            ) => {
                tracing::warn!(order_id = %input.order_id, kind, "order event not applicable to the member; skipped");
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// A member's purchases and refunds are applied in order, by one partition;
    /// other order events are passed over. An unreadable event goes to the handler,
    /// which refuses it.
    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        match purchase_of(event) {
            Ok(Some((member, _, _))) => Some(member),
            Ok(None) => None,
            Err(_) => Some(event.aggregate_id.clone()),
        }
    }
}
