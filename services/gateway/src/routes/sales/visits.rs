//! The partner's reps' visits at customers (check in, check out, list; the dwell
//! time is taken from channel-partner's clock) and a rep's home screen: current
//! targets, open opportunities per stage, open leads, this week's visits and the
//! overdue key customers.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use retail_proto::partner::visit_service_client::VisitServiceClient;
use retail_proto::partner::{CheckInRequest, CheckOutRequest, GetRepHomeRequest, ListVisitsRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Customer, uuid_id, uuid_name};
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query};
use crate::problem::Problem;
use crate::routes::orders::idempotency_key;
use crate::routes::programme::Target;
use crate::routes::{Paging, i64_as_string, time};

/// A visit of a rep at a customer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Visit {
    /// `partners/{partnerId}/visits/{visitId}`.
    pub name: String,
    pub visit_id: String,
    /// `salesReps/{salesRepId}`.
    pub sales_rep: String,
    /// Name and region.
    pub customer: Option<Customer>,
    /// Free text, or empty when the visit has coordinates.
    pub place: String,
    /// Degrees; 0 with a place.
    pub latitude: f64,
    /// Degrees; 0 with a place.
    pub longitude: f64,
    pub check_in_time: Option<String>,
    /// Not set while the visit is open.
    pub check_out_time: Option<String>,
    /// Check-out minus check-in in seconds; 0 while open.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub dwell_seconds: i64,
}

impl From<retail_proto::partner::Visit> for Visit {
    fn from(v: retail_proto::partner::Visit) -> Self {
        Self {
            visit_id: v.name.rsplit('/').next().unwrap_or_default().to_owned(),
            name: v.name,
            sales_rep: v.sales_rep,
            customer: v.customer.map(Customer::from),
            place: v.place,
            latitude: v.latitude,
            longitude: v.longitude,
            check_in_time: time(v.check_in_time),
            check_out_time: time(v.check_out_time),
            dwell_seconds: v.dwell_seconds,
        }
    }
}

/// A customer the rep checks in at.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VisitCustomer {
    /// One line of 1-200 characters with a letter or digit.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[ -~]*[A-Za-z0-9][ -~]*$",
        example = "Trailfox Outdoor GmbH"
    )]
    pub display_name: String,
    /// One line of 1-32 characters with a letter or digit.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[ -~]*[A-Za-z0-9][ -~]*$",
        example = "DE-BE"
    )]
    pub region: String,
}

/// A check-in: the rep, the customer, and the place as text or as coordinates
/// (both `latitude` and `longitude`, then no `place`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewVisit {
    /// `salesReps/{salesRepId}` of the partner.
    #[schema(pattern = "^salesReps/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub sales_rep: String,
    pub customer: VisitCustomer,
    /// Where, one line of 1-500 characters; or leave it out and give coordinates.
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = "^[ -~]*[!-~][ -~]*$",
        example = "Store front, Kastanienallee 12"
    )]
    pub place: Option<String>,
    /// Degrees, -90 to 90.
    #[serde(default)]
    #[schema(minimum = -90, maximum = 90)]
    pub latitude: Option<f64>,
    /// Degrees, -180 to 180.
    #[serde(default)]
    #[schema(minimum = -180, maximum = 180)]
    pub longitude: Option<f64>,
}

/// Checks a rep of the partner in at a customer. With an `Idempotency-Key` a
/// retry returns the first answer.
#[utoipa::path(post, path = "/v1/partner/visits", tag = "sales", request_body = NewVisit,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$")),
    responses(
        (status = 201, description = "The open visit", body = Visit),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn check_in(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewVisit>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let sales_rep = uuid_name("salesRep", &body.sales_rep, "salesReps")?;
    if body.latitude.is_some() != body.longitude.is_some() {
        return Err(Problem::invalid(
            if body.latitude.is_some() {
                "longitude"
            } else {
                "latitude"
            },
            "latitude and longitude go together",
        ));
    }
    let mut client = VisitServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        CheckInRequest {
            parent: format!("partners/{}", caller.partner_id),
            visit: Some(retail_proto::partner::Visit {
                sales_rep,
                customer: Some(retail_proto::partner::Customer {
                    display_name: body.customer.display_name,
                    region: body.customer.region,
                    tax_id: String::new(),
                }),
                place: body.place.unwrap_or_default(),
                latitude: body.latitude.unwrap_or_default(),
                longitude: body.longitude.unwrap_or_default(),
                ..Default::default()
            }),
            request_id,
        },
    );
    let visit = client
        .check_in(request)
        .await
        .map_err(|s| Problem::from_status(&s, "visit"))?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(Visit::from(visit))).into_response())
}

