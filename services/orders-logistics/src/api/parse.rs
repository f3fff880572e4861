//! Requests parsed into the app's inputs, every field violation collected at once.

use retail_kit::convert::{from_timestamp, now};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_proto::orders as pb;
use sha2::{Digest, Sha256};

use crate::app::{Caller, Payment, PlaceOrder, Rating, ReturnRequest, TrackingEvent};
use crate::domain::ids::{MemberId, OrderId, ReturnName, SkuCode};
use crate::domain::order::{
    Channel, Customer, MAX_CUSTOMER_NAME, MAX_CUSTOMER_REGION, MAX_CUSTOMER_TAX_ID, MAX_LINES, MAX_UNITS, units_allowed,
};
use crate::domain::tracking;
use crate::store::OrderFilter;

use super::convert::{state_of_pb, tracking_of_pb};

/// An order's resource name; INVALID_ARGUMENT on `field` otherwise.
pub(super) fn order_id(field: &str, name: &str) -> ServiceResult<OrderId> {
    OrderId::parse_name(name).map_err(|reason| ServiceError::invalid(field, reason))
}

pub(super) fn return_name(field: &str, name: &str) -> ServiceResult<ReturnName> {
    ReturnName::parse(name).map_err(|reason| ServiceError::invalid(field, reason))
}

/// One line of text (no line breaks or tabs), at most `max` characters.
fn short_text(v: &mut Violations, field: &str, raw: &str, max: usize, required: bool) -> String {
    let t = v.text(field, raw, max, required);
    if t.chars().any(|c| c.is_whitespace() && c != ' ') {
        v.add(field, "must be a single line");
    }
    t
}

/// Lines of SKUs and units (of an order or a return): 1-200, each SKU once.
fn lines<'a>(
    v: &mut Violations,
    field: &str,
    raw: impl ExactSizeIterator<Item = (&'a str, i64)>,
) -> Vec<(SkuCode, i64)> {
    if raw.len() == 0 || raw.len() > MAX_LINES {
        v.add(field, format!("1-{MAX_LINES} lines"));
    }
    let mut lines: Vec<(SkuCode, i64)> = Vec::new();
    for (i, (sku, quantity)) in raw.enumerate().take(MAX_LINES) {
        let code = v.field(&format!("{field}[{i}].sku"), SkuCode::parse_name(sku));
        if !units_allowed(quantity) {
            v.add(format!("{field}[{i}].quantity"), format!("must be 1-{MAX_UNITS}"));
        }
        if let Some(code) = code {
            if lines.iter().any(|(c, _)| *c == code) {
                v.add(format!("{field}[{i}].sku"), "is listed twice");
            } else {
                lines.push((code, quantity));
            }
        }
    }
    lines
}

fn fingerprint(message: &impl prost::Message) -> Vec<u8> {
    Sha256::digest(message.encode_to_vec()).to_vec()
}

