//! The app's answers as responses.

use retail_kit::convert::timestamp;
use retail_kit::error::ServiceResult;
use retail_proto::common::Money;
use retail_proto::membership as pb;

use crate::app::{Balance, Export};
use crate::domain::points::EntryKind;
use crate::domain::rules::LoyaltyRules;
use crate::store;

pub(super) fn balance(b: &Balance) -> pb::PointsBalance {
    pb::PointsBalance {
        balance: b.balance,
        debt: b.debt,
        lots: b
            .lots
            .iter()
            .map(|(remaining, expires_at)| pb::PointsLot {
                remaining: *remaining,
                expire_time: Some(timestamp(*expires_at)),
            })
            .collect(),
    }
}

pub(super) fn entry(member_id: &str, (kind, e): &(EntryKind, store::points_entry::Model)) -> pb::PointsEntry {
    pb::PointsEntry {
        name: format!("members/{member_id}/pointsEntries/{}", e.id),
        kind: kind.as_str().to_owned(),
        points: e.points,
        reference: e.reference.clone(),
        create_time: Some(timestamp(e.created_at)),
    }
}

pub(super) fn tier_change(c: &store::tier_change::Model) -> pb::TierChange {
    pb::TierChange {
        from_tier: c.from_tier.clone(),
        to_tier: c.to_tier.clone(),
        reason: c.reason.clone(),
        create_time: Some(timestamp(c.created_at)),
    }
}

pub(super) fn tiers(rules: &LoyaltyRules) -> pb::ListTiersResponse {
    pb::ListTiersResponse {
        tiers: rules
            .ladder
            .tiers()
            .iter()
            .map(|t| pb::Tier {
                name: t.name.clone(),
                threshold: Some(Money {
                    currency_code: rules.currency.clone(),
                    amount_minor: t.threshold_minor,
                }),
                points_multiplier_bp: t.multiplier.0,
                free_shipping: t.free_shipping,
                discount_bp: t.discount_bp,
                privileges: t.privileges.clone(),
            })
            .collect(),
        mode: if rules.percentile.is_some() {
            "percentile"
        } else {
            "absolute"
        }
        .into(),
    }
}

pub(super) fn export(e: Export) -> ServiceResult<pb::ExportMemberResponse> {
    let member_id = e.view.member.id.clone();
    Ok(pb::ExportMemberResponse {
        member: Some(e.member),
        consent_history: e
            .consent_history
            .iter()
            .map(crate::app::consent)
            .collect::<ServiceResult<_>>()?,
        points_entries: e.points_entries.iter().map(|p| entry(&member_id, p)).collect(),
        tier_changes: e.tier_changes.iter().map(tier_change).collect(),
        purchases: e
            .view
            .purchases
            .iter()
            .map(|p| pb::Purchase {
                order_id: p.order_id.clone(),
                amount: Some(Money {
                    currency_code: p.currency.clone(),
                    amount_minor: p.amount_minor,
                }),
                occur_time: Some(timestamp(p.occurred_at)),
                channel: p.channel.clone(),
            })
            .collect(),
    })
}
