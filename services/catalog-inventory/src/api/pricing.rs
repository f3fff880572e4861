//! `PricingService`: list prices, tier discounts, promotions, partner price lists,
//! quotes and competitor observations. The price rules are in
//! [`crate::domain::pricing`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use retail_kit::convert::{from_timestamp, now, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::catalog as pb;
use retail_proto::catalog::pricing_service_server::PricingService;
use retail_proto::common::Money;
use tonic::Request;

use super::convert::{competitor_to_pb, promotion_to_pb, quote_to_pb};
use super::parse::channel;
use super::parse::member_name;
use super::{READ, Rpc, authorised, ok};
use crate::app::{App, CouponAsk, NewPromotion, Observation, QuoteFor};
use crate::domain::codes::{self, Channel, PromotionId, SkuCode};
use crate::domain::coupons;
use crate::domain::pricing::MAX_DISCOUNT_BP;
use crate::events::money;

const WRITE: &str = "catalog.pricing.write";

/// Lines per quote, at most.
const MAX_QUOTE_LINES: usize = 200;
/// Units per quoted line, at most.
const MAX_QUANTITY: i64 = 10_000;
/// SKUs per promotion, at most.
const MAX_PROMOTION_SKUS: usize = 1_000;
/// Largest price accepted: 10^12 minor units.
const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;

#[derive(Debug, Clone)]
pub(crate) struct PricingApi {
    app: Arc<App>,
}

impl PricingApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// A positive price: currency and amount checked.
fn price(v: &mut Violations, field: &str, m: Option<&Money>) -> (String, i64) {
    let Some(m) = m else {
        v.add(field, "is required");
        return (String::new(), 0);
    };
    let currency = v
        .field(&format!("{field}.currency_code"), codes::currency(&m.currency_code))
        .unwrap_or_default();
    if m.amount_minor <= 0 || m.amount_minor > MAX_PRICE_MINOR {
        v.add(
            format!("{field}.amount_minor"),
            format!("must be positive and at most {MAX_PRICE_MINOR}"),
        );
    }
    (currency, m.amount_minor)
}

/// A tier or partner level name: 1-32 characters of a-z, 0-9, '_' and '-'.
fn level_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() || name.len() > 32 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err("must be 1-32 characters of a-z, 0-9, '_' and '-'");
    }
    Ok(name)
}

fn discount(v: &mut Violations, field: &str, bp: u32, allow_zero: bool) -> u32 {
    if bp > MAX_DISCOUNT_BP || (!allow_zero && bp == 0) {
        let low = if allow_zero { 0 } else { 1 };
        v.add(field, format!("must be {low}-{MAX_DISCOUNT_BP} basis points"));
    }
    bp
}

fn promotion_id(field: &str, name: &str) -> ServiceResult<PromotionId> {
    PromotionId::from_resource_name(name).map_err(|e| ServiceError::invalid(field, e))
}

/// The time given (`Some`: as it converted), or now.
fn time_or_now(v: &mut Violations, field: &str, given: Option<Option<DateTime<Utc>>>) -> Option<DateTime<Utc>> {
    match given {
        Some(at) => v.field(field, at.ok_or("is not a valid time")),
        None => Some(now()),
    }
}

fn new_promotion(p: &pb::Promotion) -> ServiceResult<NewPromotion> {
    let mut v = Violations::new();
    let display_name = v.text("promotion.display_name", &p.display_name, 200, true);
    let discount_bp = discount(&mut v, "promotion.discount_bp", p.discount_bp, false);
    if p.skus.len() > MAX_PROMOTION_SKUS {
        v.add("promotion.skus", format!("at most {MAX_PROMOTION_SKUS}"));
    }
    let mut skus: Vec<SkuCode> = Vec::new();
    for (i, name) in p.skus.iter().enumerate().take(MAX_PROMOTION_SKUS) {
        if let Some(code) = v.field(&format!("promotion.skus[{i}]"), SkuCode::from_resource_name(name))
            && !skus.contains(&code)
        {
            skus.push(code);
        }
    }
    let start = p.start_time.as_ref().and_then(from_timestamp);
    let end = p.end_time.as_ref().and_then(from_timestamp);
    match (start, end) {
        (None, _) => v.add("promotion.start_time", "is required"),
        (_, None) => v.add("promotion.end_time", "is required"),
        (Some(a), Some(b)) if b <= a => v.add("promotion.end_time", "must be after start_time"),
        _ => {}
    }
    v.finish()?;
    let (Some(starts_at), Some(ends_at)) = (start, end) else {
        return Err(ServiceError::invalid("promotion.start_time", "is required"));
    };
    Ok(NewPromotion {
        display_name,
        discount_bp,
        skus,
        starts_at,
        ends_at,
    })
}

