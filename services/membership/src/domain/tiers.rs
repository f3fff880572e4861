//! Tiers (docs/domain.md, Tiers): a configurable ladder of spend thresholds, or percentiles of
//! members by spend. Upgrades apply at once; downgrades only at a periodic
//! re-evaluation and by at most a configured number of levels.

use chrono::{DateTime, Months, Utc};

use super::money::Factor;

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TierDef {
    pub(crate) name: String,
    /// Qualifying spend (minor units) from which the tier applies.
    pub(crate) threshold_minor: i64,
    /// Points multiplier of the tier.
    pub(crate) multiplier: Factor,
    #[serde(default)]
    pub(crate) free_shipping: bool,
    /// Tier discount in basis points; applied by catalog's pricing, published here.
    #[serde(default)]
    pub(crate) discount_bp: u32,
    #[serde(default)]
    pub(crate) privileges: Vec<String>,
}

/// Why a ladder is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LadderError {
    #[error("the ladder needs at least one tier")]
    Empty,
    #[error("the first tier must start at 0")]
    FirstNotZero,
    #[error("thresholds must strictly increase (at {0})")]
    NotAscending(String),
    #[error("tier names must be unique ({0})")]
    DuplicateName(String),
}

/// Tiers from lowest to highest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ladder {
    tiers: Vec<TierDef>,
}

fn tier(name: &str, threshold_minor: i64, multiplier: u32, free_shipping: bool, discount_bp: u32) -> TierDef {
    TierDef {
        name: name.into(),
        threshold_minor,
        multiplier: Factor(multiplier),
        free_shipping,
        discount_bp,
        privileges: Vec::new(),
    }
}

impl Ladder {
    pub(crate) fn new(tiers: Vec<TierDef>) -> Result<Self, LadderError> {
        let first = tiers.first().ok_or(LadderError::Empty)?;
        if first.threshold_minor != 0 {
            return Err(LadderError::FirstNotZero);
        }
        for pair in tiers.windows(2) {
            if pair[1].threshold_minor <= pair[0].threshold_minor {
                return Err(LadderError::NotAscending(pair[1].name.clone()));
            }
        }
        let mut names: Vec<_> = tiers.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(LadderError::DuplicateName(dup[0].to_owned()));
        }
        Ok(Self { tiers })
    }

    /// regular (any purchase), silver >= 500.00, gold >= 3,000.00, platinum >= 8,000.00.
    pub(crate) fn standard() -> Self {
        Self {
            tiers: vec![
                tier("regular", 0, 10_000, false, 0),
                tier("silver", 50_000, 12_500, false, 300),
                tier("gold", 300_000, 15_000, true, 500),
                tier("platinum", 800_000, 20_000, true, 1_000),
            ],
        }
    }

    pub(crate) fn tiers(&self) -> &[TierDef] {
        &self.tiers
    }

    pub(crate) fn get(&self, level: usize) -> Option<&TierDef> {
        self.tiers.get(level)
    }

    pub(crate) fn level_of(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.name == name)
    }

    /// The highest tier whose threshold the spend reaches.
    pub(crate) fn level_for_spend(&self, spend_minor: i64) -> usize {
        self.tiers
            .iter()
            .rposition(|t| spend_minor >= t.threshold_minor)
            .unwrap_or(0)
    }

    /// After a purchase: the new level if the spend earns a higher tier (at once).
    pub(crate) fn upgrade(&self, current: usize, spend_minor: i64) -> Option<usize> {
        let earned = self.level_for_spend(spend_minor);
        (earned > current).then_some(earned)
    }

    /// At the periodic re-evaluation: up to the earned tier, or down by at most
    /// `max_steps_down` levels towards it.
    pub(crate) fn reevaluate(&self, current: usize, spend_minor: i64, max_steps_down: usize) -> usize {
        step_towards(current, self.level_for_spend(spend_minor), max_steps_down)
    }
}

/// The level a re-evaluation moves a member at `current` to when it has earned
/// `earned` (by threshold or by rank): up at once, down by at most `max_steps_down`.
pub(crate) fn step_towards(current: usize, earned: usize, max_steps_down: usize) -> usize {
    if earned >= current {
        earned
    } else {
        earned.max(current.saturating_sub(max_steps_down))
    }
}

/// Why a member's tier changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TierChangeReason {
    /// A payment reached a higher threshold.
    Purchase,
    /// The periodic re-evaluation.
    Reevaluation,
    /// A merge: the survivor takes the higher tier of the two, or the one the
    /// combined spend reaches.
    Merge,
}

