//! The configured loyalty rules in one value, and what they say about one member.

use chrono::{DateTime, Utc};

use super::lifecycle::{self, LifecycleState};
use super::money::Factor;
use super::tiers::{Ladder, PercentileShares, SpendEvent, SpendWindow, qualifying_spend};

#[derive(Debug, Clone)]
pub(crate) struct LoyaltyRules {
    pub(crate) currency: String,
    pub(crate) minor_exponent: u32,
    /// Points per major currency unit before the tier multiplier.
    pub(crate) base_rate: Factor,
    /// Lots expire at the end of the month this many months after earning.
    pub(crate) lot_months: u32,
    pub(crate) ladder: Ladder,
    pub(crate) spend_window: SpendWindow,
    pub(crate) lifecycle_months: u32,
    /// Levels a re-evaluation may move down at once.
    pub(crate) max_steps_down: usize,
    /// Set in percentile mode: tiers by rank of spend instead of thresholds.
    pub(crate) percentile: Option<PercentileShares>,
}

impl LoyaltyRules {
    #[cfg(test)]
    pub(crate) fn standard() -> Self {
        Self {
            currency: "EUR".into(),
            minor_exponent: 2,
            base_rate: Factor::ONE,
            lot_months: 12,
            ladder: Ladder::standard(),
            spend_window: SpendWindow::Rolling(12),
            lifecycle_months: 3,
            max_steps_down: 1,
            percentile: None,
        }
    }

    pub(crate) fn base_tier(&self) -> &str {
        self.ladder.get(0).map(|t| t.name.as_str()).unwrap_or("regular")
    }

    /// Spend events of `(time, signed amount)` records.
    pub(crate) fn spend(&self, records: &[(DateTime<Utc>, i64)], as_of: DateTime<Utc>) -> i64 {
        let events: Vec<_> = records
            .iter()
            .map(|(at, amount_minor)| SpendEvent {
                at: *at,
                amount_minor: *amount_minor,
            })
            .collect();
        qualifying_spend(&events, as_of, self.spend_window)
    }

    pub(crate) fn lifecycle(&self, paid_at: &[DateTime<Utc>], as_of: DateTime<Utc>) -> LifecycleState {
        lifecycle::classify(paid_at, as_of, self.lifecycle_months)
    }

    pub(crate) fn level_of(&self, tier: &str) -> usize {
        self.ladder.level_of(tier).unwrap_or(0)
    }

    pub(crate) fn tier_name(&self, level: usize) -> String {
        self.ladder
            .get(level)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| self.base_tier().to_owned())
    }

    pub(crate) fn multiplier(&self, tier: &str) -> Factor {
        self.ladder
            .get(self.level_of(tier))
            .map(|t| t.multiplier)
            .unwrap_or(Factor::ONE)
    }
}
