//! The partner's opportunities and pipeline: create (at `identified`), list, read
//! with the stage history, move one stage on or to lost, and the pipeline report
//! (conversion between stages and time in stage), of the partner or one rep.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use retail_proto::partner::opportunity_service_client::OpportunityServiceClient;
use retail_proto::partner::{
    CreateOpportunityRequest, GetOpportunityRequest, GetPipelineReportRequest, ListOpportunitiesRequest,
    MoveOpportunityRequest, PipelineStage,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Customer, uuid_id, uuid_name};
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query};
use crate::problem::Problem;
use crate::routes::orders::idempotency_key;
use crate::routes::{Paging, check_if_match, etag, i64_as_string, i64_from_string_or_number, time, with_etag};

/// One stage change of an opportunity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageChange {
    /// `PIPELINE_STAGE_...`; `PIPELINE_STAGE_UNSPECIFIED` at creation.
    pub from_stage: String,
    pub to_stage: String,
    /// Who moved it.
    pub actor: String,
    pub reason: String,
    pub change_time: Option<String>,
}

/// An opportunity of the partner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Opportunity {
    /// `partners/{partnerId}/opportunities/{opportunityId}`.
    pub name: String,
    pub opportunity_id: String,
    pub title: String,
    pub customer: Option<Customer>,
    /// `salesReps/{salesRepId}`, if a rep works it.
    pub sales_rep: String,
    /// Expected amount in minor units.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub amount_minor: i64,
    /// `leads/{leadId}` it came from, if any.
    pub lead: String,
    /// `PIPELINE_STAGE_IDENTIFIED`, `_PROPOSED`, `_CONFIRMED`, `_UNDERSTOOD`,
    /// `_NEGOTIATING`, `_WON` or `_LOST`.
    pub stage: String,
    /// Since when it is in `stage`.
    pub stage_time: Option<String>,
    /// Oldest first.
    pub stage_changes: Vec<StageChange>,
    pub create_time: Option<String>,
}

fn stage_name(raw: i32) -> String {
    PipelineStage::try_from(raw)
        .unwrap_or(PipelineStage::Unspecified)
        .as_str_name()
        .to_owned()
}

impl From<retail_proto::partner::Opportunity> for Opportunity {
    fn from(o: retail_proto::partner::Opportunity) -> Self {
        Self {
            stage: o.stage().as_str_name().to_owned(),
            opportunity_id: o.name.rsplit('/').next().unwrap_or_default().to_owned(),
            name: o.name,
            title: o.title,
            customer: o.customer.map(Customer::from),
            sales_rep: o.sales_rep,
            amount_minor: o.amount_minor,
            lead: o.lead,
            stage_time: time(o.stage_time),
            stage_changes: o
                .stage_changes
                .into_iter()
                .map(|c| StageChange {
                    from_stage: stage_name(c.from_stage),
                    to_stage: stage_name(c.to_stage),
                    actor: c.actor,
                    reason: c.reason,
                    change_time: time(c.change_time),
                })
                .collect(),
            create_time: time(o.create_time),
        }
    }
}

/// The opportunity with its ETag (its version: the time of its last stage change).
fn opportunity_response(o: retail_proto::partner::Opportunity, status: StatusCode) -> Response {
    let tag = etag(o.stage_time.as_ref());
    let mut response = with_etag(Opportunity::from(o), tag);
    *response.status_mut() = status;
    response
}

/// An opportunity to open for the caller's partner, at `identified`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOpportunity {
    /// One line of 1-200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[ -~]*[!-~][ -~]*$",
        example = "Team kit for the spring league"
    )]
    pub title: String,
    pub customer: Customer,
    /// `salesReps/{salesRepId}` of the partner who works it; optional.
    #[serde(default)]
    #[schema(pattern = "^salesReps/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub sales_rep: Option<String>,
    /// Expected amount in minor units, 0 to 10^12 (a decimal string or a number).
    #[serde(default, deserialize_with = "i64_from_string_or_number")]
    #[schema(value_type = String, pattern = "^[0-9]{1,12}$", example = "250000")]
    pub amount_minor: i64,
    /// `leads/{leadId}` it came from; optional.
    #[serde(default)]
    #[schema(pattern = "^leads/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub lead: Option<String>,
}

