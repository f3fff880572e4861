//! The HTTP side shared by every route: the state, request ids, timeouts, the JSON,
//! query and path extractors that answer bad input with a 400 (or 413, 415) problem,
//! and authentication with the per-partner rate limit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::auth::{Authenticator, Caller};
use crate::problem::Problem;
use crate::ratelimit::{RateLimiter, RouteClass};

/// What every route needs.
#[derive(Debug)]
pub struct Gateway {
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub partner: Channel,
    pub catalog: Channel,
    pub orders: Channel,
    /// Deadline of each call to a service.
    pub timeout: Duration,
    /// The currency prices are quoted in.
    pub currency: String,
}

pub type AppState = Arc<Gateway>;

impl Gateway {
    /// A request to a service on behalf of `caller`, with the deadline.
    pub fn request<T>(&self, caller: &Caller, message: T) -> tonic::Request<T> {
        let mut request = retail_kit::resilience::request(message, self.timeout);
        if let Ok(value) = format!("Bearer {}", caller.token).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

/// The request's id: the caller's `X-Request-Id` when it is 1-128 visible ASCII
/// characters, a fresh UUID otherwise; echoed in the response.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID: &str = "x-request-id";

pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Answers 504 when a request takes longer than `limit`.
pub async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(StatusCode::GATEWAY_TIMEOUT, "the request took too long").into_response(),
    }
}

/// Serves at most `server.concurrency_limit` requests at once; more are shed with
/// 503 and `Retry-After` rather than queued. Logs each request (never its
/// credentials) with its id, route, status and duration.
pub async fn shed_and_log(State(slots): State<Arc<tokio::sync::Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_slot) = slots.try_acquire() else {
        let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the gateway is busy; retry shortly");
        problem.retry_after = Some(1);
        return problem.into_response();
    };
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let millis = started.elapsed().as_millis() as u64;
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, %route, status, millis, "request");
    } else {
        tracing::info!(request_id = %id, %method, %route, status, millis, "request");
    }
    response
}

/// Authenticates the caller, applies its partner's rate limit, and hands the
/// [`Caller`] to the route; the response carries the `RateLimit-*` headers.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let caller = match state.auth.authenticate(request.headers()).await {
        Ok(caller) => caller,
        Err(problem) => return problem.into_response(),
    };
    let class = RouteClass::of(request.method());
    let decision = state.limiter.check(&caller.partner_id, class).await;
    if !decision.allowed {
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the partner's rate limit is exhausted; retry after the time in Retry-After",
        );
        problem.retry_after = Some(decision.retry_after_secs());
        let mut response = problem.into_response();
        decision.write_headers(response.headers_mut());
        return response;
    }
    let api_key = request.headers().contains_key("x-api-key")
        || retail_kit::auth::bearer_token(request.headers()).is_some_and(|t| t.is_ok_and(|t| t.starts_with("rk_")));
    let headers = if api_key { Some(request.headers().clone()) } else { None };
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    // A token identity no longer accepts (its key was revoked, its partner
    // suspended) is exchanged again next time.
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(headers) = headers
    {
        state.auth.forget(&headers);
    }
    decision.write_headers(response.headers_mut());
    response
}

/// A JSON body: malformed JSON, unknown fields and wrong types are a 400 problem
/// naming the field, a body over the limit 413, another content type 415.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let headers = request.headers().clone();
        let bytes = match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => bytes,
            Err(rejection) => {
                let status = rejection.status();
                return Err(if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(status, "the request body is larger than the gateway accepts")
                } else {
                    Problem::new(StatusCode::BAD_REQUEST, "the request body could not be read")
                });
            }
        };
        if !json_content_type(&headers) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be `application/json`",
            ));
        }
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(deserializer) {
            Ok(value) => Ok(Json(value)),
            Err(err) => {
                let field = err.path().to_string();
                let field = if field == "." { String::new() } else { field };
                Err(Problem::invalid(field, json_error(err.inner())))
            }
        }
    }
}

fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || (v.starts_with("application/") && v.ends_with("+json")))
}

/// serde_json's message without the input it quotes.
fn json_error(err: &serde_json::Error) -> String {
    let message = retail_kit::config::serde_message_without_values(&err.to_string());
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

/// Turns axum's rejections into problems.
fn rejected(status: StatusCode, body: String) -> Problem {
    if status.is_server_error() {
        Problem::new(StatusCode::BAD_REQUEST, "the request could not be read")
    } else {
        let body = body.split(": ").skip(1).collect::<Vec<_>>().join(": ");
        Problem::invalid(
            "",
            if body.is_empty() {
                "malformed request".to_owned()
            } else {
                body
            },
        )
    }
}

/// Query parameters: unknown ones and wrong types are a 400 problem.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r: QueryRejection| rejected(r.status(), r.body_text()))
    }
}

/// Path parameters: malformed ones are a 400 problem.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r: PathRejection| rejected(r.status(), r.body_text()))
    }
}

pub async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such route")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "the route does not take this method")
}

/// Checks a caller-chosen id (an `Idempotency-Key`, a resource id in a path): 1-128
/// visible ASCII characters.
pub fn check_id(field: &str, value: &str) -> Result<(), Problem> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(Problem::invalid(
            field,
            "must be 1-128 visible ASCII characters without '/'",
        ));
    }
    Ok(())
}
