//! The gRPC adapter of quotes ([`QuoteApi`]): the brand's range table, quotes,
//! their approval and acceptance. A partner principal sees only its own quotes;
//! another partner's are NOT_FOUND.

use std::sync::Arc;

use retail_kit::convert::{from_timestamp, timestamp};
use retail_kit::error::{ServiceError, Violation, Violations};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::partner as pb;
use retail_proto::partner::quote_service_server::QuoteService;
use tonic::Request;

use super::sales::{amount, child_id, class_of_pb, class_to_pb, parent_partner};
use super::{ADMIN, READ, Rpc, WRITE, caller, ok};
use crate::app::App;
use crate::app::opportunities::opportunity_name;
use crate::app::quotes::{NewQuote, NewRange, QuoteView, quote_name};
use crate::domain::ids::PartnerId;
use crate::domain::quotes::{QuoteState, Relationship};
use crate::store::price_range;

/// Lines of a quote, at most.
const MAX_LINES: usize = 200;
/// Units of a line, at most.
const MAX_UNITS: i64 = 10_000;

/// Quotes and the range table.
#[derive(Debug, Clone)]
pub(crate) struct QuoteApi {
    app: Arc<App>,
}

impl QuoteApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn relationship_of_pb(raw: i32) -> Option<Relationship> {
    match pb::CustomerRelationship::try_from(raw) {
        Ok(pb::CustomerRelationship::New) => Some(Relationship::New),
        Ok(pb::CustomerRelationship::Existing) => Some(Relationship::Existing),
        _ => None,
    }
}

fn relationship_to_pb(raw: &str) -> pb::CustomerRelationship {
    match Relationship::parse(raw) {
        Some(Relationship::New) => pb::CustomerRelationship::New,
        Some(Relationship::Existing) => pb::CustomerRelationship::Existing,
        None => pb::CustomerRelationship::Unspecified,
    }
}

fn state_to_pb(s: QuoteState) -> pb::QuoteState {
    match s {
        QuoteState::PendingApproval => pb::QuoteState::PendingApproval,
        QuoteState::Issued => pb::QuoteState::Issued,
        QuoteState::Approved => pb::QuoteState::Approved,
        QuoteState::Rejected => pb::QuoteState::Rejected,
        QuoteState::Accepted => pb::QuoteState::Accepted,
        QuoteState::Expired => pb::QuoteState::Expired,
    }
}

fn state_of_pb(raw: i32) -> Result<Option<QuoteState>, ()> {
    match pb::QuoteState::try_from(raw) {
        Ok(pb::QuoteState::Unspecified) => Ok(None),
        Ok(pb::QuoteState::PendingApproval) => Ok(Some(QuoteState::PendingApproval)),
        Ok(pb::QuoteState::Issued) => Ok(Some(QuoteState::Issued)),
        Ok(pb::QuoteState::Approved) => Ok(Some(QuoteState::Approved)),
        Ok(pb::QuoteState::Rejected) => Ok(Some(QuoteState::Rejected)),
        Ok(pb::QuoteState::Accepted) => Ok(Some(QuoteState::Accepted)),
        Ok(pb::QuoteState::Expired) => Ok(Some(QuoteState::Expired)),
        Err(_) => Err(()),
    }
}

fn range_to_pb(r: &price_range::Model) -> pb::PriceRange {
    pb::PriceRange {
        name: format!("priceRanges/{}", r.id),
        level: r.level.clone(),
        customer_class: class_to_pb(&r.customer_class).into(),
        relationship: relationship_to_pb(&r.relationship).into(),
        volume_from_minor: r.volume_from_minor,
        min_discount_bp: i32::try_from(r.min_discount_bp).unwrap_or(0),
        max_discount_bp: i32::try_from(r.max_discount_bp).unwrap_or(0),
        updated_by: r.updated_by.clone(),
        update_time: Some(timestamp(r.updated_at)),
    }
}

fn quote_to_pb(v: &QuoteView) -> pb::Quote {
    let q = &v.quote;
    pb::Quote {
        name: quote_name(&q.partner_id, &q.id),
        opportunity: opportunity_name(&q.partner_id, &q.opportunity_id),
        customer_class: class_to_pb(&q.customer_class).into(),
        relationship: relationship_to_pb(&q.relationship).into(),
        expected_volume_minor: q.expected_volume_minor,
        lines: v
            .lines
            .iter()
            .map(|l| pb::QuoteLine {
                sku: format!("skus/{}", l.sku),
                quantity: l.quantity,
                unit_price_minor: l.unit_minor,
                list_price_minor: l.list_minor,
                min_unit_price_minor: l.min_unit_minor,
                max_unit_price_minor: l.max_unit_minor,
                in_range: l.in_range,
                line_total_minor: l.total_minor(),
            })
            .collect(),
        valid_until: Some(timestamp(q.valid_until)),
        state: state_to_pb(v.state).into(),
        partner_level: q.level.clone(),
        price_range: if q.price_range_id.is_empty() {
            String::new()
        } else {
            format!("priceRanges/{}", q.price_range_id)
        },
        currency_code: q.currency.clone(),
        total_minor: q.total_minor,
        order: if q.order_id.is_empty() {
            String::new()
        } else {
            format!("orders/{}", q.order_id)
        },
        trail: v
            .trail
            .iter()
            .map(|t| pb::QuoteTrailEntry {
                action: t.action.clone(),
                actor: t.actor.clone(),
                reason: t.reason.clone(),
                time: Some(timestamp(t.at)),
            })
            .collect(),
        create_time: Some(timestamp(q.created_at)),
    }
}