fn opportunity_name(caller: &Caller, raw: &str) -> Result<String, Problem> {
    Ok(format!(
        "partners/{}/opportunities/{}",
        caller.partner_id,
        uuid_id("opportunityId", raw)?
    ))
}

/// Opens an opportunity for the partner. With an `Idempotency-Key` a retry
/// returns the first answer.
#[utoipa::path(post, path = "/v1/partner/opportunities", tag = "sales", request_body = NewOpportunity,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$")),
    responses(
        (status = 201, description = "The opportunity, at identified", body = Opportunity,
            headers(("ETag" = String, description = "Version of the opportunity"))),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_opportunity(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewOpportunity>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let sales_rep = match body.sales_rep.as_deref() {
        None | Some("") => String::new(),
        Some(raw) => uuid_name("salesRep", raw, "salesReps")?,
    };
    let lead = match body.lead.as_deref() {
        None | Some("") => String::new(),
        Some(raw) => uuid_name("lead", raw, "leads")?,
    };
    let mut client = OpportunityServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        CreateOpportunityRequest {
            parent: format!("partners/{}", caller.partner_id),
            opportunity: Some(retail_proto::partner::Opportunity {
                title: body.title,
                customer: Some(body.customer.into()),
                sales_rep,
                amount_minor: body.amount_minor,
                lead,
                ..Default::default()
            }),
            request_id,
        },
    );
    let created = client
        .create_opportunity(request)
        .await
        .map_err(|s| Problem::from_status(&s, "opportunity"))?
        .into_inner();
    Ok(opportunity_response(created, StatusCode::CREATED))
}

/// A page of opportunities.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpportunityPage {
    /// Newest first.
    pub opportunities: Vec<Opportunity>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Lists the partner's opportunities, newest first.
