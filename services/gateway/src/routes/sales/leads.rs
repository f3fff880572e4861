//! The leads offered to the partner or accepted by it: list (ranked by MAN
//! score), read, accept before the deadline, decline with a reason (the lead
//! moves on to the next eligible partner), and report the outcome of an accepted
//! one. Any other lead is not found.

use axum::Extension;
use axum::extract::State;
use retail_proto::partner::lead_service_client::LeadServiceClient;
use retail_proto::partner::{
    AcceptLeadRequest, DeclineLeadRequest, GetLeadRequest, LeadState, ListLeadsRequest, ReportLeadOutcomeRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Customer, Reason, uuid_id};
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query};
use crate::problem::Problem;
use crate::routes::{Paging, i64_as_string, time};

/// The MAN scores (money, authority, need) of a lead.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManScore {
    /// 1-5.
    pub money: i32,
    /// 1-5.
    pub authority: i32,
    /// 1-5.
    pub need: i32,
    /// 0.4 M + 0.3 A + 0.3 N in tenths (34 = 3.4).
    pub total_tenths: i32,
    /// The total to one decimal, for example `3.4`.
    pub total: String,
    pub score_time: Option<String>,
}

/// A lead offered to or accepted by the partner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lead {
    /// `leads/{leadId}`.
    pub name: String,
    pub lead_id: String,
    pub customer: Option<Customer>,
    /// `CUSTOMER_CLASS_S`, `_A`, `_B` or `_C`.
    pub customer_class: String,
    /// Annual budget in minor units.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub annual_budget_minor: i64,
    /// Earmarked special budget in minor units.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub special_budget_minor: i64,
    /// `FINANCIAL_TREND_POSITIVE`, `_STABLE` or `_NEGATIVE`.
    pub financial_trend: String,
    pub authority_score: i32,
    pub need_score: i32,
    /// What the customer needs.
    pub need: String,
    pub score: Option<ManScore>,
    /// `LEAD_STATE_OFFERED`, `_ACCEPTED`, `_WON` or `_LOST` (as the partner sees it).
    pub state: String,
    /// `partners/{partnerId}` it is offered to or accepted by.
    pub partner: String,
    /// Until when the offer may be accepted.
    pub accept_deadline: Option<String>,
    /// Why the partner was chosen.
    pub assignment_reason: String,
    /// Why it was lost.
    pub outcome_reason: String,
    pub create_time: Option<String>,
}

impl From<retail_proto::partner::Lead> for Lead {
    fn from(l: retail_proto::partner::Lead) -> Self {
        Self {
            customer_class: l.customer_class().as_str_name().to_owned(),
            financial_trend: l.financial_trend().as_str_name().to_owned(),
            state: l.state().as_str_name().to_owned(),
            lead_id: crate::routes::id_of(&l.name, "leads").to_owned(),
            name: l.name,
            customer: l.customer.map(Customer::from),
            annual_budget_minor: l.annual_budget_minor,
            special_budget_minor: l.special_budget_minor,
            authority_score: l.authority_score,
            need_score: l.need_score,
            need: l.need,
            score: l.score.map(|s| ManScore {
                money: s.money,
                authority: s.authority,
                need: s.need,
                total_tenths: s.total_tenths,
                total: s.total,
                score_time: time(s.score_time),
            }),
            partner: l.partner,
            accept_deadline: time(l.accept_deadline),
            assignment_reason: l.assignment_reason,
            outcome_reason: l.outcome_reason,
            create_time: time(l.create_time),
        }
    }
}

/// Filters and page of the lead list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeadQuery {
    /// At most this many; default 50, at most 500.
    #[param(minimum = 0, maximum = 500)]
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
    /// Only leads in this state.
    #[param(pattern = "^LEAD_STATE_(UNASSIGNED|OFFERED|ACCEPTED|WON|LOST)$")]
    pub state: Option<String>,
}

/// A page of leads.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeadPage {
    /// By MAN total, highest first; ties earlier lead first.
    pub leads: Vec<Lead>,
    /// Empty on the last page.
    pub next_page_token: String,
}

fn lead_name(raw: &str) -> Result<String, Problem> {
    Ok(format!("leads/{}", uuid_id("leadId", raw)?))
}

