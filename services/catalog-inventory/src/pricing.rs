//! The gRPC adapter of pricing: list prices, tier discounts, promotions, partner price
//! lists, quotes and competitor observations. The price rules themselves are in
//! [`crate::domain::pricing`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use retail_kit::auth::Principal;
use retail_kit::convert::{from_timestamp, now, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::events;
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::catalog as pb;
use retail_proto::catalog::pricing_service_server::PricingService;
use retail_proto::common::Money;
use retail_proto::events as ev;
use tonic::Request;

use crate::api::{READ, Rpc, State, channel_of_pb, first_violation, ok, sku_name};
use crate::domain::codes::{self, Channel, SkuCode};
use crate::domain::pricing::{self as rules, Applied, Buyer, MAX_DISCOUNT_BP};
use crate::price_cache::PriceRules;
use crate::store::{self, pricing as db};

pub const WRITE: &str = "catalog.pricing.write";

/// Lines per quote, at most.
const MAX_QUOTE_LINES: usize = 200;
/// Units per quoted line, at most.
const MAX_QUANTITY: i64 = 10_000;
/// SKUs per promotion, at most.
const MAX_PROMOTION_SKUS: usize = 1_000;
/// Largest price accepted: 10^12 minor units.
const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;

#[derive(Debug, Clone)]
pub struct PricingApi {
    state: Arc<State>,
}

impl PricingApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
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

fn promotion_to_pb(p: &store::promotion::Model, skus: &[String]) -> pb::Promotion {
    pb::Promotion {
        name: format!("promotions/{}", p.id),
        display_name: p.display_name.clone(),
        skus: skus.iter().map(|s| format!("skus/{s}")).collect(),
        discount_bp: p.discount_bp.max(0) as u32,
        start_time: Some(timestamp(p.starts_at)),
        end_time: Some(timestamp(p.ends_at)),
        create_time: Some(timestamp(p.created_at)),
    }
}

fn promotion_id(field: &str, name: &str) -> ServiceResult<String> {
    let id = name
        .strip_prefix("promotions/")
        .ok_or_else(|| ServiceError::invalid(field, "must be promotions/{promotion_id}"))?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ServiceError::invalid(field, "must be promotions/{promotion_id} with a UUID id"))
}

fn competitor_to_pb(c: &store::competitor_price::Model) -> pb::CompetitorPrice {
    pb::CompetitorPrice {
        sku: format!("skus/{}", c.sku_code),
        source: c.source.clone(),
        price: money(&c.currency, c.amount_minor),
        observe_time: Some(timestamp(c.observed_at)),
        our_price: money(&c.currency, c.our_amount_minor),
        undercut_bp: c.undercut_bp,
        alert: c.alert,
    }
}

fn applied_to_pb(currency: &str, a: &Applied) -> pb::AppliedRule {
    use pb::applied_rule::Kind;
    let (kind, reference, description, amount) = match a {
        Applied::ListPrice { amount_minor } => (Kind::ListPrice, String::new(), "list price".to_owned(), *amount_minor),
        Applied::Promotion {
            id,
            display_name,
            discount_bp,
            amount_minor,
        } => (
            Kind::Promotion,
            format!("promotions/{id}"),
            format!("{display_name}: {} % off the list price", bp_percent(*discount_bp)),
            *amount_minor,
        ),
        Applied::TierDiscount {
            tier,
            discount_bp,
            amount_minor,
        } => (
            Kind::TierDiscount,
            tier.clone(),
            format!("{tier} tier: {} % off", bp_percent(*discount_bp)),
            *amount_minor,
        ),
        Applied::PartnerPrice { level, amount_minor } => (
            Kind::PartnerPrice,
            level.clone(),
            format!("{level} partner price list"),
            *amount_minor,
        ),
    };
    pb::AppliedRule {
        kind: kind as i32,
        reference,
        description,
        unit_amount: money(currency, amount),
    }
}

