//! The price policy's rules, without I/O (docs/domain.md, Price policy).
//!
//! A rule is `total` (bands on the basket's total), `cumulative` (bands on the
//! partner's attributed sales in the current month, quarter or year) or
//! `functional` (a rate for a function the partner performs on the order:
//! installation, after-sales, warehousing). Each rule is valid in
//! `[valid_from, valid_until)` and applies to the levels it names (all levels when
//! it names none).
//!
//! How rules combine: on each line the applicable rules apply one after the other
//! on the price that remains after the previous ones - `total` rules first, then
//! `cumulative`, then `functional`, by rule id within a kind - each discount
//! rounded down to the minor unit. The line's discounts together never exceed the
//! level's discount ceiling on the line's gross amount: the rule that would pass it
//! is cut to what is left under the ceiling, and the rules after it give nothing.

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::domain::period::{Period, PeriodKind};

/// 100% in basis points.
pub const FULL_BP: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    Total,
    Cumulative,
    Functional,
}

impl RuleKind {
    pub const ALL: [Self; 3] = [Self::Total, Self::Cumulative, Self::Functional];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Cumulative => "cumulative",
            Self::Functional => "functional",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a special discount request is: `granted` (at or under the level's
/// ceiling, at once) and `approved` are usable, once; `pending` waits for a brand
/// manager; `rejected` and `consumed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialState {
    Pending,
    Granted,
    Approved,
    Rejected,
    Consumed,
}

impl SpecialState {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Granted,
        Self::Approved,
        Self::Rejected,
        Self::Consumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Consumed => "consumed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The state a new request for `rate_bp` starts in under `ceiling_bp`.
    pub fn on_request(rate_bp: u32, ceiling_bp: u32) -> Self {
        if rate_bp <= ceiling_bp {
            Self::Granted
        } else {
            Self::Pending
        }
    }

    /// The states `self` is reached from.
    pub fn reached_from(self) -> &'static [Self] {
        match self {
            Self::Pending | Self::Granted => &[],
            Self::Approved | Self::Rejected => &[Self::Pending],
            Self::Consumed => &[Self::Granted, Self::Approved],
        }
    }
}

/// A function a partner performs on an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Installation,
    AfterSales,
    Warehousing,
}

impl Function {
    pub const ALL: [Self; 3] = [Self::Installation, Self::AfterSales, Self::Warehousing];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installation => "installation",
            Self::AfterSales => "after_sales",
            Self::Warehousing => "warehousing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A band `[from_minor, to_minor)` (no upper bound when `to_minor` is `None`)
/// and its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Band {
    pub from_minor: i64,
    pub to_minor: Option<i64>,
    pub rate_bp: u32,
}

impl Band {
    pub fn contains(&self, amount: i64) -> bool {
        amount >= self.from_minor && self.to_minor.is_none_or(|to| amount < to)
    }
}

/// What a rule's discount depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// Bands on the basket's gross total.
    Total(Vec<Band>),
    /// Bands on the partner's attributed sales in the current period of `period`.
    Cumulative { period: PeriodKind, bands: Vec<Band> },
    /// A rate when the partner performs `function` on the order.
    Functional { function: Function, rate_bp: u32 },
}

impl Basis {
    pub fn kind(&self) -> RuleKind {
        match self {
            Self::Total(_) => RuleKind::Total,
            Self::Cumulative { .. } => RuleKind::Cumulative,
            Self::Functional { .. } => RuleKind::Functional,
        }
    }

    pub fn bands(&self) -> &[Band] {
        match self {
            Self::Total(bands) | Self::Cumulative { bands, .. } => bands,
            Self::Functional { .. } => &[],
        }
    }
}

/// A discount rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub basis: Basis,
    /// Level codes the rule applies to; empty: every level.
    pub levels: Vec<String>,
    pub valid_from: DateTime<Utc>,
    /// Exclusive; `None`: open-ended.
    pub valid_until: Option<DateTime<Utc>>,
}

/// A violation of a rule's shape: the field (relative to the rule) and why.
pub type Violation = (String, String);

