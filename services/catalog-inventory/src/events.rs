//! What catalog-inventory publishes on its event log (`retail.events.v1`), built from
//! what it stores; each event's type is its message's full name. Orders, channel
//! partners and analytics subscribe, and so does catalog itself: every replica's
//! read caches follow the log ([`Seen`] is what an event read back changed).

use chrono::{DateTime, Utc};
use prost::Message;
use retail_kit::convert::timestamp;
use retail_kit::events::Outgoing;
use retail_proto::common::Money;
use retail_proto::events as ev;

use crate::domain::codes::{Channel, OrderId, SkuCode};
use crate::domain::stock::{MovementKind, ReservationState};
use crate::store::{allocation, competitor_price, product, stock};

pub(crate) fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
}

pub(crate) fn product_created(p: &product::Model, sku_codes: Vec<String>) -> Outgoing {
    Outgoing::of(&ev::ProductCreated {
        product_id: p.id.clone(),
        category: p.category.clone(),
        title: p.title.clone(),
        sku_codes,
        role: p.role.clone(),
    })
}

pub(crate) fn product_updated(product_id: &str, changed_fields: Vec<String>) -> Outgoing {
    Outgoing::of(&ev::ProductUpdated {
        product_id: product_id.to_owned(),
        changed_fields,
    })
}

pub(crate) fn listing_changed(sku: &SkuCode, channel: Channel, listed: bool) -> Outgoing {
    Outgoing::of(&ev::ListingChanged {
        sku_code: sku.as_str().to_owned(),
        channel: channel.as_str().to_owned(),
        listed,
    })
}

pub(crate) fn list_price_changed(sku: &SkuCode, currency: &str, amount_minor: i64) -> Outgoing {
    Outgoing::of(&ev::PriceChanged {
        kind: "list_price".into(),
        sku_code: sku.as_str().to_owned(),
        reference: String::new(),
        price: money(currency, amount_minor),
        discount_bp: 0,
    })
}

/// A tier's discount set (0: removed).
pub(crate) fn tier_discount_changed(tier: &str, discount_bp: u32) -> Outgoing {
    Outgoing::of(&ev::PriceChanged {
        kind: "tier_discount".into(),
        sku_code: String::new(),
        reference: tier.to_owned(),
        price: None,
        discount_bp,
    })
}

/// A promotion created (with its discount) or ended (0).
pub(crate) fn promotion_changed(id: &str, discount_bp: u32) -> Outgoing {
    Outgoing::of(&ev::PriceChanged {
        kind: "promotion".into(),
        sku_code: String::new(),
        reference: id.to_owned(),
        price: None,
        discount_bp,
    })
}

pub(crate) fn partner_price_changed(level: &str, sku: &SkuCode, currency: &str, amount_minor: i64) -> Outgoing {
    Outgoing::of(&ev::PriceChanged {
        kind: "partner_price".into(),
        sku_code: sku.as_str().to_owned(),
        reference: level.to_owned(),
        price: money(currency, amount_minor),
        discount_bp: 0,
    })
}

pub(crate) fn competitor_undercut(row: &competitor_price::Model) -> Outgoing {
    Outgoing::of(&ev::CompetitorUndercut {
        sku_code: row.sku_code.clone(),
        source: row.source.clone(),
        competitor_price: money(&row.currency, row.amount_minor),
        our_price: money(&row.currency, row.our_amount_minor),
        undercut_bp: row.undercut_bp,
    })
}

/// A stock row as `kind` left it.
pub(crate) fn stock_changed(kind: MovementKind, row: &stock::Model) -> Outgoing {
    Outgoing::of(&ev::StockChanged {
        sku_code: row.sku_code.clone(),
        warehouse_code: row.warehouse_code.clone(),
        kind: kind.as_str().to_owned(),
        total: row.total,
        sellable: row.sellable,
        reserved: row.reserved,
        unsellable: row.unsellable,
    })
}

fn units(allocations: &[allocation::Model]) -> Vec<ev::ReservedUnits> {
    allocations
        .iter()
        .map(|a| ev::ReservedUnits {
            sku_code: a.sku_code.clone(),
            warehouse_code: a.warehouse_code.clone(),
            quantity: a.quantity,
        })
        .collect()
}

pub(crate) fn reservation_created(
    order: &OrderId,
    allocations: &[allocation::Model],
    expires_at: DateTime<Utc>,
) -> Outgoing {
    Outgoing::of(&ev::ReservationCreated {
        order_id: order.as_str().to_owned(),
        units: units(allocations),
        expire_time: Some(timestamp(expires_at)),
    })
}

pub(crate) fn reservation_committed(order: &OrderId, allocations: &[allocation::Model]) -> Outgoing {
    Outgoing::of(&ev::ReservationCommitted {
        order_id: order.as_str().to_owned(),
        units: units(allocations),
    })
}

/// Units given back: released on request, or expired (`to`).
pub(crate) fn reservation_ended(order: &OrderId, allocations: &[allocation::Model], to: ReservationState) -> Outgoing {
    let (order_id, units) = (order.as_str().to_owned(), units(allocations));
    if to == ReservationState::Expired {
        Outgoing::of(&ev::ReservationExpired { order_id, units })
    } else {
        Outgoing::of(&ev::ReservationReleased { order_id, units })
    }
}