/// `1250` -> `"12.5"`.
fn bp_percent(bp: u32) -> String {
    let whole = bp / 100;
    let frac = bp % 100;
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:02}").trim_end_matches('0').to_owned()
    }
}

/// Who a quote is for, parsed.
#[derive(Debug, Clone)]
pub struct QuoteFor {
    pub channel: Channel,
    pub currency: String,
    pub tier: Option<String>,
    pub partner_level: Option<String>,
    pub at: DateTime<Utc>,
}

impl State {
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

    /// A price changed and committed: quotes on this replica show it at once.
    pub(crate) fn price_committed(&self) {
        self.prices.changed();
        self.log.committed();
    }

    /// Prices `lines` for `who`. NOT_FOUND for unknown SKUs; FAILED_PRECONDITION for
    /// SKUs without a price in the currency (or on the partner level's list).
    pub async fn quote(&self, who: &QuoteFor, lines: &[(SkuCode, i64)]) -> ServiceResult<pb::QuotePricesResponse> {
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
            out.push(pb::QuotedLine {
                sku: code.resource_name(),
                quantity: *quantity,
                list_unit_price: money(&who.currency, list_minor),
                unit_price: money(&who.currency, unit.unit_minor),
                line_total: money(&who.currency, line_total.clamp(0, i64::MAX as i128) as i64),
                applied_rules: unit.applied.iter().map(|a| applied_to_pb(&who.currency, a)).collect(),
            });
        }
        Ok(pb::QuotePricesResponse {
            lines: out,
            total: money(&who.currency, total.clamp(0, i64::MAX as i128) as i64),
            price_time: Some(timestamp(who.at)),
        })
    }
}

