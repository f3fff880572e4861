//! The price policy as it applies to the caller's partner: a basket priced with
//! the discounts of its level, and special discount requests.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use retail_proto::partner::price_policy_service_client::PricePolicyServiceClient;
use retail_proto::partner::{
    BasketLine, EvaluatePolicyRequest, GetSpecialDiscountRequest, ListSpecialDiscountsRequest, PartnerFunction,
    RequestSpecialDiscountRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::orders::idempotency_key;
use super::{Paging, i64_as_string, i64_from_string_or_number, time};
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query, check_id};
use crate::problem::{FieldViolation, Problem};

/// A line of a basket to price.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBasketLine {
    /// The SKU code.
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "RUN-42")]
    pub sku: String,
    /// Unit price in minor units, not negative (a decimal string or a number).
    #[serde(deserialize_with = "i64_from_string_or_number")]
    #[schema(value_type = String, pattern = "^[0-9]{1,15}$")]
    pub unit_price_minor: i64,
    /// Units, positive.
    #[schema(minimum = 1, maximum = 1000000)]
    pub quantity: i64,
}

/// A basket to price for the caller's partner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Basket {
    /// 1-500 lines.
    #[schema(min_items = 1, max_items = 500)]
    pub lines: Vec<NewBasketLine>,
    /// Functions the partner performs on this order: `PARTNER_FUNCTION_INSTALLATION`,
    /// `PARTNER_FUNCTION_AFTER_SALES`, `PARTNER_FUNCTION_WAREHOUSING`.
    #[serde(default)]
    #[schema(value_type = Vec<PartnerFunctionName>)]
    pub functions: Vec<String>,
}

/// A function the partner performs on an order (described only: `functions` is
/// parsed by name, so an unknown one is a violation naming its index).
#[allow(dead_code)]
#[derive(Debug, Serialize, ToSchema)]
pub enum PartnerFunctionName {
    #[serde(rename = "PARTNER_FUNCTION_INSTALLATION")]
    Installation,
    #[serde(rename = "PARTNER_FUNCTION_AFTER_SALES")]
    AfterSales,
    #[serde(rename = "PARTNER_FUNCTION_WAREHOUSING")]
    Warehousing,
}

/// One discount on a line.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedDiscount {
    /// `discountRules/{discountRuleId}`.
    pub rule: String,
    /// `DISCOUNT_RULE_KIND_...`.
    pub kind: String,
    pub rate_bp: i32,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub amount_minor: i64,
}

/// A priced line.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricedLine {
    pub sku: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub gross_minor: i64,
    pub discounts: Vec<AppliedDiscount>,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub discount_minor: i64,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub net_minor: i64,
    /// Whether the level's ceiling cut the discounts.
    pub capped: bool,
}

/// A basket priced with the partner's discounts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricedBasket {
    pub lines: Vec<PricedLine>,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub gross_minor: i64,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub discount_minor: i64,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub net_minor: i64,
    /// The partner's level.
    pub level: String,
    pub discount_ceiling_bp: i32,
    pub currency_code: String,
}

/// Prices a basket with the discounts the partner's level gets.
#[utoipa::path(post, path = "/v1/partner/priceEvaluations", tag = "policy", request_body = Basket,
    responses(
        (status = 200, description = "The priced basket", body = PricedBasket),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn evaluate_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Basket>,
) -> Result<axum::Json<PricedBasket>, Problem> {
    let mut violations = Vec::new();
    let functions: Vec<i32> = body
        .functions
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match PartnerFunction::from_str_name(f) {
            Some(f) if f != PartnerFunction::Unspecified => Some(f as i32),
            _ => {
                violations.push(FieldViolation {
                    field: format!("functions[{i}]"),
                    description: "not a partner function (PARTNER_FUNCTION_...)".into(),
                });
                None
            }
        })
        .collect();
    if !violations.is_empty() {
        let mut problem = Problem::new(StatusCode::BAD_REQUEST, "invalid request: unknown partner functions");
        problem.violations = violations;
        return Err(problem);
    }
    let mut client = PricePolicyServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        EvaluatePolicyRequest {
            partner: format!("partners/{}", caller.partner_id),
            lines: body
                .lines
                .into_iter()
                .map(|l| BasketLine {
                    sku: l.sku,
                    unit_price_minor: l.unit_price_minor,
                    quantity: l.quantity,
                })
                .collect(),
            functions,
        },
    );
    let priced = client
        .evaluate_policy(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(PricedBasket {
        lines: priced
            .lines
            .into_iter()
            .map(|l| PricedLine {
                sku: l.sku,
                gross_minor: l.gross_minor,
                discounts: l
                    .discounts
                    .into_iter()
                    .map(|d| AppliedDiscount {
                        kind: d.kind().as_str_name().to_owned(),
                        rule: d.rule,
                        rate_bp: d.rate_bp,
                        amount_minor: d.amount_minor,
                    })
                    .collect(),
                discount_minor: l.discount_minor,
                net_minor: l.net_minor,
                capped: l.capped,
            })
            .collect(),
        gross_minor: priced.gross_minor,
        discount_minor: priced.discount_minor,
        net_minor: priced.net_minor,
        level: priced.level,
        discount_ceiling_bp: priced.discount_ceiling_bp,
        currency_code: priced.currency_code,
    }))
}

