//! Membership's reaction to the orders event log: a paid order adds spend, a purchase
//! (for the lifecycle) and points with the tier multiplier; a refunded return or a
//! cancelled paid order reverses spend and points (docs/domain.md, Points). The same
//! [`loyalty::record`] serves the back-office `RecordPurchase` RPC.
//!
//! The kit's consumer applies each event and stores its position in one transaction,
//! so every event takes effect exactly once; partitions by member apply the log in
//! parallel, each member's events in log order; an order already recorded (by the RPC,
//! say) is skipped, and so are members that no longer exist. An amount above the
//! suite's bound ([`MAX_AMOUNT_MINOR`]) is skipped with a warning, as the RPC refuses
//! it; points a payment would earn above the balance's cap are not earned.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prost::Message;
use retail_kit::convert::from_timestamp;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::{AfterCommit, EventHandler};
use retail_kit::money::MAX_AMOUNT_MINOR;
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::DatabaseTransaction;

use crate::api::State;
use crate::loyalty::{self, Paid, PurchaseInput};
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

impl OrderEvents {
    /// Records a run of payments in one go; the members it changed, at the versions
    /// the transaction commits (and whether their tier changed), go to `changed`.
    async fn pay(
        &self,
        txn: &DatabaseTransaction,
        payments: Vec<(String, PurchaseInput)>,
        now: DateTime<Utc>,
        changed: &mut Vec<Changed>,
    ) -> ServiceResult<()> {
        if payments.is_empty() {
            return Ok(());
        }
        let outcomes = match loyalty::record_payments(txn, &self.state.rules, &payments, now).await {
            Ok(outcomes) => outcomes,
            // Recorded meanwhile through the admin RPC: the batch rolls back, and
            // applied again it finds that payment.
            Err(ServiceError::AlreadyExists(why)) => return Err(ServiceError::Aborted(why)),
            Err(other) => return Err(other),
        };
        for ((member, input), outcome) in payments.into_iter().zip(outcomes) {
            match outcome {
                Paid::Recorded(recorded) => changed.push(Changed::of(member, &recorded)),
                Paid::AlreadyRecorded => {}
                Paid::NoMember => {
                    tracing::warn!(order_id = %input.order_id, "order paid for a member that does not exist (or was erased); not recorded");
                }
            }
        }
        Ok(())
    }

