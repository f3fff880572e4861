//! Catalog-inventory's views as protobuf messages.

use retail_kit::convert::{now, timestamp};
use retail_proto::catalog as pb;

use crate::app::{PromotionView, Quote};
use crate::domain::codes::{Channel, Role, TitleParts};
use crate::domain::pricing::Applied;
use crate::domain::reconcile::Report;
use crate::domain::stock::ReservationState;
use crate::events::money;
use crate::store::inventory::ReservationView;
use crate::store::{ProductView, SkuView, competitor_price, listing, listing_change, stock, stock_movement, warehouse};

pub(super) fn pb_channel(channel: &str) -> i32 {
    (match Channel::parse(channel) {
        Some(Channel::Store) => pb::SalesChannel::Store,
        Some(Channel::Online) => pb::SalesChannel::Online,
        Some(Channel::App) => pb::SalesChannel::App,
        Some(Channel::Partner) => pb::SalesChannel::Partner,
        None => pb::SalesChannel::Unspecified,
    }) as i32
}

fn pb_role(role: &str) -> i32 {
    (match Role::parse(role) {
        Some(Role::Hero) => pb::ProductRole::Hero,
        Some(Role::Volume) => pb::ProductRole::Volume,
        Some(Role::Potential) => pb::ProductRole::Potential,
        Some(Role::Anchor) => pb::ProductRole::Anchor,
        None => pb::ProductRole::Unspecified,
    }) as i32
}

pub(super) fn sku_to_pb(v: &SkuView) -> pb::Sku {
    pb::Sku {
        name: format!("skus/{}", v.sku.code),
        sku_code: v.sku.code.clone(),
        product: format!("products/{}", v.sku.product_id),
        attributes: serde_json::from_str(&v.sku.attributes_json).unwrap_or_default(),
        sellable_quantity: v.sellable,
        listed_channels: v.listed_channels.iter().map(|c| pb_channel(c)).collect(),
        create_time: Some(timestamp(v.sku.created_at)),
    }
}

fn title_parts_to_pb(t: &TitleParts) -> pb::TitleParts {
    pb::TitleParts {
        category_words: t.category.clone(),
        attribute_words: t.attribute.clone(),
        brand_words: t.brand.clone(),
        selling_point_words: t.selling_point.clone(),
        promotion_words: t.promotion.clone(),
    }
}

pub(super) fn product_to_pb(v: &ProductView) -> pb::Product {
    let p = &v.product;
    let parts: TitleParts = serde_json::from_str(&p.title_parts_json).unwrap_or_default();
    let media: Vec<(i32, String)> = serde_json::from_str(&p.media_json).unwrap_or_default();
    pb::Product {
        name: format!("products/{}", p.id),
        category: p.category.clone(),
        title_parts: Some(title_parts_to_pb(&parts)),
        title: p.title.clone(),
        media: media.into_iter().map(|(kind, uri)| pb::Media { kind, uri }).collect(),
        detail: p.detail.clone(),
        tags: v.tags.clone(),
        role: pb_role(&p.role),
        skus: v.skus.iter().map(sku_to_pb).collect(),
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.updated_at)),
    }
}

pub(super) fn listing_to_pb(l: &listing::Model) -> pb::Listing {
    pb::Listing {
        sku: format!("skus/{}", l.sku_code),
        channel: pb_channel(&l.channel),
        listed: l.listed,
        actor: l.actor.clone(),
        reason: l.reason.clone(),
        update_time: Some(timestamp(l.updated_at)),
    }
}

/// A listing decision; `show_actor` false leaves out who made it.
pub(super) fn listing_change_to_pb(c: listing_change::Model, show_actor: bool) -> pb::Listing {
    pb::Listing {
        sku: format!("skus/{}", c.sku_code),
        channel: pb_channel(&c.channel),
        listed: c.listed,
        actor: if show_actor { c.actor } else { String::new() },
        reason: c.reason,
        update_time: Some(timestamp(c.created_at)),
    }
}