fn parse_range(req: &pb::SetPriceRangeRequest) -> Result<NewRange, ServiceError> {
    let mut v = Violations::new();
    let r = req.price_range.clone().unwrap_or_default();
    if req.price_range.is_none() {
        v.add("price_range", "is required");
    }
    let level = v.text("price_range.level", &r.level, 64, true);
    let class = class_of_pb(r.customer_class);
    if class.is_none() {
        v.add("price_range.customer_class", "must be S, A, B or C");
    }
    let relationship = relationship_of_pb(r.relationship);
    if relationship.is_none() {
        v.add("price_range.relationship", "must be new or existing");
    }
    let volume_from_minor = amount(&mut v, "price_range.volume_from_minor", r.volume_from_minor);
    if !(0..=10_000).contains(&r.min_discount_bp) {
        v.add("price_range.min_discount_bp", "must be 0-10000 basis points");
    }
    if !(0..=10_000).contains(&r.max_discount_bp) {
        v.add("price_range.max_discount_bp", "must be 0-10000 basis points");
    } else if r.max_discount_bp < r.min_discount_bp {
        v.add("price_range.max_discount_bp", "must not be less than min_discount_bp");
    }
    v.finish()?;
    match (class, relationship) {
        (Some(class), Some(relationship)) => Ok(NewRange {
            level,
            class,
            relationship,
            volume_from_minor,
            min_discount_bp: r.min_discount_bp,
            max_discount_bp: r.max_discount_bp,
        }),
        _ => Err(ServiceError::invalid("price_range", "is invalid")),
    }
}

/// A SKU code of `skus/{sku_code}`, as catalog and orders take it (upper-cased).
fn sku_code(name: &str) -> Result<String, String> {
    let code = name
        .strip_prefix("skus/")
        .ok_or("must be skus/{sku_code}")?
        .trim()
        .to_ascii_uppercase();
    let ok = !code.is_empty()
        && code.len() <= 64
        && code.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(code)
    } else {
        Err("must be skus/{sku_code} with a code of 1-64 letters, digits, '-', '_' or '.'".into())
    }
}

fn parse_quote(req: &pb::CreateQuoteRequest) -> Result<(PartnerId, NewQuote), ServiceError> {
    let mut v = Violations::new();
    let partner = v.field("parent", PartnerId::parse_name(&req.parent));
    let q = req.quote.clone().unwrap_or_default();
    if req.quote.is_none() {
        v.add("quote", "is required");
    }
    let opportunity = v.check(
        child_id("quote.opportunity", &q.opportunity, "opportunities").map_err(|_| {
            Violation::new(
                "quote.opportunity",
                "must be partners/{partner_id}/opportunities/{opportunity_id} with a UUID id",
            )
        }),
    );
    if let (Some(p), Some((of, _))) = (&partner, &opportunity)
        && p != of
    {
        v.add("quote.opportunity", "must be an opportunity of the partner in parent");
    }
    let class = class_of_pb(q.customer_class);
    if class.is_none() {
        v.add("quote.customer_class", "must be S, A, B or C");
    }
    let relationship = relationship_of_pb(q.relationship);
    if relationship.is_none() {
        v.add("quote.relationship", "must be new or existing");
    }
    let expected_volume_minor = amount(&mut v, "quote.expected_volume_minor", q.expected_volume_minor);
    if q.lines.is_empty() || q.lines.len() > MAX_LINES {
        v.add("quote.lines", format!("must have 1-{MAX_LINES} lines"));
    }
    let mut lines: Vec<(String, i64, i64)> = Vec::new();
    for (i, l) in q.lines.iter().enumerate().take(MAX_LINES) {
        let code = v.field(&format!("quote.lines[{i}].sku"), sku_code(&l.sku));
        if !(1..=MAX_UNITS).contains(&l.quantity) {
            v.add(format!("quote.lines[{i}].quantity"), format!("must be 1-{MAX_UNITS}"));
        }
        if !(1..=retail_kit::money::MAX_AMOUNT_MINOR).contains(&l.unit_price_minor) {
            v.add(
                format!("quote.lines[{i}].unit_price_minor"),
                format!("must be 1-{}", retail_kit::money::MAX_AMOUNT_MINOR),
            );
        }
        if let Some(code) = code {
            if lines.iter().any(|(c, _, _)| *c == code) {
                v.add(format!("quote.lines[{i}].sku"), "is listed twice");
            }
            lines.push((code, l.quantity, l.unit_price_minor));
        }
    }
    let valid_until = match &q.valid_until {
        None => None,
        Some(t) => {
            let at = from_timestamp(t);
            if at.is_none() {
                v.add("quote.valid_until", "is not a valid time");
            }
            at
        }
    };
    v.finish()?;
    match (partner, opportunity, class, relationship) {
        (Some(partner), Some((_, opportunity_id)), Some(class), Some(relationship)) => Ok((
            partner,
            NewQuote {
                opportunity_id,
                class,
                relationship,
                expected_volume_minor,
                lines,
                valid_until,
            },
        )),
        _ => Err(ServiceError::invalid("quote", "is invalid")),
    }
}