    /// Records a refund unless it was recorded before.
    async fn refund(
        &self,
        txn: &DatabaseTransaction,
        member: String,
        input: PurchaseInput,
        now: DateTime<Utc>,
        changed: &mut Vec<Changed>,
    ) -> ServiceResult<()> {
        // A refund applied before would fail the refund checks (as exceeding the
        // payment): it is looked for first.
        if db::find_purchase(txn, &input.order_id, "refund", &input.reference)
            .await?
            .is_some()
        {
            return Ok(());
        }
        // The refund checks refuse before anything is written, so the transaction stays usable.
        match loyalty::record(txn, &self.state.rules, &member, &input, now).await {
            Ok(recorded) => changed.push(Changed::of(member, &recorded)),
            Err(ServiceError::AlreadyExists(_)) => {}
            Err(
                ServiceError::NotFound { .. } | ServiceError::FailedPrecondition(_) | ServiceError::InvalidArgument(_),
            ) => {
                tracing::warn!(order_id = %input.order_id, "refund not applicable to the member; skipped");
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }
}

/// A member a batch changed.
struct Changed {
    member: String,
    /// The version the batch's transaction commits.
    version: i64,
    tier_changed: bool,
    /// Whether Redis holds the fence at that version (set by [`fence`]).
    fenced: bool,
}

impl Changed {
    fn of(member: String, recorded: &loyalty::Recorded) -> Self {
        Self {
            member,
            version: recorded.version,
            tier_changed: recorded.tier_changed,
            fenced: false,
        }
    }
}

/// Invalidates each member's cached profile up to its version, and its cached tier
/// if that changed, noting which fences Redis holds.
async fn fence(state: &State, changed: &mut [Changed]) {
    let reached = futures::future::join_all(
        changed
            .iter()
            .map(|c| state.forget_member(&c.member, c.version, c.tier_changed)),
    )
    .await;
    for (c, reached) in changed.iter_mut().zip(reached) {
        c.fenced = reached;
    }
}

/// After the commit: invalidates again, in Redis only where the fence before the
/// commit did not reach it; in this process always, for loads that read the rows
/// before the commit.
async fn refence(state: &State, changed: &[Changed]) {
    futures::future::join_all(changed.iter().map(|c| async move {
        if c.fenced {
            state.forget_member_here(&c.member, c.version, c.tier_changed);
        } else {
            state.forget_member(&c.member, c.version, c.tier_changed).await;
        }
    }))
    .await;
}

#[async_trait::async_trait]
impl EventHandler for OrderEvents {
    /// Consecutive payments are recorded together ([`loyalty::record_payments`]),
    /// refunds one by one between them, so each member's events apply in log order.
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        let rules = &self.state.rules;
        let now = Utc::now();
        let mut changed = Vec::new();
        let mut payments = Vec::new();
        for event in events {
            let Some((member, currency, input)) = purchase_of(event)? else {
                continue;
            };
            if currency != rules.currency {
                tracing::warn!(order_id = %input.order_id, %currency, "order in another currency than membership's; not recorded");
                continue;
            }
            // Refused like the same amount through the RPC, and passed over: the
            // event cannot be applied, and retrying it would stop the partition.
            if input.amount_minor > MAX_AMOUNT_MINOR {
                tracing::warn!(order_id = %input.order_id, "order amount above the suite's bound; not recorded");
                continue;
            }
            if input.refund {
                self.pay(txn, std::mem::take(&mut payments), now, &mut changed).await?;
                self.refund(txn, member, input, now, &mut changed).await?;
            } else {
                payments.push((member, input));
            }
        }
        self.pay(txn, payments, now, &mut changed).await?;
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        // Fence the cache at the versions this transaction commits, before the
        // commit: from then on no older profile can be written back (if the process
        // dies right after the commit, the fences in Redis still hold). After the
        // commit they are invalidated again where Redis missed one, and in this
        // process, and the appender is woken for the events the changes published.
        fence(&self.state, &mut changed).await;
        let state = self.state.clone();
        Ok(vec![Box::pin(async move {
            refence(&state, &changed).await;
            state.log.committed();
        })])
    }

    /// A member's purchases and refunds are applied in order, by one partition;
    /// other order events are passed over ([`route`]).
    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        route(event)
    }
}

/// The partition key of an order event: its member for the events membership
/// applies, `None` for the others. Orders keys its events by member in the
/// envelope, so routing decodes nothing; an event published before envelopes
/// carried the key is decoded for it, and an unreadable one goes to the handler,
/// which refuses it.
fn route(event: &EventEnvelope) -> Option<String> {
    if !matches!(
        event.r#type.as_str(),
        "retail.events.v1.OrderPaid" | "retail.events.v1.OrderRefunded" | "retail.events.v1.OrderCancelled"
    ) {
        return None;
    }
    if !event.partition_key.is_empty() {
        return Some(event.partition_key.clone());
    }
    match purchase_of(event) {
        Ok(Some((member, _, _))) => Some(member),
        Ok(None) => None,
        Err(_) => Some(event.aggregate_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use retail_proto::events::EventEnvelope;

    use super::{purchase_of, route};

    /// Regression: every partition decoded every order event to find its key.
    /// An unreadable payload shows whether routing decodes it.
    #[test]
    fn an_order_event_is_routed_by_the_envelope_key_without_decoding_its_payload() {
        let event = EventEnvelope {
            r#type: "retail.events.v1.OrderPaid".into(),
            aggregate_id: "o-1".into(),
            partition_key: "m-7".into(),
            payload: Some(prost_types::Any {
                type_url: "type.googleapis.com/retail.events.v1.OrderPaid".into(),
                value: vec![0xff, 0xff, 0xff],
            }),
            ..Default::default()
        };
        assert!(purchase_of(&event).is_err(), "the payload is unreadable");
        assert_eq!(route(&event), Some("m-7".to_owned()));
        let placed = EventEnvelope {
            r#type: "retail.events.v1.OrderPlaced".into(),
            ..event
        };
        assert_eq!(
            route(&placed),
            None,
            "an event membership does nothing with is passed over"
        );
    }
}
