//! Stored rows and domain values to protobuf messages, and protobuf enums back.

use retail_kit::convert::timestamp;
use retail_proto::partner as pb;

use crate::domain::ids::PartnerId;
use crate::domain::partner::{PartnerState, PartnerType};
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
