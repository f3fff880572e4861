//! The one error type at the service boundary and its one mapping to `tonic::Status`.
//!
//! Handlers and stores return [`ServiceError`]; variants are named from the caller's
//! point of view. Invalid arguments carry `google.rpc.BadRequest` field violations.
//! Internal causes are logged once, with their chain and a correlation id, and never
//! sent to the caller. A status stays within the metadata size every common client
//! accepts (see [`crate::limits`]): a few violations in the message, at most
//! [`limits::MAX_VIOLATIONS`] in the details, each of bounded length.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::limits;

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

/// The first violations and how many more there were: a short message for the
/// status and the log (every violation is in the status details).
fn describe(violations: &[FieldViolation]) -> String {
    const SHOWN: usize = 2;
    let mut message = violations
        .iter()
        .take(SHOWN)
        // Each shown violation gets an equal share of the status message, which keeps
        // room for the count of the others.
        .map(|v| limits::truncate(&format!("{}: {}", v.field, v.description), 120))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > SHOWN {
        message += &format!(" (and {} more)", violations.len() - SHOWN);
    }
    message
}

/// The violations a status carries: at most [`limits::MAX_VIOLATIONS`], each cut to
/// its size limits, then an entry with an empty field saying how many were left out.
fn capped(violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    let total = violations.len();
    let mut kept: Vec<_> = violations
        .into_iter()
        .take(limits::MAX_VIOLATIONS)
        .map(|v| {
            FieldViolation::new(
                limits::truncate(&v.field, limits::MAX_VIOLATION_FIELD_BYTES),
                limits::truncate(&v.description, limits::MAX_VIOLATION_DESCRIPTION_BYTES),
            )
        })
        .collect();
    if total > kept.len() {
        kept.push(FieldViolation::new(
            "",
            format!(
                "{} more violations left out; only the first {} are listed",
                total - kept.len(),
                limits::MAX_VIOLATIONS
            ),
        ));
    }
    kept
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
                let message = short(format!("invalid argument: {}", describe(&violations)));
                Status::with_error_details(code, message, ErrorDetails::with_bad_request(capped(violations)))
            }
            ServiceError::ResourceExhausted {
                message,
                retry_after: Some(delay),
            } => Status::with_error_details(code, short(message), ErrorDetails::with_retry_info(Some(delay))),
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
            // service learns what was missing without reading the message; the message
            // and the name may quote what the caller sent, of any length.
            ServiceError::NotFound { entity, ref id } => {
                let message = short(err.to_string());
                Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_resource_info(
                        entity,
                        limits::truncate(id, limits::MAX_VIOLATION_DESCRIPTION_BYTES),
                        "",
                        "",
                    ),
                )
            }
            other => Status::new(code, short(other.to_string())),
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