/// Checks bands: at least one, each `0 <= from < to`, rates at most 100%, and in
/// ascending order without overlap (gaps give no discount). Only the last band
/// may be open-ended.
pub fn check_bands(field: &str, bands: &[Band]) -> Vec<Violation> {
    let mut out = Vec::new();
    if bands.is_empty() {
        out.push((field.to_owned(), "at least one band is required".to_owned()));
    }
    for (i, b) in bands.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if b.from_minor < 0 {
            out.push((format!("{at}.from"), "must not be negative".to_owned()));
        }
        match b.to_minor {
            Some(to) if to <= b.from_minor => {
                out.push((
                    format!("{at}.to"),
                    "must be above from (the band is inverted or empty)".to_owned(),
                ));
            }
            None if i + 1 < bands.len() => {
                out.push((format!("{at}.to"), "only the last band may be open-ended".to_owned()));
            }
            _ => {}
        }
        if b.rate_bp == 0 || b.rate_bp > FULL_BP {
            out.push((format!("{at}.rate_bp"), "must be 1-10000 basis points".to_owned()));
        }
        if i > 0 {
            let prev = &bands[i - 1];
            if prev.to_minor.is_none_or(|to| b.from_minor < to) {
                out.push((format!("{at}.from"), format!("overlaps band {}", i - 1)));
            }
        }
    }
    out
}

/// Checks a rule's basis and validity.
pub fn check_rule(basis: &Basis, valid_from: DateTime<Utc>, valid_until: Option<DateTime<Utc>>) -> Vec<Violation> {
    let mut out = match basis {
        Basis::Total(bands) | Basis::Cumulative { bands, .. } => check_bands("bands", bands),
        Basis::Functional { rate_bp, .. } => {
            if *rate_bp == 0 || *rate_bp > FULL_BP {
                vec![("rate_bp".to_owned(), "must be 1-10000 basis points".to_owned())]
            } else {
                Vec::new()
            }
        }
    };
    if valid_until.is_some_and(|until| until <= valid_from) {
        out.push(("valid_until".to_owned(), "must be after valid_from".to_owned()));
    }
    out
}

/// The period of `kind` that contains `at`.
pub fn period_containing(kind: PeriodKind, at: DateTime<Utc>) -> Option<Period> {
    let month = match kind {
        PeriodKind::Month => at.month(),
        PeriodKind::Quarter => (at.month0() / 3) * 3 + 1,
        PeriodKind::Year => 1,
    };
    let start = Utc.with_ymd_and_hms(at.year(), month, 1, 0, 0, 0).single()?;
    Period::from_start(kind, start)
}

/// One basket line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub unit_price_minor: i64,
    pub quantity: i64,
}

/// What the evaluation knows of the partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub level: String,
    pub ceiling_bp: u32,
    /// Attributed sales in the current period of each period kind a cumulative
    /// rule uses.
    pub volumes: Vec<(PeriodKind, i64)>,
    /// Functions the partner performs on this order.
    pub functions: Vec<Function>,
    pub at: DateTime<Utc>,
}

/// One discount on a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub rule_id: String,
    pub kind: RuleKind,
    pub rate_bp: u32,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub gross_minor: i64,
    pub discounts: Vec<Applied>,
    pub discount_minor: i64,
    pub net_minor: i64,
    /// Whether the level's ceiling cut the discounts.
    pub capped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub lines: Vec<PricedLine>,
    pub gross_minor: i64,
    pub discount_minor: i64,
    pub net_minor: i64,
}

/// Why a basket cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the basket's amounts overflow")]
    Overflow,
}

impl Rule {
    /// Whether the rule is in force at `at` for `level`.
    pub fn in_force(&self, level: &str, at: DateTime<Utc>) -> bool {
        at >= self.valid_from
            && self.valid_until.is_none_or(|until| at < until)
            && (self.levels.is_empty() || self.levels.iter().any(|l| l == level))
    }

    /// The rate this rule gives in `ctx` for a basket of `total_minor`, if any.
    pub fn rate(&self, ctx: &Context, total_minor: i64) -> Option<u32> {
        let band_rate = |bands: &[Band], amount: i64| bands.iter().find(|b| b.contains(amount)).map(|b| b.rate_bp);
        match &self.basis {
            Basis::Total(bands) => band_rate(bands, total_minor),
            Basis::Cumulative { period, bands } => {
                let volume = ctx.volumes.iter().find(|(k, _)| k == period).map_or(0, |(_, v)| *v);
                band_rate(bands, volume)
            }
            Basis::Functional { function, rate_bp } => ctx.functions.contains(function).then_some(*rate_bp),
        }
    }
}

