//! The gRPC adapter of the price policy: discount rules (created and deleted by
//! the brand with `partner.admin`, read with `partner.read`) and the evaluation
//! of a partner's basket (a partner principal only for itself; another partner
//! is NOT_FOUND).

use std::sync::Arc;

use chrono::SubsecRound;

use retail_kit::convert::{from_timestamp, now, opt_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::money::MAX_AMOUNT_MINOR;
use retail_kit::paging::Page;
use retail_proto::partner as pb;
use retail_proto::partner::price_policy_service_server::PricePolicyService;
use tonic::{Request, Response};

use super::convert::{period_kind_of_pb, period_kind_to_pb};
use super::{ADMIN, READ, Rpc, WRITE, caller, ok, parse};
use crate::app::App;
use crate::app::policy::{NewRule, NewSpecial, Priced, RuleChanges, SpecialView, rule_of, special_name};
use crate::domain::ids::{PartnerId, collection_id};
use crate::domain::policy::{self, Band, Basis, Function, Line, RuleKind, SpecialState};
use crate::store::discount_rule;

/// At most this many lines in a basket.
const MAX_LINES: usize = 500;
/// At most this many levels named by a rule.
const MAX_LEVELS: usize = 16;
/// At most this many bands in a rule.
const MAX_BANDS: usize = 32;

/// Discount rules and the evaluation of baskets.
#[derive(Debug, Clone)]
pub(crate) struct PricePolicyApi {
    app: Arc<App>,
}

impl PricePolicyApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn kind_of_pb(raw: i32) -> Option<RuleKind> {
    match pb::DiscountRuleKind::try_from(raw) {
        Ok(pb::DiscountRuleKind::Total) => Some(RuleKind::Total),
        Ok(pb::DiscountRuleKind::Cumulative) => Some(RuleKind::Cumulative),
        Ok(pb::DiscountRuleKind::Functional) => Some(RuleKind::Functional),
        _ => None,
    }
}

fn kind_to_pb(k: RuleKind) -> pb::DiscountRuleKind {
    match k {
        RuleKind::Total => pb::DiscountRuleKind::Total,
        RuleKind::Cumulative => pb::DiscountRuleKind::Cumulative,
        RuleKind::Functional => pb::DiscountRuleKind::Functional,
    }
}

fn function_of_pb(raw: i32) -> Option<Function> {
    match pb::PartnerFunction::try_from(raw) {
        Ok(pb::PartnerFunction::Installation) => Some(Function::Installation),
        Ok(pb::PartnerFunction::AfterSales) => Some(Function::AfterSales),
        Ok(pb::PartnerFunction::Warehousing) => Some(Function::Warehousing),
        _ => None,
    }
}

fn function_to_pb(f: Function) -> pb::PartnerFunction {
    match f {
        Function::Installation => pb::PartnerFunction::Installation,
        Function::AfterSales => pb::PartnerFunction::AfterSales,
        Function::Warehousing => pb::PartnerFunction::Warehousing,
    }
}

fn rule_id(field: &str, name: &str) -> ServiceResult<String> {
    collection_id(name, "discountRules").map_err(|reason| ServiceError::invalid(field, reason))
}

fn rate(v: &mut Violations, field: &str, raw: i32) -> u32 {
    u32::try_from(raw).unwrap_or_else(|_| {
        v.add(field, "must be 1-10000 basis points");
        0
    })
}

fn parse_rule(req: &pb::CreateDiscountRuleRequest) -> ServiceResult<NewRule> {
    let Some(r) = req.discount_rule.as_ref() else {
        return Err(ServiceError::invalid("discount_rule", "is required"));
    };
    let mut v = Violations::new();
    let bands_len = v.at_most("discount_rule.bands", &r.bands, MAX_BANDS);
    let bands: Vec<Band> = r.bands[..bands_len]
        .iter()
        .enumerate()
        .map(|(i, b)| Band {
            from_minor: b.from_minor,
            to_minor: (b.to_minor != 0).then_some(b.to_minor),
            rate_bp: rate(&mut v, &format!("discount_rule.bands[{i}].rate_bp"), b.rate_bp),
        })
        .collect();
    let levels_len = v.at_most("discount_rule.levels", &r.levels, MAX_LEVELS);
    let levels = r.levels[..levels_len].to_vec();
    let basis = match kind_of_pb(r.kind) {
        Some(RuleKind::Total) => Some(Basis::Total(bands)),
        Some(RuleKind::Cumulative) => match period_kind_of_pb(r.period_kind) {
            Some(period) => Some(Basis::Cumulative { period, bands }),
            None => {
                v.add("discount_rule.period_kind", "must be month, quarter or year");
                None
            }
        },
        Some(RuleKind::Functional) => {
            if !r.bands.is_empty() {
                v.add("discount_rule.bands", "must be empty for a functional rule");
            }
            let rate_bp = rate(&mut v, "discount_rule.rate_bp", r.rate_bp);
            match function_of_pb(r.function) {
                Some(function) => Some(Basis::Functional { function, rate_bp }),
                None => {
                    v.add(
                        "discount_rule.function",
                        "must be installation, after_sales or warehousing",
                    );
                    None
                }
            }
        }
        None => {
            v.add("discount_rule.kind", "must be total, cumulative or functional");
            None
        }
    };
    // Microseconds: what both databases keep, so the answer matches what is read later.
    let valid_from = r
        .valid_from
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.trunc_subsecs(6));
    if valid_from.is_none() {
        v.add("discount_rule.valid_from", "is required");
    }
    let valid_until = match r.valid_until.as_ref() {
        Some(ts) => {
            let at = from_timestamp(ts).map(|t| t.trunc_subsecs(6));
            if at.is_none() {
                v.add("discount_rule.valid_until", "must be a valid time");
            }
            at
        }
        None => None,
    };
    let display_name = parse::short_text(&mut v, "discount_rule.display_name", &r.display_name, 200, false);
    if let (Some(basis), Some(from)) = (&basis, valid_from) {
        for (field, why) in policy::check_rule(basis, from, valid_until) {
            v.add(format!("discount_rule.{field}"), why);
        }
    }
    v.finish()?;
    match (basis, valid_from) {
        (Some(basis), Some(valid_from)) => Ok(NewRule {
            basis,
            levels,
            valid_from,
            valid_until,
            display_name,
        }),
        _ => Err(ServiceError::invalid("discount_rule", "is invalid")),
    }
}

