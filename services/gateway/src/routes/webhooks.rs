//! The partner's webhook subscriptions and their deliveries, served from the
//! gateway's own database (no service behind it).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use retail_kit::error::ServiceError;
use retail_kit::paging::Page;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Paging;
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query, check_id};
use crate::problem::{FieldViolation, Problem};
use crate::webhooks::domain::{self, EventType};
use crate::webhooks::store::{attempt, delivery, subscription};
use crate::webhooks::{DeliveryView, NewSubscription, Webhooks, rfc3339};

type Hooks = Arc<Webhooks>;

/// The routes, with the webhooks' use cases at hand.
pub fn routes(webhooks: Hooks) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/webhooks/subscriptions",
            get(list_subscriptions).post(create_subscription),
        )
        .route(
            "/v1/webhooks/subscriptions/{subscriptionId}",
            get(get_subscription).delete(delete_subscription),
        )
        .route(
            "/v1/webhooks/subscriptions/{subscriptionId}/rotateSecret",
            post(rotate_secret),
        )
        .route(
            "/v1/webhooks/subscriptions/{subscriptionId}/deliveries",
            get(list_deliveries),
        )
        .route(
            "/v1/webhooks/subscriptions/{subscriptionId}/deliveries/{deliveryId}",
            get(get_delivery),
        )
        .route(
            "/v1/webhooks/subscriptions/{subscriptionId}/deliveries/{deliveryId}/replay",
            post(replay_delivery),
        )
        .layer(Extension(webhooks))
}

fn problem(err: ServiceError) -> Problem {
    match err {
        ServiceError::NotFound { entity, .. } => Problem::not_found(entity),
        ServiceError::InvalidArgument(violations) => {
            let mut problem = Problem::new(StatusCode::BAD_REQUEST, "invalid request");
            problem.violations = violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: crate::problem::json_path(&v.field, ""),
                    description: v.description,
                })
                .collect();
            problem
        }
        other => Problem::from(tonic::Status::from(other)),
    }
}

fn page(paging: &Paging, filter: &str) -> Result<Page, Problem> {
    let (size, token) = paging.parts()?;
    Page::parse(size, &token, filter).map_err(|_| Problem::invalid("pageToken", "is not a token returned by this list"))
}

/// A webhook subscription to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWebhookSubscription {
    /// Where events are POSTed: an `http://` or `https://` URL, at most 2048
    /// characters, without user information or fragment.
    #[schema(max_length = 2048, example = "https://hooks.example.com/retail")]
    pub url: String,
    /// The event types to send, at least one.
    #[schema(value_type = Vec<WebhookEventType>, min_items = 1)]
    pub event_types: Vec<String>,
    /// A note for the partner's own use, at most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
}

/// An event type a subscription can name (parsed by the route, so that an unknown
/// one is a violation naming its index).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub enum WebhookEventType {
    #[schema(rename = "order.shipped")]
    OrderShipped,
    #[schema(rename = "order.delivered")]
    OrderDelivered,
    #[schema(rename = "order.returned")]
    OrderReturned,
    #[schema(rename = "lead.assigned")]
    LeadAssigned,
    #[schema(rename = "lock.expired")]
    LockExpired,
    #[schema(rename = "target.attained")]
    TargetAttained,
    #[schema(rename = "redemption.decided")]
    RedemptionDecided,
}

/// A webhook subscription (its secret is shown only when created or rotated).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSubscription {
    /// `webhooks/subscriptions/{subscriptionId}`.
    pub name: String,
    pub subscription_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub create_time: String,
    /// When the signing secret was last issued.
    pub secret_rotate_time: String,
}

impl From<subscription::Model> for WebhookSubscription {
    fn from(s: subscription::Model) -> Self {
        Self {
            name: format!("webhooks/subscriptions/{}", s.id),
            subscription_id: s.id,
            url: s.url,
            event_types: domain::split_types(&s.event_types)
                .into_iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            description: s.description,
            create_time: rfc3339(s.created_at),
            secret_rotate_time: rfc3339(s.secret_rotated_at),
        }
    }
}

/// A subscription with its signing secret, shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSubscriptionWithSecret {
    pub subscription: WebhookSubscription,
    /// The HMAC-SHA256 key of `Webhook-Signature`; it cannot be read again, only
    /// rotated.
    pub secret: String,
}

impl std::fmt::Debug for WebhookSubscriptionWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSubscriptionWithSecret")
            .field("subscription", &self.subscription.subscription_id)
            .finish_non_exhaustive()
    }
}

fn with_secret(s: subscription::Model) -> WebhookSubscriptionWithSecret {
    let secret = s.secret.clone();
    WebhookSubscriptionWithSecret {
        subscription: s.into(),
        secret,
    }
}