/// Who a quote is for, and its lines.
fn quote(req: &pb::QuotePricesRequest, default_currency: &str) -> ServiceResult<(QuoteFor, Vec<(SkuCode, i64)>)> {
    let mut v = Violations::new();
    let channel = v.field("channel", channel(req.channel));
    let currency = if req.currency_code.is_empty() {
        default_currency.to_owned()
    } else {
        v.field("currency_code", codes::currency(&req.currency_code))
            .unwrap_or_default()
    };
    let tier = if req.member_tier.is_empty() {
        None
    } else {
        v.field("member_tier", level_name(&req.member_tier))
    };
    let partner_level = if req.partner_level.is_empty() {
        None
    } else {
        v.field("partner_level", level_name(&req.partner_level))
    };
    if channel == Some(Channel::Partner) && partner_level.is_none() && req.partner_level.is_empty() {
        v.add("partner_level", "is required for the partner channel");
    }
    let at = time_or_now(&mut v, "price_time", req.price_time.as_ref().map(from_timestamp));
    let member = if req.member.is_empty() {
        None
    } else {
        v.field("member", member_name(&req.member))
    };
    let coupon = if req.coupon_code.is_empty() {
        None
    } else {
        v.field("coupon_code", coupons::code(&req.coupon_code))
            .map(|code| CouponAsk { code, member })
    };
    if req.lines.is_empty() || req.lines.len() > MAX_QUOTE_LINES {
        v.add("lines", format!("1-{MAX_QUOTE_LINES} lines"));
    }
    // Unlike reservations, a quote may price one SKU on several lines.
    let mut lines = Vec::with_capacity(req.lines.len());
    for (i, l) in req.lines.iter().enumerate().take(MAX_QUOTE_LINES) {
        let code = v.field(&format!("lines[{i}].sku"), SkuCode::from_resource_name(&l.sku));
        if l.quantity <= 0 || l.quantity > MAX_QUANTITY {
            v.add(format!("lines[{i}].quantity"), format!("must be 1-{MAX_QUANTITY}"));
        }
        if let Some(code) = code {
            lines.push((code, l.quantity));
        }
    }
    v.finish()?;
    let (Some(channel), Some(at)) = (channel, at) else {
        return Err(ServiceError::invalid("channel", "is required"));
    };
    let who = QuoteFor {
        channel,
        currency,
        tier,
        partner_level,
        at,
        coupon,
    };
    Ok((who, lines))
}

fn observation(o: &pb::CompetitorPrice) -> ServiceResult<Observation> {
    let mut v = Violations::new();
    let sku = v.field("observation.sku", SkuCode::from_resource_name(&o.sku));
    let source = v.text("observation.source", &o.source, 200, true);
    let (currency, amount_minor) = price(&mut v, "observation.price", o.price.as_ref());
    let at = time_or_now(
        &mut v,
        "observation.observe_time",
        o.observe_time.as_ref().map(from_timestamp),
    );
    v.finish()?;
    let (Some(sku), Some(at)) = (sku, at) else {
        return Err(ServiceError::invalid("observation.sku", "is required"));
    };
    Ok(Observation {
        sku,
        source,
        currency,
        amount_minor,
        at,
    })
}