/// The changes an update asks for: the fields named in the mask, checked.
fn rule_changes(req: &pb::UpdateDiscountRuleRequest) -> ServiceResult<(String, RuleChanges)> {
    let Some(r) = req.discount_rule.as_ref() else {
        return Err(ServiceError::invalid("discount_rule", "is required"));
    };
    let mut v = Violations::new();
    let id = v.field("discount_rule.name", collection_id(&r.name, "discountRules"));
    let paths = req.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "must name the fields to update");
    }
    let mut changes = RuleChanges::default();
    for path in v.mask_paths("update_mask", &paths).to_vec() {
        match path.as_str() {
            "valid_until" => {
                changes.valid_until = Some(match r.valid_until.as_ref() {
                    Some(ts) => match from_timestamp(ts) {
                        Some(at) => Some(at.trunc_subsecs(6)),
                        None => {
                            v.add("discount_rule.valid_until", "must be a valid time");
                            None
                        }
                    },
                    None => None,
                });
            }
            "display_name" => {
                changes.display_name = Some(parse::short_text(
                    &mut v,
                    "discount_rule.display_name",
                    &r.display_name,
                    200,
                    false,
                ));
            }
            other => v.add("update_mask", format!("cannot update `{other}`")),
        }
    }
    v.finish()?;
    let id = id.ok_or_else(|| ServiceError::invalid("discount_rule.name", "is invalid"))?;
    Ok((id, changes))
}