fn mul_bp(amount: i64, bp: u32) -> i64 {
    // amount >= 0 and bp <= 10000: the product fits i128 and the result fits i64.
    i64::try_from(i128::from(amount) * i128::from(bp) / i128::from(FULL_BP)).unwrap_or(i64::MAX)
}

/// Prices `lines` under `rules` (see the module's documentation for how they
/// combine). Unit prices and quantities must not be negative.
pub fn evaluate(rules: &[Rule], ctx: &Context, lines: &[Line]) -> Result<Evaluation, EvalError> {
    let grosses = lines
        .iter()
        .map(|l| l.unit_price_minor.checked_mul(l.quantity).ok_or(EvalError::Overflow))
        .collect::<Result<Vec<_>, _>>()?;
    let total = grosses
        .iter()
        .try_fold(0i64, |acc, g| acc.checked_add(*g))
        .ok_or(EvalError::Overflow)?;
    let mut applicable: Vec<(&Rule, u32)> = rules
        .iter()
        .filter(|r| r.in_force(&ctx.level, ctx.at))
        .filter_map(|r| r.rate(ctx, total).map(|rate| (r, rate)))
        .collect();
    applicable.sort_by(|(a, _), (b, _)| (a.basis.kind(), &a.id).cmp(&(b.basis.kind(), &b.id)));
    let ceiling_bp = ctx.ceiling_bp.min(FULL_BP);
    let mut priced = Vec::with_capacity(lines.len());
    for gross in grosses {
        let allowance = mul_bp(gross, ceiling_bp);
        let mut remaining = gross;
        let mut given = 0i64;
        let mut discounts = Vec::new();
        let mut capped = false;
        for (rule, rate) in &applicable {
            let wanted = mul_bp(remaining, *rate);
            let amount = wanted.min(allowance - given);
            if amount < wanted {
                capped = true;
            }
            if amount <= 0 {
                continue;
            }
            given += amount;
            remaining -= amount;
            discounts.push(Applied {
                rule_id: rule.id.clone(),
                kind: rule.basis.kind(),
                rate_bp: *rate,
                amount_minor: amount,
            });
        }
        priced.push(PricedLine {
            gross_minor: gross,
            discounts,
            discount_minor: given,
            net_minor: remaining,
            capped,
        });
    }
    let discount = priced.iter().map(|l| l.discount_minor).sum();
    Ok(Evaluation {
        lines: priced,
        gross_minor: total,
        discount_minor: discount,
        net_minor: total - discount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().unwrap_or_default()
    }

    fn band(from: i64, to: Option<i64>, rate_bp: u32) -> Band {
        Band {
            from_minor: from,
            to_minor: to,
            rate_bp,
        }
    }

    fn rule(id: &str, basis: Basis) -> Rule {
        Rule {
            id: id.into(),
            basis,
            levels: vec![],
            valid_from: at(2026, 1, 1),
            valid_until: None,
        }
    }

    fn ctx(volume: i64, functions: Vec<Function>) -> Context {
        Context {
            level: "gold".into(),
            ceiling_bp: FULL_BP,
            volumes: vec![(PeriodKind::Quarter, volume)],
            functions,
            at: at(2026, 5, 10),
        }
    }

    fn one_line(price: i64) -> Vec<Line> {
        vec![Line {
            sku: "A".into(),
            unit_price_minor: price,
            quantity: 1,
        }]
    }

    fn total_bands() -> Vec<Band> {
        vec![band(10_000, Some(50_000), 200), band(50_000, None, 500)]
    }

    #[test]
    fn total_rule_bands() {
        let rules = [rule("t", Basis::Total(total_bands()))];
        // (basket total, expected discount)
        let cases = [
            (9_999, 0),
            (10_000, 200),
            (49_999, 999),
            (50_000, 2_500),
            (1_000_000, 50_000),
        ];
        for (price, expected) in cases {
            let e = evaluate(&rules, &ctx(0, vec![]), &one_line(price)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(e.discount_minor, expected, "total {price}");
            assert_eq!(e.net_minor, price - expected);
        }
    }

    #[test]
    fn total_rule_looks_at_the_whole_basket() {
        let rules = [rule("t", Basis::Total(total_bands()))];
        let lines = vec![
            Line {
                sku: "A".into(),
                unit_price_minor: 3_000,
                quantity: 2,
            },
            Line {
                sku: "B".into(),
                unit_price_minor: 4_000,
                quantity: 1,
            },
        ];
        let e = evaluate(&rules, &ctx(0, vec![]), &lines).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.gross_minor, 10_000);
        assert_eq!(e.lines[0].discount_minor, 120);
        assert_eq!(e.lines[1].discount_minor, 80);
        assert_eq!(e.lines[0].discounts[0].rule_id, "t");
    }

    #[test]
    fn cumulative_rule_tier_boundaries_are_exact() {
        let bands = vec![
            band(0, Some(100_000), 100),
            band(100_000, Some(500_000), 300),
            band(500_000, None, 600),
        ];
        let rules = [rule(
            "c",
            Basis::Cumulative {
                period: PeriodKind::Quarter,
                bands,
            },
        )];
        // (volume in the quarter, expected rate)
        let cases = [(0, 100), (99_999, 100), (100_000, 300), (499_999, 300), (500_000, 600)];
        for (volume, rate) in cases {
            let e = evaluate(&rules, &ctx(volume, vec![]), &one_line(10_000)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(e.lines[0].discounts[0].rate_bp, rate, "volume {volume}");
            assert_eq!(e.discount_minor, i64::from(rate), "volume {volume}");
        }
        // A monthly rule does not see the quarter's volume.
        let monthly = [rule(
            "m",
            Basis::Cumulative {
                period: PeriodKind::Month,
                bands: vec![band(100_000, None, 300)],
            },
        )];
        let e = evaluate(&monthly, &ctx(500_000, vec![]), &one_line(10_000)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.discount_minor, 0);
    }

    #[test]
    fn functional_rule_needs_the_function() {
        let rules = [
            rule(
                "f1",
                Basis::Functional {
                    function: Function::Installation,
                    rate_bp: 300,
                },
            ),
            rule(
                "f2",
                Basis::Functional {
                    function: Function::Warehousing,
                    rate_bp: 200,
                },
            ),
        ];
        let cases = [
            (vec![], 0),
            (vec![Function::Installation], 300),
            (vec![Function::Warehousing], 200),
            (vec![Function::AfterSales], 0),
            // 300 on 10,000, then 2% of the remaining 9,700.
            (vec![Function::Installation, Function::Warehousing], 300 + 194),
        ];
        for (functions, expected) in cases {
            let e = evaluate(&rules, &ctx(0, functions.clone()), &one_line(10_000)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(e.discount_minor, expected, "{functions:?}");
        }
    }

    #[test]
    fn rules_combine_sequentially_and_stop_at_the_ceiling() {
        let rules = [
            rule(
                "f",
                Basis::Functional {
                    function: Function::Installation,
                    rate_bp: 1_000,
                },
            ),
            rule(
                "c",
                Basis::Cumulative {
                    period: PeriodKind::Quarter,
                    bands: vec![band(0, None, 1_000)],
                },
            ),
            rule("t", Basis::Total(vec![band(0, None, 1_000)])),
        ];
        // (ceiling, expected [(rule, amount)], capped)
        type Case = (u32, Vec<(&'static str, i64)>, bool);
        let cases: [Case; 4] = [
            // total, then cumulative on 9,000, then functional on 8,100.
            (FULL_BP, vec![("t", 1_000), ("c", 900), ("f", 810)], false),
            (2_710, vec![("t", 1_000), ("c", 900), ("f", 810)], false),
            (1_500, vec![("t", 1_000), ("c", 500)], true),
            (0, vec![], true),
        ];
        for (ceiling, expected, capped) in cases {
            let mut c = ctx(0, vec![Function::Installation]);
            c.ceiling_bp = ceiling;
            let e = evaluate(&rules, &c, &one_line(10_000)).unwrap_or_else(|e| panic!("{e}"));
            let got: Vec<(&str, i64)> = e.lines[0]
                .discounts
                .iter()
                .map(|d| (d.rule_id.as_str(), d.amount_minor))
                .collect();
            assert_eq!(got, expected, "ceiling {ceiling}");
            assert_eq!(e.lines[0].capped, capped, "ceiling {ceiling}");
            assert!(e.discount_minor <= mul_bp(10_000, ceiling));
        }
    }

    #[test]
    fn validity_and_level_scope() {
        let mut r = rule("t", Basis::Total(vec![band(0, None, 100)]));
        r.levels = vec!["gold".into()];
        r.valid_until = Some(at(2026, 5, 10));
        assert!(!r.in_force("gold", at(2026, 5, 10)), "the end is exclusive");
        assert!(r.in_force("gold", at(2026, 5, 9)));
        assert!(!r.in_force("gold", at(2025, 12, 31)), "before the start");
        assert!(!r.in_force("silver", at(2026, 5, 9)), "another level");
        r.levels.clear();
        assert!(r.in_force("silver", at(2026, 5, 9)));
    }

    #[test]
    fn bands_are_checked() {
        let fields =
            |bands: Vec<Band>| -> Vec<String> { check_bands("bands", &bands).into_iter().map(|(f, _)| f).collect() };
        assert!(fields(total_bands()).is_empty());
        assert_eq!(fields(vec![]), ["bands"]);
        assert_eq!(fields(vec![band(-1, None, 100)]), ["bands[0].from"]);
        assert_eq!(fields(vec![band(500, Some(100), 100)]), ["bands[0].to"]);
        assert_eq!(fields(vec![band(0, Some(100), 0)]), ["bands[0].rate_bp"]);
        assert_eq!(fields(vec![band(0, Some(100), 10_001)]), ["bands[0].rate_bp"]);
        assert_eq!(
            fields(vec![band(0, Some(100), 100), band(50, None, 200)]),
            ["bands[1].from"]
        );
        assert_eq!(
            fields(vec![band(0, None, 100), band(50, None, 200)]),
            ["bands[0].to", "bands[1].from"]
        );
        let bad_dates = check_rule(&Basis::Total(total_bands()), at(2026, 2, 1), Some(at(2026, 1, 1)));
        assert_eq!(bad_dates[0].0, "valid_until");
    }

    #[test]
    fn special_requests_above_the_ceiling_wait_and_only_decided_ones_are_used() {
        assert_eq!(SpecialState::on_request(1_000, 1_000), SpecialState::Granted);
        assert_eq!(SpecialState::on_request(1_001, 1_000), SpecialState::Pending);
        let usable = SpecialState::Consumed.reached_from();
        assert!(usable.contains(&SpecialState::Granted) && usable.contains(&SpecialState::Approved));
        assert!(!usable.contains(&SpecialState::Pending));
        assert!(!usable.contains(&SpecialState::Rejected));
        assert!(!usable.contains(&SpecialState::Consumed));
        assert!(SpecialState::Approved.reached_from() == [SpecialState::Pending]);
        for s in SpecialState::ALL {
            assert_eq!(SpecialState::parse(s.as_str()), Some(s));
        }
    }

    proptest::proptest! {
        /// Whatever the rules, rates and ceiling: no line's discount passes the
        /// ceiling, nets are never negative and the totals add up.
        #[test]
        fn discounts_never_pass_the_ceiling(
            rates in proptest::collection::vec(1u32..=FULL_BP, 0..6),
            ceiling in 0u32..=FULL_BP,
            prices in proptest::collection::vec((0i64..=10_000_000, 1i64..=1_000), 1..8),
        ) {
            let rules: Vec<Rule> = rates
                .iter()
                .enumerate()
                .map(|(i, r)| rule(&format!("r{i}"), Basis::Total(vec![band(0, None, *r)])))
                .collect();
            let mut c = ctx(0, vec![]);
            c.ceiling_bp = ceiling;
            let lines: Vec<Line> = prices
                .iter()
                .map(|(p, q)| Line { sku: "A".into(), unit_price_minor: *p, quantity: *q })
                .collect();
            let e = evaluate(&rules, &c, &lines).unwrap_or_else(|e| panic!("{e}"));
            for l in &e.lines {
                proptest::prop_assert!(l.discount_minor <= mul_bp(l.gross_minor, ceiling));
                proptest::prop_assert!(l.net_minor >= 0);
                proptest::prop_assert_eq!(l.discount_minor, l.discounts.iter().map(|d| d.amount_minor).sum::<i64>());
                proptest::prop_assert_eq!(l.net_minor + l.discount_minor, l.gross_minor);
            }
            proptest::prop_assert_eq!(e.net_minor + e.discount_minor, e.gross_minor);
        }
    }

    #[test]
    fn period_containing_aligns() {
        let p = period_containing(PeriodKind::Quarter, at(2026, 5, 10)).unwrap_or_else(|| panic!("period"));
        assert_eq!(p.start, at(2026, 4, 1));
        assert_eq!(p.end, at(2026, 7, 1));
        let y = period_containing(PeriodKind::Year, at(2026, 5, 10)).unwrap_or_else(|| panic!("period"));
        assert_eq!(y.start, at(2026, 1, 1));
    }
}
