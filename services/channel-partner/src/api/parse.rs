//! Requests parsed into the app's inputs, every field violation collected at once.

use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_proto::partner as pb;

use retail_kit::money::MAX_AMOUNT_MINOR;

use crate::app::{NewCatalogItem, NewPartner, NewRep, NewTarget};
use crate::domain::ids::{PartnerId, RedemptionName, RepId, Subject, collection_id};
use crate::domain::partner::PartnerState;
use crate::domain::period::Period;
use crate::domain::points::{LedgerKind, MAX_POINTS};
use crate::store::{PartnerFilter, RepFilter};

use super::convert::{category_of_pb, ledger_kind_of_pb, partner_state_of_pb, partner_type_of_pb, period_kind_of_pb};

/// A partner's resource name; INVALID_ARGUMENT on `field` otherwise.
pub(super) fn partner_id(field: &str, name: &str) -> ServiceResult<PartnerId> {
    PartnerId::parse_name(name).map_err(|reason| ServiceError::invalid(field, reason))
}

/// One line of text (no line breaks or tabs), at most `max` characters.
pub(super) fn short_text(v: &mut Violations, field: &str, raw: &str, max: usize, required: bool) -> String {
    let t = v.text(field, raw, max, required);
    if t.chars().any(|c| c.is_whitespace() && c != ' ') {
        v.add(field, "must be a single line");
    }
    t
}

pub(super) fn create_partner(req: &pb::CreatePartnerRequest) -> ServiceResult<NewPartner> {
    let Some(p) = req.partner.as_ref() else {
        return Err(ServiceError::invalid("partner", "is required"));
    };
    let mut v = Violations::new();
    let id = if req.partner_id.is_empty() {
        Some(PartnerId::new())
    } else {
        v.field("partner_id", PartnerId::parse(&req.partner_id))
    };
    let display_name = short_text(&mut v, "partner.display_name", &p.display_name, 200, true);
    let region = short_text(&mut v, "partner.region", &p.region, 32, true);
    let partner_type = partner_type_of_pb(p.r#type);
    if partner_type.is_none() {
        v.add("partner.type", "must be dealer, agent or franchisee");
    }
    v.finish()?;
    match (id, partner_type) {
        (Some(id), Some(partner_type)) => Ok(NewPartner {
            id,
            display_name,
            partner_type,
            region,
        }),
        _ => Err(ServiceError::invalid("partner", "is invalid")),
    }
}

pub(super) fn list_partners(req: &pb::ListPartnersRequest) -> ServiceResult<PartnerFilter> {
    let state = match req.state {
        0 => None,
        raw => Some(
            partner_state_of_pb(raw)
                .map(PartnerState::as_str)
                .ok_or_else(|| ServiceError::invalid("state", "is not a partner state"))?
                .to_owned(),
        ),
    };
    Ok(PartnerFilter { state, only: None })
}

/// A reason to audit: 1-500 characters.
pub(super) fn reason(field: &str, raw: &str) -> ServiceResult<String> {
    let mut v = Violations::new();
    let r = v.text(field, raw, 500, true);
    v.finish()?;
    Ok(r)
}

pub(super) fn subject(field: &str, name: &str) -> ServiceResult<Subject> {
    Subject::parse_name(name).map_err(|reason| ServiceError::invalid(field, reason))
}

pub(super) fn ledger(field: &str, name: &str) -> ServiceResult<Subject> {
    Subject::parse_ledger(name).map_err(|reason| ServiceError::invalid(field, reason))
}

pub(super) fn rep_id(field: &str, name: &str) -> ServiceResult<RepId> {
    RepId::parse_name(name).map_err(|reason| ServiceError::invalid(field, reason))
}

pub(super) fn redemption_name(field: &str, name: &str) -> ServiceResult<RedemptionName> {
    RedemptionName::parse(name).map_err(|reason| ServiceError::invalid(field, reason))
}

pub(super) fn create_rep(req: &pb::CreateSalesRepRequest) -> ServiceResult<NewRep> {
    let Some(r) = req.sales_rep.as_ref() else {
        return Err(ServiceError::invalid("sales_rep", "is required"));
    };
    let mut v = Violations::new();
    let partner = if r.partner.is_empty() {
        None
    } else {
        v.field("sales_rep.partner", PartnerId::parse_name(&r.partner))
    };
    let user_id = v.field(
        "sales_rep.user_id",
        uuid::Uuid::parse_str(&r.user_id).map_err(|_| "must be an identity user id (a UUID)"),
    );
    let display_name = short_text(&mut v, "sales_rep.display_name", &r.display_name, 200, true);
    v.finish()?;
    let user_id = user_id.ok_or_else(|| ServiceError::invalid("sales_rep.user_id", "is required"))?;
    Ok(NewRep {
        partner,
        user_id: user_id.to_string(),
        display_name,
    })
}

pub(super) fn list_reps(req: &pb::ListSalesRepsRequest) -> ServiceResult<RepFilter> {
    let mut v = Violations::new();
    let partner = if req.partner.is_empty() {
        None
    } else {
        v.field("partner", PartnerId::parse_name(&req.partner))
            .map(|p| p.as_str().to_owned())
    };
    if req.brand_only && partner.is_some() {
        v.add("brand_only", "cannot be combined with partner");
    }
    v.finish()?;
    Ok(RepFilter {
        partner: if req.brand_only { Some(String::new()) } else { partner },
    })
}

pub(super) fn create_target(req: &pb::CreateTargetRequest) -> ServiceResult<NewTarget> {
    let Some(t) = req.target.as_ref() else {
        return Err(ServiceError::invalid("target", "is required"));
    };
    let mut v = Violations::new();
    let subject = v.field("target.subject", Subject::parse_name(&t.subject));
    let kind = period_kind_of_pb(t.period_kind);
    if kind.is_none() {
        v.add("target.period_kind", "must be month, quarter or year");
    }
    let period = kind.and_then(|k| v.field("target.period_start", Period::parse(k, &t.period_start)));
    if !(1..=MAX_AMOUNT_MINOR).contains(&t.amount_minor) {
        v.add(
            "target.amount_minor",
            format!("must be positive and at most {MAX_AMOUNT_MINOR}"),
        );
    }
    if !t.currency_code.is_empty() && t.currency_code.len() != 3 {
        v.add("target.currency_code", "must be an ISO-4217 code or empty");
    }
    v.finish()?;
    match (subject, period) {
        (Some(subject), Some(period)) => Ok(NewTarget {
            subject,
            period,
            amount_minor: t.amount_minor,
        }),
        _ => Err(ServiceError::invalid("target", "is invalid")),
    }
}

pub(super) fn record_action(req: &pb::RecordActionRequest) -> ServiceResult<(Subject, String, String)> {
    let mut v = Violations::new();
    let subject = v.field("parent", Subject::parse_ledger(&req.parent));
    let action = short_text(&mut v, "action", &req.action, 32, true);
    let reference = v.text("reference", &req.reference, 64, true);
    if !reference
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        v.add("reference", "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'");
    }
    v.finish()?;
    let subject = subject.ok_or_else(|| ServiceError::invalid("parent", "is required"))?;
    Ok((subject, action, reference))
}

