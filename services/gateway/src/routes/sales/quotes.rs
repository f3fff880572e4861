//! The partner's quotes: create one for an open opportunity of the partner (its
//! lines priced against the partner level's wholesale list and the brand's range
//! table: in range it is issued, out of range it waits for the brand), list and
//! read them, and accept one for the customer, which places its order.
//! Approval, rejection and the range table are the brand's, not the partner's.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use retail_proto::partner::quote_service_client::QuoteServiceClient;
use retail_proto::partner::{
    AcceptQuoteRequest, CreateQuoteRequest, CustomerClass, CustomerRelationship, GetQuoteRequest, ListQuotesRequest,
    QuoteState,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::uuid_id;
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query};
use crate::problem::Problem;
use crate::routes::orders::idempotency_key;
use crate::routes::{Paging, i64_as_string, i64_from_string_or_number, time};

/// One line of a quote.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteLine {
    /// `skus/{skuCode}`.
    pub sku: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub quantity: i64,
    /// The quoted unit price, minor units.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub unit_price_minor: i64,
    /// The list price: the partner level's wholesale price.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub list_price_minor: i64,
    /// The lowest unit price in range; 0 when no range applies.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub min_unit_price_minor: i64,
    /// The highest unit price in range; 0 when no range applies.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub max_unit_price_minor: i64,
    /// Whether the unit price is in range.
    pub in_range: bool,
    /// unitPriceMinor x quantity.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub line_total_minor: i64,
}

/// One entry of a quote's trail.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteTrailEntry {
    /// `issued`, `submitted`, `approved`, `rejected` or `accepted`.
    pub action: String,
    /// Who.
    pub actor: String,
    /// Why (approval and rejection).
    pub reason: String,
    pub time: Option<String>,
}

/// A quote of the partner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// `partners/{partnerId}/quotes/{quoteId}`.
    pub name: String,
    pub quote_id: String,
    /// `partners/{partnerId}/opportunities/{opportunityId}`.
    pub opportunity: String,
    /// `CUSTOMER_CLASS_S`, `_A`, `_B` or `_C`.
    pub customer_class: String,
    /// `CUSTOMER_RELATIONSHIP_NEW` or `_EXISTING`.
    pub relationship: String,
    /// The expected future purchase volume, minor units.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub expected_volume_minor: i64,
    pub lines: Vec<QuoteLine>,
    /// Until when it may be accepted.
    pub valid_until: Option<String>,
    /// `QUOTE_STATE_PENDING_APPROVAL`, `_ISSUED`, `_APPROVED`, `_REJECTED`,
    /// `_ACCEPTED` or `_EXPIRED`.
    pub state: String,
    /// The partner's level at creation.
    pub partner_level: String,
    /// The range row applied (`priceRanges/{id}`); empty when none applied.
    pub price_range: String,
    /// ISO-4217.
    pub currency_code: String,
    /// Sum of the line totals, minor units.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub total_minor: i64,
    /// `orders/{orderId}` once accepted.
    pub order: String,
    /// Oldest first.
    pub trail: Vec<QuoteTrailEntry>,
    pub create_time: Option<String>,
}

impl From<retail_proto::partner::Quote> for Quote {
    fn from(q: retail_proto::partner::Quote) -> Self {
        Self {
            quote_id: q.name.rsplit('/').next().unwrap_or_default().to_owned(),
            customer_class: q.customer_class().as_str_name().to_owned(),
            relationship: q.relationship().as_str_name().to_owned(),
            state: q.state().as_str_name().to_owned(),
            name: q.name,
            opportunity: q.opportunity,
            expected_volume_minor: q.expected_volume_minor,
            lines: q
                .lines
                .into_iter()
                .map(|l| QuoteLine {
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                    list_price_minor: l.list_price_minor,
                    min_unit_price_minor: l.min_unit_price_minor,
                    max_unit_price_minor: l.max_unit_price_minor,
                    in_range: l.in_range,
                    line_total_minor: l.line_total_minor,
                })
                .collect(),
            valid_until: time(q.valid_until),
            partner_level: q.partner_level,
            price_range: q.price_range,
            currency_code: q.currency_code,
            total_minor: q.total_minor,
            order: q.order,
            trail: q
                .trail
                .into_iter()
                .map(|t| QuoteTrailEntry {
                    action: t.action,
                    actor: t.actor,
                    reason: t.reason,
                    time: time(t.time),
                })
                .collect(),
            create_time: time(q.create_time),
        }
    }
}

