//! The partner programme: targets and their progress, the points ledgers (the
//! partner's collective one and its reps'), the redemption catalog and the
//! partner's redemptions. Channel-partner scopes each call to the caller's partner:
//! another partner's target, rep or redemption is not found.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use retail_proto::partner::incentive_service_client::IncentiveServiceClient;
use retail_proto::partner::target_service_client::TargetServiceClient;
use retail_proto::partner::{
    GetLedgerRequest, GetRedemptionRequest, GetTargetRequest, ListCatalogItemsRequest, ListLedgerEntriesRequest,
    ListRedemptionsRequest, ListTargetsRequest, RequestRedemptionRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::orders::idempotency_key;
use super::{Paging, i64_as_string, id_of, time};
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query, check_id};
use crate::problem::Problem;

/// A sales target and the progress towards it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// `targets/{targetId}`.
    pub name: String,
    pub target_id: String,
    /// `partners/{partnerId}` or `salesReps/{salesRepId}`.
    pub subject: String,
    /// `PERIOD_KIND_MONTH`, `_QUARTER` or `_YEAR`.
    pub period_kind: String,
    /// First day of the period, `YYYY-MM-DD`.
    pub period_start: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub amount_minor: i64,
    pub currency_code: String,
    /// Attributed paid orders minus refunds in the period.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub progress_minor: i64,
    /// Progress in basis points of the amount.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub attainment_bp: i64,
    /// Place among the targets of the same period (1 is first).
    pub rank: i32,
    pub peer_count: i32,
    /// Progress at the period's end at the run rate so far.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub projected_minor: i64,
    pub attain_time: Option<String>,
    pub create_time: Option<String>,
}

impl From<retail_proto::partner::Target> for Target {
    fn from(t: retail_proto::partner::Target) -> Self {
        Self {
            period_kind: t.period_kind().as_str_name().to_owned(),
            target_id: id_of(&t.name, "targets").to_owned(),
            name: t.name,
            subject: t.subject,
            period_start: t.period_start,
            amount_minor: t.amount_minor,
            currency_code: t.currency_code,
            progress_minor: t.progress_minor,
            attainment_bp: t.attainment_bp,
            rank: t.rank,
            peer_count: t.peer_count,
            projected_minor: t.projected_minor,
            attain_time: time(t.attain_time),
            create_time: time(t.create_time),
        }
    }
}

/// A page of targets.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetPage {
    pub targets: Vec<Target>,
    pub next_page_token: String,
}