/// `partners/{partner_id}/quotes/{quote_id}`.
fn quote_id(name: &str) -> Result<(PartnerId, String), ServiceError> {
    child_id("name", name, "quotes")
}

#[tonic::async_trait]
impl QuoteService for QuoteApi {
    async fn set_price_range(&self, request: Request<pb::SetPriceRangeRequest>) -> Rpc<pb::PriceRange> {
        let who = caller(&request, ADMIN)?;
        let new = parse_range(request.get_ref())?;
        ok(range_to_pb(&self.app.set_price_range(&who, new).await?))
    }

    async fn list_price_ranges(
        &self,
        request: Request<pb::ListPriceRangesRequest>,
    ) -> Rpc<pb::ListPriceRangesResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token, "priceRanges")?;
        let (rows, next_page_token) = self.app.list_price_ranges(&who, &page).await?;
        ok(pb::ListPriceRangesResponse {
            price_ranges: rows.iter().map(range_to_pb).collect(),
            next_page_token,
        })
    }

    async fn create_quote(&self, request: Request<pb::CreateQuoteRequest>) -> Rpc<pb::Quote> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreateQuote", &who.owner, &req.request_id, &req)?;
        let (partner, new) = parse_quote(&req)?;
        ok(self
            .app
            .create_quote(&who, &partner, new, key.as_ref(), quote_to_pb)
            .await?)
    }

    async fn get_quote(&self, request: Request<pb::GetQuoteRequest>) -> Rpc<pb::Quote> {
        let who = caller(&request, READ)?;
        let (partner, id) = quote_id(&request.get_ref().name)?;
        ok(quote_to_pb(&self.app.quote(&who, &partner, &id).await?))
    }

    async fn list_quotes(&self, request: Request<pb::ListQuotesRequest>) -> Rpc<pb::ListQuotesResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let partner = parent_partner(&mut v, &req.parent);
        let state = state_of_pb(req.state).unwrap_or_else(|()| {
            v.add("state", "must be a quote state");
            None
        });
        v.finish()?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{}|{}", req.parent, req.state))?;
        let (views, next_page_token) = self.app.list_quotes(&who, partner.as_ref(), state, &page).await?;
        ok(pb::ListQuotesResponse {
            quotes: views.iter().map(quote_to_pb).collect(),
            next_page_token,
        })
    }

    async fn approve_quote(&self, request: Request<pb::ApproveQuoteRequest>) -> Rpc<pb::Quote> {
        let who = caller(&request, ADMIN)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let name = v.check(
            quote_id(&req.name)
                .map_err(|_| Violation::new("name", "must be partners/{partner_id}/quotes/{quote_id} with a UUID id")),
        );
        let reason = v.text("reason", &req.reason, 500, false);
        v.finish()?;
        let (partner, id) = name.ok_or_else(|| ServiceError::invalid("name", "is invalid"))?;
        ok(quote_to_pb(
            &self.app.decide_quote(&who, &partner, &id, true, &reason).await?,
        ))
    }

    async fn reject_quote(&self, request: Request<pb::RejectQuoteRequest>) -> Rpc<pb::Quote> {
        let who = caller(&request, ADMIN)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let name = v.check(
            quote_id(&req.name)
                .map_err(|_| Violation::new("name", "must be partners/{partner_id}/quotes/{quote_id} with a UUID id")),
        );
        let reason = v.text("reason", &req.reason, 500, true);
        v.finish()?;
        let (partner, id) = name.ok_or_else(|| ServiceError::invalid("name", "is invalid"))?;
        ok(quote_to_pb(
            &self.app.decide_quote(&who, &partner, &id, false, &reason).await?,
        ))
    }

    async fn accept_quote(&self, request: Request<pb::AcceptQuoteRequest>) -> Rpc<pb::Quote> {
        let who = caller(&request, WRITE)?;
        let (partner, id) = quote_id(&request.get_ref().name)?;
        ok(quote_to_pb(&self.app.accept_quote(&who, &partner, &id).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_codes_are_upper_cased() {
        assert_eq!(sku_code("skus/ab-1").as_deref(), Ok("AB-1"));
        assert!(sku_code("ab-1").is_err());
        assert!(sku_code("skus/").is_err());
        assert!(sku_code("skus/a b").is_err());
    }

    #[test]
    fn unknown_states_are_refused() {
        assert_eq!(state_of_pb(0), Ok(None));
        assert_eq!(state_of_pb(99), Err(()));
        assert_eq!(state_of_pb(2), Ok(Some(QuoteState::Issued)));
    }
}