impl TierChangeReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Reevaluation => "reevaluation",
            Self::Merge => "merge",
        }
    }
}

/// Over which period spend qualifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "months")]
pub(crate) enum SpendWindow {
    /// The last N calendar months up to `as_of`.
    Rolling(u32),
    Lifetime,
}

impl SpendWindow {
    /// The instant after which spend counts at `as_of` (the window is `(start,
    /// as_of]`); `None` when all of it counts.
    pub(crate) fn start(self, as_of: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            SpendWindow::Lifetime => None,
            SpendWindow::Rolling(months) => as_of.checked_sub_months(Months::new(months)),
        }
    }
}

/// A paid order (positive) or a refund (negative), in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpendEvent {
    pub(crate) at: DateTime<Utc>,
    pub(crate) amount_minor: i64,
}

/// Paid order value minus refunds inside the window ending at `as_of`, never negative.
pub(crate) fn qualifying_spend(events: &[SpendEvent], as_of: DateTime<Utc>, window: SpendWindow) -> i64 {
    let start = window.start(as_of).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let total: i128 = events
        .iter()
        .filter(|e| e.at > start && e.at <= as_of)
        .map(|e| e.amount_minor as i128)
        .sum();
    total.clamp(0, i64::MAX as i128) as i64
}

/// Percentile mode: shares of the ranked members, from the top tier down, in basis
/// points (top 5% = 500). Members below every share get the lowest tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PercentileShares {
    /// `(level, share_bp)` from the highest level down.
    pub(crate) bands: Vec<(usize, u32)>,
}

impl PercentileShares {
    /// Top 5% platinum, next 15% gold, next 30% silver.
    pub(crate) fn standard() -> Self {
        Self {
            bands: vec![(3, 500), (2, 1_500), (1, 3_000)],
        }
    }
}