fn rule_to_pb(m: &discount_rule::Model) -> pb::DiscountRule {
    let mut out = pb::DiscountRule {
        name: format!("discountRules/{}", m.id),
        valid_from: Some(timestamp(m.valid_from)),
        valid_until: opt_timestamp(m.valid_until),
        create_time: Some(timestamp(m.created_at)),
        display_name: m.display_name.clone(),
        ..Default::default()
    };
    // A stored row that does not parse shows as far as it goes.
    let Ok(rule) = rule_of(m) else {
        return out;
    };
    out.kind = kind_to_pb(rule.basis.kind()).into();
    out.levels = rule.levels.clone();
    out.bands = rule
        .basis
        .bands()
        .iter()
        .map(|b| pb::DiscountBand {
            from_minor: b.from_minor,
            to_minor: b.to_minor.unwrap_or(0),
            rate_bp: i32::try_from(b.rate_bp).unwrap_or(i32::MAX),
        })
        .collect();
    match rule.basis {
        Basis::Cumulative { period, .. } => out.period_kind = period_kind_to_pb(period).into(),
        Basis::Functional { function, rate_bp } => {
            out.function = function_to_pb(function).into();
            out.rate_bp = i32::try_from(rate_bp).unwrap_or(i32::MAX);
        }
        Basis::Total(_) => {}
    }
    out
}

fn parse_basket(req: &pb::EvaluatePolicyRequest) -> ServiceResult<(Vec<Line>, Vec<Function>)> {
    let mut v = Violations::new();
    if req.lines.is_empty() {
        v.add("lines", "at least one line is required");
    }
    let n = v.at_most("lines", &req.lines, MAX_LINES);
    let lines = req.lines[..n]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let sku = parse::short_text(&mut v, &format!("lines[{i}].sku"), &l.sku, 64, true);
            if !(0..=MAX_AMOUNT_MINOR).contains(&l.unit_price_minor) {
                v.add(
                    format!("lines[{i}].unit_price_minor"),
                    format!("must be 0-{MAX_AMOUNT_MINOR}"),
                );
            }
            if !(1..=1_000_000).contains(&l.quantity) {
                v.add(format!("lines[{i}].quantity"), "must be 1-1000000");
            }
            Line {
                sku,
                unit_price_minor: l.unit_price_minor,
                quantity: l.quantity,
            }
        })
        .collect();
    let mut functions = Vec::new();
    for (i, raw) in req.functions.iter().enumerate() {
        match function_of_pb(*raw) {
            Some(f) if !functions.contains(&f) => functions.push(f),
            Some(_) => {}
            None => v.add(
                format!("functions[{i}]"),
                "must be installation, after_sales or warehousing",
            ),
        }
    }
    v.finish()?;
    Ok((lines, functions))
}

fn priced_to_pb(p: &Priced, lines: &[Line], currency: &str) -> pb::EvaluatePolicyResponse {
    let e = &p.evaluation;
    pb::EvaluatePolicyResponse {
        lines: e
            .lines
            .iter()
            .zip(lines)
            .map(|(l, line)| pb::PricedLine {
                sku: line.sku.clone(),
                gross_minor: l.gross_minor,
                discounts: l
                    .discounts
                    .iter()
                    .map(|d| pb::AppliedDiscount {
                        rule: format!("discountRules/{}", d.rule_id),
                        kind: kind_to_pb(d.kind).into(),
                        rate_bp: i32::try_from(d.rate_bp).unwrap_or(i32::MAX),
                        amount_minor: d.amount_minor,
                    })
                    .collect(),
                discount_minor: l.discount_minor,
                net_minor: l.net_minor,
                capped: l.capped,
            })
            .collect(),
        gross_minor: e.gross_minor,
        discount_minor: e.discount_minor,
        net_minor: e.net_minor,
        level: p.level.clone(),
        discount_ceiling_bp: i32::try_from(p.ceiling_bp).unwrap_or(i32::MAX),
        currency_code: currency.to_owned(),
    }
}

/// `partners/{partner_id}/specialDiscounts/{special_discount_id}`.
fn special_id(field: &str, name: &str) -> ServiceResult<(PartnerId, String)> {
    let bad = || {
        ServiceError::invalid(
            field,
            "must be partners/{partner_id}/specialDiscounts/{special_discount_id}",
        )
    };
    let (partner, rest) = name.split_once("/specialDiscounts/").ok_or_else(bad)?;
    let partner = PartnerId::parse_name(partner).map_err(|_| bad())?;
    let id = collection_id(&format!("specialDiscounts/{rest}"), "specialDiscounts").map_err(|_| bad())?;
    Ok((partner, id))
}

