//! The caller's partner organisation and its sales reps.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_proto::partner::{GetPartnerRequest, ListSalesRepsRequest};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Paging, etag, id_of, time, with_etag};
use crate::auth::Caller;
use crate::http::{AppState, Query};
use crate::problem::Problem;

/// A partner organisation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Partner {
    /// `partners/{partnerId}`.
    pub name: String,
    pub display_name: String,
    /// `PARTNER_TYPE_DEALER`, `PARTNER_TYPE_AGENT` or `PARTNER_TYPE_FRANCHISEE`.
    #[serde(rename = "type")]
    pub kind: String,
    pub region: String,
    /// `PARTNER_STATE_APPLIED`, `_ACTIVE`, `_SUSPENDED` or `_TERMINATED`.
    pub state: String,
    /// The level's code.
    pub level: String,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

impl From<retail_proto::partner::Partner> for Partner {
    fn from(p: retail_proto::partner::Partner) -> Self {
        Self {
            kind: p.r#type().as_str_name().to_owned(),
            state: p.state().as_str_name().to_owned(),
            name: p.name,
            display_name: p.display_name,
            region: p.region,
            level: p.level,
            create_time: time(p.create_time),
            update_time: time(p.update_time),
        }
    }
}

/// Gets the caller's partner organisation.
#[utoipa::path(get, path = "/v1/partner", tag = "partner",
    responses(
        (status = 200, description = "The caller's organisation", body = Partner,
            headers(("ETag" = String, description = "Version of the organisation"))),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_partner(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    let mut client = PartnerServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        GetPartnerRequest {
            name: format!("partners/{}", caller.partner_id),
        },
    );
    let partner = client.get_partner(request).await?.into_inner();
    let tag = etag(partner.update_time.as_ref());
    Ok(with_etag(Partner::from(partner), tag))
}

/// A sales rep of the partner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesRep {
    /// `salesReps/{salesRepId}`.
    pub name: String,
    /// The rep's id, as used in paths and orders.
    pub sales_rep_id: String,
    pub display_name: String,
    pub create_time: Option<String>,
}

/// A page of sales reps.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesRepPage {
    pub sales_reps: Vec<SalesRep>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Lists the partner's sales reps, oldest first.
#[utoipa::path(get, path = "/v1/partner/salesReps", tag = "partner", params(Paging),
    responses(
        (status = 200, description = "A page of reps", body = SalesRepPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_sales_reps(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<SalesRepPage>, Problem> {
    let (page_size, page_token) = paging.parts()?;
    let mut client = PartnerServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListSalesRepsRequest {
            page_size,
            page_token,
            partner: format!("partners/{}", caller.partner_id),
            brand_only: false,
        },
    );
    let page = client
        .list_sales_reps(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(SalesRepPage {
        sales_reps: page
            .sales_reps
            .into_iter()
            .map(|r| SalesRep {
                sales_rep_id: id_of(&r.name, "salesReps").to_owned(),
                name: r.name,
                display_name: r.display_name,
                create_time: time(r.create_time),
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}