/// Assigns levels by rank of spend. Members with equal spend share a level (the
/// level of the best rank among them); members without spend get level 0.
pub(crate) fn percentile_levels<K: Clone + Ord>(spends: &[(K, i64)], shares: &PercentileShares) -> Vec<(K, usize)> {
    let mut ranked: Vec<_> = spends.iter().filter(|(_, s)| *s > 0).cloned().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let n = ranked.len() as u64;
    // Cumulative rank boundaries, rounded down: a band never takes more than its share.
    let mut boundaries = Vec::new();
    let mut cumulative = 0u64;
    for (level, share) in &shares.bands {
        cumulative += *share as u64;
        boundaries.push(((n * cumulative.min(10_000)) / 10_000, *level));
    }
    let level_at = |rank: u64| {
        boundaries
            .iter()
            .find(|(boundary, _)| rank < *boundary)
            .map(|(_, level)| *level)
            .unwrap_or(0)
    };
    let mut out = Vec::with_capacity(spends.len());
    let mut group_rank = 0u64;
    for (rank, (key, spend)) in ranked.iter().enumerate() {
        if rank == 0 || ranked[rank - 1].1 != *spend {
            group_rank = rank as u64;
        }
        out.push((key.clone(), level_at(group_rank)));
    }
    out.extend(spends.iter().filter(|(_, s)| *s <= 0).map(|(k, _)| (k.clone(), 0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn the_standard_ladder_matches_the_handbook() {
        let l = Ladder::standard();
        assert_eq!(l.level_for_spend(0), 0);
        assert_eq!(l.level_for_spend(49_999), 0);
        assert_eq!(l.level_for_spend(50_000), 1);
        assert_eq!(l.level_for_spend(299_999), 1);
        assert_eq!(l.level_for_spend(300_000), 2);
        assert_eq!(l.level_for_spend(800_000), 3);
        assert_eq!(l.level_for_spend(i64::MAX), 3);
        assert_eq!(l.level_for_spend(-5), 0);
    }

    #[test]
    fn upgrades_are_immediate_and_downgrades_wait_and_step_once() {
        let l = Ladder::standard();
        assert_eq!(l.upgrade(0, 300_000), Some(2));
        assert_eq!(l.upgrade(2, 300_000), None);
        assert_eq!(l.upgrade(3, 0), None, "a purchase never downgrades");
        assert_eq!(l.reevaluate(3, 0, 1), 2, "one level at most");
        assert_eq!(l.reevaluate(3, 0, 2), 1);
        assert_eq!(l.reevaluate(1, 900_000, 1), 3, "re-evaluation also upgrades");
        assert_eq!(l.reevaluate(2, 300_000, 1), 2);
    }

    #[test]
    fn broken_ladders_are_rejected() {
        assert_eq!(Ladder::new(vec![]), Err(LadderError::Empty));
        let mut tiers = Ladder::standard().tiers().to_vec();
        tiers[2].threshold_minor = 10;
        assert!(matches!(Ladder::new(tiers), Err(LadderError::NotAscending(_))));
        let mut tiers = Ladder::standard().tiers().to_vec();
        tiers[0].threshold_minor = 1;
        assert_eq!(Ladder::new(tiers), Err(LadderError::FirstNotZero));
        let mut tiers = Ladder::standard().tiers().to_vec();
        tiers[3].name = "gold".into();
        assert!(matches!(Ladder::new(tiers), Err(LadderError::DuplicateName(_))));
    }

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().unwrap()
    }

    #[test]
    fn qualifying_spend_is_paid_minus_refunds_in_the_window() {
        let events = [
            SpendEvent {
                at: at(2025, 1, 10),
                amount_minor: 100_000,
            },
            SpendEvent {
                at: at(2026, 3, 1),
                amount_minor: 40_000,
            },
            SpendEvent {
                at: at(2026, 3, 5),
                amount_minor: -15_000,
            },
            SpendEvent {
                at: at(2026, 8, 1),
                amount_minor: 999_999,
            },
        ];
        let as_of = at(2026, 6, 1);
        assert_eq!(qualifying_spend(&events, as_of, SpendWindow::Rolling(12)), 25_000);
        assert_eq!(qualifying_spend(&events, as_of, SpendWindow::Lifetime), 125_000);
        let refund_only = [SpendEvent {
            at: at(2026, 5, 1),
            amount_minor: -10,
        }];
        assert_eq!(qualifying_spend(&refund_only, as_of, SpendWindow::Lifetime), 0);
    }

    #[test]
    fn percentiles_assign_top_bands_and_ties_share_a_level() {
        // 20 members with spend 20..=1 and one without: top 5% = 1 member, next 15% = 3,
        // next 30% = 6.
        let mut spends: Vec<(u32, i64)> = (1..=20).map(|i| (i, i as i64)).collect();
        spends.push((99, 0));
        let levels: std::collections::BTreeMap<_, _> = percentile_levels(&spends, &PercentileShares::standard())
            .into_iter()
            .collect();
        assert_eq!(levels[&20], 3);
        assert_eq!((17..=19).map(|k| levels[&k]).collect::<Vec<_>>(), [2, 2, 2]);
        assert_eq!((11..=16).map(|k| levels[&k]).collect::<Vec<_>>(), [1; 6]);
        assert_eq!(levels[&10], 0);
        assert_eq!(levels[&99], 0);

        let tied = vec![(1u32, 50), (2, 50), (3, 10)];
        let levels: std::collections::BTreeMap<_, _> = percentile_levels(
            &tied,
            &PercentileShares {
                bands: vec![(1, 3_400)],
            },
        )
        .into_iter()
        .collect();
        assert_eq!(levels[&1], levels[&2], "equal spend, equal tier");
    }

    proptest! {
        #[test]
        fn reevaluation_moves_towards_the_earned_tier_by_at_most_the_step(
            current in 0usize..4, spend in -10i64..2_000_000, step in 1usize..4
        ) {
            let l = Ladder::standard();
            let next = l.reevaluate(current, spend, step);
            let earned = l.level_for_spend(spend);
            prop_assert!(next >= earned.min(current));
            prop_assert!(current.saturating_sub(next) <= step);
            if earned >= current { prop_assert_eq!(next, earned); }
        }

        #[test]
        fn percentile_bands_never_exceed_their_share(spends in proptest::collection::vec(0i64..1000, 0..200)) {
            let keyed: Vec<(usize, i64)> = spends.iter().copied().enumerate().collect();
            let levels = percentile_levels(&keyed, &PercentileShares::standard());
            prop_assert_eq!(levels.len(), keyed.len());
            let positive = spends.iter().filter(|s| **s > 0).count();
            // Ties may lift a whole tie group, so only the strict-rank bound is checked.
            let distinct: std::collections::HashSet<_> = spends.iter().filter(|s| **s > 0).collect();
            if distinct.len() == positive {
                let top = levels.iter().filter(|(_, l)| *l == 3).count();
                prop_assert!(top * 10_000 <= positive * 500);
            }
        }
    }
}