fn special_state_to_pb(raw: &str) -> pb::SpecialDiscountState {
    match SpecialState::parse(raw) {
        Some(SpecialState::Pending) => pb::SpecialDiscountState::Pending,
        Some(SpecialState::Granted) => pb::SpecialDiscountState::Granted,
        Some(SpecialState::Approved) => pb::SpecialDiscountState::Approved,
        Some(SpecialState::Rejected) => pb::SpecialDiscountState::Rejected,
        Some(SpecialState::Consumed) => pb::SpecialDiscountState::Consumed,
        None => pb::SpecialDiscountState::Unspecified,
    }
}

fn special_to_pb(v: &SpecialView) -> pb::SpecialDiscount {
    let r = &v.request;
    pb::SpecialDiscount {
        name: special_name(&r.partner_id, &r.id),
        reference: r.reference.clone(),
        rate_bp: i32::try_from(r.rate_bp).unwrap_or(i32::MAX),
        reason: r.reason.clone(),
        state: special_state_to_pb(&r.state).into(),
        discount_ceiling_bp: i32::try_from(r.ceiling_bp).unwrap_or(i32::MAX),
        decisions: v
            .decisions
            .iter()
            .map(|d| pb::SpecialDiscountDecision {
                decision: d.decision.clone(),
                actor: d.actor.clone(),
                reason: d.reason.clone(),
                decide_time: Some(timestamp(d.decided_at)),
            })
            .collect(),
        create_time: Some(timestamp(r.created_at)),
    }
}

fn parse_special(req: &pb::RequestSpecialDiscountRequest) -> ServiceResult<(PartnerId, NewSpecial)> {
    let mut v = Violations::new();
    let partner = v.field("parent", PartnerId::parse_name(&req.parent));
    let Some(s) = req.special_discount.as_ref() else {
        v.add("special_discount", "is required");
        v.finish()?;
        return Err(ServiceError::invalid("special_discount", "is required"));
    };
    let reference = parse::short_text(&mut v, "special_discount.reference", &s.reference, 100, true);
    if !(1..=10_000).contains(&s.rate_bp) {
        v.add("special_discount.rate_bp", "must be 1-10000 basis points");
    }
    let reason = parse::short_text(&mut v, "special_discount.reason", &s.reason, 500, true);
    v.finish()?;
    let partner = partner.ok_or_else(|| ServiceError::invalid("parent", "is invalid"))?;
    Ok((
        partner,
        NewSpecial {
            reference,
            rate_bp: u32::try_from(s.rate_bp).unwrap_or(0),
            reason,
        },
    ))
}

impl PricePolicyApi {
    async fn decide(&self, request: Request<(String, String)>, to: SpecialState) -> Rpc<pb::SpecialDiscount> {
        let who = caller(&request, ADMIN)?;
        let (name, reason) = request.into_inner();
        let (partner, id) = special_id("name", &name)?;
        let reason = parse::reason("reason", &reason)?;
        let view = self
            .app
            .decide_special_discount(&who, &partner, &id, to, &reason, now())
            .await?;
        ok(special_to_pb(&view))
    }
}

/// The request with its message replaced by `fields` of it (keeping the metadata
/// that carries the principal).
fn map_request<T, U>(request: Request<T>, fields: impl FnOnce(T) -> U) -> Request<U> {
    let (metadata, extensions, message) = request.into_parts();
    Request::from_parts(metadata, extensions, fields(message))
}