pub(super) fn report_to_pb(channel: Channel, report: Report) -> pb::ReconcileListingsResponse {
    let name = |code: &String| format!("skus/{code}");
    pb::ReconcileListingsResponse {
        channel: pb_channel(channel.as_str()),
        listed_without_stock: report.listed_without_stock.iter().map(name).collect(),
        unlisted_with_stock: report.unlisted_with_stock.iter().map(name).collect(),
        duplicates: report
            .duplicates
            .into_iter()
            .map(|(title, skus)| pb::DuplicateListing {
                title,
                skus: skus.iter().map(name).collect(),
            })
            .collect(),
        report_time: Some(timestamp(now())),
    }
}

pub(super) fn promotion_to_pb(v: &PromotionView) -> pb::Promotion {
    let p = &v.promotion;
    pb::Promotion {
        name: format!("promotions/{}", p.id),
        display_name: p.display_name.clone(),
        skus: v.skus.iter().map(|s| format!("skus/{s}")).collect(),
        discount_bp: p.discount_bp.max(0) as u32,
        start_time: Some(timestamp(p.starts_at)),
        end_time: Some(timestamp(p.ends_at)),
        create_time: Some(timestamp(p.created_at)),
    }
}

pub(super) fn competitor_to_pb(c: &competitor_price::Model) -> pb::CompetitorPrice {
    pb::CompetitorPrice {
        sku: format!("skus/{}", c.sku_code),
        source: c.source.clone(),
        price: money(&c.currency, c.amount_minor),
        observe_time: Some(timestamp(c.observed_at)),
        our_price: money(&c.currency, c.our_amount_minor),
        undercut_bp: c.undercut_bp,
        alert: c.alert,
    }
}

/// `1250` -> `"12.5"`.
fn bp_percent(bp: u32) -> String {
    let whole = bp / 100;
    let frac = bp % 100;
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:02}").trim_end_matches('0').to_owned()
    }
}

fn applied_to_pb(currency: &str, a: &Applied) -> pb::AppliedRule {
    use pb::applied_rule::Kind;
    let (kind, reference, description, amount) = match a {
        Applied::ListPrice { amount_minor } => (Kind::ListPrice, String::new(), "list price".to_owned(), *amount_minor),
        Applied::Promotion {
            id,
            display_name,
            discount_bp,
            amount_minor,
        } => (
            Kind::Promotion,
            format!("promotions/{id}"),
            format!("{display_name}: {} % off the list price", bp_percent(*discount_bp)),
            *amount_minor,
        ),
        Applied::TierDiscount {
            tier,
            discount_bp,
            amount_minor,
        } => (
            Kind::TierDiscount,
            tier.clone(),
            format!("{tier} tier: {} % off", bp_percent(*discount_bp)),
            *amount_minor,
        ),
        Applied::PartnerPrice { level, amount_minor } => (
            Kind::PartnerPrice,
            level.clone(),
            format!("{level} partner price list"),
            *amount_minor,
        ),
    };
    pb::AppliedRule {
        kind: kind as i32,
        reference,
        description,
        unit_amount: money(currency, amount),
    }
}

pub(super) fn quote_to_pb(q: &Quote) -> pb::QuotePricesResponse {
    let currency = q.currency.as_str();
    pb::QuotePricesResponse {
        lines: q
            .lines
            .iter()
            .map(|l| pb::QuotedLine {
                sku: l.sku.resource_name(),
                quantity: l.quantity,
                list_unit_price: money(currency, l.unit.list_minor),
                unit_price: money(currency, l.unit.unit_minor),
                line_total: money(currency, l.total_minor),
                applied_rules: l.unit.applied.iter().map(|a| applied_to_pb(currency, a)).collect(),
                coupon_discount: money(currency, l.coupon_minor),
            })
            .collect(),
        total: money(currency, q.total_minor),
        price_time: Some(timestamp(q.at)),
        coupon: q.coupon.as_ref().map(|c| pb::AppliedCoupon {
            code: c.code.clone(),
            coupon: format!("coupons/{}", c.coupon_id),
            display_name: c.display_name.clone(),
            percent_off_bp: c.percent_off_bp,
            discount: money(currency, c.discount_minor),
        }),
    }
}