/// A placement as `caller` may make it: a partner principal places partner orders
/// for its own partner only.
pub(super) fn place_order(req: &pb::PlaceOrderRequest, caller: &Caller) -> ServiceResult<PlaceOrder> {
    let Some(o) = req.order.as_ref() else {
        return Err(ServiceError::invalid("order", "is required"));
    };
    let mut v = Violations::new();
    let member = if o.member.is_empty() {
        None
    } else {
        v.field("order.member", MemberId::parse_name(&o.member))
    };
    let channel = match pb::OrderChannel::try_from(o.channel) {
        Ok(pb::OrderChannel::Store) => Some(Channel::Store),
        Ok(pb::OrderChannel::Online) => Some(Channel::Online),
        Ok(pb::OrderChannel::Partner) => Some(Channel::Partner),
        _ => {
            v.add("order.channel", "must be store, online or partner");
            None
        }
    };
    let mut partner_id = short_text(&mut v, "order.partner_id", &o.partner_id, 64, false);
    let sales_rep = short_text(&mut v, "order.sales_rep", &o.sales_rep, 64, false);
    let store = short_text(&mut v, "order.store", &o.store, 32, false);
    if let Some(own) = &caller.partner {
        if channel.is_some_and(|c| c != Channel::Partner) {
            v.add("order.channel", "partner principals place partner orders");
        }
        if !partner_id.is_empty() && partner_id != *own {
            return Err(ServiceError::PermissionDenied(
                "partner principals place orders for their own partner only".into(),
            ));
        }
        partner_id = own.clone();
    } else if channel == Some(Channel::Partner) && partner_id.is_empty() {
        v.add("order.partner_id", "is required for partner sales");
    }
    if channel.is_some_and(|c| c != Channel::Partner) && (!partner_id.is_empty() || !sales_rep.is_empty()) {
        v.add("order.partner_id", "only partner sales name a partner and sales rep");
    }
    // A special discount of the order's own partner, on partner sales only.
    let special_discount = if o.special_discount.is_empty() {
        None
    } else if channel.is_some_and(|c| c != Channel::Partner) {
        v.add("order.special_discount", "only partner sales use a special discount");
        None
    } else {
        match o.special_discount.split_once("/specialDiscounts/") {
            Some((owner, id))
                if owner.strip_prefix("partners/").is_some_and(|p| p == partner_id)
                    && !id.is_empty()
                    && id.len() <= 64
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                Some(o.special_discount.clone())
            }
            _ => {
                v.add(
                    "order.special_discount",
                    "must be partners/{partner_id}/specialDiscounts/{special_discount_id} of the order's partner",
                );
                None
            }
        }
    };
    // A coupon code, on consumer sales only; catalog decides whether it applies.
    let coupon_code = if o.coupon_code.is_empty() {
        None
    } else if channel == Some(Channel::Partner) {
        v.add("order.coupon_code", "only consumer sales use a coupon");
        None
    } else {
        let code = o.coupon_code.trim().to_ascii_uppercase();
        if code.len() < 4 || code.len() > 32 || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            v.add("order.coupon_code", "must be 4-32 characters of A-Z, 0-9, '-' and '_'");
            None
        } else {
            Some(code)
        }
    };
    // A quote of the order's own partner, on partner sales only, without a
    // special discount (the quote's prices are the prices).
    let quote = if o.quote.is_empty() {
        None
    } else if channel.is_some_and(|c| c != Channel::Partner) {
        v.add("order.quote", "only partner sales are placed from a quote");
        None
    } else if special_discount.is_some() {
        v.add("order.quote", "an order from a quote uses no special discount");
        None
    } else {
        match o.quote.split_once("/quotes/") {
            Some((owner, id))
                if owner.strip_prefix("partners/").is_some_and(|p| p == partner_id)
                    && !id.is_empty()
                    && id.len() <= 64
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                Some(o.quote.clone())
            }
            _ => {
                v.add(
                    "order.quote",
                    "must be partners/{partner_id}/quotes/{quote_id} of the order's partner",
                );
                None
            }
        }
    };
    // The end customer, on partner sales only.
    let customer = match &o.customer {
        None => None,
        Some(_) if channel.is_some_and(|c| c != Channel::Partner) => {
            v.add("order.customer", "only partner sales name an end customer");
            None
        }
        Some(c) => Some(Customer {
            display_name: short_text(
                &mut v,
                "order.customer.display_name",
                &c.display_name,
                MAX_CUSTOMER_NAME,
                true,
            ),
            region: short_text(&mut v, "order.customer.region", &c.region, MAX_CUSTOMER_REGION, true),
            tax_id: short_text(&mut v, "order.customer.tax_id", &c.tax_id, MAX_CUSTOMER_TAX_ID, false),
        }),
    };
    let lines = lines(
        &mut v,
        "order.lines",
        o.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
    );
    v.finish()?;
    let Some(channel) = channel else {
        return Err(ServiceError::invalid(
            "order.channel",
            "must be store, online or partner",
        ));
    };
    Ok(PlaceOrder {
        request_id: (!req.request_id.is_empty()).then(|| req.request_id.clone()),
        fingerprint: fingerprint(req),
        member,
        channel,
        partner_id,
        sales_rep,
        store,
        lines,
        special_discount,
        customer,
        coupon_code,
        quote,
    })
}

pub(super) fn list_orders(req: &pb::ListOrdersRequest) -> ServiceResult<OrderFilter> {
    let mut v = Violations::new();
    let mut filter = OrderFilter::default();
    if !req.member.is_empty() {
        filter.member_id = v
            .field("member", MemberId::parse_name(&req.member))
            .map(MemberId::into_inner);
    }
    if !req.partner_id.is_empty() {
        filter.partner_id = Some(short_text(&mut v, "partner_id", &req.partner_id, 64, false));
    }
    if req.state != 0 {
        match state_of_pb(req.state) {
            Some(st) => filter.state = Some(st.as_str().to_owned()),
            None => v.add("state", "must be an order state"),
        }
    }
    for (field, ts, slot) in [
        ("create_after", &req.create_after, &mut filter.created_from),
        ("create_before", &req.create_before, &mut filter.created_before),
    ] {
        if let Some(ts) = ts {
            *slot = v.field(field, from_timestamp(ts).ok_or("is not a valid time"));
        }
    }
    v.finish()?;
    Ok(filter)
}