/// What one of catalog's own events, read back from its log, changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// What the SKU views of these SKUs show (stock, listings, reservations); `None`
    /// when the payload cannot be read.
    Skus(Option<Vec<String>>),
    /// A price: a list price, tier discount, promotion or partner price.
    Price,
    /// Neither a SKU view nor a price (products, whose SKUs' attributes never
    /// change, and competitor observations).
    Neither,
    /// A type this build does not know.
    Unknown,
}

fn is<M: prost::Name>(event: &ev::EventEnvelope) -> bool {
    event.r#type == M::full_name()
}

/// What `event` changed.
pub(crate) fn seen(event: &ev::EventEnvelope) -> Seen {
    let payload = event
        .payload
        .as_ref()
        .map(|any| any.value.as_slice())
        .unwrap_or_default();
    let units = |units: Vec<ev::ReservedUnits>| units.into_iter().map(|u| u.sku_code).collect::<Vec<_>>();
    if is::<ev::StockChanged>(event) {
        Seen::Skus(ev::StockChanged::decode(payload).ok().map(|e| vec![e.sku_code]))
    } else if is::<ev::ListingChanged>(event) {
        Seen::Skus(ev::ListingChanged::decode(payload).ok().map(|e| vec![e.sku_code]))
    } else if is::<ev::ReservationCreated>(event) {
        Seen::Skus(ev::ReservationCreated::decode(payload).ok().map(|e| units(e.units)))
    } else if is::<ev::ReservationCommitted>(event) {
        Seen::Skus(ev::ReservationCommitted::decode(payload).ok().map(|e| units(e.units)))
    } else if is::<ev::ReservationReleased>(event) {
        Seen::Skus(ev::ReservationReleased::decode(payload).ok().map(|e| units(e.units)))
    } else if is::<ev::ReservationExpired>(event) {
        Seen::Skus(ev::ReservationExpired::decode(payload).ok().map(|e| units(e.units)))
    } else if is::<ev::PriceChanged>(event) {
        Seen::Price
    } else if is::<ev::CompetitorUndercut>(event) || is::<ev::ProductCreated>(event) || is::<ev::ProductUpdated>(event)
    {
        Seen::Neither
    } else {
        Seen::Unknown
    }
}

/// An event of the log as a follower reads it, for the caches' tests.
#[cfg(test)]
pub(crate) fn envelope(position: u64, event: &Outgoing) -> ev::EventEnvelope {
    ev::EventEnvelope {
        position,
        r#type: event.type_name().to_owned(),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{}", event.type_name()),
            value: event.payload().to_vec(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(sku: &str) -> allocation::Model {
        allocation::Model {
            order_id: "o-1".into(),
            sku_code: sku.into(),
            warehouse_code: "W1".into(),
            ordinal: 0,
            quantity: 2,
            returned_quantity: 0,
        }
    }

    #[test]
    fn an_event_read_back_says_what_it_changed() {
        let order = OrderId::from_stored("o-1".into());
        let sku = SkuCode::parse("A").unwrap_or_else(|e| panic!("{e}"));
        let allocations = [allocation("A"), allocation("B")];
        let row = stock::Model {
            sku_code: "A".into(),
            warehouse_code: "W1".into(),
            total: 1,
            sellable: 1,
            reserved: 0,
            unsellable: 0,
            updated_at: Utc::now(),
        };
        let both = Seen::Skus(Some(vec!["A".into(), "B".into()]));
        for (event, expected) in [
            (
                stock_changed(MovementKind::Receive, &row),
                Seen::Skus(Some(vec!["A".into()])),
            ),
            (
                listing_changed(&sku, Channel::Online, true),
                Seen::Skus(Some(vec!["A".into()])),
            ),
            (reservation_created(&order, &allocations, Utc::now()), both.clone()),
            (reservation_committed(&order, &allocations), both.clone()),
            (
                reservation_ended(&order, &allocations, ReservationState::Released),
                both.clone(),
            ),
            (reservation_ended(&order, &allocations, ReservationState::Expired), both),
            (list_price_changed(&sku, "EUR", 100), Seen::Price),
            (tier_discount_changed("gold", 0), Seen::Price),
            (promotion_changed("p", 100), Seen::Price),
            (partner_price_changed("gold", &sku, "EUR", 100), Seen::Price),
            (product_updated("p", Vec::new()), Seen::Neither),
        ] {
            assert_eq!(seen(&envelope(1, &event)), expected, "{}", event.type_name());
        }
        let mut unknown = envelope(1, &product_updated("p", Vec::new()));
        unknown.r#type = format!("{}Later", unknown.r#type);
        assert_eq!(seen(&unknown), Seen::Unknown);
        let mut unreadable = envelope(1, &stock_changed(MovementKind::Receive, &row));
        if let Some(any) = unreadable.payload.as_mut() {
            any.value = vec![0xff];
        }
        assert_eq!(seen(&unreadable), Seen::Skus(None));
    }

    #[test]
    fn an_event_type_is_its_message_name() {
        let event = reservation_ended(&OrderId::from_stored("o-1".into()), &[], ReservationState::Expired);
        assert_eq!(event.type_name(), <ev::ReservationExpired as prost::Name>::full_name());
    }
}