pub(super) fn warehouse_to_pb(w: &warehouse::Model) -> pb::Warehouse {
    pb::Warehouse {
        name: format!("warehouses/{}", w.code),
        code: w.code.clone(),
        display_name: w.display_name.clone(),
        priority: w.priority,
    }
}

pub(super) fn level_to_pb(s: &stock::Model) -> pb::StockLevel {
    pb::StockLevel {
        sku: format!("skus/{}", s.sku_code),
        warehouse: format!("warehouses/{}", s.warehouse_code),
        total: s.total,
        sellable: s.sellable,
        reserved: s.reserved,
        unsellable: s.unsellable,
    }
}

/// A SKU's stock in each warehouse, and summed over them.
pub(super) fn sku_stock_to_pb(sku: String, rows: &[stock::Model]) -> pb::SkuStock {
    let mut totals = pb::StockLevel {
        sku: sku.clone(),
        ..Default::default()
    };
    for r in rows {
        totals.total += r.total;
        totals.sellable += r.sellable;
        totals.reserved += r.reserved;
        totals.unsellable += r.unsellable;
    }
    pb::SkuStock {
        sku,
        levels: rows.iter().map(level_to_pb).collect(),
        totals: Some(totals),
    }
}

pub(super) fn movement_to_pb(m: stock_movement::Model) -> pb::StockMovement {
    pb::StockMovement {
        sku: format!("skus/{}", m.sku_code),
        warehouse: format!("warehouses/{}", m.warehouse_code),
        kind: m.kind,
        sellable_delta: m.sellable_delta,
        reserved_delta: m.reserved_delta,
        unsellable_delta: m.unsellable_delta,
        reason: m.reason,
        actor: m.actor,
        create_time: Some(timestamp(m.created_at)),
    }
}

fn pb_reservation_state(s: &str) -> i32 {
    (match ReservationState::parse(s) {
        Some(ReservationState::Active) => pb::ReservationState::Active,
        Some(ReservationState::Committed) => pb::ReservationState::Committed,
        Some(ReservationState::Released) => pb::ReservationState::Released,
        Some(ReservationState::Expired) => pb::ReservationState::Expired,
        None => pb::ReservationState::Unspecified,
    }) as i32
}

pub(super) fn reservation_to_pb(v: &ReservationView) -> pb::Reservation {
    let r = &v.reservation;
    let lines: Vec<(String, i64)> = serde_json::from_str(&r.lines_json).unwrap_or_default();
    pb::Reservation {
        name: format!("reservations/{}", r.order_id),
        order_id: r.order_id.clone(),
        lines: lines
            .into_iter()
            .map(|(sku, quantity)| pb::ReservationLine {
                sku: format!("skus/{sku}"),
                quantity,
            })
            .collect(),
        allocations: v
            .allocations
            .iter()
            .map(|a| pb::Allocation {
                sku: format!("skus/{}", a.sku_code),
                warehouse: format!("warehouses/{}", a.warehouse_code),
                quantity: a.quantity,
                returned_quantity: a.returned_quantity,
            })
            .collect(),
        state: pb_reservation_state(&r.state),
        expire_time: Some(timestamp(r.expires_at)),
        create_time: Some(timestamp(r.created_at)),
        update_time: Some(timestamp(r.updated_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_points_read_as_percentages() {
        assert_eq!(bp_percent(500), "5");
        assert_eq!(bp_percent(1250), "12.5");
        assert_eq!(bp_percent(1), "0.01");
    }
}
