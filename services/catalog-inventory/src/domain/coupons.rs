//! Coupons (docs/domain.md, Coupons): whether a code applies to a basket, and the
//! discount it gives each line.
//!
//! A coupon takes a percentage off each line in its scope (`floor(line total x bp /
//! 10000)`, like every other discount, in the buyer's favour by less than a minor
//! unit), or a fixed amount off the lines in scope together, shared among them in
//! proportion to their totals (rounded down, the minor units left over going one
//! each to the first lines in scope), never more than those lines cost.

use std::fmt;

use chrono::{DateTime, Utc};

use super::codes::Channel;
use super::pricing::BP_SCALE;

/// A percentage coupon is at most 100 %.
pub const MAX_PERCENT_BP: u32 = 10_000;

/// A coupon code as people type it: 4-32 characters of `A-Z 0-9 - _`, upper-cased
/// (codes are matched without regard to case).
pub fn code(raw: &str) -> Result<String, &'static str> {
    let code = raw.trim().to_ascii_uppercase();
    if code.len() < 4 || code.len() > 32 || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err("must be 4-32 characters of A-Z, 0-9, '-' and '_'");
    }
    Ok(code)
}

/// Single-use (per-member codes) or shared (one code with a usage cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponKind {
    SingleUse,
    Shared,
}

impl CouponKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SingleUse => "single_use",
            Self::Shared => "shared",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::SingleUse, Self::Shared].into_iter().find(|k| k.as_str() == s)
    }
}

/// What a coupon takes off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    /// Basis points of each line in scope.
    Percent(u32),
    /// A fixed amount off the lines in scope together, in its currency.
    Amount { currency: String, minor: i64 },
}

/// A coupon's rules as a quote or a redemption checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponRules {
    pub off: Off,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// SKU codes in scope; with `categories` empty too: every SKU.
    pub skus: Vec<String>,
    /// Category paths in scope (each with everything below it).
    pub categories: Vec<String>,
    /// Channels it may be used on; empty: every consumer channel.
    pub channels: Vec<Channel>,
    /// Minimum of the lines in scope (currency, minor units).
    pub min_order: Option<(String, i64)>,
    pub disabled: bool,
}

/// A code as the buyer presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeUse<'a> {
    /// The member the code was issued to (single-use codes).
    pub owner: Option<&'a str>,
    pub used: i64,
    pub cap: i64,
}

/// Why a code does not apply; each says so in its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotApplicable {
    Disabled,
    NotYetValid,
    Expired,
    OtherMember,
    UsedUp,
    Channel,
    Currency,
    OutOfScope,
    BelowMinimum { currency: String, minor: i64 },
}

impl fmt::Display for NotApplicable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => write!(f, "the coupon is disabled"),
            Self::NotYetValid => write!(f, "the coupon is not valid yet"),
            Self::Expired => write!(f, "the coupon has expired"),
            Self::OtherMember => write!(f, "the coupon code belongs to another member"),
            Self::UsedUp => write!(f, "the coupon code is used up"),
            Self::Channel => write!(f, "the coupon is not valid on this channel"),
            Self::Currency => write!(f, "the coupon is in another currency"),
            Self::OutOfScope => write!(f, "the coupon applies to none of the lines (out of scope)"),
            Self::BelowMinimum { currency, minor } => write!(
                f,
                "the lines the coupon applies to are below its minimum order of {}.{:02} {currency}",
                minor / 100,
                minor % 100
            ),
        }
    }
}

/// Whether a code may be used by `buyer` at `at`: the coupon enabled and in its
/// window, the code the buyer's (or shared) and not used up.
pub fn usable(
    rules: &CouponRules,
    code: &CodeUse<'_>,
    buyer: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), NotApplicable> {
    if rules.disabled {
        return Err(NotApplicable::Disabled);
    }
    if at < rules.starts_at {
        return Err(NotApplicable::NotYetValid);
    }
    if at >= rules.ends_at {
        return Err(NotApplicable::Expired);
    }
    if let Some(owner) = code.owner
        && buyer != Some(owner)
    {
        return Err(NotApplicable::OtherMember);
    }
    if code.used >= code.cap {
        return Err(NotApplicable::UsedUp);
    }
    Ok(())
}

