//! The incentive points ledgers' arithmetic (docs/domain.md, Channel partners),
//! planned here and carried out by the store in one transaction; the same rules as
//! member points:
//! - a sale earns `floor(amount_major_units * base_rate * level_multiplier)`,
//!   exactly, in integers; an action earns its configured points; earnings first
//!   repay debt;
//! - every credit is a lot expiring at the end of the month `lot_months` after;
//! - a redemption takes lots first-expiring-first, never more than the balance;
//! - a refund reverses the order's points in proportion to the refunded amount;
//!   what is already spent becomes debt, so the balance never goes negative.

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};

/// Multipliers and rates are in 1/10000.
pub const SCALE: i128 = 10_000;

/// The most points a balance (or a debt) may hold: 10^15.
pub const MAX_POINTS: i64 = 1_000_000_000_000_000;

/// Which ledger: a partner's (collective) or a sales rep's (individual).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerKind {
    Collective,
    Individual,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Collective => "collective",
            Self::Individual => "individual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Collective, Self::Individual]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Points an attributed sale earned.
    Earn,
    /// Points of a configured action.
    Action,
    /// Points taken back for a refund.
    Reverse,
    Redeem,
    /// Points of a rejected redemption given back.
    Return,
    /// A lot's rest written off at its expiry.
    Expire,
}

impl EntryKind {
    pub const ALL: [Self; 6] = [
        Self::Earn,
        Self::Action,
        Self::Reverse,
        Self::Redeem,
        Self::Return,
        Self::Expire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earn => "earn",
            Self::Action => "action",
            Self::Reverse => "reverse",
            Self::Redeem => "redeem",
            Self::Return => "return",
            Self::Expire => "expire",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Catalog categories, each redeemable from one kind of ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Rebate,
    Training,
    DemoUnit,
    Service,
    Gift,
    Travel,
}

impl Category {
    pub const ALL: [Self; 6] = [
        Self::Rebate,
        Self::Training,
        Self::DemoUnit,
        Self::Service,
        Self::Gift,
        Self::Travel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rebate => "rebate",
            Self::Training => "training",
            Self::DemoUnit => "demo_unit",
            Self::Service => "service",
            Self::Gift => "gift",
            Self::Travel => "travel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn ledger_kind(self) -> LedgerKind {
        match self {
            Self::Rebate | Self::Training | Self::DemoUnit | Self::Service => LedgerKind::Collective,
            Self::Gift | Self::Travel => LedgerKind::Individual,
        }
    }
}

/// `requested -> approved -> fulfilled | rejected`; a requested redemption may be
/// rejected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedemptionState {
    Requested,
    Approved,
    Fulfilled,
    Rejected,
}

impl RedemptionState {
    pub const ALL: [Self; 4] = [Self::Requested, Self::Approved, Self::Fulfilled, Self::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Fulfilled => "fulfilled",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The states a redemption may move to `self` from.
    pub fn reached_from(self) -> &'static [Self] {
        match self {
            Self::Requested => &[],
            Self::Approved => &[Self::Requested],
            Self::Fulfilled => &[Self::Approved],
            Self::Rejected => &[Self::Requested, Self::Approved],
        }
    }
}

/// Points earned on a paid amount: major units x base rate x multiplier, rounded
/// down.
pub fn earned_points(amount_minor: i64, minor_exponent: u32, base_rate: u32, multiplier: u32) -> i64 {
    if amount_minor <= 0 {
        return 0;
    }
    let numerator = amount_minor as i128 * base_rate as i128 * multiplier as i128;
    let denominator = 10i128.pow(minor_exponent) * SCALE * SCALE;
    (numerator / denominator).clamp(0, MAX_POINTS as i128) as i64
}

