//! What orders publishes on its event log (`retail.events.v1`), built from the order
//! as stored; membership, channel-partner and analytics subscribe to it. Each event's
//! type is its message's full name. Every event of an order is keyed by its member
//! (a guest order's by the order itself): membership applies a member's purchases
//! and refunds in log order, in the partition of that key.

use chrono::{DateTime, Utc};
use retail_kit::convert::timestamp;
use retail_kit::events::Outgoing;
use retail_proto::common::Money;
use retail_proto::events as ev;

use crate::store::{self, OrderView, order};

pub(crate) fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
}

fn parties(o: &order::Model) -> ev::OrderParties {
    ev::OrderParties {
        member_id: o.member_id.clone(),
        channel: o.channel.clone(),
        partner_id: o.partner_id.clone(),
        sales_rep: o.sales_rep.clone(),
        store: o.store.clone(),
    }
}

fn ordered_units(currency: &str, lines: &[store::line::Model]) -> Vec<ev::OrderedUnits> {
    lines
        .iter()
        .map(|l| ev::OrderedUnits {
            sku_code: l.sku_code.clone(),
            quantity: l.quantity,
            unit_price: money(currency, l.unit_minor),
        })
        .collect()
}

pub(crate) fn placed(view: &OrderView) -> Outgoing {
    let o = &view.order;
    Outgoing::of(&ev::OrderPlaced {
        order_id: o.id.clone(),
        parties: Some(parties(o)),
        lines: ordered_units(&o.currency, &view.lines),
        total: money(&o.currency, o.total_minor),
    })
    .partitioned_by(&o.member_id)
}

pub(crate) fn paid(view: &OrderView, at: DateTime<Utc>) -> Outgoing {
    let o = &view.order;
    Outgoing::of(&ev::OrderPaid {
        order_id: o.id.clone(),
        parties: Some(parties(o)),
        lines: ordered_units(&o.currency, &view.lines),
        amount: money(&o.currency, o.total_minor),
        pay_time: Some(timestamp(at)),
    })
    .partitioned_by(&o.member_id)
}

pub(crate) fn cancelled(o: &order::Model, refunded: i64, reason: &str, at: DateTime<Utc>) -> Outgoing {
    Outgoing::of(&ev::OrderCancelled {
        order_id: o.id.clone(),
        parties: Some(parties(o)),
        refunded: money(&o.currency, refunded),
        reason: reason.to_owned(),
        cancel_time: Some(timestamp(at)),
    })
    .partitioned_by(&o.member_id)
}

/// The order reached `state` (shipped, delivered, completed).
pub(crate) fn progressed(o: &order::Model, state: &str, at: DateTime<Utc>) -> Outgoing {
    Outgoing::of(&ev::OrderProgressed {
        order_id: o.id.clone(),
        parties: Some(parties(o)),
        state: state.into(),
        event_time: Some(timestamp(at)),
    })
    .partitioned_by(&o.member_id)
}

/// A return refunded: its lines at the prices paid for them.
pub(crate) fn refunded(view: &OrderView, ret: &store::ReturnView, at: DateTime<Utc>) -> Outgoing {
    let o = &view.order;
    Outgoing::of(&ev::OrderRefunded {
        order_id: o.id.clone(),
        return_id: ret.ret.id.clone(),
        parties: Some(parties(o)),
        lines: ret
            .lines
            .iter()
            .map(|l| ev::OrderedUnits {
                sku_code: l.sku_code.clone(),
                quantity: l.quantity,
                unit_price: money(
                    &o.currency,
                    view.lines
                        .iter()
                        .find(|b| b.sku_code == l.sku_code)
                        .map_or(0, |b| b.unit_minor),
                ),
            })
            .collect(),
        amount: money(&o.currency, ret.ret.refund_minor),
        refund_time: Some(timestamp(at)),
    })
    .partitioned_by(&o.member_id)
}

pub(crate) fn rated(o: &order::Model, rating: &store::rating::Model) -> Outgoing {
    Outgoing::of(&ev::OrderRated {
        order_id: o.id.clone(),
        parties: Some(parties(o)),
        satisfaction: rating.satisfaction,
        recommend: rating.recommend,
    })
    .partitioned_by(&o.member_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_order() -> order::Model {
        order::Model {
            id: "o-1".into(),
            member_id: String::new(),
            member_tier: String::new(),
            channel: "online".into(),
            partner_id: String::new(),
            sales_rep: String::new(),
            store: String::new(),
            currency: "EUR".into(),
            total_minor: 100,
            state: "paid".into(),
            payment_reference: String::new(),
            paid_minor: 100,
            paid_at: None,
            refunded_minor: 0,
            carrier: String::new(),
            tracking_number: String::new(),
            shipped_at: None,
            delivered_at: None,
            tracking_stage: 0,
            last_tracking_at: None,
            cancel_reason: String::new(),
            payment_due_at: Utc::now(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            special_discount: String::new(),
            partner_level: String::new(),
            customer_name: String::new(),
            customer_region: String::new(),
            customer_tax_id: String::new(),
            coupon_code: String::new(),
            quote: None,
        }
    }

    #[test]
    fn an_event_type_is_its_message_name() {
        assert_eq!(
            <ev::OrderPaid as prost::Name>::full_name(),
            "retail.events.v1.OrderPaid"
        );
        let o = guest_order();
        let out = cancelled(&o, 100, "why", Utc::now());
        assert_eq!(out.type_name(), "retail.events.v1.OrderCancelled");
        let back = <ev::OrderCancelled as prost::Message>::decode(out.payload()).unwrap();
        assert_eq!(back.refunded.unwrap().amount_minor, 100);
    }

    #[test]
    fn an_order_event_is_keyed_by_its_member_and_a_guest_order_by_the_order() {
        let guest = guest_order();
        let out = progressed(&guest, "shipped", Utc::now());
        assert_eq!(out.partition_key(), None, "the aggregate, the order, is the key");
        let member = order::Model {
            member_id: "m-7".into(),
            ..guest_order()
        };
        for out in [
            progressed(&member, "shipped", Utc::now()),
            cancelled(&member, 0, "why", Utc::now()),
        ] {
            assert_eq!(out.partition_key(), Some("m-7"), "{}", out.type_name());
        }
    }
}