#[tonic::async_trait]
impl PricingService for PricingApi {
    #[tracing::instrument(skip_all)]
    async fn set_list_price(&self, request: Request<pb::SetListPriceRequest>) -> Rpc<pb::ListPrice> {
        authorised(&request, WRITE)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let code = v.field("sku", SkuCode::from_resource_name(&req.sku));
        let (currency, amount) = price(&mut v, "price", req.price.as_ref());
        v.finish()?;
        let Some(code) = code else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        let row = self.app.set_list_price(&code, &currency, amount).await?;
        ok(pb::ListPrice {
            sku: code.resource_name(),
            price: money(&row.currency, row.amount_minor),
            update_time: Some(timestamp(row.updated_at)),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn set_tier_discount(&self, request: Request<pb::SetTierDiscountRequest>) -> Rpc<pb::TierDiscount> {
        authorised(&request, WRITE)?;
        let req = request.into_inner();
        let Some(td) = req.tier_discount else {
            return Err(ServiceError::invalid("tier_discount", "is required").into());
        };
        let mut v = Violations::new();
        let tier = v.field("tier_discount.tier", level_name(&td.tier)).unwrap_or_default();
        let bp = discount(&mut v, "tier_discount.discount_bp", td.discount_bp, true);
        v.finish()?;
        self.app.set_tier_discount(&tier, bp).await?;
        ok(pb::TierDiscount { tier, discount_bp: bp })
    }

    async fn list_tier_discounts(
        &self,
        request: Request<pb::ListTierDiscountsRequest>,
    ) -> Rpc<pb::ListTierDiscountsResponse> {
        authorised(&request, READ)?;
        let rows = self.app.tier_discounts().await?;
        ok(pb::ListTierDiscountsResponse {
            tier_discounts: rows
                .into_iter()
                .map(|t| pb::TierDiscount {
                    tier: t.tier,
                    discount_bp: t.discount_bp.max(0) as u32,
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn create_promotion(&self, request: Request<pb::CreatePromotionRequest>) -> Rpc<pb::Promotion> {
        let caller = authorised(&request, WRITE)?.subject.clone();
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.CreatePromotion", &caller, &req.request_id, &req)?;
        let Some(p) = req.promotion.as_ref() else {
            return Err(ServiceError::invalid("promotion", "is required").into());
        };
        let input = new_promotion(p)?;
        ok(self.app.create_promotion(key.as_ref(), input, promotion_to_pb).await?)
    }

    async fn list_promotions(&self, request: Request<pb::ListPromotionsRequest>) -> Rpc<pb::ListPromotionsResponse> {
        authorised(&request, READ)?;
        let req = request.into_inner();
        let active_at = match &req.active_at {
            Some(ts) => {
                Some(from_timestamp(ts).ok_or_else(|| ServiceError::invalid("active_at", "is not a valid time"))?)
            }
            None => None,
        };
        let page = Page::parse(req.page_size, &req.page_token, &format!("{active_at:?}"))?;
        let (views, next_page_token) = self.app.promotions(active_at, &page).await?;
        ok(pb::ListPromotionsResponse {
            promotions: views.iter().map(promotion_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn end_promotion(&self, request: Request<pb::EndPromotionRequest>) -> Rpc<pb::Promotion> {
        authorised(&request, WRITE)?;
        let id = promotion_id("name", &request.get_ref().name)?;
        ok(promotion_to_pb(&self.app.end_promotion(&id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn set_partner_price(&self, request: Request<pb::SetPartnerPriceRequest>) -> Rpc<pb::PartnerPrice> {
        authorised(&request, WRITE)?;
        let req = request.into_inner();
        let Some(pp) = req.partner_price else {
            return Err(ServiceError::invalid("partner_price", "is required").into());
        };
        let mut v = Violations::new();
        let level = v
            .field("partner_price.partner_level", level_name(&pp.partner_level))
            .unwrap_or_default();
        let code = v.field("partner_price.sku", SkuCode::from_resource_name(&pp.sku));
        let (currency, amount) = price(&mut v, "partner_price.price", pp.price.as_ref());
        v.finish()?;
        let Some(code) = code else {
            return Err(ServiceError::invalid("partner_price.sku", "is required").into());
        };
        let row = self.app.set_partner_price(&level, &code, &currency, amount).await?;
        ok(pb::PartnerPrice {
            partner_level: row.level,
            sku: code.resource_name(),
            price: money(&row.currency, row.amount_minor),
        })
    }

    async fn quote_prices(&self, request: Request<pb::QuotePricesRequest>) -> Rpc<pb::QuotePricesResponse> {
        authorised(&request, READ)?;
        let (who, lines) = quote(request.get_ref(), &self.app.settings.pricing.currency)?;
        ok(quote_to_pb(&self.app.quote(&who, &lines).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn record_competitor_price(
        &self,
        request: Request<pb::RecordCompetitorPriceRequest>,
    ) -> Rpc<pb::CompetitorPrice> {
        authorised(&request, WRITE)?;
        let Some(o) = request.into_inner().observation else {
            return Err(ServiceError::invalid("observation", "is required").into());
        };
        let row = self.app.record_competitor_price(observation(&o)?).await?;
        ok(competitor_to_pb(&row))
    }

    async fn list_competitor_alerts(
        &self,
        request: Request<pb::ListCompetitorAlertsRequest>,
    ) -> Rpc<pb::ListCompetitorAlertsResponse> {
        authorised(&request, READ)?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token, "alerts")?;
        let (rows, next_page_token) = self.app.competitor_alerts(&page).await?;
        ok(pb::ListCompetitorAlertsResponse {
            alerts: rows.iter().map(competitor_to_pb).collect(),
            next_page_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_are_lower_case_words() {
        assert_eq!(level_name(" Gold ").unwrap(), "gold");
        assert!(level_name("").is_err());
        assert!(level_name("go ld").is_err());
    }
}
