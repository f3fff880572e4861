//! Stored rows and domain values to protobuf messages, and protobuf enums back.

use retail_kit::convert::{opt_timestamp, timestamp};
use retail_proto::partner as pb;

use crate::app::TargetView;
use crate::domain::ids::{PartnerId, Subject};
use crate::domain::levels::LevelDef;
use crate::domain::partner::{PartnerState, PartnerType};
use crate::domain::period::PeriodKind;
use crate::domain::points::{Category, LedgerKind, RedemptionState};
use crate::store::partner;

pub(super) fn partner_type_of_pb(raw: i32) -> Option<PartnerType> {
    match pb::PartnerType::try_from(raw) {
        Ok(pb::PartnerType::Dealer) => Some(PartnerType::Dealer),
        Ok(pb::PartnerType::Agent) => Some(PartnerType::Agent),
        Ok(pb::PartnerType::Franchisee) => Some(PartnerType::Franchisee),
        _ => None,
    }
}

fn partner_type_to_pb(t: Option<PartnerType>) -> pb::PartnerType {
    match t {
        Some(PartnerType::Dealer) => pb::PartnerType::Dealer,
        Some(PartnerType::Agent) => pb::PartnerType::Agent,
        Some(PartnerType::Franchisee) => pb::PartnerType::Franchisee,
        None => pb::PartnerType::Unspecified,
    }
}

pub(super) fn partner_state_of_pb(raw: i32) -> Option<PartnerState> {
    match pb::PartnerState::try_from(raw) {
        Ok(pb::PartnerState::Applied) => Some(PartnerState::Applied),
        Ok(pb::PartnerState::Active) => Some(PartnerState::Active),
        Ok(pb::PartnerState::Suspended) => Some(PartnerState::Suspended),
        Ok(pb::PartnerState::Terminated) => Some(PartnerState::Terminated),
        _ => None,
    }
}

pub(super) fn partner_state_to_pb(s: Option<PartnerState>) -> pb::PartnerState {
    match s {
        Some(PartnerState::Applied) => pb::PartnerState::Applied,
        Some(PartnerState::Active) => pb::PartnerState::Active,
        Some(PartnerState::Suspended) => pb::PartnerState::Suspended,
        Some(PartnerState::Terminated) => pb::PartnerState::Terminated,
        None => pb::PartnerState::Unspecified,
    }
}

pub(super) fn partner_to_pb(p: &partner::Model) -> pb::Partner {
    pb::Partner {
        name: PartnerId::from_stored(p.id.clone()).resource_name(),
        display_name: p.display_name.clone(),
        r#type: partner_type_to_pb(PartnerType::parse(&p.partner_type)) as i32,
        region: p.region.clone(),
        state: partner_state_to_pb(PartnerState::parse(&p.state)) as i32,
        level: p.level.clone(),
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.updated_at)),
    }
}

pub(super) fn status_change_to_pb(c: &crate::store::status_change::Model) -> pb::StatusChange {
    pb::StatusChange {
        from_state: partner_state_to_pb(PartnerState::parse(&c.from_state)) as i32,
        to_state: partner_state_to_pb(PartnerState::parse(&c.to_state)) as i32,
        reason: c.reason.clone(),
        actor: c.actor.clone(),
        change_time: Some(timestamp(c.changed_at)),
    }
}

pub(super) fn rep_to_pb(r: &crate::store::sales_rep::Model) -> pb::SalesRep {
    pb::SalesRep {
        name: format!("salesReps/{}", r.id),
        partner: if r.partner_id.is_empty() {
            String::new()
        } else {
            format!("partners/{}", r.partner_id)
        },
        user_id: r.user_id.clone(),
        display_name: r.display_name.clone(),
        create_time: Some(timestamp(r.created_at)),
    }
}

pub(super) fn level_to_pb(l: &LevelDef) -> pb::Level {
    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    pb::Level {
        code: l.code.clone(),
        threshold_minor: l.threshold_minor,
        discount_ceiling_bp: clamp(l.privileges.discount_ceiling_bp),
        lead_priority: clamp(l.privileges.lead_priority),
        points_multiplier: clamp(l.privileges.points_multiplier),
    }
}

pub(super) fn level_change_to_pb(c: &crate::store::level_change::Model) -> pb::LevelChange {
    pb::LevelChange {
        from_level: c.from_level.clone(),
        to_level: c.to_level.clone(),
        reason: c.reason.clone(),
        trailing_sales_minor: c.trailing_minor,
        change_time: Some(timestamp(c.changed_at)),
    }
}

pub(super) fn period_kind_of_pb(raw: i32) -> Option<PeriodKind> {
    match pb::PeriodKind::try_from(raw) {
        Ok(pb::PeriodKind::Month) => Some(PeriodKind::Month),
        Ok(pb::PeriodKind::Quarter) => Some(PeriodKind::Quarter),
        Ok(pb::PeriodKind::Year) => Some(PeriodKind::Year),
        _ => None,
    }
}