/// Parses a new subscription, every wrong field at once.
fn parse_new(body: NewWebhookSubscription, allow_private: bool) -> Result<NewSubscription, Problem> {
    let mut violations = Vec::new();
    let url = body.url.trim().to_owned();
    if let Err(domain::BadUrl(why)) = domain::check_url(&url, allow_private) {
        violations.push(FieldViolation {
            field: "url".into(),
            description: why.into(),
        });
    }
    let mut event_types = Vec::new();
    if body.event_types.is_empty() {
        violations.push(FieldViolation {
            field: "eventTypes".into(),
            description: "must name at least one event type".into(),
        });
    }
    if body.event_types.len() > EventType::ALL.len() * 4 {
        violations.push(FieldViolation {
            field: "eventTypes".into(),
            description: "too many event types".into(),
        });
    } else {
        for (i, name) in body.event_types.iter().enumerate() {
            match EventType::parse(name) {
                Some(t) => event_types.push(t),
                None => violations.push(FieldViolation {
                    field: format!("eventTypes[{i}]"),
                    description: format!(
                        "not an event type (one of {})",
                        EventType::ALL.map(EventType::as_str).join(", ")
                    ),
                }),
            }
        }
    }
    if body.description.chars().count() > 500 || body.description.chars().any(char::is_control) {
        violations.push(FieldViolation {
            field: "description".into(),
            description: "must be at most 500 characters without control characters".into(),
        });
    }
    if !violations.is_empty() {
        let mut problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid request: the subscription is not valid",
        );
        problem.violations = violations;
        return Err(problem);
    }
    Ok(NewSubscription {
        url,
        event_types,
        description: body.description,
    })
}

/// Subscribes a URL to event types. The answer carries the signing secret, which
/// is not shown again.
#[utoipa::path(post, path = "/v1/webhooks/subscriptions", tag = "webhooks", request_body = NewWebhookSubscription,
    responses(
        (status = 201, description = "The subscription and its secret", body = WebhookSubscriptionWithSecret),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_subscription(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<NewWebhookSubscription>,
) -> Result<Response, Problem> {
    let new = parse_new(body, hooks.settings.allow_private_addresses)?;
    let created = hooks.create(&caller.partner_id, new).await.map_err(problem)?;
    Ok((StatusCode::CREATED, axum::Json(with_secret(created))).into_response())
}

/// A page of subscriptions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSubscriptionPage {
    pub subscriptions: Vec<WebhookSubscription>,
    pub next_page_token: String,
}

