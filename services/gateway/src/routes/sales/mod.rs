//! The partner's sales work, over channel-partner's sales services: deal locks
//! (rights protection), the leads offered to it, its opportunities and pipeline,
//! its quotes, its reps' visits and a rep's home screen. Every call carries the
//! caller's token and names the caller's own partner, so another partner's lock,
//! lead, opportunity, quote, visit or rep is not found and nothing of it changes.

pub mod deals;
pub mod leads;
pub mod opportunities;
pub mod quotes;
pub mod visits;

use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::http::AppState;
use crate::problem::Problem;

/// The sales routes (authenticated with the others in the router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/partner/dealLocks",
            get(deals::list_deal_locks).post(deals::register_deal_lock),
        )
        .route("/v1/partner/dealLocks/{dealLockId}", get(deals::get_deal_lock))
        .route(
            "/v1/partner/dealLocks/{dealLockId}/release",
            post(deals::release_deal_lock),
        )
        .route("/v1/leads", get(leads::list_leads))
        .route("/v1/leads/{leadId}", get(leads::get_lead))
        .route("/v1/leads/{leadId}/accept", post(leads::accept_lead))
        .route("/v1/leads/{leadId}/decline", post(leads::decline_lead))
        .route("/v1/leads/{leadId}/outcome", post(leads::report_lead_outcome))
        .route(
            "/v1/partner/opportunities",
            get(opportunities::list_opportunities).post(opportunities::create_opportunity),
        )
        .route(
            "/v1/partner/opportunities/{opportunityId}",
            get(opportunities::get_opportunity),
        )
        .route(
            "/v1/partner/opportunities/{opportunityId}/move",
            post(opportunities::move_opportunity),
        )
        .route(
            "/v1/partner/quotes",
            get(quotes::list_quotes).post(quotes::create_quote),
        )
        .route("/v1/partner/quotes/{quoteId}", get(quotes::get_quote))
        .route("/v1/partner/quotes/{quoteId}/accept", post(quotes::accept_quote))
        .route("/v1/partner/pipelineReport", get(opportunities::get_pipeline_report))
        .route("/v1/partner/visits", get(visits::list_visits).post(visits::check_in))
        .route("/v1/partner/visits/{visitId}/checkOut", post(visits::check_out))
        .route("/v1/salesReps/{salesRepId}/home", get(visits::get_rep_home))
}

/// The sales part of the OpenAPI document, merged into it.
#[derive(OpenApi)]
#[openapi(
    paths(
        deals::register_deal_lock,
        deals::list_deal_locks,
        deals::get_deal_lock,
        deals::release_deal_lock,
        leads::list_leads,
        leads::get_lead,
        leads::accept_lead,
        leads::decline_lead,
        leads::report_lead_outcome,
        opportunities::create_opportunity,
        opportunities::list_opportunities,
        opportunities::get_opportunity,
        opportunities::move_opportunity,
        opportunities::get_pipeline_report,
        quotes::create_quote,
        quotes::list_quotes,
        quotes::get_quote,
        quotes::accept_quote,
        visits::check_in,
        visits::list_visits,
        visits::check_out,
        visits::get_rep_home,
    ),
    components(schemas(Customer, Reason))
)]
#[derive(Debug)]
pub struct SalesApi;

/// Adds the sales routes to the document.
#[derive(Debug)]
pub struct SalesDoc;

impl utoipa::Modify for SalesDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.merge(SalesApi::openapi());
    }
}

/// A UUID id from a path or a body: 400 naming `field` unless it is one; the
/// canonical (lower-case, hyphenated) form.
pub fn uuid_id(field: &str, raw: &str) -> Result<String, Problem> {
    uuid::Uuid::try_parse(raw)
        .map(|u| u.to_string())
        .map_err(|_| Problem::invalid(field, "must be a UUID"))
}

/// `{collection}/{uuid}` (a rep, a lead): 400 naming `field` unless it is one.
pub fn uuid_name(field: &str, raw: &str, collection: &str) -> Result<String, Problem> {
    raw.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
        .map(|u| format!("{collection}/{u}"))
        .ok_or_else(|| Problem::invalid(field, format!("must be {collection}/{{id}} with a UUID id")))
}

/// `salesReps/{uuid}` of a rep the caller sees (its partner's): another
/// partner's rep is a 404 before anything is filtered by it.
pub async fn own_rep(state: &AppState, caller: &crate::auth::Caller, raw: &str) -> Result<String, Problem> {
    use retail_proto::partner::GetSalesRepRequest;
    use retail_proto::partner::partner_service_client::PartnerServiceClient;
    let name = uuid_name("salesRep", raw, "salesReps")?;
    let mut client = PartnerServiceClient::new(state.partner.clone());
    let request = state.request(caller, GetSalesRepRequest { name: name.clone() });
    client.get_sales_rep(request).await.map_err(|s| {
        if s.code() == tonic::Code::NotFound {
            Problem::not_found("sales rep")
        } else {
            Problem::from(s)
        }
    })?;
    Ok(name)
}

/// The customer a lock, lead, opportunity or visit is about.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Customer {
    /// The customer's name: one line of 1-200 characters with a letter or digit.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[ -~]*[A-Za-z0-9][ -~]*$",
        example = "Trailfox Outdoor GmbH"
    )]
    pub display_name: String,
    /// The region: one line of 1-32 characters with a letter or digit.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[ -~]*[A-Za-z0-9][ -~]*$",
        example = "DE-BE"
    )]
    pub region: String,
    /// The tax id, optional: one line of at most 32 characters.
    #[serde(default)]
    #[schema(max_length = 32, pattern = "^[ -~]*$")]
    pub tax_id: String,
}

impl From<retail_proto::partner::Customer> for Customer {
    fn from(c: retail_proto::partner::Customer) -> Self {
        Self {
            display_name: c.display_name,
            region: c.region,
            tax_id: c.tax_id,
        }
    }
}

impl From<Customer> for retail_proto::partner::Customer {
    fn from(c: Customer) -> Self {
        Self {
            display_name: c.display_name,
            region: c.region,
            tax_id: c.tax_id,
        }
    }
}

/// Why (released, declined): 1-500 characters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reason {
    /// 1-500 characters without control characters.
    #[schema(min_length = 1, max_length = 500, pattern = "^[ -~]*[!-~][ -~]*$")]
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_uuids() {
        assert!(uuid_id("leadId", "not-a-uuid").is_err());
        assert_eq!(
            uuid_id("leadId", "0B4C1D9E-6F1A-4C84-9A8B-6E1E1C7B4A11").unwrap_or_default(),
            "0b4c1d9e-6f1a-4c84-9a8b-6e1e1c7b4a11"
        );
        assert!(uuid_name("salesRep", "salesReps/x", "salesReps").is_err());
        assert!(uuid_name("salesRep", "leads/0b4c1d9e-6f1a-4c84-9a8b-6e1e1c7b4a11", "salesReps").is_err());
        assert!(
            uuid_name(
                "salesRep",
                "salesReps/0b4c1d9e-6f1a-4c84-9a8b-6e1e1c7b4a11",
                "salesReps"
            )
            .is_ok()
        );
    }
}