/// The customer's class.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum QuoteCustomerClass {
    #[serde(rename = "CUSTOMER_CLASS_S")]
    S,
    #[serde(rename = "CUSTOMER_CLASS_A")]
    A,
    #[serde(rename = "CUSTOMER_CLASS_B")]
    B,
    #[serde(rename = "CUSTOMER_CLASS_C")]
    C,
}

/// Whether the customer bought from the partner before.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum Relationship {
    #[serde(rename = "CUSTOMER_RELATIONSHIP_NEW")]
    New,
    #[serde(rename = "CUSTOMER_RELATIONSHIP_EXISTING")]
    Existing,
}

/// A line to quote.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewQuoteLine {
    /// `skus/{skuCode}` on the partner level's wholesale list; once per quote.
    #[schema(pattern = "^skus/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "skus/TENT-2P")]
    pub sku: String,
    /// Units, 1-10000 (a decimal string or a number).
    #[serde(deserialize_with = "i64_from_string_or_number")]
    #[schema(value_type = String, pattern = "^[0-9]{1,5}$", example = "10")]
    pub quantity: i64,
    /// The quoted unit price in minor units, more than 0 (a decimal string or a number).
    #[serde(deserialize_with = "i64_from_string_or_number")]
    #[schema(value_type = String, pattern = "^[0-9]{1,12}$", example = "8900")]
    pub unit_price_minor: i64,
}

/// A quote to create for an open opportunity of the caller's partner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewQuote {
    /// The opportunity's id (a UUID), of the caller's partner and open.
    #[schema(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub opportunity_id: String,
    pub customer_class: QuoteCustomerClass,
    pub relationship: Relationship,
    /// The expected future purchase volume in minor units, 0 or more (a decimal
    /// string or a number).
    #[serde(default, deserialize_with = "i64_from_string_or_number")]
    #[schema(value_type = String, pattern = "^[0-9]{1,12}$", example = "500000")]
    pub expected_volume_minor: i64,
    /// 1-200 lines.
    #[schema(min_items = 1, max_items = 200)]
    pub lines: Vec<NewQuoteLine>,
    /// Until when it may be accepted (RFC 3339); optional, at most 366 days ahead.
    #[serde(default)]
    #[schema(format = DateTime, example = "2026-12-31T23:59:59Z")]
    pub valid_until: Option<String>,
}

fn quote_name(caller: &Caller, raw: &str) -> Result<String, Problem> {
    Ok(format!(
        "partners/{}/quotes/{}",
        caller.partner_id,
        uuid_id("quoteId", raw)?
    ))
}

fn timestamp(field: &str, raw: &str) -> Result<prost_types::Timestamp, Problem> {
    let at =
        chrono::DateTime::parse_from_rfc3339(raw).map_err(|_| Problem::invalid(field, "must be an RFC 3339 time"))?;
    Ok(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// Creates a quote for an open opportunity of the partner: issued when every
/// line is in range, pending the brand's approval otherwise. With an
/// `Idempotency-Key` a retry returns the first answer.
#[utoipa::path(post, path = "/v1/partner/quotes", tag = "sales", request_body = NewQuote,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$")),
    responses(
        (status = 201, description = "The quote, issued or pending approval", body = Quote),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_quote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewQuote>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let opportunity = format!(
        "partners/{}/opportunities/{}",
        caller.partner_id,
        uuid_id("opportunityId", &body.opportunity_id)?
    );
    let valid_until = match body.valid_until.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(timestamp("validUntil", raw)?),
    };
    let customer_class = match body.customer_class {
        QuoteCustomerClass::S => CustomerClass::S,
        QuoteCustomerClass::A => CustomerClass::A,
        QuoteCustomerClass::B => CustomerClass::B,
        QuoteCustomerClass::C => CustomerClass::C,
    };
    let relationship = match body.relationship {
        Relationship::New => CustomerRelationship::New,
        Relationship::Existing => CustomerRelationship::Existing,
    };
    let mut client = QuoteServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        CreateQuoteRequest {
            parent: format!("partners/{}", caller.partner_id),
            quote: Some(retail_proto::partner::Quote {
                opportunity,
                customer_class: customer_class as i32,
                relationship: relationship as i32,
                expected_volume_minor: body.expected_volume_minor,
                lines: body
                    .lines
                    .into_iter()
                    .map(|l| retail_proto::partner::QuoteLine {
                        sku: l.sku,
                        quantity: l.quantity,
                        unit_price_minor: l.unit_price_minor,
                        ..Default::default()
                    })
                    .collect(),
                valid_until,
                ..Default::default()
            }),
            request_id,
        },
    );
    let created = client
        .create_quote(request)
        .await
        .map_err(|s| Problem::from_status(&s, "quote"))?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(Quote::from(created))).into_response())
}