pub(super) fn period_kind_to_pb(k: PeriodKind) -> pb::PeriodKind {
    match k {
        PeriodKind::Month => pb::PeriodKind::Month,
        PeriodKind::Quarter => pb::PeriodKind::Quarter,
        PeriodKind::Year => pb::PeriodKind::Year,
    }
}

/// A target's view; `currency` is the programme's.
pub(super) fn target_to_pb(v: &TargetView, currency: &str) -> pb::Target {
    pb::Target {
        name: format!("targets/{}", v.target.id),
        subject: v.subject.clone(),
        period_kind: period_kind_to_pb(v.period.kind) as i32,
        period_start: v.period.start_date(),
        amount_minor: v.target.amount_minor,
        currency_code: currency.to_owned(),
        progress_minor: v.progress_minor,
        attainment_bp: v.attainment_bp,
        rank: i32::try_from(v.rank).unwrap_or(i32::MAX),
        peer_count: i32::try_from(v.peer_count).unwrap_or(i32::MAX),
        projected_minor: v.projected_minor,
        attain_time: opt_timestamp(v.target.attained_at),
        create_time: Some(timestamp(v.target.created_at)),
    }
}

pub(super) fn ledger_kind_of_pb(raw: i32) -> Option<LedgerKind> {
    match pb::LedgerKind::try_from(raw) {
        Ok(pb::LedgerKind::Collective) => Some(LedgerKind::Collective),
        Ok(pb::LedgerKind::Individual) => Some(LedgerKind::Individual),
        _ => None,
    }
}

fn ledger_kind_to_pb(k: Option<LedgerKind>) -> pb::LedgerKind {
    match k {
        Some(LedgerKind::Collective) => pb::LedgerKind::Collective,
        Some(LedgerKind::Individual) => pb::LedgerKind::Individual,
        None => pb::LedgerKind::Unspecified,
    }
}

pub(super) fn ledger_to_pb(l: &crate::store::ledger::Model) -> pb::Ledger {
    pb::Ledger {
        name: format!("{}/ledger", l.id),
        kind: ledger_kind_to_pb(LedgerKind::parse(&l.kind)) as i32,
        balance: l.balance,
        debt: l.debt,
    }
}

pub(super) fn entry_to_pb(e: &crate::store::entry::Model) -> pb::LedgerEntry {
    pb::LedgerEntry {
        kind: e.kind.clone(),
        points: e.points,
        debt_change: e.debt_change,
        source: e.source.clone(),
        create_time: Some(timestamp(e.created_at)),
    }
}

const CATEGORIES: [(Category, pb::CatalogCategory); 6] = [
    (Category::Rebate, pb::CatalogCategory::Rebate),
    (Category::Training, pb::CatalogCategory::Training),
    (Category::DemoUnit, pb::CatalogCategory::DemoUnit),
    (Category::Service, pb::CatalogCategory::Service),
    (Category::Gift, pb::CatalogCategory::Gift),
    (Category::Travel, pb::CatalogCategory::Travel),
];

pub(super) fn category_of_pb(raw: i32) -> Option<Category> {
    CATEGORIES.iter().find(|(_, p)| *p as i32 == raw).map(|(c, _)| *c)
}

fn category_to_pb(c: Option<Category>) -> pb::CatalogCategory {
    c.and_then(|c| CATEGORIES.iter().find(|(k, _)| *k == c).map(|(_, p)| *p))
        .unwrap_or(pb::CatalogCategory::Unspecified)
}

pub(super) fn catalog_item_to_pb(i: &crate::store::catalog_item::Model) -> pb::CatalogItem {
    pb::CatalogItem {
        name: format!("catalogItems/{}", i.id),
        category: category_to_pb(Category::parse(&i.category)) as i32,
        display_name: i.display_name.clone(),
        points_price: i.points_price,
        stock: i.stock.unwrap_or(0),
        unlimited_stock: i.stock.is_none(),
        ledger_kind: ledger_kind_to_pb(LedgerKind::parse(&i.ledger_kind)) as i32,
    }
}

fn redemption_state_to_pb(s: Option<RedemptionState>) -> pb::RedemptionState {
    match s {
        Some(RedemptionState::Requested) => pb::RedemptionState::Requested,
        Some(RedemptionState::Approved) => pb::RedemptionState::Approved,
        Some(RedemptionState::Fulfilled) => pb::RedemptionState::Fulfilled,
        Some(RedemptionState::Rejected) => pb::RedemptionState::Rejected,
        None => pb::RedemptionState::Unspecified,
    }
}

pub(super) fn redemption_to_pb(ledger: &Subject, r: &crate::store::redemption::Model) -> pb::Redemption {
    pb::Redemption {
        name: format!("{}/redemptions/{}", ledger.ledger_name(), r.id),
        catalog_item: format!("catalogItems/{}", r.item_id),
        quantity: r.quantity,
        points: r.points,
        state: redemption_state_to_pb(RedemptionState::parse(&r.state)) as i32,
        reason: r.reason.clone(),
        create_time: Some(timestamp(r.created_at)),
        decide_time: opt_timestamp(r.decided_at),
    }
}
