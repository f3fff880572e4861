//! Following orders' and channel-partner's event logs: each event that concerns a
//! partner and has a webhook type becomes one delivery per subscription of that
//! partner to that type, inserted in the transaction that stores the log's
//! position (the kit's consumer), so every event is enqueued exactly once; the
//! delivery's unique (subscription, event id) key holds even for a redelivered event.

use std::sync::{Arc, LazyLock};

use chrono::Utc;
use prost::{Message, Name};
use retail_kit::error::ServiceResult;
use retail_kit::events::{AfterCommit, EventHandler, partition_key_of};
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::domain::{self, EventType};
use super::store::{PENDING, delivery, subscription};

/// The consumer's name, stored with its positions.
pub const CONSUMER: &str = "gateway-webhooks";
/// The sources, as stored with the positions.
pub const ORDERS: &str = "orders";
pub const PARTNER: &str = "partner";

/// The event types (message full names) that can become webhooks.
static TYPES: LazyLock<[String; 6]> = LazyLock::new(|| {
    [
        ev::OrderProgressed::full_name(),
        ev::OrderRefunded::full_name(),
        ev::LeadChanged::full_name(),
        ev::DealLockChanged::full_name(),
        ev::TargetAttained::full_name(),
        ev::RedemptionDecided::full_name(),
    ]
});

/// What a log event means for a partner's webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub partner_id: String,
    pub kind: EventType,
    pub data: Value,
}

fn decode<M: Message + Default>(event: &EventEnvelope) -> Option<M> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    match M::decode(bytes) {
        Ok(m) => Some(m),
        Err(_) => {
            tracing::warn!(event_id = %event.id, event_type = %event.r#type, "unreadable event passed over by webhooks");
            None
        }
    }
}

fn time(t: Option<prost_types::Timestamp>) -> Value {
    crate::routes::time(t).map(Value::String).unwrap_or(Value::Null)
}