pub(super) fn payment(req: &pb::PayOrderRequest) -> ServiceResult<Payment> {
    let mut v = Violations::new();
    let payment = req.payment.clone().unwrap_or_default();
    if req.payment.is_none() {
        v.add("payment", "is required");
    }
    let reference = short_text(&mut v, "payment.reference", &payment.reference, 128, true);
    if payment.amount.is_none() {
        v.add("payment.amount", "is required");
    }
    v.finish()?;
    let amount = payment.amount.unwrap_or_default();
    Ok(Payment {
        reference,
        currency: amount.currency_code,
        amount_minor: amount.amount_minor,
    })
}

pub(super) fn reason(raw: &str) -> ServiceResult<String> {
    let mut v = Violations::new();
    let reason = short_text(&mut v, "reason", raw, 200, true);
    v.finish()?;
    Ok(reason)
}

pub(super) fn shipment(req: &pb::ShipOrderRequest) -> ServiceResult<(String, String)> {
    let mut v = Violations::new();
    let carrier = short_text(&mut v, "carrier", &req.carrier, 32, true);
    let tracking_number = short_text(&mut v, "tracking_number", &req.tracking_number, 64, true);
    v.finish()?;
    Ok((carrier, tracking_number))
}

pub(super) fn tracking_event(req: &pb::AddTrackingEventRequest) -> ServiceResult<TrackingEvent> {
    let mut v = Violations::new();
    let kind: Option<tracking::Kind> = tracking_of_pb(req.kind);
    if kind.is_none() {
        v.add("kind", "must be a tracking event kind");
    }
    let at = match &req.event_time {
        Some(ts) => v.field("event_time", from_timestamp(ts).ok_or("is not a valid time")),
        None => Some(now()),
    };
    if at.is_some_and(|t| t > now() + chrono::Duration::minutes(5)) {
        v.add("event_time", "must not be in the future");
    }
    let detail = short_text(&mut v, "detail", &req.detail, 200, false);
    v.finish()?;
    let (Some(kind), Some(at)) = (kind, at) else {
        return Err(ServiceError::invalid("kind", "is required"));
    };
    Ok(TrackingEvent { kind, at, detail })
}

pub(super) fn return_request(req: &pb::RequestReturnRequest) -> ServiceResult<ReturnRequest> {
    let Some(r) = req.r#return.as_ref() else {
        return Err(ServiceError::invalid("return", "is required"));
    };
    let mut v = Violations::new();
    let reason = v.text("return.reason", &r.reason, 500, false);
    let lines = lines(
        &mut v,
        "return.lines",
        r.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
    );
    v.finish()?;
    Ok(ReturnRequest { reason, lines })
}

pub(super) fn damaged_skus(req: &pb::ReceiveReturnRequest) -> ServiceResult<Vec<SkuCode>> {
    let mut v = Violations::new();
    let damaged = req
        .damaged_skus
        .iter()
        .enumerate()
        .take(MAX_LINES)
        .filter_map(|(i, name)| v.field(&format!("damaged_skus[{i}]"), SkuCode::parse_name(name)))
        .collect();
    if req.damaged_skus.len() > MAX_LINES {
        v.add("damaged_skus", format!("at most {MAX_LINES}"));
    }
    v.finish()?;
    Ok(damaged)
}

pub(super) fn rating(req: &pb::RateOrderRequest) -> ServiceResult<Rating> {
    let r = req.rating.clone().unwrap_or_default();
    let mut v = Violations::new();
    if !(1..=5).contains(&r.satisfaction) {
        v.add("rating.satisfaction", "must be 1-5");
    }
    if !(0..=10).contains(&r.recommend) {
        v.add("rating.recommend", "must be 0-10");
    }
    let comment = v.text("rating.comment", &r.comment.replace(['\n', '\r'], " "), 2000, false);
    v.finish()?;
    Ok(Rating {
        satisfaction: r.satisfaction,
        recommend: r.recommend,
        comment,
    })
}