/// Checks a visit of the partner out; a visit checked out already is a 409.
#[utoipa::path(post, path = "/v1/partner/visits/{visitId}/checkOut", tag = "sales",
    params(("visitId" = String, Path, description = "The visit's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The closed visit with its dwell time", body = Visit),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn check_out(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(visit_id): Path<String>,
) -> Result<axum::Json<Visit>, Problem> {
    let id = uuid_id("visitId", &visit_id)?;
    let mut client = VisitServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        CheckOutRequest {
            name: format!("partners/{}/visits/{id}", caller.partner_id),
        },
    );
    Ok(axum::Json(client.check_out(request).await?.into_inner().into()))
}

/// Filters and page of the visit list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VisitQuery {
    /// At most this many; default 50, at most 500.
    #[param(minimum = 0, maximum = 500)]
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
    /// Only this rep's visits: `salesReps/{salesRepId}`.
    #[param(pattern = "^salesReps/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub sales_rep: Option<String>,
}

/// A page of visits.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitPage {
    /// Newest first.
    pub visits: Vec<Visit>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Lists the visits of the partner's reps (a rep's own user sees only his),
/// newest first.
#[utoipa::path(get, path = "/v1/partner/visits", tag = "sales", params(VisitQuery),
    responses(
        (status = 200, description = "A page of visits", body = VisitPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_visits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<VisitQuery>,
) -> Result<axum::Json<VisitPage>, Problem> {
    let (page_size, page_token) = Paging {
        page_size: query.page_size,
        page_token: query.page_token,
    }
    .parts()?;
    let sales_rep = match query.sales_rep.as_deref() {
        None | Some("") => String::new(),
        Some(raw) => super::own_rep(&state, &caller, raw).await?,
    };
    let mut client = VisitServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListVisitsRequest {
            parent: format!("partners/{}", caller.partner_id),
            sales_rep,
            page_size,
            page_token,
        },
    );
    let page = client.list_visits(request).await?.into_inner();
    Ok(axum::Json(VisitPage {
        visits: page.visits.into_iter().map(Visit::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Open opportunities of the rep in one stage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageCount {
    /// `PIPELINE_STAGE_...`.
    pub stage: String,
    pub count: i32,
    /// Their amounts summed, minor units.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub amount_minor: i64,
}

/// A key customer whose visit is due.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCustomer {
    /// `partners/{partnerId}/keyCustomers/{keyCustomerId}`.
    pub name: String,
    pub customer: Option<Customer>,
    /// Days between visits.
    pub cycle_days: i32,
    /// The last check-in at the customer; not set if never visited.
    pub last_visit_time: Option<String>,
}

/// A rep's home screen.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepHome {
    /// `salesReps/{salesRepId}`.
    pub sales_rep: String,
    /// The rep's targets whose period contains now, with progress.
    pub targets: Vec<Target>,
    /// Open opportunities per stage (stages without any left out).
    pub open_opportunities: Vec<StageCount>,
    /// Open (offered or accepted) leads of the rep's partner.
    pub open_leads: i32,
    /// Check-ins since Monday 00:00 UTC.
    pub visits_this_week: i32,
    /// The partner's key customers whose visit is overdue.
    pub overdue_key_customers: Vec<KeyCustomer>,
}

/// A rep's home screen in one call.
#[utoipa::path(get, path = "/v1/salesReps/{salesRepId}/home", tag = "sales",
    params(("salesRepId" = String, Path, description = "The rep's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The rep's home screen", body = RepHome),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_rep_home(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rep_id): Path<String>,
) -> Result<axum::Json<RepHome>, Problem> {
    let id = uuid_id("salesRepId", &rep_id)?;
    let mut client = VisitServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        GetRepHomeRequest {
            sales_rep: format!("salesReps/{id}"),
        },
    );
    let home = client.get_rep_home(request).await?.into_inner();
    Ok(axum::Json(RepHome {
        sales_rep: home.sales_rep,
        targets: home.targets.into_iter().map(Target::from).collect(),
        open_opportunities: home
            .open_opportunities
            .into_iter()
            .map(|s| StageCount {
                stage: s.stage().as_str_name().to_owned(),
                count: s.count,
                amount_minor: s.amount_minor,
            })
            .collect(),
        open_leads: home.open_leads,
        visits_this_week: home.visits_this_week,
        overdue_key_customers: home
            .overdue_key_customers
            .into_iter()
            .map(|k| KeyCustomer {
                name: k.name,
                customer: k.customer.map(Customer::from),
                cycle_days: k.cycle_days,
                last_visit_time: time(k.last_visit_time),
            })
            .collect(),
    }))
}