fn last_segment(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The webhook an event stands for, if any: order events of channel `partner`
/// (shipped, delivered, a refunded return), leads offered to a partner, expired
/// deal locks, attained targets and decided redemptions.
pub fn hook_of(event: &EventEnvelope) -> Option<Hook> {
    let kind = event.r#type.as_str();
    let partner_order = |parties: &Option<ev::OrderParties>| {
        parties
            .as_ref()
            .filter(|p| p.channel == "partner" && !p.partner_id.is_empty())
            .map(|p| p.partner_id.clone())
    };
    if kind == TYPES[0] {
        let e: ev::OrderProgressed = decode(event)?;
        let partner_id = partner_order(&e.parties)?;
        let kind = match e.state.as_str() {
            "shipped" => EventType::OrderShipped,
            "delivered" => EventType::OrderDelivered,
            _ => return None,
        };
        let rep = e.parties.map(|p| p.sales_rep).unwrap_or_default();
        return Some(Hook {
            partner_id,
            kind,
            data: json!({"orderId": e.order_id, "state": e.state, "salesRepId": rep, "eventTime": time(e.event_time)}),
        });
    }
    if kind == TYPES[1] {
        let e: ev::OrderRefunded = decode(event)?;
        let partner_id = partner_order(&e.parties)?;
        let amount = e.amount.unwrap_or_default();
        return Some(Hook {
            partner_id,
            kind: EventType::OrderReturned,
            data: json!({
                "orderId": e.order_id,
                "returnId": e.return_id,
                "refunded": {"currencyCode": amount.currency_code, "amountMinor": amount.amount_minor.to_string()},
                "refundTime": time(e.refund_time),
            }),
        });
    }
    if kind == TYPES[2] {
        let e: ev::LeadChanged = decode(event)?;
        if e.change != "offered" || e.partner_id.is_empty() {
            return None;
        }
        return Some(Hook {
            partner_id: e.partner_id,
            kind: EventType::LeadAssigned,
            data: json!({
                "leadId": last_segment(&e.lead),
                "reason": e.reason,
                "manTotalTenths": e.man_total_tenths,
                "changeTime": time(e.change_time),
            }),
        });
    }
    if kind == TYPES[3] {
        let e: ev::DealLockChanged = decode(event)?;
        if e.change != "expired" || e.partner_id.is_empty() {
            return None;
        }
        return Some(Hook {
            partner_id: e.partner_id,
            kind: EventType::LockExpired,
            data: json!({
                "dealLockId": last_segment(&e.deal_lock),
                "subjectKind": e.subject_kind,
                "subjectRef": e.subject_ref,
                "reason": e.reason,
                "expireTime": time(e.expire_time),
                "changeTime": time(e.change_time),
            }),
        });
    }
    if kind == TYPES[4] {
        let e: ev::TargetAttained = decode(event)?;
        if e.partner_id.is_empty() {
            return None;
        }
        return Some(Hook {
            partner_id: e.partner_id,
            kind: EventType::TargetAttained,
            data: json!({
                "targetId": e.target_id,
                "salesRepId": e.sales_rep_id,
                "progressMinor": e.progress_minor.to_string(),
                "amountMinor": e.amount_minor.to_string(),
            }),
        });
    }
    if kind == TYPES[5] {
        let e: ev::RedemptionDecided = decode(event)?;
        if e.partner_id.is_empty() {
            return None;
        }
        return Some(Hook {
            partner_id: e.partner_id,
            kind: EventType::RedemptionDecided,
            data: json!({
                "redemptionId": last_segment(&e.redemption),
                "state": e.state,
                "reason": e.reason,
            }),
        });
    }
    None
}

/// The body every attempt of the event's deliveries sends.
pub fn body_of(event: &EventEnvelope, hook: &Hook) -> String {
    json!({
        "id": event.id,
        "type": hook.kind.as_str(),
        "occurredAt": time(event.occur_time),
        "data": hook.data,
    })
    .to_string()
}

/// The handler of one log (orders' or channel-partner's).
#[derive(Debug, Clone)]
pub struct LogEvents {
    wake: Arc<Notify>,
}

impl LogEvents {
    pub fn new(wake: Arc<Notify>) -> Self {
        Self { wake }
    }
}

#[async_trait::async_trait]
impl EventHandler for LogEvents {
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        let now = Utc::now();
        let mut enqueued = false;
        for event in events {
            let Some(hook) = hook_of(event) else {
                continue;
            };
            let subscriptions = subscription::Entity::find()
                .filter(subscription::Column::PartnerId.eq(hook.partner_id.as_str()))
                .all(txn)
                .await?;
            let body = body_of(event, &hook);
            for s in subscriptions
                .iter()
                .filter(|s| domain::split_types(&s.event_types).contains(&hook.kind))
            {
                delivery::Entity::insert(delivery::ActiveModel {
                    id: Set(uuid::Uuid::now_v7().to_string()),
                    subscription_id: Set(s.id.clone()),
                    partner_id: Set(hook.partner_id.clone()),
                    event_id: Set(event.id.clone()),
                    event_type: Set(hook.kind.as_str().to_owned()),
                    body: Set(body.clone()),
                    state: Set(PENDING.to_owned()),
                    attempt_count: Set(0),
                    round_start: Set(0),
                    next_attempt_at: Set(now),
                    version: Set(0),
                    last_status: Set(None),
                    last_error: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                    delivered_at: Set(None),
                })
                .on_conflict(
                    OnConflict::columns([delivery::Column::SubscriptionId, delivery::Column::EventId])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
                enqueued = true;
            }
        }
        if !enqueued {
            return Ok(Vec::new());
        }
        let wake = self.wake.clone();
        Ok(vec![Box::pin(async move { wake.notify_one() })])
    }

    /// Only the event types that can become webhooks; the rest are passed over
    /// without a transaction.
    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        TYPES
            .contains(&event.r#type)
            .then(|| partition_key_of(event).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Any;

    fn envelope<M: Message + Name>(m: &M) -> EventEnvelope {
        EventEnvelope {
            id: "e1".into(),
            r#type: M::full_name(),
            payload: Some(Any {
                type_url: M::type_url(),
                value: m.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    fn parties(channel: &str, partner: &str) -> Option<ev::OrderParties> {
        Some(ev::OrderParties {
            channel: channel.into(),
            partner_id: partner.into(),
            ..Default::default()
        })
    }

    #[test]
    fn partner_orders_shipped_and_delivered_become_hooks_others_do_not() {
        let shipped = ev::OrderProgressed {
            order_id: "o1".into(),
            parties: parties("partner", "p1"),
            state: "shipped".into(),
            event_time: None,
        };
        let hook = hook_of(&envelope(&shipped)).unwrap_or_else(|| unreachable!());
        assert_eq!((hook.partner_id.as_str(), hook.kind), ("p1", EventType::OrderShipped));
        let store = ev::OrderProgressed {
            parties: parties("store", ""),
            ..shipped.clone()
        };
        assert_eq!(hook_of(&envelope(&store)), None);
        let completed = ev::OrderProgressed {
            state: "completed".into(),
            ..shipped
        };
        assert_eq!(hook_of(&envelope(&completed)), None);
    }

    #[test]
    fn only_offered_leads_and_expired_locks_become_hooks() {
        let lead = ev::LeadChanged {
            lead: "leads/l1".into(),
            partner_id: "p1".into(),
            change: "offered".into(),
            ..Default::default()
        };
        let hook = hook_of(&envelope(&lead)).unwrap_or_else(|| unreachable!());
        assert_eq!(hook.kind, EventType::LeadAssigned);
        assert_eq!(hook.data["leadId"], "l1");
        let accepted = ev::LeadChanged {
            change: "accepted".into(),
            ..lead
        };
        assert_eq!(hook_of(&envelope(&accepted)), None);
        let lock = ev::DealLockChanged {
            deal_lock: "partners/p1/dealLocks/d1".into(),
            partner_id: "p1".into(),
            change: "expired".into(),
            ..Default::default()
        };
        assert_eq!(hook_of(&envelope(&lock)).map(|h| h.kind), Some(EventType::LockExpired));
        let registered = ev::DealLockChanged {
            change: "registered".into(),
            ..lock
        };
        assert_eq!(hook_of(&envelope(&registered)), None);
    }

    #[test]
    fn the_body_carries_the_source_event_id() {
        let e = ev::RedemptionDecided {
            redemption: "partners/p1/ledgers/collective/redemptions/r1".into(),
            partner_id: "p1".into(),
            state: "approved".into(),
            reason: String::new(),
        };
        let env = envelope(&e);
        let hook = hook_of(&env).unwrap_or_else(|| unreachable!());
        let body: Value = serde_json::from_str(&body_of(&env, &hook)).unwrap_or_default();
        assert_eq!(body["id"], "e1");
        assert_eq!(body["type"], "redemption.decided");
        assert_eq!(body["data"]["redemptionId"], "r1");
    }
}