/// Whether a line of `sku` in `category` is in the coupon's scope.
pub fn in_scope(rules: &CouponRules, sku: &str, category: &str) -> bool {
    if rules.skus.is_empty() && rules.categories.is_empty() {
        return true;
    }
    rules.skus.iter().any(|s| s == sku)
        || rules
            .categories
            .iter()
            .any(|c| category == c || (category.starts_with(c.as_str()) && category[c.len()..].starts_with('/')))
}

/// A line as the coupon sees it: in scope or not, and its total after every other
/// rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub in_scope: bool,
    pub total_minor: i64,
}

/// The coupon's discount on each line, for a basket in `currency` on `channel`;
/// why not when it does not apply to the basket.
pub fn discounts(
    rules: &CouponRules,
    channel: Channel,
    currency: &str,
    lines: &[Line],
) -> Result<Vec<i64>, NotApplicable> {
    if !channel.is_consumer() || !(rules.channels.is_empty() || rules.channels.contains(&channel)) {
        return Err(NotApplicable::Channel);
    }
    if let Off::Amount { currency: c, .. } = &rules.off
        && c != currency
    {
        return Err(NotApplicable::Currency);
    }
    if !lines.iter().any(|l| l.in_scope) {
        return Err(NotApplicable::OutOfScope);
    }
    let in_scope: i128 = lines
        .iter()
        .filter(|l| l.in_scope)
        .map(|l| i128::from(l.total_minor.max(0)))
        .sum();
    if let Some((c, minor)) = &rules.min_order {
        if c != currency {
            return Err(NotApplicable::Currency);
        }
        if in_scope < i128::from(*minor) {
            return Err(NotApplicable::BelowMinimum {
                currency: c.clone(),
                minor: *minor,
            });
        }
    }
    Ok(match &rules.off {
        Off::Percent(bp) => lines
            .iter()
            .map(|l| {
                if l.in_scope {
                    let off = i128::from(l.total_minor.max(0)) * i128::from(*bp) / i128::from(BP_SCALE);
                    i64::try_from(off).unwrap_or(i64::MAX)
                } else {
                    0
                }
            })
            .collect(),
        Off::Amount { minor, .. } => share(i128::from(*minor).min(in_scope), in_scope, lines),
    })
}

