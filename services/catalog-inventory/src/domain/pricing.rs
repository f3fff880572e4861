//! Prices of lines (docs/domain.md, Prices).
//!
//! A consumer price depends only on the SKU, the member's tier and the time, never on
//! the consumer channel or the caller, so the same member pays the same on every
//! channel. It is composed in this order:
//!
//! 1. the list price of the SKU in the currency;
//! 2. the best promotion active at the time (promotions do not stack: the largest
//!    discount wins, ties by promotion id), a percentage of the list price;
//! 3. the tier discount, a percentage of the promoted price.
//!
//! Discounts are rounded down to the minor unit, so a price is never rounded below
//! what the percentages give. Partner sales use the wholesale price of the partner's
//! level instead; consumer promotions and tier discounts never apply to them.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

/// Basis points per 100 %.
pub const BP_SCALE: i64 = 10_000;
/// A discount is at most 90 %.
pub const MAX_DISCOUNT_BP: u32 = 9_000;

/// A promotion as pricing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub id: String,
    pub display_name: String,
    pub discount_bp: u32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Promotion {
    /// Active from `starts_at` (inclusive) to `ends_at` (exclusive).
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }
}

/// The price rules of consumer quotes, as loaded at one time.
#[derive(Debug, Clone)]
pub struct PriceRules {
    /// Valid for quotes at or after this time: promotions that ended before it were
    /// not loaded.
    pub loaded_at: DateTime<Utc>,
    /// Discount in basis points, by tier.
    pub tier_discounts: HashMap<String, u32>,
    /// Promotions that had not ended at `loaded_at`, by id, each with its SKUs
    /// (`None`: every SKU).
    pub promotions: Vec<(Promotion, Option<HashSet<String>>)>,
}

impl PriceRules {
    pub fn tier_discount(&self, tier: &str) -> Option<u32> {
        self.tier_discounts.get(tier).copied()
    }

    /// The promotions active at `at` for each of `codes`, in the order they were
    /// loaded (by id).
    pub fn active_promotions(&self, codes: &[String], at: DateTime<Utc>) -> HashMap<String, Vec<Promotion>> {
        let mut out: HashMap<String, Vec<Promotion>> = HashMap::new();
        for (promotion, skus) in &self.promotions {
            if !promotion.is_active(at) {
                continue;
            }
            for code in codes {
                if skus.as_ref().is_none_or(|skus| skus.contains(code)) {
                    out.entry(code.clone()).or_default().push(promotion.clone());
                }
            }
        }
        out
    }
}

/// Who the price is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buyer<'a> {
    /// A consumer, with the tier discount of their tier (`None` for guests and for
    /// tiers without a discount).
    Consumer { tier: Option<(&'a str, u32)> },
    /// A partner buying at its level's wholesale price.
    Partner { level: &'a str, wholesale_minor: i64 },
}

/// One rule applied to a unit price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    ListPrice {
        amount_minor: i64,
    },
    Promotion {
        id: String,
        display_name: String,
        discount_bp: u32,
        amount_minor: i64,
    },
    TierDiscount {
        tier: String,
        discount_bp: u32,
        amount_minor: i64,
    },
    PartnerPrice {
        level: String,
        amount_minor: i64,
    },
}

/// A priced unit with its rules, in the order applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPrice {
    pub list_minor: i64,
    pub unit_minor: i64,
    pub applied: Vec<Applied>,
}

