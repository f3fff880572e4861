//! Quotes: the prices of lines for a channel, a member's tier or a partner level, at
//! a time, itemised by the rules applied ([`crate::domain::pricing`]). List prices
//! and the rules of consumer quotes come from the price cache where it has them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};

use super::App;
use crate::domain::codes::{Channel, SkuCode};
use crate::domain::pricing::{self as rules, Buyer, PriceRules, UnitPrice};
use crate::store::pricing as db;

/// Who a quote is for, and when.
#[derive(Debug, Clone)]
pub(crate) struct QuoteFor {
    pub(crate) channel: Channel,
    pub(crate) currency: String,
    pub(crate) tier: Option<String>,
    pub(crate) partner_level: Option<String>,
    pub(crate) at: DateTime<Utc>,
    /// A coupon code to apply, with the buyer.
    pub(crate) coupon: Option<CouponAsk>,
}

/// A coupon code a quote is asked to apply, and who asks.
#[derive(Debug, Clone)]
pub(crate) struct CouponAsk {
    /// Upper-cased.
    pub(crate) code: String,
    /// The member's id; `None` for a guest.
    pub(crate) member: Option<String>,
}

/// The coupon a quote applied.
#[derive(Debug, Clone)]
pub(crate) struct AppliedCoupon {
    pub(crate) code: String,
    pub(crate) coupon_id: String,
    pub(crate) display_name: String,
    /// 0 for a fixed amount.
    pub(crate) percent_off_bp: u32,
    /// Over every line.
    pub(crate) discount_minor: i64,
}

/// One priced line.
#[derive(Debug, Clone)]
pub(crate) struct QuotedLine {
    pub(crate) sku: SkuCode,
    pub(crate) quantity: i64,
    pub(crate) unit: UnitPrice,
    /// The coupon's discount on the line.
    pub(crate) coupon_minor: i64,
    /// Unit price times quantity minus the coupon's discount, at most `i64::MAX`.
    pub(crate) total_minor: i64,
}

/// Priced lines in the quote's currency.
#[derive(Debug, Clone)]
pub(crate) struct Quote {
    pub(crate) currency: String,
    pub(crate) at: DateTime<Utc>,
    pub(crate) lines: Vec<QuotedLine>,
    /// The lines' totals summed, at most `i64::MAX`.
    pub(crate) total_minor: i64,
    /// The coupon applied, when one was asked for.
    pub(crate) coupon: Option<AppliedCoupon>,
}

fn clamped(amount: i128) -> i64 {
    amount.clamp(0, i64::MAX as i128) as i64
}

impl App {
    /// List prices of `codes` in `currency`, from the price cache where it has them.
    async fn list_prices(&self, codes: &[String], currency: &str) -> ServiceResult<HashMap<String, i64>> {
        let (mut found, missing) = self.prices.list_prices(currency, codes);
        if !missing.is_empty() {
            let ticket = self.prices.ticket();
            let loaded = db::list_prices(&self.db, &missing, currency).await?;
            self.prices.put_list_prices(ticket, currency, &missing, &loaded);
            found.extend(loaded);
        }
        Ok(found)
    }

    /// The rules of consumer quotes at `at`: the cached ones, or loaded (and cached
    /// unless `at` is long past: rules loaded for `at` serve every later quote).
    async fn price_rules(&self, at: DateTime<Utc>) -> ServiceResult<Arc<PriceRules>> {
        if let Some(rules) = self.prices.rules(at) {
            return Ok(rules);
        }
        let ticket = self.prices.ticket();
        let rules = Arc::new(db::price_rules(&self.db, at).await?);
        if at >= now() - chrono::Duration::minutes(1) {
            self.prices.put_rules(ticket, rules.clone());
        }
        Ok(rules)
    }

    /// Prices `lines` for `who`. NOT_FOUND for unknown SKUs; FAILED_PRECONDITION for
    /// SKUs without a price in the currency (or on the partner level's list). A coupon
    /// asked for is applied last ([`App::apply_coupon`]): an unknown code is
    /// NOT_FOUND, one that does not apply FAILED_PRECONDITION saying why.
    pub(crate) async fn quote(&self, who: &QuoteFor, lines: &[(SkuCode, i64)]) -> ServiceResult<Quote> {
        let codes: Vec<String> = lines
            .iter()
            .map(|(c, _)| c.as_str().to_owned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let unknown = self.skus.not_known_to_exist(&codes);
        if !unknown.is_empty() {
            let found = self.sku_views(&unknown).await?;
            let missing = |code: &str| unknown.iter().any(|u| u == code) && !found.contains_key(code);
            if let Some((code, _)) = lines.iter().find(|(c, _)| missing(c.as_str())) {
                return Err(ServiceError::not_found("sku", code.resource_name()));
            }
        }
        let list = self.list_prices(&codes, &who.currency).await?;
        let wholesale = match (&who.channel, &who.partner_level) {
            (Channel::Partner, Some(level)) => Some(db::partner_prices(&self.db, level, &codes, &who.currency).await?),
            _ => None,
        };
        let (promotions, tier_bp) = if who.channel.is_consumer() {
            let rules = self.price_rules(who.at).await?;
            (
                rules.active_promotions(&codes, who.at),
                who.tier.as_deref().and_then(|tier| rules.tier_discount(tier)),
            )
        } else {
            Default::default()
        };
        let mut out = Vec::with_capacity(lines.len());
        let mut total: i128 = 0;
        for (code, quantity) in lines {
            let list_minor = list.get(code.as_str()).copied();
            let buyer = match (&wholesale, &who.partner_level) {
                (Some(prices), Some(level)) => {
                    let Some(price) = prices.get(code.as_str()).copied() else {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "{} has no price on the {level} partner price list in {}",
                            code.resource_name(),
                            who.currency
                        )));
                    };
                    Buyer::Partner {
                        level,
                        wholesale_minor: price,
                    }
                }
                _ => Buyer::Consumer {
                    tier: who.tier.as_deref().zip(tier_bp),
                },
            };
            let list_minor = match (list_minor, &buyer) {
                (Some(l), _) => l,
                (None, Buyer::Partner { wholesale_minor, .. }) => *wholesale_minor,
                (None, Buyer::Consumer { .. }) => {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "{} has no list price in {}",
                        code.resource_name(),
                        who.currency
                    )));
                }
            };
            let promos = promotions.get(code.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let unit = rules::unit_price(list_minor, promos, &buyer, who.at);
            let line_total = unit.unit_minor as i128 * *quantity as i128;
            total += line_total;
            out.push(QuotedLine {
                sku: code.clone(),
                quantity: *quantity,
                unit,
                coupon_minor: 0,
                total_minor: clamped(line_total),
            });
        }
        let coupon = match &who.coupon {
            Some(ask) => {
                let applied = self
                    .apply_coupon(ask, who.channel, &who.currency, who.at, &mut out)
                    .await?;
                total -= i128::from(applied.discount_minor);
                Some(applied)
            }
            None => None,
        };
        Ok(Quote {
            currency: who.currency.clone(),
            at: who.at,
            lines: out,
            total_minor: clamped(total),
            coupon,
        })
    }
}