pub(super) fn create_catalog_item(req: &pb::CreateCatalogItemRequest) -> ServiceResult<NewCatalogItem> {
    let Some(i) = req.catalog_item.as_ref() else {
        return Err(ServiceError::invalid("catalog_item", "is required"));
    };
    let mut v = Violations::new();
    let category = category_of_pb(i.category);
    if category.is_none() {
        v.add("catalog_item.category", "must be a catalog category");
    }
    let display_name = short_text(&mut v, "catalog_item.display_name", &i.display_name, 200, true);
    if !(1..=MAX_POINTS).contains(&i.points_price) {
        v.add("catalog_item.points_price", format!("must be 1-{MAX_POINTS}"));
    }
    if !i.unlimited_stock && !(0..=1_000_000_000).contains(&i.stock) {
        v.add("catalog_item.stock", "must be 0-1000000000");
    }
    if i.unlimited_stock && i.stock != 0 {
        v.add("catalog_item.stock", "must be 0 for unlimited stock");
    }
    v.finish()?;
    let category = category.ok_or_else(|| ServiceError::invalid("catalog_item.category", "is required"))?;
    Ok(NewCatalogItem {
        category,
        display_name,
        points_price: i.points_price,
        stock: (!i.unlimited_stock).then_some(i.stock),
    })
}

pub(super) fn list_catalog_items(req: &pb::ListCatalogItemsRequest) -> ServiceResult<Option<LedgerKind>> {
    match req.ledger_kind {
        0 => Ok(None),
        raw => ledger_kind_of_pb(raw)
            .map(Some)
            .ok_or_else(|| ServiceError::invalid("ledger_kind", "is not a ledger kind")),
    }
}

pub(super) fn request_redemption(req: &pb::RequestRedemptionRequest) -> ServiceResult<(Subject, String, i64)> {
    let Some(r) = req.redemption.as_ref() else {
        return Err(ServiceError::invalid("redemption", "is required"));
    };
    let mut v = Violations::new();
    let subject = v.field("parent", Subject::parse_ledger(&req.parent));
    let item = v.field(
        "redemption.catalog_item",
        collection_id(&r.catalog_item, "catalogItems"),
    );
    if !(1..=1_000).contains(&r.quantity) {
        v.add("redemption.quantity", "must be 1-1000");
    }
    v.finish()?;
    match (subject, item) {
        (Some(subject), Some(item)) => Ok((subject, item, r.quantity)),
        _ => Err(ServiceError::invalid("redemption", "is invalid")),
    }
}

pub(super) fn target_id(field: &str, name: &str) -> ServiceResult<String> {
    collection_id(name, "targets").map_err(|reason| ServiceError::invalid(field, reason))
}