/// Lists the partner's webhook subscriptions, oldest first.
#[utoipa::path(get, path = "/v1/webhooks/subscriptions", tag = "webhooks", params(Paging),
    responses(
        (status = 200, description = "A page of subscriptions", body = WebhookSubscriptionPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_subscriptions(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<WebhookSubscriptionPage>, Problem> {
    let page = page(&paging, "subscriptions")?;
    let (rows, next) = hooks.list(&caller.partner_id, &page).await.map_err(problem)?;
    Ok(axum::Json(WebhookSubscriptionPage {
        subscriptions: rows.into_iter().map(WebhookSubscription::from).collect(),
        next_page_token: next,
    }))
}

/// Gets one of the partner's webhook subscriptions.
#[utoipa::path(get, path = "/v1/webhooks/subscriptions/{subscriptionId}", tag = "webhooks",
    params(("subscriptionId" = String, Path, description = "The subscription's id")),
    responses(
        (status = 200, description = "The subscription", body = WebhookSubscription),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_subscription(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookSubscription>, Problem> {
    check_id("subscriptionId", &id)?;
    let s = hooks.get(&caller.partner_id, &id).await.map_err(problem)?;
    Ok(axum::Json(s.into()))
}

/// Deletes a webhook subscription and its deliveries; nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/webhooks/subscriptions/{subscriptionId}", tag = "webhooks",
    params(("subscriptionId" = String, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_subscription(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    check_id("subscriptionId", &id)?;
    hooks.delete(&caller.partner_id, &id).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new signing secret; deliveries from now on are signed with it. The
/// answer carries the secret, which is not shown again.
#[utoipa::path(post, path = "/v1/webhooks/subscriptions/{subscriptionId}/rotateSecret", tag = "webhooks",
    params(("subscriptionId" = String, Path, description = "The subscription's id")),
    responses(
        (status = 200, description = "The subscription and its new secret", body = WebhookSubscriptionWithSecret),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate_secret(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookSubscriptionWithSecret>, Problem> {
    check_id("subscriptionId", &id)?;
    let s = hooks.rotate_secret(&caller.partner_id, &id).await.map_err(problem)?;
    Ok(axum::Json(with_secret(s)))
}

/// One try of a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttempt {
    /// 1, 2, ... over every round.
    pub number: i32,
    pub attempt_time: String,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<i32>,
    /// Why there was no answer (timed out, connection refused, ...).
    pub error: Option<String>,
    #[serde(serialize_with = "super::i64_as_string")]
    #[schema(value_type = String)]
    pub duration_ms: i64,
    /// Whether the receiver accepted it (a 2xx status).
    pub accepted: bool,
}

impl From<attempt::Model> for WebhookAttempt {
    fn from(a: attempt::Model) -> Self {
        Self {
            number: a.number,
            attempt_time: rfc3339(a.attempted_at),
            accepted: a.status_code.is_some_and(|s| (200..300).contains(&s)),
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

/// One event for one subscription.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// `webhooks/subscriptions/{subscriptionId}/deliveries/{deliveryId}`.
    pub name: String,
    pub delivery_id: String,
    /// The event's id: `Webhook-Id` and the body's `id`, the same on every attempt.
    pub event_id: String,
    pub event_type: String,
    /// `pending` (being tried), `delivered` or `dead` (every attempt of its round
    /// failed; replay it to try again).
    pub state: String,
    pub attempt_count: i32,
    /// When the next attempt is due, while pending.
    pub next_attempt_time: Option<String>,
    pub create_time: String,
    pub deliver_time: Option<String>,
    /// The JSON body every attempt sends.
    pub payload: serde_json::Value,
    pub attempts: Vec<WebhookAttempt>,
}

impl From<DeliveryView> for WebhookDelivery {
    fn from(v: DeliveryView) -> Self {
        let d: delivery::Model = v.delivery;
        Self {
            name: format!("webhooks/subscriptions/{}/deliveries/{}", d.subscription_id, d.id),
            delivery_id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            next_attempt_time: (d.state == crate::webhooks::store::PENDING).then(|| rfc3339(d.next_attempt_at)),
            state: d.state,
            attempt_count: d.attempt_count,
            create_time: rfc3339(d.created_at),
            deliver_time: d.delivered_at.map(rfc3339),
            payload: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
            attempts: v.attempts.into_iter().map(WebhookAttempt::from).collect(),
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveryPage {
    pub deliveries: Vec<WebhookDelivery>,
    pub next_page_token: String,
}

/// Lists a subscription's deliveries, newest first, with their attempts.
#[utoipa::path(get, path = "/v1/webhooks/subscriptions/{subscriptionId}/deliveries", tag = "webhooks",
    params(("subscriptionId" = String, Path, description = "The subscription's id"), Paging),
    responses(
        (status = 200, description = "A page of deliveries", body = WebhookDeliveryPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_deliveries(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<WebhookDeliveryPage>, Problem> {
    check_id("subscriptionId", &id)?;
    let page = page(&paging, &format!("deliveries {id}"))?;
    let (rows, next) = hooks
        .deliveries(&caller.partner_id, &id, &page)
        .await
        .map_err(problem)?;
    Ok(axum::Json(WebhookDeliveryPage {
        deliveries: rows.into_iter().map(WebhookDelivery::from).collect(),
        next_page_token: next,
    }))
}

/// Gets one delivery of a subscription with its attempts.
#[utoipa::path(get, path = "/v1/webhooks/subscriptions/{subscriptionId}/deliveries/{deliveryId}", tag = "webhooks",
    params(
        ("subscriptionId" = String, Path, description = "The subscription's id"),
        ("deliveryId" = String, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 200, description = "The delivery", body = WebhookDelivery),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_delivery(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<axum::Json<WebhookDelivery>, Problem> {
    check_id("subscriptionId", &id)?;
    check_id("deliveryId", &delivery_id)?;
    let v = hooks
        .delivery(&caller.partner_id, &id, &delivery_id)
        .await
        .map_err(problem)?;
    Ok(axum::Json(v.into()))
}

/// Sends a delivery again - a dead-lettered one, or a delivered one the receiver
/// lost - with the same id and body, in a new round of attempts. One still being
/// tried is answered as it is.
#[utoipa::path(post, path = "/v1/webhooks/subscriptions/{subscriptionId}/deliveries/{deliveryId}/replay", tag = "webhooks",
    params(
        ("subscriptionId" = String, Path, description = "The subscription's id"),
        ("deliveryId" = String, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 202, description = "The delivery, pending again", body = WebhookDelivery),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn replay_delivery(
    Extension(hooks): Extension<Hooks>,
    Extension(caller): Extension<Caller>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    check_id("subscriptionId", &id)?;
    check_id("deliveryId", &delivery_id)?;
    let v = hooks
        .replay(&caller.partner_id, &id, &delivery_id)
        .await
        .map_err(problem)?;
    Ok((StatusCode::ACCEPTED, axum::Json(WebhookDelivery::from(v))).into_response())
}
