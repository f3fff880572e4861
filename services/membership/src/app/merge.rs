//! Merging a duplicate member into a survivor (docs/domain.md, Identity resolution
//! and merges): one transaction moves what follows the person, transfers the points
//! between the two ledgers, combines the tier, records the merge and publishes
//! `MembersMerged`; after the commit the cache forgets both members and every
//! identifier of the survivor, so the next read serves the merged profile.
//!
//! A merge is irreversible: the merged member's purchases, lots, consents,
//! touchpoints and identifiers become the survivor's, and later activity (new
//! purchases, points, tags) lands on the survivor alone, so no record says which of
//! it would belong to the duplicate. A wrong merge is corrected by staff by hand
//! (a new member, identifiers moved, points granted), with the merge record as the
//! trail.

use chrono::{DateTime, Utc};
use retail_kit::convert::timestamp;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::Outgoing;
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_proto::events as ev;
use retail_proto::membership as pb;
use sea_orm::{ActiveModelTrait, DatabaseTransaction};

use super::profile::{identifier_from_pb, profile};
use super::{App, live};
use crate::domain::fields::MAX_IDENTIFIERS;
use crate::domain::ids::MemberId;
use crate::domain::points::{EntryKind, MAX_POINTS};
use crate::domain::rules::LoyaltyRules;
use crate::domain::tiers::TierChangeReason;
use crate::events;
use crate::store::{self, Standing, identity, loyalty};

/// A merge asked for by staff, checked.
#[derive(Debug, Clone)]
pub(crate) struct Merge {
    pub(crate) survivor: MemberId,
    pub(crate) merged: MemberId,
    pub(crate) reason: String,
}

fn members_merged(record: &store::member_merge::Model) -> Outgoing {
    Outgoing::of(&ev::MembersMerged {
        merge_id: record.id.clone(),
        survivor_id: record.survivor_id.clone(),
        merged_id: record.merged_id.clone(),
        points_transferred: record.points_transferred,
        merge_time: Some(timestamp(record.created_at)),
    })
}

/// The merge record as served.
pub(crate) fn merge_record(m: &store::member_merge::Model) -> pb::MemberMerge {
    pb::MemberMerge {
        name: format!("memberMerges/{}", m.id),
        survivor: format!("members/{}", m.survivor_id),
        merged: format!("members/{}", m.merged_id),
        points_transferred: m.points_transferred,
        debt_transferred: m.debt_transferred,
        identifiers_moved: m.identifiers_moved,
        purchases_moved: m.purchases_moved,
        reason: m.reason.clone(),
        create_time: Some(timestamp(m.created_at)),
    }
}