#[utoipa::path(get, path = "/v1/partner/opportunities", tag = "sales", params(Paging),
    responses(
        (status = 200, description = "A page of opportunities", body = OpportunityPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_opportunities(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<OpportunityPage>, Problem> {
    let (page_size, page_token) = paging.parts()?;
    let mut client = OpportunityServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListOpportunitiesRequest {
            parent: format!("partners/{}", caller.partner_id),
            page_size,
            page_token,
        },
    );
    let page = client.list_opportunities(request).await?.into_inner();
    Ok(axum::Json(OpportunityPage {
        opportunities: page.opportunities.into_iter().map(Opportunity::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

async fn fetch(state: &AppState, caller: &Caller, name: String) -> Result<retail_proto::partner::Opportunity, Problem> {
    let mut client = OpportunityServiceClient::new(state.partner.clone());
    let request = state.request(caller, GetOpportunityRequest { name });
    Ok(client.get_opportunity(request).await?.into_inner())
}

/// Gets an opportunity of the partner with its stage history.
#[utoipa::path(get, path = "/v1/partner/opportunities/{opportunityId}", tag = "sales",
    params(("opportunityId" = String, Path, description = "The opportunity's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The opportunity", body = Opportunity,
            headers(("ETag" = String, description = "Version of the opportunity"))),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_opportunity(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(opportunity_id): Path<String>,
) -> Result<Response, Problem> {
    let name = opportunity_name(&caller, &opportunity_id)?;
    let found = fetch(&state, &caller, name).await?;
    Ok(opportunity_response(found, StatusCode::OK))
}

/// A stage to move to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum TargetStage {
    #[serde(rename = "PIPELINE_STAGE_PROPOSED")]
    Proposed,
    #[serde(rename = "PIPELINE_STAGE_CONFIRMED")]
    Confirmed,
    #[serde(rename = "PIPELINE_STAGE_UNDERSTOOD")]
    Understood,
    #[serde(rename = "PIPELINE_STAGE_NEGOTIATING")]
    Negotiating,
    #[serde(rename = "PIPELINE_STAGE_WON")]
    Won,
    #[serde(rename = "PIPELINE_STAGE_LOST")]
    Lost,
}

/// A move of an opportunity: to the next stage, or to lost.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageMove {
    pub stage: TargetStage,
    /// Why; at most 500 characters, required for lost.
    #[serde(default)]
    #[schema(max_length = 500, pattern = "^[ -~]*$")]
    pub reason: String,
}

/// Moves an opportunity of the partner one stage on, or to lost; any other move
/// is a 409 and changes nothing. With `If-Match` only the version read is moved.
#[utoipa::path(post, path = "/v1/partner/opportunities/{opportunityId}/move", tag = "sales", request_body = StageMove,
    params(
        ("opportunityId" = String, Path, description = "The opportunity's id (a UUID)",
            pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the opportunity as read"),
    ),
    responses(
        (status = 200, description = "The moved opportunity", body = Opportunity,
            headers(("ETag" = String, description = "Version of the opportunity"))),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn move_opportunity(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(opportunity_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<StageMove>,
) -> Result<Response, Problem> {
    let name = opportunity_name(&caller, &opportunity_id)?;
    if headers.contains_key(axum::http::header::IF_MATCH) {
        let current = fetch(&state, &caller, name.clone()).await?;
        check_if_match(&headers, etag(current.stage_time.as_ref()).as_deref())?;
    }
    let stage = match body.stage {
        TargetStage::Proposed => PipelineStage::Proposed,
        TargetStage::Confirmed => PipelineStage::Confirmed,
        TargetStage::Understood => PipelineStage::Understood,
        TargetStage::Negotiating => PipelineStage::Negotiating,
        TargetStage::Won => PipelineStage::Won,
        TargetStage::Lost => PipelineStage::Lost,
    };
    let mut client = OpportunityServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        MoveOpportunityRequest {
            name,
            stage: stage as i32,
            reason: body.reason,
        },
    );
    let moved = client.move_opportunity(request).await?.into_inner();
    Ok(opportunity_response(moved, StatusCode::OK))
}

/// One stage of the pipeline report.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageReport {
    /// `PIPELINE_STAGE_...`.
    pub stage: String,
    /// Opportunities that ever reached it.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub reached: i64,
    /// Opportunities in it now.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub current: i64,
    /// Of those that reached it, the share that reached the next stage, in basis
    /// points; 0 for won and lost.
    pub conversion_to_next_bp: i32,
    /// Completed stays in it.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub completed_stays: i64,
    /// Their mean length in seconds, rounded down.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub mean_seconds_in_stage: i64,
}

/// The partner's pipeline report.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReport {
    /// `partners/{partnerId}`.
    pub partner: String,
    /// The rep, if asked for.
    pub sales_rep: String,
    /// The stages in funnel order, won and lost last.
    pub stages: Vec<StageReport>,
}

/// Whose pipeline.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PipelineQuery {
    /// Only this rep's opportunities: `salesReps/{salesRepId}`.
    #[param(pattern = "^salesReps/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub sales_rep: Option<String>,
}

/// The conversion between stages and the time in stage of the partner's (or one
/// of its reps') opportunities.
#[utoipa::path(get, path = "/v1/partner/pipelineReport", tag = "sales", params(PipelineQuery),
    responses(
        (status = 200, description = "The report", body = PipelineReport),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_pipeline_report(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PipelineQuery>,
) -> Result<axum::Json<PipelineReport>, Problem> {
    let sales_rep = match query.sales_rep.as_deref() {
        None | Some("") => String::new(),
        Some(raw) => super::own_rep(&state, &caller, raw).await?,
    };
    let mut client = OpportunityServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        GetPipelineReportRequest {
            partner: format!("partners/{}", caller.partner_id),
            sales_rep,
        },
    );
    let report = client.get_pipeline_report(request).await?.into_inner();
    Ok(axum::Json(PipelineReport {
        partner: report.partner,
        sales_rep: report.sales_rep,
        stages: report
            .stages
            .into_iter()
            .map(|s| StageReport {
                stage: s.stage().as_str_name().to_owned(),
                reached: s.reached,
                current: s.current,
                conversion_to_next_bp: s.conversion_to_next_bp,
                completed_stays: s.completed_stays,
                mean_seconds_in_stage: s.mean_seconds_in_stage,
            })
            .collect(),
    }))
}
