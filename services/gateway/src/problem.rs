//! RFC 9457 problem documents (`application/problem+json`): every error the gateway
//! answers, from bad input to a failing service behind it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields of the request that are wrong, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<FieldViolation>,
    /// Seconds to wait before trying again (429, 503).
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<u64>,
}

/// One wrong field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldViolation {
    /// Path of the field in the request's JSON, for example `lines[0].quantity`;
    /// empty for the request as a whole.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let slug = match status {
            StatusCode::BAD_REQUEST => "invalid-request",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "permission-denied",
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PRECONDITION_FAILED => "precondition-failed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::TOO_MANY_REQUESTS => "rate-limited",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "error",
        };
        Self {
            kind: format!("https://retail-suite.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            violations: Vec::new(),
            retry_after: None,
        }
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut problem = Self::new(StatusCode::BAD_REQUEST, format!("invalid request: {description}"));
        problem.violations.push(FieldViolation {
            field: field.into(),
            description,
        });
        problem
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem of a failed call to a service, with its field violations (the
    /// proto's snake_case field paths as the JSON's camelCase, `prefix` - the
    /// request message's field that carries the resource - removed).
    pub fn from_status(status: &tonic::Status, prefix: &str) -> Self {
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::BAD_GATEWAY,
        };
        let detail = match http {
            // A service's internals stay behind the gateway.
            StatusCode::BAD_GATEWAY => {
                tracing::warn!(code = ?status.code(), message = status.message(), "a service failed");
                "a service behind the gateway failed; retry later".to_owned()
            }
            StatusCode::SERVICE_UNAVAILABLE => "a service behind the gateway is unavailable; retry later".to_owned(),
            _ => status.message().to_owned(),
        };
        let mut problem = Self::new(http, detail);
        if let Some(bad_request) = status.get_details_bad_request() {
            problem.violations = bad_request
                .field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: json_path(&v.field, prefix),
                    description: v.description,
                })
                .collect();
        }
        if let Some(retry) = status.get_details_retry_info().and_then(|info| info.retry_delay) {
            problem.retry_after = Some(retry.as_secs().max(1));
        }
        if matches!(http, StatusCode::SERVICE_UNAVAILABLE) && problem.retry_after.is_none() {
            problem.retry_after = Some(1);
        }
        problem
    }
}

/// `order.lines[0].unit_price` -> `lines[0].unitPrice` (with prefix `order`).
pub fn json_path(field: &str, prefix: &str) -> String {
    let field = if prefix.is_empty() {
        field
    } else {
        field
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(field)
    };
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status, "")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_field_paths_become_json_paths() {
        assert_eq!(json_path("order.lines[0].unit_price", "order"), "lines[0].unitPrice");
        assert_eq!(json_path("page_size", ""), "pageSize");
        assert_eq!(json_path("request_id", "order"), "requestId");
    }

    #[test]
    fn internal_errors_are_bad_gateway_without_internals() {
        let problem = Problem::from(tonic::Status::internal("db password wrong at 10.0.0.3"));
        assert_eq!(problem.status, 502);
        assert!(!problem.detail.unwrap_or_default().contains("10.0.0.3"));
    }

    #[test]
    fn bad_request_details_become_violations() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid",
            tonic_types::ErrorDetails::with_bad_request_violation("order.lines[0].quantity", "must be positive"),
        );
        let problem = Problem::from_status(&status, "order");
        assert_eq!(problem.status, 400);
        assert_eq!(problem.violations.len(), 1);
        assert_eq!(problem.violations[0].field, "lines[0].quantity");
    }
}