/// The merge itself, inside the caller's transaction.
async fn merge_in(
    txn: &DatabaseTransaction,
    rules: &LoyaltyRules,
    caller: &str,
    merge: &Merge,
    now: DateTime<Utc>,
) -> ServiceResult<store::member_merge::Model> {
    let (s_id, m_id) = (merge.survivor.as_str(), merge.merged.as_str());
    identity::lock_members(txn, &[s_id, m_id]).await?;
    let survivor = live(txn, s_id).await?;
    let merged = live(txn, m_id).await?;
    let s_view = store::view(txn, survivor.clone()).await?;
    let m_view = store::view(txn, merged.clone()).await?;
    if s_view.identifiers.len() + m_view.identifiers.len() > MAX_IDENTIFIERS {
        return Err(ServiceError::FailedPrecondition(format!(
            "together the members have more than {MAX_IDENTIFIERS} identifiers; remove some first"
        )));
    }
    let merge_id = store::new_id();
    let reference = format!("merge:{merge_id}");

    // Points: every lot with points left moves, with an entry out of the merged
    // ledger and one into the survivor's, so each balance stays the sum of its entries.
    let lots = loyalty::open_lots(txn, m_id).await?;
    let transferred: i64 = lots.iter().map(|l| l.remaining).sum();
    if transferred != merged.points_balance {
        return Err(ServiceError::internal(anyhow::anyhow!(
            "the merged member's lots do not add up to its balance"
        )));
    }
    let balance = survivor
        .points_balance
        .checked_add(transferred)
        .filter(|b| *b <= MAX_POINTS)
        .ok_or_else(|| {
            ServiceError::FailedPrecondition(format!("the combined balance would pass its maximum of {MAX_POINTS}"))
        })?;
    let debt = survivor.points_debt.saturating_add(merged.points_debt).min(MAX_POINTS);
    for lot in &lots {
        loyalty::insert_entry(
            txn,
            m_id,
            EntryKind::Merge.as_str(),
            -lot.remaining,
            &reference,
            &lot.id,
            now,
        )
        .await?;
        loyalty::insert_entry(
            txn,
            s_id,
            EntryKind::Merge.as_str(),
            lot.remaining,
            &reference,
            &lot.id,
            now,
        )
        .await?;
    }

    // Tags: the survivor keeps its own; of a path both hold the newer one wins.
    for tag in identity::tags_of(txn, m_id).await? {
        let newer = s_view
            .tags
            .iter()
            .find(|t| t.path == tag.path)
            .is_none_or(|t| t.updated_at < tag.updated_at);
        if newer {
            store::upsert_tag(
                txn,
                store::tag::Model {
                    member_id: s_id.to_owned(),
                    ..tag
                },
            )
            .await?;
        }
    }

    // RFM segment: the survivor keeps its own; without one it takes the merged
    // member's (analytics scores each id by its own purchases until it rescores).
    if survivor.rfm_segment.is_none() && merged.rfm_segment.is_some() {
        identity::inherit_rfm_segment(txn, s_id, merged.rfm_segment.clone()).await?;
    }

    // Identifiers, purchases, lots, consent decisions (the newest per channel is
    // the current one, whoever took it), touchpoints, messages, campaign decisions.
    let (identifiers_moved, purchases_moved) = identity::move_member_rows(txn, m_id, s_id).await?;

    // Tier: the higher of the two, or what the combined spend reaches at once.
    let mut level = rules.level_of(&survivor.tier).max(rules.level_of(&merged.tier));
    if rules.percentile.is_none() {
        let records: Vec<_> = loyalty::purchases_after(txn, s_id, None)
            .await?
            .iter()
            .map(|p| (p.occurred_at, p.amount_minor))
            .collect();
        if let Some(up) = rules.ladder.upgrade(level, rules.spend(&records, now)) {
            level = up;
        }
    }
    let tier = rules.tier_name(level);
    if tier != survivor.tier {
        loyalty::tier_change_row(s_id, &survivor.tier, &tier, TierChangeReason::Merge.as_str(), now)
            .insert(txn)
            .await?;
        events::tier_changed(s_id, &survivor.tier, &tier, TierChangeReason::Merge)
            .publish(txn, s_id)
            .await?;
    }

    // Both members move to one new version above either, so the cache's fences
    // for the merged member's identifiers let the survivor's profile in.
    let version = survivor.version.max(merged.version) + 1;
    if !identity::settle_survivor(txn, s_id, survivor.version, balance, debt, &tier, version, now).await? {
        return Err(ServiceError::Aborted("the survivor changed meanwhile; retry".into()));
    }
    if !identity::mark_merged(txn, m_id, s_id, version, now).await? {
        return Err(ServiceError::FailedPrecondition("the member was merged already".into()));
    }
    let record = store::member_merge::Model {
        id: merge_id,
        survivor_id: s_id.to_owned(),
        merged_id: m_id.to_owned(),
        points_transferred: transferred,
        debt_transferred: merged.points_debt,
        identifiers_moved: i32::try_from(identifiers_moved).unwrap_or(i32::MAX),
        purchases_moved: i32::try_from(purchases_moved).unwrap_or(i32::MAX),
        reason: merge.reason.clone(),
        created_by: caller.to_owned(),
        created_at: now,
    };
    identity::insert_merge(txn, record.clone()).await?;
    if transferred > 0 || merged.points_debt > 0 {
        let out = Standing {
            points_balance: 0,
            points_debt: 0,
            version,
        };
        events::points_changed(m_id, EntryKind::Merge, -transferred, &reference, &out)
            .publish(txn, m_id)
            .await?;
        let into = Standing {
            points_balance: balance,
            points_debt: debt,
            version,
        };
        events::points_changed(s_id, EntryKind::Merge, transferred, &reference, &into)
            .publish(txn, s_id)
            .await?;
    }
    events::member_updated(
        s_id,
        vec![
            "identifiers".into(),
            "tags".into(),
            "consents".into(),
            "points_balance".into(),
            "tier".into(),
        ],
        version,
    )
    .publish(txn, s_id)
    .await?;
    members_merged(&record).publish(txn, s_id).await?;
    Ok(record)
}

impl App {
    /// Merges `merge.merged` into `merge.survivor`; once per `key`. NOT_FOUND for an
    /// unknown or erased member, FAILED_PRECONDITION for one merged already (also
    /// when a concurrent merge of the same member won).
    pub(crate) async fn merge_members(
        &self,
        caller: &str,
        merge: Merge,
        key: Option<&IdempotencyKey>,
    ) -> ServiceResult<pb::MergeMembersResponse> {
        let now = retail_kit::convert::now();
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (merge, caller, rules) = (merge.clone(), caller.to_owned(), self.rules.clone());
            Box::pin(async move {
                let record = merge_in(txn, &rules, &caller, &merge, now).await?;
                let view = store::view(txn, live(txn, merge.survivor.as_str()).await?).await?;
                Ok(pb::MergeMembersResponse {
                    survivor: Some(profile(&rules, &view)?),
                    merge: Some(merge_record(&record)),
                })
            })
        })
        .await?;
        // Both members and every identifier of the survivor (the merged member's
        // among them) are forgotten up to the merge's version: the next read of
        // either id or identifier loads the merged profile.
        let survivor = response.survivor.clone().unwrap_or_default();
        let version = survivor.version;
        self.forget_member(merge.merged.as_str(), version, true).await;
        let identifiers: Vec<_> = survivor.identifiers.iter().filter_map(identifier_from_pb).collect();
        self.after_commit(&merge.survivor, version, &identifiers).await;
        tracing::info!(survivor = %merge.survivor, merged = %merge.merged, "members merged");
        Ok(response)
    }
}
