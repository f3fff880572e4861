//! What channel-partner publishes on its event log (`retail.events.v1`), each event
//! typed by its message's full name and keyed by its partner, through the outbox in
//! the transaction of the change it reports.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use prost::{Message, Name};
use retail_kit::convert::{from_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::{AfterCommit, EventHandler, Outgoing};
use retail_kit::money::MAX_AMOUNT_MINOR;
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::DatabaseTransaction;

use crate::app::App;
use crate::app::sales::{Applied, Sale};

use crate::domain::levels::LevelChangeReason;
use crate::domain::partner::PartnerState;
use crate::domain::points::RedemptionState;
use crate::store::ledgers::Change;
use crate::store::target;

pub(crate) fn partner_status_changed(
    partner: &str,
    from: Option<PartnerState>,
    to: PartnerState,
    reason: &str,
    at: DateTime<Utc>,
) -> Outgoing {
    Outgoing::of(&ev::PartnerStatusChanged {
        partner_id: partner.to_owned(),
        from_state: from.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        to_state: to.as_str().to_owned(),
        reason: reason.to_owned(),
        change_time: Some(timestamp(at)),
    })
    .partitioned_by(partner)
}

pub(crate) fn level_changed(
    partner: &str,
    from: &str,
    to: &str,
    reason: LevelChangeReason,
    trailing_minor: i64,
) -> Outgoing {
    Outgoing::of(&ev::PartnerLevelChanged {
        partner_id: partner.to_owned(),
        from_level: from.to_owned(),
        to_level: to.to_owned(),
        reason: reason.as_str().to_owned(),
        trailing_sales_minor: trailing_minor,
    })
    .partitioned_by(partner)
}

pub(crate) fn target_attained(t: &target::Model, progress_minor: i64) -> Outgoing {
    Outgoing::of(&ev::TargetAttained {
        target_id: t.id.clone(),
        partner_id: t.partner_id.clone(),
        sales_rep_id: t.rep_id.clone(),
        progress_minor,
        amount_minor: t.amount_minor,
    })
    .partitioned_by(&t.partner_id)
}

/// A target was set: its subject, period and amount, for the followers of the
/// log that compute attainment themselves.
pub(crate) fn target_set(t: &target::Model) -> Outgoing {
    Outgoing::of(&ev::TargetSet {
        target_id: t.id.clone(),
        subject_kind: t.subject_kind.clone(),
        partner_id: t.partner_id.clone(),
        sales_rep_id: t.rep_id.clone(),
        period_kind: t.period_kind.clone(),
        period_start_time: Some(timestamp(t.period_start)),
        period_end_time: Some(timestamp(t.period_end)),
        amount_minor: t.amount_minor,
    })
    .partitioned_by(&t.partner_id)
}

pub(crate) fn points_changed(ledger_name: &str, change: &Change) -> Outgoing {
    Outgoing::of(&ev::PartnerPointsChanged {
        ledger: ledger_name.to_owned(),
        partner_id: change.partner_id.clone(),
        kind: change.entry.kind.clone(),
        points: change.entry.points,
        balance: change.balance,
        debt: change.debt,
        source: change.entry.source.clone(),
    })
    .partitioned_by(&change.partner_id)
}

pub(crate) fn redemption_decided(name: &str, partner: &str, state: RedemptionState, reason: &str) -> Outgoing {
    Outgoing::of(&ev::RedemptionDecided {
        redemption: name.to_owned(),
        partner_id: partner.to_owned(),
        state: state.as_str().to_owned(),
        reason: reason.to_owned(),
    })
    .partitioned_by(partner)
}

pub(crate) fn special_discount_decided(
    name: &str,
    d: &crate::store::special_discount::Model,
    decision: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Outgoing {
    Outgoing::of(&ev::SpecialDiscountDecided {
        special_discount: name.to_owned(),
        partner_id: d.partner_id.clone(),
        reference: d.reference.clone(),
        rate_bp: i32::try_from(d.rate_bp).unwrap_or(i32::MAX),
        decision: decision.to_owned(),
        reason: reason.to_owned(),
        decide_time: Some(timestamp(at)),
    })
    .partitioned_by(&d.partner_id)
}

pub(crate) fn deal_lock_changed(
    lock: &crate::store::deal_lock::Model,
    change: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Outgoing {
    Outgoing::of(&ev::DealLockChanged {
        deal_lock: crate::app::deals::lock_name(&lock.partner_id, &lock.id),
        partner_id: lock.partner_id.clone(),
        change: change.to_owned(),
        subject_kind: lock.subject_kind.clone(),
        subject_ref: lock.subject_ref.clone(),
        expire_time: Some(timestamp(lock.expires_at)),
        reason: reason.to_owned(),
        change_time: Some(timestamp(at)),
    })
    .partitioned_by(&lock.partner_id)
}

pub(crate) fn lead_changed(
    lead: &crate::store::lead::Model,
    partner: &str,
    change: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Outgoing {
    Outgoing::of(&ev::LeadChanged {
        lead: format!("leads/{}", lead.id),
        partner_id: partner.to_owned(),
        change: change.to_owned(),
        reason: reason.to_owned(),
        man_total_tenths: i32::try_from(lead.total_tenths).unwrap_or(0),
        change_time: Some(timestamp(at)),
    })
    .partitioned_by(&lead.id)
}

pub(crate) fn opportunity_stage_changed(
    o: &crate::store::opportunity::Model,
    change: &crate::store::stage_change::Model,
) -> Outgoing {
    Outgoing::of(&ev::OpportunityStageChanged {
        opportunity: crate::app::opportunities::opportunity_name(&o.partner_id, &o.id),
        partner_id: o.partner_id.clone(),
        sales_rep_id: o.rep_id.clone(),
        from_stage: change.from_stage.clone(),
        to_stage: change.to_stage.clone(),
        actor: change.actor.clone(),
        change_time: Some(timestamp(change.changed_at)),
    })
    .partitioned_by(&o.partner_id)
}

pub(crate) fn quote_changed(
    q: &crate::store::quote::Model,
    entry: &crate::store::quote_trail::Model,
    order_id: &str,
) -> Outgoing {
    Outgoing::of(&ev::QuoteChanged {
        quote: crate::app::quotes::quote_name(&q.partner_id, &q.id),
        partner_id: q.partner_id.clone(),
        opportunity: crate::app::opportunities::opportunity_name(&q.partner_id, &q.opportunity_id),
        change: entry.action.clone(),
        actor: entry.actor.clone(),
        total_minor: q.total_minor,
        currency_code: q.currency.clone(),
        order: if order_id.is_empty() {
            String::new()
        } else {
            format!("orders/{order_id}")
        },
        change_time: Some(timestamp(entry.at)),
    })
    .partitioned_by(&q.partner_id)
}

pub(crate) fn visit_overdue(k: &crate::store::key_customer::Model, due: DateTime<Utc>) -> Outgoing {
    Outgoing::of(&ev::VisitOverdue {
        key_customer: crate::app::visits::key_customer_name(&k.partner_id, &k.id),
        partner_id: k.partner_id.clone(),
        customer_name: k.customer_name.clone(),
        customer_region: k.customer_region.clone(),
        cycle_days: i32::try_from(k.cycle_days).unwrap_or(i32::MAX),
        due_time: Some(timestamp(due)),
    })
    .partitioned_by(&k.partner_id)
}

/// Consumer name and source, as stored with the position.
pub(crate) const CONSUMER: &str = "partner";
pub(crate) const SOURCE: &str = "orders";

/// The order events this service applies, by type name.
struct Consumed {
    paid: String,
    refunded: String,
    cancelled: String,
}

static CONSUMED: LazyLock<Consumed> = LazyLock::new(|| Consumed {
    paid: ev::OrderPaid::full_name(),
    refunded: ev::OrderRefunded::full_name(),
    cancelled: ev::OrderCancelled::full_name(),
});

/// The consumer of the orders log: paid orders, refunds and cancellations of paid
/// orders of channel `partner` become attributed sales ([`App::apply_sale`]).
#[derive(Debug, Clone)]
pub struct OrderEvents {
    app: Arc<App>,
}

impl OrderEvents {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn decode<M: Message + Default>(event: &EventEnvelope) -> ServiceResult<M> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    M::decode(bytes).map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable order event")))
}

/// The partner sale an order event stands for, if it stands for one.
pub(crate) fn sale_of(event: &EventEnvelope) -> ServiceResult<Option<Sale>> {
    let at = |ts: &Option<prost_types::Timestamp>| ts.as_ref().and_then(from_timestamp).unwrap_or_else(Utc::now);
    let kind = event.r#type.as_str();
    let (order_id, reference, refund, parties, amount, when) = if kind == CONSUMED.paid {
        let e: ev::OrderPaid = decode(event)?;
        (e.order_id, String::new(), false, e.parties, e.amount, at(&e.pay_time))
    } else if kind == CONSUMED.refunded {
        let e: ev::OrderRefunded = decode(event)?;
        let reference = format!("return-{}", e.return_id);
        (e.order_id, reference, true, e.parties, e.amount, at(&e.refund_time))
    } else if kind == CONSUMED.cancelled {
        let e: ev::OrderCancelled = decode(event)?;
        let reference = format!("cancel-{}", e.order_id);
        (e.order_id, reference, true, e.parties, e.refunded, at(&e.cancel_time))
    } else {
        return Ok(None);
    };
    let parties = parties.unwrap_or_default();
    let amount = amount.unwrap_or_default();
    if parties.channel != "partner" || parties.partner_id.is_empty() || amount.amount_minor <= 0 {
        return Ok(None);
    }
    Ok(Some(Sale {
        order_id,
        reference,
        refund,
        partner_id: parties.partner_id,
        sales_rep: parties.sales_rep,
        currency: amount.currency_code,
        amount_minor: amount.amount_minor,
        at: when,
    }))
}

#[async_trait::async_trait]
impl EventHandler for OrderEvents {
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        let mut recorded = false;
        for event in events {
            let Some(sale) = sale_of(event)? else {
                continue;
            };
            // Refused like the same amount anywhere in the suite, and passed over:
            // retrying it would stop the partition.
            if sale.amount_minor > MAX_AMOUNT_MINOR {
                tracing::warn!(order_id = %sale.order_id, "order amount above the suite's bound; not counted");
                continue;
            }
            recorded |= self.app.apply_sale(txn, &sale).await? == Applied::Recorded;
        }
        if !recorded {
            return Ok(Vec::new());
        }
        let log = self.app.log.clone();
        Ok(vec![Box::pin(async move { log.committed() })])
    }

    /// A partner's sales apply in log order in one partition. Orders keys its
    /// events by member, so the partner is read from the payload; events of other
    /// kinds are passed over undecoded, and an unreadable one goes to the handler,
    /// which refuses it.
    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        route(event)
    }
}

/// The partition key of an order event: the partner of a partner sale, `None`
/// for anything else; an unreadable sale event goes to the handler (by its order),
/// which refuses it.
fn route(event: &EventEnvelope) -> Option<String> {
    let ty = event.r#type.as_str();
    if ty != CONSUMED.paid && ty != CONSUMED.refunded && ty != CONSUMED.cancelled {
        return None;
    }
    match sale_of(event) {
        Ok(Some(sale)) => Some(sale.partner_id),
        Ok(None) => None,
        Err(_) => Some(event.aggregate_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_type_is_its_message_name_and_its_key_the_partner() {
        let out = partner_status_changed("p-1", None, PartnerState::Applied, "registered", Utc::now());
        assert_eq!(out.type_name(), ev::PartnerStatusChanged::full_name());
        assert_eq!(out.partition_key(), Some("p-1"));
        let back = ev::PartnerStatusChanged::decode(out.payload()).unwrap();
        assert_eq!((back.from_state.as_str(), back.to_state.as_str()), ("", "applied"));
    }

    fn envelope<M: Message + Name>(message: &M) -> EventEnvelope {
        EventEnvelope {
            r#type: M::full_name(),
            aggregate_id: "o-1".into(),
            partition_key: "m-1".into(),
            payload: Some(prost_types::Any {
                type_url: M::type_url(),
                value: message.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    fn parties(channel: &str, partner: &str) -> Option<ev::OrderParties> {
        Some(ev::OrderParties {
            channel: channel.into(),
            partner_id: partner.into(),
            sales_rep: "rep-1".into(),
            ..Default::default()
        })
    }

    fn eur(amount_minor: i64) -> Option<retail_proto::common::Money> {
        Some(retail_proto::common::Money {
            currency_code: "EUR".into(),
            amount_minor,
        })
    }

    #[test]
    fn only_partner_orders_with_a_partner_are_sales_and_they_are_keyed_by_the_partner() {
        let paid = envelope(&ev::OrderPaid {
            order_id: "o-1".into(),
            parties: parties("partner", "acme"),
            amount: eur(100),
            ..Default::default()
        });
        let sale = sale_of(&paid).unwrap().unwrap();
        assert_eq!(
            (sale.partner_id.as_str(), sale.sales_rep.as_str(), sale.refund),
            ("acme", "rep-1", false)
        );
        assert_eq!(route(&paid), Some("acme".to_owned()), "not the member");
        let refunded = envelope(&ev::OrderRefunded {
            order_id: "o-1".into(),
            return_id: "r-9".into(),
            parties: parties("partner", "acme"),
            amount: eur(40),
            ..Default::default()
        });
        let refund = sale_of(&refunded).unwrap().unwrap();
        assert_eq!(
            (refund.reference.as_str(), refund.refund, refund.amount_minor),
            ("return-r-9", true, 40)
        );
        for other in [
            envelope(&ev::OrderPaid {
                parties: parties("online", ""),
                amount: eur(100),
                ..Default::default()
            }),
            envelope(&ev::OrderPaid {
                parties: parties("partner", ""),
                amount: eur(100),
                ..Default::default()
            }),
            envelope(&ev::OrderCancelled {
                parties: parties("partner", "acme"),
                refunded: eur(0),
                ..Default::default()
            }),
        ] {
            assert!(sale_of(&other).unwrap().is_none(), "{other:?}");
            assert_eq!(route(&other), None);
        }
        let placed = envelope(&ev::OrderPlaced::default());
        assert_eq!(route(&placed), None, "other order events are passed over");
    }
}