fn short(message: String) -> String {
    if message.len() <= limits::MAX_STATUS_MESSAGE_BYTES {
        message
    } else {
        limits::truncate(&message, limits::MAX_STATUS_MESSAGE_BYTES)
    }
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

    /// Flags a repeated field with more than `max` entries (see [`crate::limits`]) and
    /// returns how many entries to look at, so an oversized list costs no more work
    /// than a full one.
    pub fn at_most<T>(&mut self, field: &str, items: &[T], max: usize) -> usize {
        if items.len() > max {
            self.add(field, format!("must have at most {max} entries"));
            max
        } else {
            items.len()
        }
    }

    /// The paths of a field mask to look at, flagging more than
    /// [`limits::MAX_MASK_PATHS`].
    pub fn mask_paths<'a>(&mut self, field: &str, paths: &'a [String]) -> &'a [String] {
        let n = self.at_most(field, paths, limits::MAX_MASK_PATHS);
        &paths[..n]
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

    /// A statement the database refused with `code`.
    #[derive(Debug)]
    struct Refused(&'static str, &'static str);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.1)
        }
    }

    impl std::error::Error for Refused {}

    impl sea_orm::sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            self.1
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sea_orm::sqlx::error::ErrorKind {
            sea_orm::sqlx::error::ErrorKind::Other
        }
    }

    fn refused(code: &'static str, message: &'static str) -> sea_orm::DbErr {
        sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(
            sea_orm::sqlx::Error::Database(Box::new(Refused(code, message))),
        )))
    }

    #[test]
    fn a_database_conflict_is_aborted_and_other_database_errors_are_internal() {
        let busy = ServiceError::from(refused("5", "database is locked"));
        assert_eq!(code_of(busy), Code::Aborted);
        let deadlock = ServiceError::internal(refused("40P01", "deadlock detected"));
        assert_eq!(code_of(deadlock), Code::Aborted);
        let serialization = ServiceError::from(refused("40001", "could not serialize access"));
        assert_eq!(code_of(serialization), Code::Aborted);
        let broken = ServiceError::from(sea_orm::DbErr::Custom("disk I/O error".into()));
        assert_eq!(code_of(broken), Code::Internal);
        let not_db = ServiceError::internal(anyhow::anyhow!("database is locked"));
        assert_eq!(code_of(not_db), Code::Internal);
        // The code decides, not the text: a message quoting one is no conflict.
        let quoting = ServiceError::from(sea_orm::DbErr::Custom("error returned from database: 40001".into()));
        assert_eq!(code_of(quoting), Code::Internal);
        let constraint = ServiceError::from(refused("23505", "duplicate key: order 40001"));
        assert_eq!(code_of(constraint), Code::Internal);
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

    /// Bytes of metadata the status takes on the wire, counted as HTTP/2 and gRPC
    /// clients count it against their limit (name, value and 32 bytes per entry).
    fn metadata_bytes(status: &Status) -> usize {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum()
    }

    #[test]
    fn a_status_of_ten_thousand_long_violations_fits_in_the_8_kib_clients_accept() {
        // Regression: every violation went into both the message and the details, so a
        // request with many bad lines produced trailers C++ and Python clients refuse.
        let mut v = Violations::new();
        for i in 0..10_000 {
            v.add(
                format!("order.lines[{i}].sku.{}", "ü".repeat(200)),
                format!("must be a known SKU, not {}", "\u{1F600}x".repeat(500)),
            );
        }
        let status = Status::from(v.finish().unwrap_err());
        let size = metadata_bytes(&status);
        assert!(size < 8 * 1024, "{size} bytes of metadata");
        assert!(
            status.message().len() <= limits::MAX_STATUS_MESSAGE_BYTES,
            "{}",
            status.message()
        );
        assert!(status.message().contains("order.lines[0]"), "{}", status.message());
        assert!(status.message().contains("9998 more"), "{}", status.message());
        let bad = status.get_error_details().bad_request().cloned().unwrap();
        assert_eq!(bad.field_violations.len(), limits::MAX_VIOLATIONS + 1);
        assert!(bad.field_violations[0].field.starts_with("order.lines[0].sku"));
        for violation in &bad.field_violations {
            assert!(violation.field.len() <= limits::MAX_VIOLATION_FIELD_BYTES);
            assert!(violation.description.len() <= limits::MAX_VIOLATION_DESCRIPTION_BYTES);
        }
        let last = bad.field_violations.last().unwrap();
        assert_eq!(last.field, "");
        assert!(last.description.contains("9980 more"), "{}", last.description);
    }

    #[test]
    fn a_status_of_a_few_violations_lists_each_of_them_whole() {
        let mut v = Violations::new();
        v.add("a", "is required");
        v.add("b", "is required");
        v.add("c", "is required");
        let status = Status::from(v.finish().unwrap_err());
        let bad = status.get_error_details().bad_request().cloned().unwrap();
        let fields: Vec<_> = bad.field_violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["a", "b", "c"]);
        assert_eq!(
            status.message(),
            "invalid argument: a: is required; b: is required (and 1 more)"
        );
    }

    #[test]
    fn a_message_quoting_a_huge_caller_value_is_cut() {
        let status = Status::from(ServiceError::not_found("member", "x".repeat(100_000)));
        assert!(status.message().len() <= limits::MAX_STATUS_MESSAGE_BYTES);
        // The message, and the details that repeat it with the resource's name.
        assert!(metadata_bytes(&status) < 1536, "{}", metadata_bytes(&status));
    }

    #[test]
    fn an_oversized_repeated_field_is_flagged_and_only_its_limit_is_looked_at() {
        let mut v = Violations::new();
        let paths: Vec<String> = (0..1_000).map(|i| format!("p{i}")).collect();
        assert_eq!(v.mask_paths("update_mask", &paths).len(), limits::MAX_MASK_PATHS);
        assert_eq!(v.at_most("scopes", &paths[..3], 3), 3);
        let ServiceError::InvalidArgument(found) = v.finish().unwrap_err() else {
            panic!("not an invalid argument")
        };
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "update_mask");
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

    #[test]
    fn an_internal_error_at_start_keeps_its_cause_chain() {
        // What a service's main prints when its start fails with an internal error.
        let cause = anyhow::anyhow!("relation \"users\" does not exist").context("database operation failed");
        let printed = format!("{:?}", anyhow::Error::from(ServiceError::Internal(cause)));
        assert!(printed.contains("relation \"users\" does not exist"), "{printed}");
    }
}
