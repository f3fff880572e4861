//! The points ledger's arithmetic (docs/domain.md, Points), planned here and executed by the
//! store in one transaction:
//! - earn `floor(amount_paid_major_units * base_rate * tier_multiplier)`, exactly,
//!   in integers; earnings first repay debt;
//! - every earn is a lot expiring at the end of the month 12 months after earning;
//! - redemption takes lots first-expiring-first and never more than the balance;
//! - a refund reverses the order's points in proportion to the refunded amount; what
//!   is already spent becomes debt, so the balance never goes negative.

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};

use super::money::Factor;

/// The most points a balance (or a debt) may hold: 10^15, exact in any client's
/// 64-bit float. Earnings that would pass it are cut to what fits; the database
/// refuses a balance above it (CHECK constraint or trigger).
pub const MAX_POINTS: i64 = 1_000_000_000_000_000;

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EntryKind {
    /// Points a paid order earned.
    Earn,
    /// Points granted by staff.
    Grant,
    Redeem,
    /// A lot's rest written off at its expiry.
    Expire,
    /// Points taken back for a refund.
    Reverse,
    /// Points moved between the ledgers of a merged member and its survivor: out
    /// of the one (negative), into the other (positive), per lot.
    Merge,
}

impl EntryKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Earn => "earn",
            Self::Grant => "grant",
            Self::Redeem => "redeem",
            Self::Expire => "expire",
            Self::Reverse => "reverse",
            Self::Merge => "merge",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::Earn,
            Self::Grant,
            Self::Redeem,
            Self::Expire,
            Self::Reverse,
            Self::Merge,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What a purchase record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PurchaseKind {
    /// A paid order (one per order).
    Paid,
    Refund,
}

impl PurchaseKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Refund => "refund",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Paid, Self::Refund].into_iter().find(|k| k.as_str() == s)
    }
}

/// Points earned on a paid amount.
pub(crate) fn earned_points(amount_paid_minor: i64, minor_exponent: u32, base_rate: Factor, multiplier: Factor) -> i64 {
    if amount_paid_minor <= 0 {
        return 0;
    }
    let numerator = amount_paid_minor as i128 * base_rate.0 as i128 * multiplier.0 as i128;
    let denominator = 10i128.pow(minor_exponent) * Factor::SCALE * Factor::SCALE;
    (numerator / denominator).clamp(0, i64::MAX as i128) as i64
}

