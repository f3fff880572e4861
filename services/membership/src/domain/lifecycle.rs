//! Lifecycle state relative to `as_of` with a window W (default 3 months; see docs/domain.md,
//! Lifecycle). "Within the last W" means at or after `as_of - W`; "in (W, 2W]" means before
//! `as_of - W` and at or after `as_of - 2W`; likewise for 2W and 4W. Windows are
//! calendar months (clamped to month ends). Purchases after `as_of` are ignored.

use chrono::{DateTime, Months, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LifecycleState {
    Prospect,
    NewOnce,
    NewRepeat,
    OldOnce,
    OldRepeat,
    Silent,
    Sleeping,
    Lost,
}

impl LifecycleState {
    /// The state's name in events and records.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Prospect => "prospect",
            Self::NewOnce => "new_once",
            Self::NewRepeat => "new_repeat",
            Self::OldOnce => "old_once",
            Self::OldRepeat => "old_repeat",
            Self::Silent => "silent",
            Self::Sleeping => "sleeping",
            Self::Lost => "lost",
        }
    }

    /// The four active states.
    #[cfg(test)]
    fn is_active(self) -> bool {
        matches!(self, Self::NewOnce | Self::NewRepeat | Self::OldOnce | Self::OldRepeat)
    }
}

/// `as_of` minus `months` calendar months; far past dates saturate to the minimum.
fn months_before(as_of: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    as_of
        .checked_sub_months(Months::new(months))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Classifies a member's purchase times (in any order) at `as_of`.
pub(crate) fn classify(purchases: &[DateTime<Utc>], as_of: DateTime<Utc>, window_months: u32) -> LifecycleState {
    let past: Vec<_> = purchases.iter().copied().filter(|t| *t <= as_of).collect();
    let Some(first) = past.iter().min().copied() else {
        return LifecycleState::Prospect;
    };
    let w = months_before(as_of, window_months);
    let w2 = months_before(as_of, window_months.saturating_mul(2));
    let w4 = months_before(as_of, window_months.saturating_mul(4));
    let in_window = past.iter().filter(|t| **t >= w).count();
    let newest = past.iter().max().copied().unwrap_or(first);
    if in_window > 0 {
        let is_new = first >= w;
        return match (is_new, in_window >= 2) {
            (true, false) => LifecycleState::NewOnce,
            (true, true) => LifecycleState::NewRepeat,
            (false, false) => LifecycleState::OldOnce,
            (false, true) => LifecycleState::OldRepeat,
        };
    }
    if newest >= w2 {
        LifecycleState::Silent
    } else if newest >= w4 {
        LifecycleState::Sleeping
    } else {
        LifecycleState::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).single().unwrap()
    }

    const AS_OF: (i32, u32, u32) = (2026, 7, 1);

    fn classify_at(purchases: &[DateTime<Utc>]) -> LifecycleState {
        let (y, m, d) = AS_OF;
        classify(purchases, at(y, m, d), 3)
    }

    #[test]
    fn no_purchase_is_a_prospect() {
        assert_eq!(classify_at(&[]), LifecycleState::Prospect);
        // A purchase after as_of does not count yet.
        assert_eq!(classify_at(&[at(2026, 7, 2)]), LifecycleState::Prospect);
    }

    #[test]
    fn new_members_by_purchases_in_the_window() {
        assert_eq!(classify_at(&[at(2026, 6, 1)]), LifecycleState::NewOnce);
        assert_eq!(
            classify_at(&[at(2026, 5, 1), at(2026, 6, 1)]),
            LifecycleState::NewRepeat
        );
    }

    #[test]
    fn old_members_first_bought_before_the_window() {
        assert_eq!(classify_at(&[at(2025, 1, 1), at(2026, 6, 1)]), LifecycleState::OldOnce);
        assert_eq!(
            classify_at(&[at(2025, 1, 1), at(2026, 5, 1), at(2026, 6, 1)]),
            LifecycleState::OldRepeat
        );
    }

    #[test]
    fn every_boundary_is_inclusive_of_the_window_start() {
        // as_of 2026-07-01 12:00; W starts 2026-04-01 12:00, 2W 2026-01-01, 4W 2025-07-01.
        let w = at(2026, 4, 1);
        let just_before_w = w - chrono::Duration::seconds(1);
        assert_eq!(classify_at(&[w]), LifecycleState::NewOnce);
        assert_eq!(classify_at(&[just_before_w]), LifecycleState::Silent);
        assert_eq!(classify_at(&[just_before_w, w]), LifecycleState::OldOnce);

        let w2 = at(2026, 1, 1);
        assert_eq!(classify_at(&[w2]), LifecycleState::Silent);
        assert_eq!(
            classify_at(&[w2 - chrono::Duration::seconds(1)]),
            LifecycleState::Sleeping
        );

        let w4 = at(2025, 7, 1);
        assert_eq!(classify_at(&[w4]), LifecycleState::Sleeping);
        assert_eq!(classify_at(&[w4 - chrono::Duration::seconds(1)]), LifecycleState::Lost);
    }

    #[test]
    fn the_newest_purchase_decides_among_inactive_states() {
        assert_eq!(classify_at(&[at(2020, 1, 1), at(2026, 2, 1)]), LifecycleState::Silent);
        assert_eq!(classify_at(&[at(2020, 1, 1), at(2025, 9, 1)]), LifecycleState::Sleeping);
        assert_eq!(classify_at(&[at(2020, 1, 1), at(2024, 9, 1)]), LifecycleState::Lost);
    }

    #[test]
    fn month_ends_clamp() {
        // 2026-05-31 minus 3 months is 2026-02-28.
        let as_of = at(2026, 5, 31);
        assert_eq!(classify(&[at(2026, 2, 28)], as_of, 3), LifecycleState::NewOnce);
        assert_eq!(classify(&[at(2026, 2, 27)], as_of, 3), LifecycleState::Silent);
    }

    proptest! {
        #[test]
        fn the_state_is_active_iff_a_purchase_lies_in_the_window(
            offsets in proptest::collection::vec(0i64..2000, 0..8)
        ) {
            let as_of = at(2026, 7, 1);
            let purchases: Vec<_> = offsets.iter().map(|d| as_of - chrono::Duration::days(*d)).collect();
            let state = classify(&purchases, as_of, 3);
            let w = months_before(as_of, 3);
            prop_assert_eq!(state.is_active(), purchases.iter().any(|t| *t >= w));
            prop_assert_eq!(state == LifecycleState::Prospect, purchases.is_empty());
        }
    }
}