/// `amount` (at most `in_scope`, the lines in scope summed) shared among the lines
/// in scope by their totals.
fn share(amount: i128, in_scope: i128, lines: &[Line]) -> Vec<i64> {
    if in_scope <= 0 || amount <= 0 {
        return vec![0; lines.len()];
    }
    let mut out: Vec<i128> = lines
        .iter()
        .map(|l| {
            if l.in_scope {
                amount * i128::from(l.total_minor.max(0)) / in_scope
            } else {
                0
            }
        })
        .collect();
    let mut left = amount - out.iter().sum::<i128>();
    for (o, l) in out.iter_mut().zip(lines) {
        if left == 0 {
            break;
        }
        if l.in_scope && *o < i128::from(l.total_minor) {
            *o += 1;
            left -= 1;
        }
    }
    out.into_iter().map(|o| i64::try_from(o).unwrap_or(i64::MAX)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, 12, 0, 0).unwrap()
    }

    fn rules(off: Off) -> CouponRules {
        CouponRules {
            off,
            starts_at: at(1),
            ends_at: at(10),
            skus: Vec::new(),
            categories: Vec::new(),
            channels: Vec::new(),
            min_order: None,
            disabled: false,
        }
    }

    fn line(total_minor: i64) -> Line {
        Line {
            in_scope: true,
            total_minor,
        }
    }

    #[test]
    fn the_window_includes_its_start_and_excludes_its_end() {
        let r = rules(Off::Percent(1_000));
        let code = CodeUse {
            owner: None,
            used: 0,
            cap: 1,
        };
        assert_eq!(usable(&r, &code, None, at(1)), Ok(()));
        assert_eq!(usable(&r, &code, None, at(10)), Err(NotApplicable::Expired));
        assert_eq!(
            usable(&r, &code, None, at(1) - chrono::Duration::seconds(1)),
            Err(NotApplicable::NotYetValid)
        );
    }

    #[test]
    fn a_member_code_is_its_member_s_and_used_up_at_its_cap() {
        let r = rules(Off::Percent(1_000));
        let mine = CodeUse {
            owner: Some("m1"),
            used: 0,
            cap: 1,
        };
        assert_eq!(usable(&r, &mine, Some("m1"), at(2)), Ok(()));
        assert_eq!(usable(&r, &mine, Some("m2"), at(2)), Err(NotApplicable::OtherMember));
        assert_eq!(usable(&r, &mine, None, at(2)), Err(NotApplicable::OtherMember));
        let used = CodeUse { used: 1, ..mine };
        assert_eq!(usable(&r, &used, Some("m1"), at(2)), Err(NotApplicable::UsedUp));
        let disabled = CouponRules {
            disabled: true,
            ..r.clone()
        };
        assert_eq!(
            usable(&disabled, &mine, Some("m1"), at(2)),
            Err(NotApplicable::Disabled)
        );
    }

    #[test]
    fn scope_by_sku_or_category_and_below() {
        let mut r = rules(Off::Percent(1_000));
        assert!(in_scope(&r, "A", "shoes"));
        r.skus = vec!["A".into()];
        r.categories = vec!["footwear/running".into()];
        assert!(in_scope(&r, "A", "bags"));
        assert!(in_scope(&r, "B", "footwear/running"));
        assert!(in_scope(&r, "B", "footwear/running/trail"));
        assert!(!in_scope(&r, "B", "footwear/running-old"));
        assert!(!in_scope(&r, "B", "footwear"));
    }

    #[test]
    fn percent_per_line_rounded_down() {
        let r = rules(Off::Percent(1_500));
        let lines = [
            line(9_999),
            Line {
                in_scope: false,
                total_minor: 5_000,
            },
        ];
        assert_eq!(discounts(&r, Channel::Online, "EUR", &lines), Ok(vec![1_499, 0]));
    }

    #[test]
    fn a_fixed_amount_is_shared_by_line_totals_and_capped() {
        let r = rules(Off::Amount {
            currency: "EUR".into(),
            minor: 1_000,
        });
        // 1000 x 1/3 and 2/3: 333 + 666, the minor unit left goes to the first.
        assert_eq!(
            discounts(&r, Channel::Store, "EUR", &[line(1_000), line(2_000)]),
            Ok(vec![334, 666])
        );
        assert_eq!(discounts(&r, Channel::Store, "EUR", &[line(300)]), Ok(vec![300]));
        assert_eq!(
            discounts(&r, Channel::Store, "USD", &[line(300)]),
            Err(NotApplicable::Currency)
        );
    }

    #[test]
    fn channel_scope_and_minimum_order() {
        let mut r = rules(Off::Percent(1_000));
        assert_eq!(
            discounts(&r, Channel::Partner, "EUR", &[line(100)]),
            Err(NotApplicable::Channel)
        );
        r.channels = vec![Channel::App];
        assert_eq!(
            discounts(&r, Channel::Online, "EUR", &[line(100)]),
            Err(NotApplicable::Channel)
        );
        r.channels.clear();
        r.min_order = Some(("EUR".into(), 5_000));
        assert!(matches!(
            discounts(&r, Channel::Online, "EUR", &[line(4_999)]),
            Err(NotApplicable::BelowMinimum { .. })
        ));
        assert_eq!(discounts(&r, Channel::Online, "EUR", &[line(5_000)]), Ok(vec![500]));
        r.skus = vec!["X".into()];
        assert_eq!(
            discounts(
                &r,
                Channel::Online,
                "EUR",
                &[Line {
                    in_scope: false,
                    total_minor: 9_000
                }]
            ),
            Err(NotApplicable::OutOfScope)
        );
    }

    proptest! {
        #[test]
        fn a_fixed_amount_never_exceeds_a_line_and_adds_up(
            totals in proptest::collection::vec(0i64..1_000_000, 1..8),
            amount in 1i64..5_000_000,
        ) {
            let r = rules(Off::Amount { currency: "EUR".into(), minor: amount });
            let lines: Vec<Line> = totals.iter().map(|t| line(*t)).collect();
            let sum: i64 = totals.iter().sum();
            match discounts(&r, Channel::Online, "EUR", &lines) {
                Ok(d) => {
                    prop_assert_eq!(d.iter().sum::<i64>(), amount.min(sum));
                    for (d, t) in d.iter().zip(&totals) {
                        prop_assert!(*d >= 0 && d <= t);
                    }
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }
}
