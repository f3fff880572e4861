//! Requests parsed into the app's inputs, every field violation collected at once.

use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_proto::partner as pb;

use crate::app::NewPartner;
use crate::domain::ids::PartnerId;
use crate::domain::partner::PartnerState;
use crate::store::PartnerFilter;

use super::convert::{partner_state_of_pb, partner_type_of_pb};

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
