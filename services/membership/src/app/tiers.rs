//! Tiers: the ladder as configured, a member's tier changes, and the periodic
//! re-evaluation.
//!
//! The re-evaluation is set-based: one statement reads the tier and qualifying spend
//! of each batch of [`MEMBERS_PER_BATCH`] members (summed by the database), the
//! domain's rules decide each member's next tier, and one statement per batch moves
//! those whose tier changes, in one transaction with their tier change rows and
//! events. Upgrades by payments are applied at once elsewhere; here the tier moves to
//! what the spend earns, downwards by at most `max_steps_down` levels (or by rank of
//! spend, in percentile mode).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency;
use retail_kit::paging::Page;

use super::{App, live};
use crate::domain::ids::MemberId;
use crate::domain::tiers::{TierChangeReason, percentile_levels, step_towards};
use crate::events;
use crate::store;
use crate::store::loyalty::{self, TierMove, TierStanding};

/// Members whose tiers one statement reads, and one transaction moves.
const MEMBERS_PER_BATCH: u64 = 10_000;
/// Cache invalidations after a batch that run at once.
const INVALIDATIONS_AT_ONCE: usize = 64;

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

    /// The periodic re-evaluation at `as_of`: each live member's tier moves to what
    /// its spend earns, downwards by at most the configured number of levels (or by
    /// percentile rank). Returns how many members moved.
    pub async fn reevaluate_tiers(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        self.reevaluate_tiers_by(as_of, MEMBERS_PER_BATCH).await
    }

    /// [`Self::reevaluate_tiers`] `batch` members at a time.
    async fn reevaluate_tiers_by(&self, as_of: DateTime<Utc>, batch: u64) -> ServiceResult<u64> {
        let rules = &self.rules;
        let level_of = |s: &TierStanding| rules.level_of(&s.tier);
        let Some(shares) = &rules.percentile else {
            // By threshold: each batch is decided and moved on its own.
            let mut moved = 0;
            let mut after = String::new();
            loop {
                let standings = self.tier_standings(&after, batch, as_of).await?;
                let Some(last) = standings.last() else { break };
                after = last.member_id.clone();
                let moves = standings.iter().filter_map(|s| {
                    self.tier_move(s, rules.ladder.reevaluate(level_of(s), s.spend, rules.max_steps_down))
                });
                moved += self.move_tiers(moves.collect(), as_of).await?;
                if (standings.len() as u64) < batch {
                    break;
                }
            }
            return Ok(moved);
        };
        // By rank: every member's spend first, then the moves batch by batch.
        let mut standings = Vec::new();
        let mut after = String::new();
        loop {
            let read = self.tier_standings(&after, batch, as_of).await?;
            let Some(last) = read.last() else { break };
            after = last.member_id.clone();
            let full = read.len() as u64 == batch;
            standings.extend(read);
            if !full {
                break;
            }
        }
        let spends: Vec<(usize, i64)> = standings.iter().map(|s| s.spend).enumerate().collect();
        let mut earned = vec![0; standings.len()];
        for (i, level) in percentile_levels(&spends, shares) {
            earned[i] = level;
        }
        let moves: Vec<TierMove> = standings
            .iter()
            .zip(earned)
            .filter_map(|(s, earned)| self.tier_move(s, step_towards(level_of(s), earned, rules.max_steps_down)))
            .collect();
        let mut moved = 0;
        for chunk in moves.chunks(batch.max(1) as usize) {
            moved += self.move_tiers(chunk.to_vec(), as_of).await?;
        }
        Ok(moved)
    }

    async fn tier_standings(&self, after: &str, batch: u64, as_of: DateTime<Utc>) -> ServiceResult<Vec<TierStanding>> {
        let spend_after = self.rules.spend_window.start(as_of);
        loyalty::tier_standings(&self.db, after, batch, spend_after, as_of).await
    }

    /// The move of a member at `standing` to level `next`, if that is another tier.
    fn tier_move(&self, standing: &TierStanding, next: usize) -> Option<TierMove> {
        (next != self.rules.level_of(&standing.tier)).then(|| {
            let to = self.rules.tier_name(next);
            let event = events::tier_changed(&standing.member_id, &standing.tier, &to, TierChangeReason::Reevaluation);
            TierMove {
                member_id: standing.member_id.clone(),
                from: standing.tier.clone(),
                to,
                event,
            }
        })
    }

    /// Moves the members in one transaction, each only from the tier read (a payment
    /// that upgraded the member since keeps its upgrade), with a tier change and a
    /// `TierChanged` event for each member moved; then the cache forgets them.
    async fn move_tiers(&self, moves: Vec<TierMove>, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        if moves.is_empty() {
            return Ok(0);
        }
        let reason = TierChangeReason::Reevaluation.as_str();
        let moved = idempotency::transaction(&self.db, |txn| {
            let moves = moves.clone();
            Box::pin(async move { loyalty::move_tiers(txn, &moves, reason, as_of).await })
        })
        .await?;
        futures::stream::iter(&moved)
            .for_each_concurrent(INVALIDATIONS_AT_ONCE, |(id, version)| async move {
                self.forget_member(id, *version, true).await;
            })
            .await;
        self.log.committed();
        Ok(moved.len() as u64)
    }
}

#[cfg(test)]
mod tests;