/// When a lot earned at `earned_at` expires: the first instant after the end of the
/// month `months` months later (exclusive bound: the lot is usable before it).
pub(crate) fn lot_expiry(earned_at: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let first_of_month = Utc
        .with_ymd_and_hms(earned_at.year(), earned_at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(earned_at);
    first_of_month
        .checked_add_months(Months::new(months.saturating_add(1)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A lot as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lot<Id> {
    pub(crate) id: Id,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) remaining: i64,
}

impl<Id> Lot<Id> {
    pub(crate) fn usable(&self, as_of: DateTime<Utc>) -> bool {
        self.remaining > 0 && as_of < self.expires_at
    }
}

/// Not enough points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("insufficient points: {available} available, {requested} requested")]
pub(crate) struct Insufficient {
    pub(crate) available: i64,
    pub(crate) requested: i64,
}

/// Usable balance at `as_of`.
pub(crate) fn available<Id>(lots: &[Lot<Id>], as_of: DateTime<Utc>) -> i64 {
    lots.iter().filter(|l| l.usable(as_of)).map(|l| l.remaining).sum()
}

/// Which lots a redemption of `points` takes from: first expiring first, then oldest id.
pub(crate) fn plan_redemption<Id: Clone + Ord>(
    lots: &[Lot<Id>],
    points: i64,
    as_of: DateTime<Utc>,
) -> Result<Vec<(Id, i64)>, Insufficient> {
    let total = available(lots, as_of);
    if points <= 0 || points > total {
        return Err(Insufficient {
            available: total,
            requested: points,
        });
    }
    let mut usable: Vec<_> = lots.iter().filter(|l| l.usable(as_of)).collect();
    usable.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then_with(|| a.id.cmp(&b.id)));
    let mut left = points;
    let mut plan = Vec::new();
    for lot in usable {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        plan.push((lot.id.clone(), take));
        left -= take;
    }
    Ok(plan)
}

/// Lots to write off at `as_of`, with the points they still hold.
pub(crate) fn plan_expiry<Id: Clone>(lots: &[Lot<Id>], as_of: DateTime<Utc>) -> Vec<(Id, i64)> {
    lots.iter()
        .filter(|l| l.remaining > 0 && as_of >= l.expires_at)
        .map(|l| (l.id.clone(), l.remaining))
        .collect()
}

/// Points to reverse for a refund: the order's points scale with the amount still
/// paid; `already_reversed` makes repeated partial refunds add up exactly.
pub(crate) fn points_to_reverse(earned: i64, already_reversed: i64, paid_minor: i64, refunded_total_minor: i64) -> i64 {
    if earned <= 0 || paid_minor <= 0 {
        return 0;
    }
    let kept_amount = (paid_minor - refunded_total_minor.clamp(0, paid_minor)) as i128;
    let kept_points = (earned as i128 * kept_amount / paid_minor as i128) as i64;
    (earned - kept_points - already_reversed).max(0)
}

/// How a reversal is carried out: taken from lots (the order's own lot first, then
/// first-expiring-first), the rest recorded as debt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReversalPlan<Id> {
    pub(crate) from_lots: Vec<(Id, i64)>,
    pub(crate) debt: i64,
}

pub(crate) fn plan_reversal<Id: Clone + Ord>(
    lots: &[Lot<Id>],
    order_lot: Option<&Id>,
    points: i64,
    as_of: DateTime<Utc>,
) -> ReversalPlan<Id> {
    let mut usable: Vec<_> = lots.iter().filter(|l| l.usable(as_of)).collect();
    usable.sort_by(|a, b| {
        let own = |l: &Lot<Id>| Some(&l.id) != order_lot;
        own(a)
            .cmp(&own(b))
            .then_with(|| a.expires_at.cmp(&b.expires_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut left = points.max(0);
    let mut from_lots = Vec::new();
    for lot in usable {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        from_lots.push((lot.id.clone(), take));
        left -= take;
    }
    ReversalPlan { from_lots, debt: left }
}

/// An earning first repays debt: `(repaid, credited as a new lot)`.
pub(crate) fn settle_debt(debt: i64, earned: i64) -> (i64, i64) {
    let repaid = debt.max(0).min(earned.max(0));
    (repaid, earned.max(0) - repaid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).single().unwrap()
    }

    #[test]
    fn entry_and_purchase_kinds_read_back_what_they_write() {
        for k in [
            EntryKind::Earn,
            EntryKind::Grant,
            EntryKind::Redeem,
            EntryKind::Expire,
            EntryKind::Reverse,
        ] {
            assert_eq!(EntryKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EntryKind::parse("bonus"), None);
        for k in [PurchaseKind::Paid, PurchaseKind::Refund] {
            assert_eq!(PurchaseKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(PurchaseKind::parse("PAID"), None);
    }

    #[test]
    fn earning_floors_major_units_times_rate_times_multiplier() {
        // 123.45 EUR at 1 point per unit, gold x1.5 = 185.175 -> 185.
        assert_eq!(earned_points(12_345, 2, Factor::ONE, Factor(15_000)), 185);
        assert_eq!(earned_points(99, 2, Factor::ONE, Factor::ONE), 0);
        assert_eq!(earned_points(100, 2, Factor::ONE, Factor::ONE), 1);
        assert_eq!(
            earned_points(1_000, 0, Factor::ONE, Factor(12_500)),
            1_250,
            "JPY has no minor unit"
        );
        assert_eq!(earned_points(-500, 2, Factor::ONE, Factor::ONE), 0);
        assert_eq!(earned_points(i64::MAX, 0, Factor(u32::MAX), Factor(u32::MAX)), i64::MAX);
    }

    #[test]
    fn lots_expire_at_the_end_of_the_month_twelve_months_later() {
        assert_eq!(
            lot_expiry(at(2026, 3, 15), 12),
            at(2027, 4, 1) - chrono::Duration::hours(10)
        );
        assert_eq!(
            lot_expiry(at(2026, 12, 31), 12),
            Utc.with_ymd_and_hms(2028, 1, 1, 0, 0, 0).single().unwrap()
        );
    }

    fn lot(id: u32, expires: DateTime<Utc>, remaining: i64) -> Lot<u32> {
        Lot {
            id,
            expires_at: expires,
            remaining,
        }
    }

    #[test]
    fn redemption_takes_first_expiring_lots_first() {
        let now = at(2026, 6, 1);
        let lots = [
            lot(1, at(2027, 3, 1), 100),
            lot(2, at(2026, 9, 1), 30),
            lot(3, at(2026, 5, 1), 500),
        ];
        assert_eq!(plan_redemption(&lots, 50, now), Ok(vec![(2, 30), (1, 20)]));
        assert_eq!(
            plan_redemption(&lots, 131, now),
            Err(Insufficient {
                available: 130,
                requested: 131
            }),
            "the expired lot does not count"
        );
        assert!(plan_redemption(&lots, 0, now).is_err());
        assert_eq!(plan_expiry(&lots, now), vec![(3, 500)]);
    }

    #[test]
    fn refunds_reverse_proportionally_and_add_up_to_the_whole() {
        // 185 points on 123.45; refund 23.45, then the rest.
        let first = points_to_reverse(185, 0, 12_345, 2_345);
        assert_eq!(first, 185 - 185 * 10_000 / 12_345);
        let second = points_to_reverse(185, first, 12_345, 12_345);
        assert_eq!(first + second, 185);
        assert_eq!(points_to_reverse(185, 185, 12_345, 99_999), 0);
    }

    #[test]
    fn a_reversal_of_spent_points_becomes_debt_that_earnings_repay() {
        let now = at(2026, 6, 1);
        let lots = [lot(1, at(2027, 6, 1), 40), lot(2, at(2026, 12, 1), 10)];
        let plan = plan_reversal(&lots, Some(&1), 100, now);
        assert_eq!(plan.from_lots, vec![(1, 40), (2, 10)], "own lot first");
        assert_eq!(plan.debt, 50);
        assert_eq!(settle_debt(50, 30), (30, 0));
        assert_eq!(settle_debt(20, 30), (20, 10));
    }

    /// An in-memory ledger driven by the planners: the reference for the store.
    #[derive(Default)]
    struct Ledger {
        lots: Vec<Lot<u32>>,
        entries: Vec<i64>,
        debt: i64,
        next: u32,
    }

    impl Ledger {
        fn balance(&self, now: DateTime<Utc>) -> i64 {
            available(&self.lots, now)
        }
        fn earn(&mut self, points: i64, now: DateTime<Utc>) {
            let (repaid, credit) = settle_debt(self.debt, points);
            self.debt -= repaid;
            if credit > 0 {
                self.next += 1;
                self.lots.push(Lot {
                    id: self.next,
                    expires_at: lot_expiry(now, 12),
                    remaining: credit,
                });
                self.entries.push(credit);
            }
        }
        fn take(&mut self, plan: &[(u32, i64)]) {
            for (id, n) in plan {
                if let Some(l) = self.lots.iter_mut().find(|l| l.id == *id) {
                    l.remaining -= n;
                }
                self.entries.push(-n);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Earn(i64),
        Redeem(i64),
        Reverse(i64),
        Advance(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..500).prop_map(Op::Earn),
            (1i64..500).prop_map(Op::Redeem),
            (1i64..500).prop_map(Op::Reverse),
            (1i64..200).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn the_balance_never_goes_negative_and_equals_the_sum_of_entries(ops in proptest::collection::vec(op(), 1..80)) {
            let mut now = at(2026, 1, 1);
            let mut ledger = Ledger::default();
            for op in ops {
                match op {
                    Op::Earn(p) => ledger.earn(p, now),
                    Op::Redeem(p) => {
                        if let Ok(plan) = plan_redemption(&ledger.lots, p, now) {
                            prop_assert_eq!(plan.iter().map(|(_, n)| n).sum::<i64>(), p);
                            ledger.take(&plan);
                        } else {
                            prop_assert!(p > ledger.balance(now));
                        }
                    }
                    Op::Reverse(p) => {
                        let before = ledger.balance(now);
                        let plan = plan_reversal(&ledger.lots, None, p, now);
                        ledger.take(&plan.from_lots);
                        ledger.debt += plan.debt;
                        prop_assert_eq!(plan.debt, (p - before).max(0));
                    }
                    Op::Advance(days) => {
                        now += chrono::Duration::days(days);
                        let expired = plan_expiry(&ledger.lots, now);
                        ledger.take(&expired);
                    }
                }
                let balance = ledger.balance(now);
                prop_assert!(balance >= 0);
                prop_assert!(ledger.debt >= 0);
                prop_assert!(ledger.lots.iter().all(|l| l.remaining >= 0));
                let held: i64 = ledger.lots.iter().map(|l| l.remaining).sum();
                prop_assert_eq!(held, ledger.entries.iter().sum::<i64>());
                prop_assert_eq!(balance, held - plan_expiry(&ledger.lots, now).iter().map(|(_, n)| n).sum::<i64>());
            }
        }
    }
}
