//! Tiers: a member's tier changes and the periodic re-evaluation.

use chrono::{DateTime, Utc};
use retail_kit::error::ServiceResult;
use retail_kit::idempotency;
use retail_kit::paging::Page;
use sea_orm::{ActiveModelTrait, DatabaseTransaction};

use super::{App, live};
use crate::domain::ids::MemberId;
use crate::domain::rules::LoyaltyRules;
use crate::domain::tiers::{TierChangeReason, percentile_levels};
use crate::events;
use crate::store::{self, loyalty};

/// The member's qualifying spend at `as_of`, from the purchases inside the window.
async fn spend_at(
    conn: &impl sea_orm::ConnectionTrait,
    rules: &LoyaltyRules,
    member_id: &str,
    as_of: DateTime<Utc>,
) -> ServiceResult<i64> {
    let purchases = loyalty::purchases_after(conn, member_id, rules.spend_window.start(as_of)).await?;
    let records: Vec<_> = purchases.iter().map(|p| (p.occurred_at, p.amount_minor)).collect();
    Ok(rules.spend(&records, as_of))
}

/// Moves the member from `from` to `to` with its tier change and event; false (and
/// nothing written) if the member is no longer in `from`.
async fn change_tier(
    txn: &DatabaseTransaction,
    member_id: &str,
    from: &str,
    to: &str,
    reason: TierChangeReason,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    if !loyalty::set_tier(txn, member_id, from, to, reason.as_str(), now).await? {
        return Ok(false);
    }
    events::tier_changed(member_id, from, to, reason)
        .outbox_row(member_id)
        .insert(txn)
        .await?;
    Ok(true)
}

impl App {
    /// A page of the member's tier changes, newest first, with the next page's token.
    pub(crate) async fn tier_changes(
        &self,
        id: &MemberId,
        page: Page,
    ) -> ServiceResult<(Vec<store::tier_change::Model>, String)> {
        live(&self.db, id.as_str()).await?;
        let rows = loyalty::tier_changes(&self.db, id.as_str(), Some(&page)).await?;
        Ok(page.finish(rows, |c| c.id.clone()))
    }

    /// The periodic re-evaluation: tiers move to what the spend earns, downwards by
    /// at most the configured number of levels (or by percentile rank).
    pub async fn reevaluate_tiers(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let rules = &self.rules;
        let mut spends = Vec::new();
        let mut after = String::new();
        loop {
            let ids = loyalty::member_ids_after(&self.db, &after, 500).await?;
            let Some(last) = ids.last().cloned() else { break };
            for id in ids {
                let spend = spend_at(&self.db, rules, &id, as_of).await?;
                spends.push((id, spend));
            }
            after = last;
        }
        let targets: Vec<(String, usize)> = match &rules.percentile {
            Some(shares) => percentile_levels(&spends, shares),
            None => spends
                .iter()
                .map(|(id, spend)| (id.clone(), rules.ladder.level_for_spend(*spend)))
                .collect(),
        };
        let mut changed = 0;
        for (id, earned) in targets {
            let Some(member) = store::find_member(&self.db, &id).await? else {
                continue;
            };
            let current = rules.level_of(&member.tier);
            let next = if earned >= current {
                earned
            } else {
                earned.max(current.saturating_sub(rules.max_steps_down))
            };
            if next == current {
                continue;
            }
            let (from, to) = (member.tier.clone(), rules.tier_name(next));
            // From the tier read only: a payment that upgraded the member since
            // keeps its upgrade.
            let committed = idempotency::transaction(&self.db, |txn| {
                let (id, from, to) = (id.clone(), from.clone(), to.clone());
                Box::pin(async move {
                    if !change_tier(txn, &id, &from, &to, TierChangeReason::Reevaluation, as_of).await? {
                        return Ok(None);
                    }
                    Ok(Some(store::touch(txn, &id, as_of).await?.version))
                })
            })
            .await?;
            if committed.is_some() {
                self.finish(&MemberId::from_stored(id), committed).await;
                changed += 1;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests;