/// Lists the leads offered to the partner now or accepted by it, best first.
#[utoipa::path(get, path = "/v1/leads", tag = "sales", params(LeadQuery),
    responses(
        (status = 200, description = "A page of leads", body = LeadPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_leads(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<LeadQuery>,
) -> Result<axum::Json<LeadPage>, Problem> {
    let (page_size, page_token) = Paging {
        page_size: query.page_size,
        page_token: query.page_token,
    }
    .parts()?;
    let lead_state = match query.state.as_deref() {
        None | Some("") => LeadState::Unspecified,
        Some(name) => LeadState::from_str_name(name)
            .filter(|s| *s != LeadState::Unspecified)
            .ok_or_else(|| Problem::invalid("state", "not a lead state (LEAD_STATE_...)"))?,
    };
    let mut client = LeadServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListLeadsRequest {
            page_size,
            page_token,
            state: lead_state as i32,
        },
    );
    let page = client.list_leads(request).await?.into_inner();
    Ok(axum::Json(LeadPage {
        leads: page.leads.into_iter().map(Lead::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Gets a lead offered to or accepted by the partner.
#[utoipa::path(get, path = "/v1/leads/{leadId}", tag = "sales",
    params(("leadId" = String, Path, description = "The lead's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The lead", body = Lead),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_lead(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(lead_id): Path<String>,
) -> Result<axum::Json<Lead>, Problem> {
    let name = lead_name(&lead_id)?;
    let mut client = LeadServiceClient::new(state.partner.clone());
    let request = state.request(&caller, GetLeadRequest { name });
    Ok(axum::Json(client.get_lead(request).await?.into_inner().into()))
}

/// Accepts a lead offered to the partner, before its deadline (409 after it, or
/// when the partner has no room for it).
#[utoipa::path(post, path = "/v1/leads/{leadId}/accept", tag = "sales",
    params(("leadId" = String, Path, description = "The lead's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The accepted lead", body = Lead),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn accept_lead(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(lead_id): Path<String>,
) -> Result<axum::Json<Lead>, Problem> {
    let name = lead_name(&lead_id)?;
    let mut client = LeadServiceClient::new(state.partner.clone());
    let request = state.request(&caller, AcceptLeadRequest { name });
    Ok(axum::Json(client.accept_lead(request).await?.into_inner().into()))
}

/// Declines a lead offered to the partner; it is offered to the next eligible
/// partner and never again to this one.
#[utoipa::path(post, path = "/v1/leads/{leadId}/decline", tag = "sales", request_body = Reason,
    params(("leadId" = String, Path, description = "The lead's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The lead as it now stands (no longer the partner's)", body = Lead),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn decline_lead(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(lead_id): Path<String>,
    Json(body): Json<Reason>,
) -> Result<axum::Json<Lead>, Problem> {
    let name = lead_name(&lead_id)?;
    let mut client = LeadServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        DeclineLeadRequest {
            name,
            reason: body.reason,
        },
    );
    Ok(axum::Json(client.decline_lead(request).await?.into_inner().into()))
}

/// The outcome of an accepted lead.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeadOutcome {
    /// Whether it was won.
    pub won: bool,
    /// Why it was lost (required then): 1-500 characters.
    #[serde(default)]
    #[schema(max_length = 500, pattern = "^[ -~]*$")]
    pub reason: String,
}

/// Reports the outcome of a lead the partner accepted: won, or lost with a reason.
#[utoipa::path(post, path = "/v1/leads/{leadId}/outcome", tag = "sales", request_body = LeadOutcome,
    params(("leadId" = String, Path, description = "The lead's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The won or lost lead", body = Lead),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report_lead_outcome(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(lead_id): Path<String>,
    Json(body): Json<LeadOutcome>,
) -> Result<axum::Json<Lead>, Problem> {
    let name = lead_name(&lead_id)?;
    let mut client = LeadServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ReportLeadOutcomeRequest {
            name,
            won: body.won,
            reason: body.reason,
        },
    );
    Ok(axum::Json(
        client.report_lead_outcome(request).await?.into_inner().into(),
    ))
}