#[tonic::async_trait]
impl PricePolicyService for PricePolicyApi {
    async fn request_special_discount(
        &self,
        request: Request<pb::RequestSpecialDiscountRequest>,
    ) -> Rpc<pb::SpecialDiscount> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.RequestSpecialDiscount", &who.owner, &req.request_id, &req)?;
        let (partner, new) = parse_special(&req)?;
        ok(self
            .app
            .request_special_discount(&who, &partner, new, key.as_ref(), now(), special_to_pb)
            .await?)
    }

    async fn get_special_discount(&self, request: Request<pb::GetSpecialDiscountRequest>) -> Rpc<pb::SpecialDiscount> {
        let who = caller(&request, READ)?;
        let (partner, id) = special_id("name", &request.get_ref().name)?;
        ok(special_to_pb(&self.app.special_discount(&who, &partner, &id).await?))
    }

    async fn list_special_discounts(
        &self,
        request: Request<pb::ListSpecialDiscountsRequest>,
    ) -> Rpc<pb::ListSpecialDiscountsResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let partner = parse::partner_id("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, &req.parent)?;
        let (views, next_page_token) = self.app.list_special_discounts(&who, &partner, &page).await?;
        ok(pb::ListSpecialDiscountsResponse {
            special_discounts: views.iter().map(special_to_pb).collect(),
            next_page_token,
        })
    }

    async fn approve_special_discount(
        &self,
        request: Request<pb::ApproveSpecialDiscountRequest>,
    ) -> Rpc<pb::SpecialDiscount> {
        self.decide(map_request(request, |r| (r.name, r.reason)), SpecialState::Approved)
            .await
    }

    async fn reject_special_discount(
        &self,
        request: Request<pb::RejectSpecialDiscountRequest>,
    ) -> Rpc<pb::SpecialDiscount> {
        self.decide(map_request(request, |r| (r.name, r.reason)), SpecialState::Rejected)
            .await
    }

    async fn consume_special_discount(
        &self,
        request: Request<pb::ConsumeSpecialDiscountRequest>,
    ) -> Rpc<pb::SpecialDiscount> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let (partner, id) = special_id("name", &req.name)?;
        let mut v = Violations::new();
        let consumer = parse::short_text(&mut v, "consumer", &req.consumer, 100, false);
        v.finish()?;
        let view = self
            .app
            .consume_special_discount(&who, &partner, &id, &req.reference, &consumer, now())
            .await?;
        ok(special_to_pb(&view))
    }

    async fn create_discount_rule(&self, request: Request<pb::CreateDiscountRuleRequest>) -> Rpc<pb::DiscountRule> {
        let who = caller(&request, ADMIN)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreateDiscountRule", &who.owner, &req.request_id, &req)?;
        let new = parse_rule(&req)?;
        ok(self
            .app
            .create_discount_rule(&who, new, key.as_ref(), now(), rule_to_pb)
            .await?)
    }

    async fn get_discount_rule(&self, request: Request<pb::GetDiscountRuleRequest>) -> Rpc<pb::DiscountRule> {
        caller(&request, READ)?;
        let id = rule_id("name", &request.get_ref().name)?;
        ok(rule_to_pb(&self.app.discount_rule(&id).await?))
    }

    async fn list_discount_rules(
        &self,
        request: Request<pb::ListDiscountRulesRequest>,
    ) -> Rpc<pb::ListDiscountRulesResponse> {
        caller(&request, READ)?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token, "")?;
        let (rows, next_page_token) = self.app.list_discount_rules(&page).await?;
        ok(pb::ListDiscountRulesResponse {
            discount_rules: rows.iter().map(rule_to_pb).collect(),
            next_page_token,
        })
    }

    async fn update_discount_rule(&self, request: Request<pb::UpdateDiscountRuleRequest>) -> Rpc<pb::DiscountRule> {
        let who = caller(&request, ADMIN)?;
        let (id, changes) = rule_changes(request.get_ref())?;
        ok(rule_to_pb(&self.app.update_discount_rule(&who, &id, changes).await?))
    }

    async fn delete_discount_rule(
        &self,
        request: Request<pb::DeleteDiscountRuleRequest>,
    ) -> Rpc<pb::DeleteDiscountRuleResponse> {
        let who = caller(&request, ADMIN)?;
        let id = rule_id("name", &request.get_ref().name)?;
        self.app.delete_discount_rule(&who, &id).await?;
        ok(pb::DeleteDiscountRuleResponse {})
    }

    async fn evaluate_policy(&self, request: Request<pb::EvaluatePolicyRequest>) -> Rpc<pb::EvaluatePolicyResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let partner = parse::partner_id("partner", &req.partner)?;
        let (lines, functions) = parse_basket(&req)?;
        let priced = self
            .app
            .evaluate_policy(&who, &partner, &lines, functions, now())
            .await?;
        Ok(Response::new(priced_to_pb(&priced, &lines, &self.app.rules.currency)))
    }
}