/// Filters and page of the quote list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QuoteQuery {
    /// At most this many; default 50, at most 500.
    #[param(minimum = 0, maximum = 500)]
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
    /// Only quotes in this state.
    #[param(pattern = "^QUOTE_STATE_(PENDING_APPROVAL|ISSUED|APPROVED|REJECTED|ACCEPTED|EXPIRED)$")]
    pub state: Option<String>,
}

/// A page of quotes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotePage {
    /// Newest first.
    pub quotes: Vec<Quote>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Lists the partner's quotes, newest first.
#[utoipa::path(get, path = "/v1/partner/quotes", tag = "sales", params(QuoteQuery),
    responses(
        (status = 200, description = "A page of quotes", body = QuotePage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_quotes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<QuoteQuery>,
) -> Result<axum::Json<QuotePage>, Problem> {
    let (page_size, page_token) = Paging {
        page_size: query.page_size,
        page_token: query.page_token,
    }
    .parts()?;
    let quote_state = match query.state.as_deref() {
        None | Some("") => QuoteState::Unspecified,
        Some(name) => QuoteState::from_str_name(name)
            .filter(|s| *s != QuoteState::Unspecified)
            .ok_or_else(|| Problem::invalid("state", "not a quote state (QUOTE_STATE_...)"))?,
    };
    let mut client = QuoteServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListQuotesRequest {
            parent: format!("partners/{}", caller.partner_id),
            page_size,
            page_token,
            state: quote_state as i32,
        },
    );
    let page = client.list_quotes(request).await?.into_inner();
    Ok(axum::Json(QuotePage {
        quotes: page.quotes.into_iter().map(Quote::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Gets a quote of the partner with its lines and trail.
#[utoipa::path(get, path = "/v1/partner/quotes/{quoteId}", tag = "sales",
    params(("quoteId" = String, Path, description = "The quote's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The quote", body = Quote),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_quote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(quote_id): Path<String>,
) -> Result<axum::Json<Quote>, Problem> {
    let name = quote_name(&caller, &quote_id)?;
    let mut client = QuoteServiceClient::new(state.partner.clone());
    let request = state.request(&caller, GetQuoteRequest { name });
    Ok(axum::Json(client.get_quote(request).await?.into_inner().into()))
}

/// Accepts an issued or approved, unexpired quote of the partner for the
/// customer: its order is placed (once, however often it is accepted) and named
/// on the quote, and the opportunity is won. A quote pending approval, rejected
/// or expired is a 409 and nothing is created.
#[utoipa::path(post, path = "/v1/partner/quotes/{quoteId}/accept", tag = "sales",
    params(("quoteId" = String, Path, description = "The quote's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The accepted quote, naming its order", body = Quote),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn accept_quote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(quote_id): Path<String>,
) -> Result<axum::Json<Quote>, Problem> {
    let name = quote_name(&caller, &quote_id)?;
    let mut client = QuoteServiceClient::new(state.partner.clone());
    let request = state.request(&caller, AcceptQuoteRequest { name });
    Ok(axum::Json(client.accept_quote(request).await?.into_inner().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_until_must_be_rfc3339() {
        assert!(timestamp("validUntil", "tomorrow").is_err());
        assert_eq!(
            timestamp("validUntil", "2026-12-31T23:59:59Z")
                .map(|t| t.seconds)
                .unwrap_or_default(),
            1_798_761_599
        );
    }
}
