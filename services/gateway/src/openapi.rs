//! The OpenAPI 3.1 document, generated from the routes and their types: what is
//! described is what is served.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::problem::{FieldViolation, Problem};
use crate::routes::sales::SalesDoc;
use crate::routes::{self, Money};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Retail suite partner API",
        description = "The franchise partners' REST/JSON API. Authenticate with an API key \
            (`X-Api-Key: rk_...` or `Authorization: Bearer rk_...`) or a partner user's bearer token; \
            every request acts for the caller's partner. Errors are RFC 9457 problem documents.",
        version = "1"
    ),
    paths(
        healthz,
        document,
        routes::partner::get_partner,
        routes::partner::list_sales_reps,
        routes::programme::list_targets,
        routes::programme::get_target,
        routes::programme::get_partner_ledger,
        routes::programme::list_ledger_entries,
        routes::programme::request_redemption,
        routes::programme::list_redemptions,
        routes::programme::get_redemption,
        routes::programme::get_rep_ledger,
        routes::programme::list_catalog_items,
        routes::policy::evaluate_policy,
        routes::policy::request_special_discount,
        routes::policy::list_special_discounts,
        routes::policy::get_special_discount,
        routes::products::list_products,
        routes::products::get_product,
        routes::orders::place_order,
        routes::orders::list_orders,
        routes::orders::get_order,
        routes::orders::pay_order,
        routes::orders::cancel_order,
        routes::orders::track_order,
        routes::orders::request_return,
        routes::webhooks::create_subscription,
        routes::webhooks::list_subscriptions,
        routes::webhooks::get_subscription,
        routes::webhooks::delete_subscription,
        routes::webhooks::rotate_secret,
        routes::webhooks::list_deliveries,
        routes::webhooks::get_delivery,
        routes::webhooks::replay_delivery,
    ),
    components(schemas(Problem, FieldViolation, Money, Health)),
    modifiers(&Security, &SalesDoc),
    security(("apiKey" = []), ("bearer" = [])),
)]
#[derive(Debug)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Whether the gateway serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Liveness and readiness of the gateway.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "Serving", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