/// When a lot credited at `at` expires: the first instant after the end of the
/// month `months` months later.
pub fn lot_expiry(at: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let first_of_month = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(at);
    first_of_month
        .checked_add_months(Months::new(months.saturating_add(1)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A lot as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot<Id> {
    pub id: Id,
    pub expires_at: DateTime<Utc>,
    pub remaining: i64,
}

impl<Id> Lot<Id> {
    pub fn usable(&self, as_of: DateTime<Utc>) -> bool {
        self.remaining > 0 && as_of < self.expires_at
    }
}

/// Lots in the order they are spent: first expiring first, then oldest id.
fn spending_order<Id: Ord>(lots: &[Lot<Id>], as_of: DateTime<Utc>) -> Vec<&Lot<Id>> {
    let mut usable: Vec<_> = lots.iter().filter(|l| l.usable(as_of)).collect();
    usable.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then_with(|| a.id.cmp(&b.id)));
    usable
}

/// Takes up to `points` from `lots` in order: what each gives, and what is left.
fn take<Id: Clone>(lots: Vec<&Lot<Id>>, points: i64) -> (Vec<(Id, i64)>, i64) {
    let mut left = points.max(0);
    let mut plan = Vec::new();
    for lot in lots {
        if left == 0 {
            break;
        }
        let n = lot.remaining.min(left);
        plan.push((lot.id.clone(), n));
        left -= n;
    }
    (plan, left)
}

/// Usable balance at `as_of`.
pub fn available<Id>(lots: &[Lot<Id>], as_of: DateTime<Utc>) -> i64 {
    lots.iter().filter(|l| l.usable(as_of)).map(|l| l.remaining).sum()
}

/// Which lots a redemption of `points` takes from; `None` if the usable balance is
/// short of it.
pub fn plan_redemption<Id: Clone + Ord>(lots: &[Lot<Id>], points: i64, as_of: DateTime<Utc>) -> Option<Vec<(Id, i64)>> {
    if points <= 0 || points > available(lots, as_of) {
        return None;
    }
    Some(take(spending_order(lots, as_of), points).0)
}

/// Lots to write off at `as_of`, with the points they still hold.
pub fn plan_expiry<Id: Clone>(lots: &[Lot<Id>], as_of: DateTime<Utc>) -> Vec<(Id, i64)> {
    lots.iter()
        .filter(|l| l.remaining > 0 && as_of >= l.expires_at)
        .map(|l| (l.id.clone(), l.remaining))
        .collect()
}

/// Points to reverse for a refund: the order's points scale with the amount still
/// paid; `already_reversed` makes repeated partial refunds add up exactly.
pub fn points_to_reverse(earned: i64, already_reversed: i64, paid_minor: i64, refunded_total_minor: i64) -> i64 {
    if earned <= 0 || paid_minor <= 0 {
        return 0;
    }
    let kept_amount = (paid_minor - refunded_total_minor.clamp(0, paid_minor)) as i128;
    let kept_points = (earned as i128 * kept_amount / paid_minor as i128) as i64;
    (earned - kept_points - already_reversed).max(0)
}

/// A reversal: taken from lots first-expiring-first, the rest recorded as debt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalPlan<Id> {
    pub from_lots: Vec<(Id, i64)>,
    pub debt: i64,
}

pub fn plan_reversal<Id: Clone + Ord>(lots: &[Lot<Id>], points: i64, as_of: DateTime<Utc>) -> ReversalPlan<Id> {
    let (from_lots, debt) = take(spending_order(lots, as_of), points);
    ReversalPlan { from_lots, debt }
}

/// A credit first repays debt: `(repaid, credited as a new lot)`.
pub fn settle_debt(debt: i64, credit: i64) -> (i64, i64) {
    let repaid = debt.max(0).min(credit.max(0));
    (repaid, credit.max(0) - repaid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).single().unwrap()
    }

    fn lot(id: u32, expires: DateTime<Utc>, remaining: i64) -> Lot<u32> {
        Lot {
            id,
            expires_at: expires,
            remaining,
        }
    }

    #[test]
    fn kinds_read_back_what_they_write_and_categories_belong_to_one_ledger_kind() {
        for k in EntryKind::ALL {
            assert_eq!(EntryKind::parse(k.as_str()), Some(k));
        }
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        for s in RedemptionState::ALL {
            assert_eq!(RedemptionState::parse(s.as_str()), Some(s));
        }
        assert_eq!(Category::DemoUnit.ledger_kind(), LedgerKind::Collective);
        assert_eq!(Category::Travel.ledger_kind(), LedgerKind::Individual);
        assert!(
            RedemptionState::Rejected
                .reached_from()
                .contains(&RedemptionState::Approved)
        );
        assert!(
            !RedemptionState::Fulfilled
                .reached_from()
                .contains(&RedemptionState::Requested)
        );
    }

    #[test]
    fn earning_floors_major_units_times_rate_times_multiplier() {
        // 123.45 at 1 point per unit, x1.5 = 185.175 -> 185.
        assert_eq!(earned_points(12_345, 2, 10_000, 15_000), 185);
        assert_eq!(earned_points(99, 2, 10_000, 10_000), 0);
        assert_eq!(earned_points(-500, 2, 10_000, 10_000), 0);
        assert_eq!(earned_points(i64::MAX, 0, u32::MAX, u32::MAX), MAX_POINTS);
    }

    #[test]
    fn lots_expire_after_the_month_so_many_months_later() {
        assert_eq!(
            lot_expiry(at(2026, 3, 15), 12),
            Utc.with_ymd_and_hms(2027, 4, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn redemption_takes_first_expiring_lots_and_never_more_than_the_balance() {
        let now = at(2026, 6, 1);
        let lots = [
            lot(1, at(2027, 5, 1), 50),
            lot(2, at(2026, 12, 1), 30),
            lot(3, at(2026, 5, 1), 99),
        ];
        assert_eq!(available(&lots, now), 80, "the expired lot does not count");
        assert_eq!(plan_redemption(&lots, 40, now), Some(vec![(2, 30), (1, 10)]));
        assert_eq!(plan_redemption(&lots, 81, now), None);
        assert_eq!(plan_redemption(&lots, 0, now), None);
        assert_eq!(plan_expiry(&lots, now), vec![(3, 99)]);
    }

    #[test]
    fn partial_refunds_reverse_proportionally_and_add_up_to_the_whole() {
        assert_eq!(points_to_reverse(100, 0, 10_000, 2_500), 25);
        assert_eq!(points_to_reverse(100, 25, 10_000, 10_000), 75);
        assert_eq!(points_to_reverse(7, 0, 3, 1), 3);
        assert_eq!(points_to_reverse(7, 3, 3, 3), 4);
        let plan = plan_reversal(&[lot(1, at(2027, 1, 1), 10)], 25, at(2026, 6, 1));
        assert_eq!(
            plan,
            ReversalPlan {
                from_lots: vec![(1, 10)],
                debt: 15
            }
        );
        assert_eq!(settle_debt(15, 10), (10, 0));
        assert_eq!(settle_debt(15, 40), (15, 25));
    }
}
