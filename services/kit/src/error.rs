//! The one error type at the service boundary and its one mapping to `tonic::Status`.
//!
//! Handlers and stores return [`ServiceError`]; variants are named from the caller's
//! point of view. Invalid arguments carry `google.rpc.BadRequest` field violations.
//! Internal causes are logged once, with their chain and a correlation id, and never
//! sent to the caller.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// What went wrong, as the caller should see it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{entity} not found: {id}")]
    NotFound { entity: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ServiceError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound { entity, id: id.into() }
    }

    /// Wraps any error as an internal one.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// True for an internal error caused by a conflict the database asks to retry
    /// (a busy SQLite database, a deadlock, a serialization failure) that escaped
    /// the transaction helpers' own retries: nothing took effect and the caller may
    /// retry, so it is ABORTED rather than INTERNAL.
    fn is_retryable_conflict(&self) -> bool {
        matches!(self, Self::Internal(cause)
            if cause.downcast_ref::<sea_orm::DbErr>().is_some_and(crate::db::is_retryable))
    }

    pub fn code(&self) -> Code {
        match self {
            Self::Internal(_) if self.is_retryable_conflict() => Code::Aborted,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Aborted(_) => Code::Aborted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<FieldViolation> for ServiceError {
    fn from(violation: FieldViolation) -> Self {
        Self::InvalidArgument(vec![violation])
    }
}

impl From<sea_orm::DbErr> for ServiceError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Internal(anyhow::Error::new(err).context("database operation failed"))
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        match err {
            ServiceError::InvalidArgument(violations) => {
                let message = format!("invalid argument: {}", describe(&violations));
                Status::with_error_details(code, message, ErrorDetails::with_bad_request(violations))
            }
            ServiceError::ResourceExhausted {
                message,
                retry_after: Some(delay),
            } => Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay))),
            ServiceError::Internal(cause) if code == Code::Aborted => {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "a database conflict ended the request; answered ABORTED"
                );
                Status::aborted("a concurrent change or a busy database interrupted the request; retry")
            }
            ServiceError::Internal(cause) => {
                let correlation_id = uuid::Uuid::new_v4();
                tracing::error!(%correlation_id, error = format!("{cause:#}"), "internal error");
                Status::internal(format!("internal error (correlation id {correlation_id})"))
            }
            // The resource travels as data (`google.rpc.ResourceInfo`), so a calling
            // service learns what was missing without reading the message.
            ServiceError::NotFound { entity, ref id } => {
                let message = err.to_string();
                Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_resource_info(entity, id.clone(), "", ""),
                )
            }
            other => Status::new(code, other.to_string()),
        }
    }
}

/// The resource a NOT_FOUND status from another service names (type and name, from
/// its `google.rpc.ResourceInfo`), if it carries one.
pub fn missing_resource(status: &Status) -> Option<(String, String)> {
    if status.code() != Code::NotFound {
        return None;
    }
    status
        .get_details_resource_info()
        .map(|info| (info.resource_type, info.resource_name))
}

/// Collects field violations while a request is parsed, so a client learns every bad
/// field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the error of a parse, keeping the value when it parsed.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.0.push(violation);
                None
            }
        }
    }

    /// Records a parse that explains itself in a plain message.
    pub fn field<T, E: std::fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.add(field, reason.to_string());
                None
            }
        }
    }

    /// Free text (see [`text`]).
    pub fn text(&mut self, field: &str, raw: &str, max: usize, required: bool) -> String {
        self.check(text(field, raw, max, required)).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was wrong.
    pub fn finish(self) -> Result<(), ServiceError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::InvalidArgument(self.0))
        }
    }
}

pub use tonic_types::FieldViolation as Violation;

/// Free text of at most `max` characters, trimmed, without control characters.
pub fn text(field: &str, raw: &str, max: usize, required: bool) -> Result<String, Violation> {
    let t = raw.trim();
    if t.is_empty() && required {
        return Err(Violation::new(field, "is required"));
    }
    if t.chars().count() > max {
        return Err(Violation::new(field, format!("must be at most {max} characters")));
    }
    if t.chars().any(char::is_control) {
        return Err(Violation::new(field, "must not contain control characters"));
    }
    Ok(t.to_owned())
}

/// Shorthand for handlers.
pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(err: ServiceError) -> Code {
        Status::from(err).code()
    }

    #[test]
    fn a_database_conflict_is_aborted_and_other_database_errors_are_internal() {
        let busy = ServiceError::from(sea_orm::DbErr::Custom("database is locked".into()));
        assert_eq!(code_of(busy), Code::Aborted);
        let deadlock = ServiceError::internal(sea_orm::DbErr::Custom("error returned from database: 40P01".into()));
        assert_eq!(code_of(deadlock), Code::Aborted);
        let broken = ServiceError::from(sea_orm::DbErr::Custom("disk I/O error".into()));
        assert_eq!(code_of(broken), Code::Internal);
        let not_db = ServiceError::internal(anyhow::anyhow!("database is locked"));
        assert_eq!(code_of(not_db), Code::Internal);
    }

    #[test]
    fn every_variant_maps_to_its_code() {
        assert_eq!(code_of(ServiceError::invalid("f", "bad")), Code::InvalidArgument);
        assert_eq!(code_of(ServiceError::not_found("user", "1")), Code::NotFound);
        assert_eq!(code_of(ServiceError::AlreadyExists("x".into())), Code::AlreadyExists);
        assert_eq!(
            code_of(ServiceError::FailedPrecondition("x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code_of(ServiceError::Unauthenticated("x".into())),
            Code::Unauthenticated
        );
        assert_eq!(
            code_of(ServiceError::PermissionDenied("x".into())),
            Code::PermissionDenied
        );
        assert_eq!(
            code_of(ServiceError::ResourceExhausted {
                message: "x".into(),
                retry_after: None
            }),
            Code::ResourceExhausted
        );
        assert_eq!(code_of(ServiceError::Aborted("x".into())), Code::Aborted);
        assert_eq!(code_of(ServiceError::Unavailable("x".into())), Code::Unavailable);
        assert_eq!(code_of(ServiceError::Internal(anyhow::anyhow!("boom"))), Code::Internal);
    }

    #[test]
    fn invalid_argument_carries_field_violations() {
        let mut v = Violations::new();
        v.add("user.email", "must be an email address");
        v.add("password", "must be at least 12 characters");
        let status = Status::from(v.finish().unwrap_err());
        let details = status.get_error_details();
        let bad = details.bad_request().cloned().unwrap();
        let fields: Vec<_> = bad.field_violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["user.email", "password"]);
        assert!(status.message().contains("user.email"));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(ServiceError::internal(anyhow::anyhow!("password=hunter2 leaked")));
        assert!(!status.message().contains("hunter2"));
        assert!(status.message().contains("correlation id"));
    }

    #[test]
    fn resource_exhausted_carries_retry_info() {
        let status = Status::from(ServiceError::ResourceExhausted {
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(3)),
        });
        let details = status.get_error_details();
        let retry = details.retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_not_found_names_its_resource_as_data_for_the_caller() {
        let status = Status::from(ServiceError::not_found("sku", "skus/RUN-42"));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            missing_resource(&status),
            Some(("sku".to_owned(), "skus/RUN-42".to_owned()))
        );
        assert_eq!(missing_resource(&Status::not_found("no details")), None);
        assert_eq!(missing_resource(&Status::internal("x")), None);
    }
}