/// A decision on a special discount.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecialDiscountDecision {
    /// `requested`, `granted`, `approved`, `rejected` or `consumed`.
    pub decision: String,
    pub reason: String,
    pub decide_time: Option<String>,
}

/// A special discount request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecialDiscount {
    /// `partners/{partnerId}/specialDiscounts/{specialDiscountId}`.
    pub name: String,
    pub special_discount_id: String,
    /// The basket or order reference.
    pub reference: String,
    pub rate_bp: i32,
    pub reason: String,
    /// `SPECIAL_DISCOUNT_STATE_PENDING`, `_GRANTED`, `_APPROVED`, `_REJECTED` or `_CONSUMED`.
    pub state: String,
    /// The level's ceiling when asked.
    pub discount_ceiling_bp: i32,
    pub decisions: Vec<SpecialDiscountDecision>,
    pub create_time: Option<String>,
}

impl From<retail_proto::partner::SpecialDiscount> for SpecialDiscount {
    fn from(d: retail_proto::partner::SpecialDiscount) -> Self {
        Self {
            state: d.state().as_str_name().to_owned(),
            special_discount_id: d.name.rsplit('/').next().unwrap_or_default().to_owned(),
            name: d.name,
            reference: d.reference,
            rate_bp: d.rate_bp,
            reason: d.reason,
            discount_ceiling_bp: d.discount_ceiling_bp,
            // Who decided stays inside: partners see what and why.
            decisions: d
                .decisions
                .into_iter()
                .map(|x| SpecialDiscountDecision {
                    decision: x.decision,
                    reason: x.reason,
                    decide_time: time(x.decide_time),
                })
                .collect(),
            create_time: time(d.create_time),
        }
    }
}

/// A special discount to ask for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSpecialDiscount {
    /// The basket or order reference.
    #[schema(max_length = 128)]
    pub reference: String,
    /// Basis points, 1-10000.
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_bp: i32,
    /// Why it is asked for.
    #[schema(max_length = 500)]
    pub reason: String,
}

/// Asks for a special discount: granted at once at or under the level's ceiling,
/// otherwise pending a brand manager's decision.
#[utoipa::path(post, path = "/v1/partner/specialDiscounts", tag = "policy", request_body = NewSpecialDiscount,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$")),
    responses(
        (status = 201, description = "The request", body = SpecialDiscount),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn request_special_discount(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewSpecialDiscount>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut client = PricePolicyServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        RequestSpecialDiscountRequest {
            parent: format!("partners/{}", caller.partner_id),
            special_discount: Some(retail_proto::partner::SpecialDiscount {
                reference: body.reference,
                rate_bp: body.rate_bp,
                reason: body.reason,
                ..Default::default()
            }),
            request_id,
        },
    );
    let discount = client
        .request_special_discount(request)
        .await
        .map_err(|s| Problem::from_status(&s, "special_discount"))?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(SpecialDiscount::from(discount))).into_response())
}

/// A page of special discounts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecialDiscountPage {
    pub special_discounts: Vec<SpecialDiscount>,
    pub next_page_token: String,
}

/// Lists the partner's special discount requests, newest first.
#[utoipa::path(get, path = "/v1/partner/specialDiscounts", tag = "policy", params(Paging),
    responses(
        (status = 200, description = "A page of requests", body = SpecialDiscountPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_special_discounts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<SpecialDiscountPage>, Problem> {
    let (page_size, page_token) = paging.parts()?;
    let mut client = PricePolicyServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListSpecialDiscountsRequest {
            parent: format!("partners/{}", caller.partner_id),
            page_size,
            page_token,
        },
    );
    let page = client
        .list_special_discounts(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(SpecialDiscountPage {
        special_discounts: page.special_discounts.into_iter().map(SpecialDiscount::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Gets one of the partner's special discount requests.
#[utoipa::path(get, path = "/v1/partner/specialDiscounts/{specialDiscountId}", tag = "policy",
    params(("specialDiscountId" = String, Path, description = "The request's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The request", body = SpecialDiscount),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_special_discount(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<SpecialDiscount>, Problem> {
    check_id("specialDiscountId", &id)?;
    let mut client = PricePolicyServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        GetSpecialDiscountRequest {
            name: format!("partners/{}/specialDiscounts/{id}", caller.partner_id),
        },
    );
    Ok(axum::Json(
        client.get_special_discount(request).await?.into_inner().into(),
    ))
}