/// Lists the partner's own targets with their progress.
#[utoipa::path(get, path = "/v1/partner/targets", tag = "programme", params(Paging),
    responses(
        (status = 200, description = "A page of targets", body = TargetPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_targets(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<TargetPage>, Problem> {
    let (page_size, page_token) = paging.parts()?;
    let mut client = TargetServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListTargetsRequest {
            page_size,
            page_token,
            subject: format!("partners/{}", caller.partner_id),
        },
    );
    let page = client
        .list_targets(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(TargetPage {
        targets: page.targets.into_iter().map(Target::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Gets a target of the partner or of one of its reps, with its progress.
#[utoipa::path(get, path = "/v1/targets/{targetId}", tag = "programme",
    params(("targetId" = String, Path, description = "The target's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The target", body = Target),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_target(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(target_id): Path<String>,
) -> Result<axum::Json<Target>, Problem> {
    check_id("targetId", &target_id)?;
    let mut client = TargetServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        GetTargetRequest {
            name: format!("targets/{target_id}"),
        },
    );
    Ok(axum::Json(client.get_target(request).await?.into_inner().into()))
}

/// A points ledger.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// `partners/{partnerId}/ledger` or `salesReps/{salesRepId}/ledger`.
    pub name: String,
    /// `LEDGER_KIND_COLLECTIVE` or `LEDGER_KIND_INDIVIDUAL`.
    pub kind: String,
    /// Points that can be redeemed.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub balance: i64,
    /// Points reversed beyond the balance, repaid by later earnings.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub debt: i64,
}

impl From<retail_proto::partner::Ledger> for Ledger {
    fn from(l: retail_proto::partner::Ledger) -> Self {
        Self {
            kind: l.kind().as_str_name().to_owned(),
            name: l.name,
            balance: l.balance,
            debt: l.debt,
        }
    }
}

async fn ledger(state: &AppState, caller: &Caller, name: String) -> Result<axum::Json<Ledger>, Problem> {
    let mut client = IncentiveServiceClient::new(state.partner.clone());
    let request = state.request(caller, GetLedgerRequest { name });
    Ok(axum::Json(client.get_ledger(request).await?.into_inner().into()))
}

/// Gets the partner's collective points ledger.
#[utoipa::path(get, path = "/v1/partner/ledger", tag = "programme",
    responses(
        (status = 200, description = "The ledger", body = Ledger),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_partner_ledger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<Ledger>, Problem> {
    let name = format!("partners/{}/ledger", caller.partner_id);
    ledger(&state, &caller, name).await
}

/// Gets a rep's individual points ledger.
#[utoipa::path(get, path = "/v1/salesReps/{salesRepId}/ledger", tag = "programme",
    params(("salesRepId" = String, Path, description = "The rep's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The ledger", body = Ledger),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_rep_ledger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rep_id): Path<String>,
) -> Result<axum::Json<Ledger>, Problem> {
    check_id("salesRepId", &rep_id)?;
    ledger(&state, &caller, format!("salesReps/{rep_id}/ledger")).await
}

/// One change of a ledger.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// `earn`, `action`, `reverse`, `redeem`, `return` or `expire`.
    pub kind: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub points: i64,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub debt_change: i64,
    /// What it came from, for example `order-{id}`.
    pub source: String,
    pub create_time: Option<String>,
}

/// A page of ledger entries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryPage {
    pub entries: Vec<LedgerEntry>,
    pub next_page_token: String,
}

/// Lists the entries of the partner's collective ledger.
#[utoipa::path(get, path = "/v1/partner/ledger/entries", tag = "programme", params(Paging),
    responses(
        (status = 200, description = "A page of entries", body = LedgerEntryPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_ledger_entries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<LedgerEntryPage>, Problem> {
    let (page_size, page_token) = paging.parts()?;
    let mut client = IncentiveServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListLedgerEntriesRequest {
            parent: format!("partners/{}/ledger", caller.partner_id),
            page_size,
            page_token,
        },
    );
    let page = client
        .list_ledger_entries(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(LedgerEntryPage {
        entries: page
            .entries
            .into_iter()
            .map(|e| LedgerEntry {
                kind: e.kind,
                points: e.points,
                debt_change: e.debt_change,
                source: e.source,
                create_time: time(e.create_time),
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

/// An item of the redemption catalog.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogItem {
    /// `catalogItems/{catalogItemId}`: what a redemption names.
    pub name: String,
    /// `CATALOG_CATEGORY_...`.
    pub category: String,
    pub display_name: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub points_price: i64,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub stock: i64,
    pub unlimited_stock: bool,
    /// Which ledgers redeem it.
    pub ledger_kind: String,
}

/// A page of catalog items.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogItemPage {
    pub catalog_items: Vec<CatalogItem>,
    pub next_page_token: String,
}

/// Lists the redemption catalog.
#[utoipa::path(get, path = "/v1/catalogItems", tag = "programme", params(Paging),
    responses(
        (status = 200, description = "A page of items", body = CatalogItemPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_catalog_items(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<CatalogItemPage>, Problem> {
    let (page_size, page_token) = paging.parts()?;
    let mut client = IncentiveServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListCatalogItemsRequest {
            page_size,
            page_token,
            ledger_kind: 0,
        },
    );
    let page = client
        .list_catalog_items(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(CatalogItemPage {
        catalog_items: page
            .catalog_items
            .into_iter()
            .map(|i| CatalogItem {
                category: i.category().as_str_name().to_owned(),
                ledger_kind: i.ledger_kind().as_str_name().to_owned(),
                name: i.name,
                display_name: i.display_name,
                points_price: i.points_price,
                stock: i.stock,
                unlimited_stock: i.unlimited_stock,
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

/// A redemption of points for a catalog item.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redemption {
    /// `{ledger}/redemptions/{redemptionId}`.
    pub name: String,
    pub redemption_id: String,
    pub catalog_item: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub quantity: i64,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub points: i64,
    /// `REDEMPTION_STATE_...`.
    pub state: String,
    pub reason: String,
    pub create_time: Option<String>,
    pub decide_time: Option<String>,
}

impl From<retail_proto::partner::Redemption> for Redemption {
    fn from(r: retail_proto::partner::Redemption) -> Self {
        Self {
            state: r.state().as_str_name().to_owned(),
            redemption_id: r.name.rsplit('/').next().unwrap_or_default().to_owned(),
            name: r.name,
            catalog_item: r.catalog_item,
            quantity: r.quantity,
            points: r.points,
            reason: r.reason,
            create_time: time(r.create_time),
            decide_time: time(r.decide_time),
        }
    }
}

/// A redemption to request from the partner's collective ledger.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRedemption {
    /// `catalogItems/{catalogItemId}`.
    #[schema(pattern = "^catalogItems/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub catalog_item: String,
    /// Units, 1-1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// Requests a redemption from the partner's collective ledger. With an
/// `Idempotency-Key` a retry returns the first answer and takes nothing more.
#[utoipa::path(post, path = "/v1/partner/ledger/redemptions", tag = "programme", request_body = NewRedemption,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$")),
    responses(
        (status = 201, description = "The redemption, points taken", body = Redemption),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn request_redemption(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewRedemption>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut client = IncentiveServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        RequestRedemptionRequest {
            parent: format!("partners/{}/ledger", caller.partner_id),
            redemption: Some(retail_proto::partner::Redemption {
                catalog_item: body.catalog_item,
                quantity: body.quantity,
                ..Default::default()
            }),
            request_id,
        },
    );
    let redemption = client
        .request_redemption(request)
        .await
        .map_err(|s| Problem::from_status(&s, "redemption"))?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(Redemption::from(redemption))).into_response())
}

/// A page of redemptions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedemptionPage {
    pub redemptions: Vec<Redemption>,
    pub next_page_token: String,
}

/// Lists the redemptions of the partner's collective ledger.
#[utoipa::path(get, path = "/v1/partner/ledger/redemptions", tag = "programme", params(Paging),
    responses(
        (status = 200, description = "A page of redemptions", body = RedemptionPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_redemptions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<RedemptionPage>, Problem> {
    let (page_size, page_token) = paging.parts()?;
    let mut client = IncentiveServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        ListRedemptionsRequest {
            parent: format!("partners/{}/ledger", caller.partner_id),
            page_size,
            page_token,
        },
    );
    let page = client
        .list_redemptions(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(RedemptionPage {
        redemptions: page.redemptions.into_iter().map(Redemption::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Gets a redemption of the partner's collective ledger.
#[utoipa::path(get, path = "/v1/partner/ledger/redemptions/{redemptionId}", tag = "programme",
    params(("redemptionId" = String, Path, description = "The redemption's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The redemption", body = Redemption),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_redemption(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(redemption_id): Path<String>,
) -> Result<axum::Json<Redemption>, Problem> {
    check_id("redemptionId", &redemption_id)?;
    let mut client = IncentiveServiceClient::new(state.partner.clone());
    let request = state.request(
        &caller,
        GetRedemptionRequest {
            name: format!("partners/{}/ledger/redemptions/{redemption_id}", caller.partner_id),
        },
    );
    Ok(axum::Json(client.get_redemption(request).await?.into_inner().into()))
}
