//! Orders' domain views as protobuf messages, and protobuf enums as domain types.

use retail_kit::convert::{opt_timestamp, timestamp};
use retail_proto::orders as pb;

use crate::domain::lifecycle::State as OrderState;
use crate::domain::order::Channel;
use crate::domain::returns::ReturnState;
use crate::domain::tracking;
use crate::events::money;
use crate::store::{OrderView, ReturnView, order, order_event, rating};

pub(super) fn pb_state(s: &str) -> i32 {
    (match OrderState::parse(s) {
        Some(OrderState::PendingPayment) => pb::OrderState::PendingPayment,
        Some(OrderState::Paid) => pb::OrderState::Paid,
        Some(OrderState::Shipped) => pb::OrderState::Shipped,
        Some(OrderState::Delivered) => pb::OrderState::Delivered,
        Some(OrderState::Completed) => pb::OrderState::Completed,
        Some(OrderState::Cancelled) => pb::OrderState::Cancelled,
        Some(OrderState::ReturnRequested) => pb::OrderState::ReturnRequested,
        Some(OrderState::ReturnReceived) => pb::OrderState::ReturnReceived,
        Some(OrderState::Refunded) => pb::OrderState::Refunded,
        None => pb::OrderState::Unspecified,
    }) as i32
}

pub(super) fn state_of_pb(s: i32) -> Option<OrderState> {
    match pb::OrderState::try_from(s).ok()? {
        pb::OrderState::PendingPayment => Some(OrderState::PendingPayment),
        pb::OrderState::Paid => Some(OrderState::Paid),
        pb::OrderState::Shipped => Some(OrderState::Shipped),
        pb::OrderState::Delivered => Some(OrderState::Delivered),
        pb::OrderState::Completed => Some(OrderState::Completed),
        pb::OrderState::Cancelled => Some(OrderState::Cancelled),
        pb::OrderState::ReturnRequested => Some(OrderState::ReturnRequested),
        pb::OrderState::ReturnReceived => Some(OrderState::ReturnReceived),
        pb::OrderState::Refunded => Some(OrderState::Refunded),
        pb::OrderState::Unspecified => None,
    }
}

fn pb_channel(c: &str) -> i32 {
    (match Channel::parse(c) {
        Some(Channel::Store) => pb::OrderChannel::Store,
        Some(Channel::Online) => pb::OrderChannel::Online,
        Some(Channel::Partner) => pb::OrderChannel::Partner,
        None => pb::OrderChannel::Unspecified,
    }) as i32
}

pub(super) fn tracking_of_pb(k: i32) -> Option<tracking::Kind> {
    match pb::TrackingEventKind::try_from(k).ok()? {
        pb::TrackingEventKind::PickedUp => Some(tracking::Kind::PickedUp),
        pb::TrackingEventKind::InTransit => Some(tracking::Kind::InTransit),
        pb::TrackingEventKind::OutForDelivery => Some(tracking::Kind::OutForDelivery),
        pb::TrackingEventKind::Delivered => Some(tracking::Kind::Delivered),
        pb::TrackingEventKind::Exception => Some(tracking::Kind::Exception),
        pb::TrackingEventKind::Unspecified => None,
    }
}

pub(super) fn pb_tracking(k: &str) -> i32 {
    (match tracking::Kind::parse(k) {
        Some(tracking::Kind::PickedUp) => pb::TrackingEventKind::PickedUp,
        Some(tracking::Kind::InTransit) => pb::TrackingEventKind::InTransit,
        Some(tracking::Kind::OutForDelivery) => pb::TrackingEventKind::OutForDelivery,
        Some(tracking::Kind::Delivered) => pb::TrackingEventKind::Delivered,
        Some(tracking::Kind::Exception) => pb::TrackingEventKind::Exception,
        None => pb::TrackingEventKind::Unspecified,
    }) as i32
}

