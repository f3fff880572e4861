//! Deal locks (rights protection): the partner registers a customer, an
//! opportunity or an order as locked to it, lists and reads its own locks and
//! releases one. A duplicate of another partner's lock is a 409 that never names
//! the holder; extension is the brand's, not the partner's.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use retail_proto::partner::deal_service_client::DealServiceClient;
use retail_proto::partner::{
    DealLockState, DealSubjectKind, GetDealLockRequest, ListDealLocksRequest, RegisterDealLockRequest,
    ReleaseDealLockRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Customer, Reason, uuid_id};
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query};
use crate::problem::Problem;
use crate::routes::orders::idempotency_key;
use crate::routes::{Paging, time};

/// What a lock protects.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum SubjectKind {
    #[serde(rename = "DEAL_SUBJECT_KIND_CUSTOMER")]
    Customer,
    #[serde(rename = "DEAL_SUBJECT_KIND_OPPORTUNITY")]
    Opportunity,
    #[serde(rename = "DEAL_SUBJECT_KIND_ORDER")]
    Order,
}

/// A deal lock of the partner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DealLock {
    /// `partners/{partnerId}/dealLocks/{dealLockId}`.
    pub name: String,
    pub deal_lock_id: String,
    /// `DEAL_SUBJECT_KIND_CUSTOMER`, `_OPPORTUNITY` or `_ORDER`.
    pub subject_kind: String,
    /// The opportunity or order it protects; empty for a customer.
    pub subject_ref: String,
    pub customer: Option<Customer>,
    /// `DEAL_LOCK_STATE_ACTIVE`, `_RELEASED` or `_EXPIRED`.
    pub state: String,
    /// The principal that registered it.
    pub registered_by: String,
    pub create_time: Option<String>,
    /// When it runs out.
    pub expire_time: Option<String>,
    /// Whether the brand extended it (once at most).
    pub extended: bool,
    pub extension_reason: String,
    /// When it was released or expired.
    pub end_time: Option<String>,
    pub end_reason: String,
}

impl From<retail_proto::partner::DealLock> for DealLock {
    fn from(l: retail_proto::partner::DealLock) -> Self {
        Self {
            subject_kind: l.subject_kind().as_str_name().to_owned(),
            state: l.state().as_str_name().to_owned(),
            deal_lock_id: l.name.rsplit('/').next().unwrap_or_default().to_owned(),
            name: l.name,
            subject_ref: l.subject_ref,
            customer: l.customer.map(Customer::from),
            registered_by: l.registered_by,
            create_time: time(l.create_time),
            expire_time: time(l.expire_time),
            extended: l.extended,
            extension_reason: l.extension_reason,
            end_time: time(l.end_time),
            end_reason: l.end_reason,
        }
    }
}

/// A lock to register for the caller's partner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDealLock {
    pub subject_kind: SubjectKind,
    /// The opportunity or order it protects (required for those, empty for a
    /// customer): one line of at most 100 characters.
    #[serde(default)]
    #[schema(max_length = 100, pattern = "^[ -~]*$")]
    pub subject_ref: String,
    pub customer: Customer,
}

fn lock_name(caller: &Caller, id: &str) -> String {
    format!("partners/{}/dealLocks/{id}", caller.partner_id)
}

/// Registers a lock for the partner. The first valid registration of a customer
/// wins; a customer already locked to another partner is a 409 that does not
/// name it. With an `Idempotency-Key` a retry returns the first answer.
#[utoipa::path(post, path = "/v1/partner/dealLocks", tag = "sales", request_body = NewDealLock,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$")),
    responses(
        (status = 201, description = "The active lock", body = DealLock),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register_deal_lock(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewDealLock>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let kind = match body.subject_kind {
        SubjectKind::Customer => DealSubjectKind::Customer,
        SubjectKind::Opportunity => DealSubjectKind::Opportunity,
        SubjectKind::Order => DealSubjectKind::Order,
    };
    let mut client = DealServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        RegisterDealLockRequest {
            parent: format!("partners/{}", caller.partner_id),
            deal_lock: Some(retail_proto::partner::DealLock {
                subject_kind: kind as i32,
                subject_ref: body.subject_ref,
                customer: Some(body.customer.into()),
                ..Default::default()
            }),
            request_id,
        },
    );
    let lock = client
        .register_deal_lock(request)
        .await
        .map_err(|s| Problem::from_status(&s, "deal_lock"))?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(DealLock::from(lock))).into_response())
}

/// Filters and page of the lock list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DealLockQuery {
    /// At most this many; default 50, at most 500.
    #[param(minimum = 0, maximum = 500)]
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
    /// Only locks in this state.
    #[param(pattern = "^DEAL_LOCK_STATE_(ACTIVE|RELEASED|EXPIRED)$")]
    pub state: Option<String>,
}

/// A page of locks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DealLockPage {
    pub deal_locks: Vec<DealLock>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Lists the partner's own locks, newest first.
#[utoipa::path(get, path = "/v1/partner/dealLocks", tag = "sales", params(DealLockQuery),
    responses(
        (status = 200, description = "A page of locks", body = DealLockPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_deal_locks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<DealLockQuery>,
) -> Result<axum::Json<DealLockPage>, Problem> {
    let (page_size, page_token) = Paging {
        page_size: query.page_size,
        page_token: query.page_token,
    }
    .parts()?;
    let lock_state = match query.state.as_deref() {
        None | Some("") => DealLockState::Unspecified,
        Some(name) => DealLockState::from_str_name(name)
            .filter(|s| *s != DealLockState::Unspecified)
            .ok_or_else(|| Problem::invalid("state", "not a lock state (DEAL_LOCK_STATE_...)"))?,
    };
    let mut client = DealServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListDealLocksRequest {
            parent: format!("partners/{}", caller.partner_id),
            page_size,
            page_token,
            state: lock_state as i32,
        },
    );
    let page = client.list_deal_locks(request).await?.into_inner();
    Ok(axum::Json(DealLockPage {
        deal_locks: page.deal_locks.into_iter().map(DealLock::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Gets a lock of the partner.
#[utoipa::path(get, path = "/v1/partner/dealLocks/{dealLockId}", tag = "sales",
    params(("dealLockId" = String, Path, description = "The lock's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The lock", body = DealLock),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_deal_lock(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(lock_id): Path<String>,
) -> Result<axum::Json<DealLock>, Problem> {
    let id = uuid_id("dealLockId", &lock_id)?;
    let mut client = DealServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        GetDealLockRequest {
            name: lock_name(&caller, &id),
        },
    );
    Ok(axum::Json(client.get_deal_lock(request).await?.into_inner().into()))
}

/// Releases an active lock of the partner; a lock no longer active is a 409.
#[utoipa::path(post, path = "/v1/partner/dealLocks/{dealLockId}/release", tag = "sales", request_body = Reason,
    params(("dealLockId" = String, Path, description = "The lock's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The released lock", body = DealLock),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn release_deal_lock(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(lock_id): Path<String>,
    Json(body): Json<Reason>,
) -> Result<axum::Json<DealLock>, Problem> {
    let id = uuid_id("dealLockId", &lock_id)?;
    let mut client = DealServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ReleaseDealLockRequest {
            name: lock_name(&caller, &id),
            reason: body.reason,
        },
    );
    Ok(axum::Json(client.release_deal_lock(request).await?.into_inner().into()))
}