/// `floor(amount * bp / 10000)`, exact for every i64 amount.
pub fn percent_of(amount_minor: i64, bp: u32) -> i64 {
    let v = (amount_minor as i128 * bp as i128).div_euclid(BP_SCALE as i128);
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The best promotion among `promotions` active at `at`: largest discount, then
/// smallest id.
pub fn best_promotion(promotions: &[Promotion], at: DateTime<Utc>) -> Option<&Promotion> {
    promotions
        .iter()
        .filter(|p| p.is_active(at))
        .min_by(|a, b| b.discount_bp.cmp(&a.discount_bp).then_with(|| a.id.cmp(&b.id)))
}

/// The unit price of a SKU with list price `list_minor` for `buyer` at `at`.
pub fn unit_price(list_minor: i64, promotions: &[Promotion], buyer: &Buyer<'_>, at: DateTime<Utc>) -> UnitPrice {
    match buyer {
        Buyer::Partner { level, wholesale_minor } => UnitPrice {
            list_minor,
            unit_minor: *wholesale_minor,
            applied: vec![Applied::PartnerPrice {
                level: (*level).to_owned(),
                amount_minor: *wholesale_minor,
            }],
        },
        Buyer::Consumer { tier } => {
            let mut applied = vec![Applied::ListPrice {
                amount_minor: list_minor,
            }];
            let mut unit = list_minor;
            if let Some(p) = best_promotion(promotions, at) {
                let off = percent_of(list_minor, p.discount_bp);
                unit -= off;
                applied.push(Applied::Promotion {
                    id: p.id.clone(),
                    display_name: p.display_name.clone(),
                    discount_bp: p.discount_bp,
                    amount_minor: -off,
                });
            }
            if let Some((name, bp)) = tier
                && *bp > 0
            {
                let off = percent_of(unit, *bp);
                unit -= off;
                applied.push(Applied::TierDiscount {
                    tier: (*name).to_owned(),
                    discount_bp: *bp,
                    amount_minor: -off,
                });
            }
            UnitPrice {
                list_minor,
                unit_minor: unit,
                applied,
            }
        }
    }
}

/// How far `theirs` undercuts `ours`, in basis points of `ours` (negative when they
/// are dearer). Rounded toward zero.
pub fn undercut_bp(ours_minor: i64, theirs_minor: i64) -> i32 {
    if ours_minor <= 0 {
        return 0;
    }
    let bp = (ours_minor as i128 - theirs_minor as i128) * BP_SCALE as i128 / ours_minor as i128;
    bp.clamp(i32::MIN as i128, i32::MAX as i128) as i32
}

/// True when the undercut exceeds `threshold_bp`.
pub fn is_alert(undercut_bp: i32, threshold_bp: u32) -> bool {
    i64::from(undercut_bp) > i64::from(threshold_bp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, 12, 0, 0).unwrap()
    }

    fn promo(id: &str, bp: u32, from: u32, to: u32) -> Promotion {
        Promotion {
            id: id.into(),
            display_name: format!("promo {id}"),
            discount_bp: bp,
            starts_at: at(from),
            ends_at: at(to),
        }
    }

    #[test]
    fn list_price_then_best_promotion_then_tier_discount() {
        let promos = [
            promo("a", 1_000, 1, 10),
            promo("b", 2_000, 1, 10),
            promo("c", 5_000, 20, 25),
        ];
        let p = unit_price(
            9_999,
            &promos,
            &Buyer::Consumer {
                tier: Some(("gold", 500)),
            },
            at(5),
        );
        // 20 % of 99.99 = 19.998 -> 19.99 off; 5 % of 80.00 = 4.00 off.
        assert_eq!(p.unit_minor, 9_999 - 1_999 - 400);
        assert_eq!(
            p.applied,
            vec![
                Applied::ListPrice { amount_minor: 9_999 },
                Applied::Promotion {
                    id: "b".into(),
                    display_name: "promo b".into(),
                    discount_bp: 2_000,
                    amount_minor: -1_999
                },
                Applied::TierDiscount {
                    tier: "gold".into(),
                    discount_bp: 500,
                    amount_minor: -400
                },
            ]
        );
    }

    #[test]
    fn promotion_windows_include_the_start_and_exclude_the_end() {
        let promos = [promo("a", 1_000, 1, 10)];
        let guest = Buyer::Consumer { tier: None };
        assert_eq!(unit_price(1_000, &promos, &guest, at(1)).unit_minor, 900);
        assert_eq!(unit_price(1_000, &promos, &guest, at(10)).unit_minor, 1_000);
        assert_eq!(
            unit_price(1_000, &promos, &guest, at(1) - chrono::Duration::seconds(1)).unit_minor,
            1_000
        );
    }

    #[test]
    fn equal_promotions_are_chosen_by_id() {
        let promos = [promo("z", 1_000, 1, 10), promo("m", 1_000, 1, 10)];
        assert_eq!(best_promotion(&promos, at(2)).unwrap().id, "m");
    }

    #[test]
    fn partners_pay_their_level_price_without_consumer_discounts() {
        let p = unit_price(
            10_000,
            &[promo("a", 5_000, 1, 10)],
            &Buyer::Partner {
                level: "gold",
                wholesale_minor: 6_000,
            },
            at(2),
        );
        assert_eq!(p.unit_minor, 6_000);
        assert_eq!(p.applied.len(), 1);
    }

    #[test]
    fn undercuts_in_basis_points() {
        assert_eq!(undercut_bp(10_000, 9_000), 1_000);
        assert_eq!(undercut_bp(10_000, 11_000), -1_000);
        assert!(is_alert(501, 500));
        assert!(!is_alert(500, 500));
        assert_eq!(undercut_bp(0, 5), 0);
    }

    #[test]
    fn active_promotions_follow_their_window_and_skus() {
        let now = Utc::now();
        let promotion = |id: &str, from: i64, to: i64| Promotion {
            id: id.to_owned(),
            display_name: id.to_owned(),
            discount_bp: 1000,
            starts_at: now + chrono::Duration::days(from),
            ends_at: now + chrono::Duration::days(to),
        };
        let rules = PriceRules {
            loaded_at: now,
            tier_discounts: HashMap::new(),
            promotions: vec![
                (promotion("all", -1, 1), None),
                (promotion("a-later", 2, 3), Some(HashSet::from(["A".to_owned()]))),
                (promotion("b", -1, 1), Some(HashSet::from(["B".to_owned()]))),
            ],
        };
        let codes = vec!["A".to_owned(), "C".to_owned()];
        let ids = |m: &HashMap<String, Vec<Promotion>>, code: &str| {
            m.get(code)
                .map(|ps| ps.iter().map(|p| p.id.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let active = rules.active_promotions(&codes, now);
        assert_eq!(ids(&active, "A"), ["all"]);
        assert_eq!(ids(&active, "C"), ["all"]);
        assert!(!active.contains_key("B"), "only the SKUs asked for");
        let later = rules.active_promotions(&codes, now + chrono::Duration::days(2));
        assert_eq!(ids(&later, "A"), ["a-later"]);
        assert!(!later.contains_key("C"));
    }

    proptest! {
        #[test]
        fn a_consumer_price_is_never_negative_nor_above_list(
            list in 1i64..10_000_000_000,
            promo_bp in 0u32..=MAX_DISCOUNT_BP,
            tier_bp in 0u32..=MAX_DISCOUNT_BP,
        ) {
            let promos = [promo("p", promo_bp, 1, 10)];
            let p = unit_price(list, &promos, &Buyer::Consumer { tier: Some(("t", tier_bp)) }, at(2));
            prop_assert!(p.unit_minor > 0);
            prop_assert!(p.unit_minor <= list);
            // Itemised amounts add up to the price.
            let sum: i64 = p.applied.iter().map(|a| match a {
                Applied::ListPrice { amount_minor } | Applied::PartnerPrice { amount_minor, .. } => *amount_minor,
                Applied::Promotion { amount_minor, .. } | Applied::TierDiscount { amount_minor, .. } => *amount_minor,
            }).sum();
            prop_assert_eq!(sum, p.unit_minor);
        }
    }
}