#[tonic::async_trait]
impl PricingService for PricingApi {
    #[tracing::instrument(skip_all)]
    async fn set_list_price(&self, request: Request<pb::SetListPriceRequest>) -> Rpc<pb::ListPrice> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let code = v.check(sku_name("sku", &req.sku).map_err(first_violation));
        let (currency, amount) = price(&mut v, "price", req.price.as_ref());
        v.finish()?;
        let Some(code) = code else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        if store::find_sku(&s.db, code.as_str()).await?.is_none() {
            return Err(ServiceError::not_found("sku", code.resource_name()).into());
        }
        let now = now();
        idempotency::transaction(&s.db, |txn| {
            let (code, currency) = (code.clone(), currency.clone());
            Box::pin(async move {
                db::upsert_list_price(
                    txn,
                    store::list_price::Model {
                        sku_code: code.as_str().to_owned(),
                        currency: currency.clone(),
                        amount_minor: amount,
                        updated_at: now,
                    },
                )
                .await?;
                events::publish(
                    txn,
                    "retail.events.v1.PriceChanged",
                    code.as_str(),
                    &ev::PriceChanged {
                        kind: "list_price".into(),
                        sku_code: code.as_str().to_owned(),
                        reference: String::new(),
                        price: money(&currency, amount),
                        discount_bp: 0,
                    },
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        s.price_committed();
        ok(pb::ListPrice {
            sku: code.resource_name(),
            price: money(&currency, amount),
            update_time: Some(timestamp(now)),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn set_tier_discount(&self, request: Request<pb::SetTierDiscountRequest>) -> Rpc<pb::TierDiscount> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let Some(td) = req.tier_discount else {
            return Err(ServiceError::invalid("tier_discount", "is required").into());
        };
        let mut v = Violations::new();
        let tier = v.field("tier_discount.tier", level_name(&td.tier)).unwrap_or_default();
        let bp = discount(&mut v, "tier_discount.discount_bp", td.discount_bp, true);
        v.finish()?;
        idempotency::transaction(&s.db, |txn| {
            let tier = tier.clone();
            Box::pin(async move {
                if bp == 0 {
                    db::delete_tier_discount(txn, &tier).await?;
                } else {
                    db::upsert_tier_discount(
                        txn,
                        store::tier_discount::Model {
                            tier: tier.clone(),
                            discount_bp: bp as i32,
                            updated_at: now(),
                        },
                    )
                    .await?;
                }
                events::publish(
                    txn,
                    "retail.events.v1.PriceChanged",
                    &tier,
                    &ev::PriceChanged {
                        kind: "tier_discount".into(),
                        sku_code: String::new(),
                        reference: tier.clone(),
                        price: None,
                        discount_bp: bp,
                    },
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        s.price_committed();
        ok(pb::TierDiscount { tier, discount_bp: bp })
    }

    async fn list_tier_discounts(
        &self,
        request: Request<pb::ListTierDiscountsRequest>,
    ) -> Rpc<pb::ListTierDiscountsResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let rows = db::tier_discounts(&self.state.db).await?;
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
        let s = &self.state;
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.CreatePromotion", &caller, &req.request_id, &req)?;
        let Some(p) = req.promotion.as_ref() else {
            return Err(ServiceError::invalid("promotion", "is required").into());
        };
        let mut v = Violations::new();
        let display_name = v.text("promotion.display_name", &p.display_name, 200, true);
        let bp = discount(&mut v, "promotion.discount_bp", p.discount_bp, false);
        if p.skus.len() > MAX_PROMOTION_SKUS {
            v.add("promotion.skus", format!("at most {MAX_PROMOTION_SKUS}"));
        }
        let mut codes: Vec<String> = Vec::new();
        for (i, name) in p.skus.iter().enumerate().take(MAX_PROMOTION_SKUS) {
            if let Some(code) = v.check(sku_name(&format!("promotion.skus[{i}]"), name).map_err(first_violation))
                && !codes.iter().any(|c| c == code.as_str())
            {
                codes.push(code.as_str().to_owned());
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
        let (Some(start), Some(end)) = (start, end) else {
            return Err(ServiceError::invalid("promotion.start_time", "is required").into());
        };
        let known: HashSet<String> = store::sku_views(&s.db, &codes)
            .await?
            .into_iter()
            .map(|v| v.sku.code)
            .collect();
        if let Some(missing) = codes.iter().find(|c| !known.contains(*c)) {
            return Err(ServiceError::not_found("sku", format!("skus/{missing}")).into());
        }
        let model = store::promotion::Model {
            id: store::new_id(),
            display_name,
            all_skus: codes.is_empty(),
            discount_bp: bp as i32,
            starts_at: start,
            ends_at: end,
            created_at: now(),
        };
        let response = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (model, codes) = (model.clone(), codes.clone());
            Box::pin(async move {
                db::insert_promotion(txn, model.clone(), &codes).await?;
                events::publish(
                    txn,
                    "retail.events.v1.PriceChanged",
                    &model.id,
                    &ev::PriceChanged {
                        kind: "promotion".into(),
                        sku_code: String::new(),
                        reference: model.id.clone(),
                        price: None,
                        discount_bp: bp,
                    },
                )
                .await?;
                Ok(promotion_to_pb(&model, &codes))
            })
        })
        .await?;
        s.price_committed();
        ok(response)
    }

    async fn list_promotions(&self, request: Request<pb::ListPromotionsRequest>) -> Rpc<pb::ListPromotionsResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.into_inner();
        let active_at = match &req.active_at {
            Some(ts) => {
                Some(from_timestamp(ts).ok_or_else(|| ServiceError::invalid("active_at", "is not a valid time"))?)
            }
            None => None,
        };
        let page = Page::parse(req.page_size, &req.page_token, &format!("{active_at:?}"))?;
        let rows = db::list_promotions(&self.state.db, &page, active_at).await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        let mut promotions = Vec::with_capacity(rows.len());
        for p in &rows {
            let skus = db::promotion_skus(&self.state.db, &p.id).await?;
            promotions.push(promotion_to_pb(p, &skus));
        }
        ok(pb::ListPromotionsResponse {
            promotions,
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn end_promotion(&self, request: Request<pb::EndPromotionRequest>) -> Rpc<pb::Promotion> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let id = promotion_id("name", &request.get_ref().name)?;
        if db::find_promotion(&s.db, &id).await?.is_none() {
            return Err(ServiceError::not_found("promotion", format!("promotions/{id}")).into());
        }
        idempotency::transaction(&s.db, |txn| {
            let id = id.clone();
            Box::pin(async move {
                db::end_promotion(txn, &id, now()).await?;
                events::publish(
                    txn,
                    "retail.events.v1.PriceChanged",
                    &id,
                    &ev::PriceChanged {
                        kind: "promotion".into(),
                        sku_code: String::new(),
                        reference: id.clone(),
                        price: None,
                        discount_bp: 0,
                    },
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        s.price_committed();
        let p = db::find_promotion(&s.db, &id)
            .await?
            .ok_or_else(|| ServiceError::not_found("promotion", format!("promotions/{id}")))?;
        let skus = db::promotion_skus(&s.db, &id).await?;
        ok(promotion_to_pb(&p, &skus))
    }

    #[tracing::instrument(skip_all)]
    async fn set_partner_price(&self, request: Request<pb::SetPartnerPriceRequest>) -> Rpc<pb::PartnerPrice> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let Some(pp) = req.partner_price else {
            return Err(ServiceError::invalid("partner_price", "is required").into());
        };
        let mut v = Violations::new();
        let level = v
            .field("partner_price.partner_level", level_name(&pp.partner_level))
            .unwrap_or_default();
        let code = v.check(sku_name("partner_price.sku", &pp.sku).map_err(first_violation));
        let (currency, amount) = price(&mut v, "partner_price.price", pp.price.as_ref());
        v.finish()?;
        let Some(code) = code else {
            return Err(ServiceError::invalid("partner_price.sku", "is required").into());
        };
        if store::find_sku(&s.db, code.as_str()).await?.is_none() {
            return Err(ServiceError::not_found("sku", code.resource_name()).into());
        }
        idempotency::transaction(&s.db, |txn| {
            let (level, code, currency) = (level.clone(), code.clone(), currency.clone());
            Box::pin(async move {
                db::upsert_partner_price(
                    txn,
                    store::partner_price::Model {
                        level: level.clone(),
                        sku_code: code.as_str().to_owned(),
                        currency: currency.clone(),
                        amount_minor: amount,
                        updated_at: now(),
                    },
                )
                .await?;
                events::publish(
                    txn,
                    "retail.events.v1.PriceChanged",
                    code.as_str(),
                    &ev::PriceChanged {
                        kind: "partner_price".into(),
                        sku_code: code.as_str().to_owned(),
                        reference: level,
                        price: money(&currency, amount),
                        discount_bp: 0,
                    },
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        s.price_committed();
        ok(pb::PartnerPrice {
            partner_level: level,
            sku: code.resource_name(),
            price: money(&currency, amount),
        })
    }

    async fn quote_prices(&self, request: Request<pb::QuotePricesRequest>) -> Rpc<pb::QuotePricesResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let channel = v.check(channel_of_pb("channel", req.channel).map_err(first_violation));
        let currency = if req.currency_code.is_empty() {
            self.state.settings.pricing.currency.clone()
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
        let at = match &req.price_time {
            Some(ts) => v.field("price_time", from_timestamp(ts).ok_or("is not a valid time")),
            None => Some(now()),
        };
        if req.lines.is_empty() || req.lines.len() > MAX_QUOTE_LINES {
            v.add("lines", format!("1-{MAX_QUOTE_LINES} lines"));
        }
        let mut lines = Vec::with_capacity(req.lines.len());
        for (i, l) in req.lines.iter().enumerate().take(MAX_QUOTE_LINES) {
            let code = v.check(sku_name(&format!("lines[{i}].sku"), &l.sku).map_err(first_violation));
            if l.quantity <= 0 || l.quantity > MAX_QUANTITY {
                v.add(format!("lines[{i}].quantity"), format!("must be 1-{MAX_QUANTITY}"));
            }
            if let Some(code) = code {
                lines.push((code, l.quantity));
            }
        }
        v.finish()?;
        let (Some(channel), Some(at)) = (channel, at) else {
            return Err(ServiceError::invalid("channel", "is required").into());
        };
        let who = QuoteFor {
            channel,
            currency,
            tier,
            partner_level,
            at,
        };
        ok(self.state.quote(&who, &lines).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn record_competitor_price(
        &self,
        request: Request<pb::RecordCompetitorPriceRequest>,
    ) -> Rpc<pb::CompetitorPrice> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let Some(o) = req.observation else {
            return Err(ServiceError::invalid("observation", "is required").into());
        };
        let mut v = Violations::new();
        let code = v.check(sku_name("observation.sku", &o.sku).map_err(first_violation));
        let source = v.text("observation.source", &o.source, 200, true);
        let (currency, amount) = price(&mut v, "observation.price", o.price.as_ref());
        let at = match &o.observe_time {
            Some(ts) => v.field(
                "observation.observe_time",
                from_timestamp(ts).ok_or("is not a valid time"),
            ),
            None => Some(now()),
        };
        v.finish()?;
        let (Some(code), Some(at)) = (code, at) else {
            return Err(ServiceError::invalid("observation.sku", "is required").into());
        };
        // Our consumer price for a guest at that time: list price and promotions.
        let ours = s
            .quote(
                &QuoteFor {
                    channel: Channel::Online,
                    currency: currency.clone(),
                    tier: None,
                    partner_level: None,
                    at,
                },
                &[(code.clone(), 1)],
            )
            .await?;
        let our_minor = ours
            .lines
            .first()
            .and_then(|l| l.unit_price.as_ref())
            .map(|m| m.amount_minor)
            .unwrap_or(0);
        let undercut = rules::undercut_bp(our_minor, amount);
        let alert = rules::is_alert(undercut, s.settings.pricing.competitor_alert_bp);
        let row = store::competitor_price::Model {
            sku_code: code.as_str().to_owned(),
            source,
            currency,
            amount_minor: amount,
            our_amount_minor: our_minor,
            undercut_bp: undercut,
            alert,
            observed_at: at,
        };
        idempotency::transaction(&s.db, |txn| {
            let row = row.clone();
            Box::pin(async move {
                db::record_competitor_price(txn, row.clone()).await?;
                if row.alert {
                    events::publish(
                        txn,
                        "retail.events.v1.CompetitorUndercut",
                        &row.sku_code,
                        &ev::CompetitorUndercut {
                            sku_code: row.sku_code.clone(),
                            source: row.source.clone(),
                            competitor_price: money(&row.currency, row.amount_minor),
                            our_price: money(&row.currency, row.our_amount_minor),
                            undercut_bp: row.undercut_bp,
                        },
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
        s.log.committed();
        ok(competitor_to_pb(&row))
    }

    async fn list_competitor_alerts(
        &self,
        request: Request<pb::ListCompetitorAlertsRequest>,
    ) -> Rpc<pb::ListCompetitorAlertsResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token, "alerts")?;
        let rows = db::competitor_alerts(&self.state.db, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |c| format!("{}\u{1f}{}", c.sku_code, c.source));
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
    fn basis_points_read_as_percentages() {
        assert_eq!(bp_percent(500), "5");
        assert_eq!(bp_percent(1250), "12.5");
        assert_eq!(bp_percent(1), "0.01");
    }

    #[test]
    fn level_names_are_lower_case_words() {
        assert_eq!(level_name(" Gold ").unwrap(), "gold");
        assert!(level_name("").is_err());
        assert!(level_name("go ld").is_err());
    }
}