pub(super) fn order_to_pb(v: &OrderView) -> pb::Order {
    let o = &v.order;
    pb::Order {
        name: format!("orders/{}", o.id),
        member: if o.member_id.is_empty() {
            String::new()
        } else {
            format!("members/{}", o.member_id)
        },
        channel: pb_channel(&o.channel),
        partner_id: o.partner_id.clone(),
        sales_rep: o.sales_rep.clone(),
        store: o.store.clone(),
        special_discount: o.special_discount.clone(),
        coupon_code: o.coupon_code.clone(),
        partner_level: o.partner_level.clone(),
        quote: o.quote.clone().unwrap_or_default(),
        customer: (!o.customer_name.is_empty()).then(|| pb::Customer {
            display_name: o.customer_name.clone(),
            region: o.customer_region.clone(),
            tax_id: o.customer_tax_id.clone(),
        }),
        lines: v
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                sku: format!("skus/{}", l.sku_code),
                quantity: l.quantity,
                unit_price: money(&o.currency, l.unit_minor),
                line_total: money(
                    &o.currency,
                    l.unit_minor.saturating_mul(l.quantity).saturating_sub(l.discount_minor),
                ),
                returned_quantity: l.returned_quantity,
                discounts: line_discounts(&l.discounts)
                    .into_iter()
                    .map(|d| pb::LineDiscount {
                        rule: d.rule,
                        rate_bp: d.rate_bp,
                        amount: money(&o.currency, d.amount_minor),
                    })
                    .collect(),
                discount: (l.discount_minor != 0)
                    .then(|| money(&o.currency, l.discount_minor))
                    .flatten(),
            })
            .collect(),
        total: money(&o.currency, o.total_minor),
        state: pb_state(&o.state),
        member_tier: o.member_tier.clone(),
        payment: o.paid_at.map(|at| pb::Payment {
            reference: o.payment_reference.clone(),
            amount: money(&o.currency, o.paid_minor),
            pay_time: Some(timestamp(at)),
        }),
        shipment: o.shipped_at.map(|at| pb::Shipment {
            carrier: o.carrier.clone(),
            tracking_number: o.tracking_number.clone(),
            ship_time: Some(timestamp(at)),
            delivery_time: opt_timestamp(o.delivered_at),
        }),
        refunded: money(&o.currency, o.refunded_minor),
        payment_due_time: Some(timestamp(o.payment_due_at)),
        create_time: Some(timestamp(o.created_at)),
        update_time: Some(timestamp(o.updated_at)),
        cancel_reason: o.cancel_reason.clone(),
    }
}

pub(super) fn return_to_pb(order: &order::Model, r: &ReturnView) -> pb::Return {
    let state = match ReturnState::parse(&r.ret.state) {
        Some(ReturnState::Requested) => pb::ReturnState::Requested,
        Some(ReturnState::Received) => pb::ReturnState::Received,
        Some(ReturnState::Refunded) => pb::ReturnState::Refunded,
        None => pb::ReturnState::Unspecified,
    };
    pb::Return {
        name: format!("orders/{}/returns/{}", order.id, r.ret.id),
        lines: r
            .lines
            .iter()
            .map(|l| pb::ReturnLine {
                sku: format!("skus/{}", l.sku_code),
                quantity: l.quantity,
                damaged: l.damaged,
            })
            .collect(),
        reason: r.ret.reason.clone(),
        state: state as i32,
        refund_amount: money(&order.currency, r.ret.refund_minor),
        create_time: Some(timestamp(r.ret.created_at)),
        update_time: Some(timestamp(r.ret.updated_at)),
    }
}

pub(super) fn rating_to_pb(r: &rating::Model) -> pb::Rating {
    pb::Rating {
        name: format!("orders/{}/rating", r.order_id),
        satisfaction: r.satisfaction,
        recommend: r.recommend,
        comment: r.comment.clone(),
        create_time: Some(timestamp(r.created_at)),
    }
}

pub(super) fn event_to_pb(e: order_event::Model) -> pb::OrderEvent {
    pb::OrderEvent {
        kind: e.kind,
        tracking_kind: pb_tracking(&e.tracking_kind),
        detail: e.detail,
        event_time: Some(timestamp(e.occurred_at)),
        state: pb_state(&e.state),
    }
}

/// A line's stored discounts (none when the column is empty or unreadable).
fn line_discounts(raw: &str) -> Vec<crate::downstream::LineDiscount> {
    if raw.is_empty() {
        return Vec::new();
    }
    serde_json::from_str(raw).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "an order line's discounts do not parse");
        Vec::new()
    })
}
