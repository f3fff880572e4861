//! The shared runtime of the retail services: mechanisms only, no business rules.
//!
//! - [`cache`]: versioned cache-aside (Redis or in-process), single flight, fallback.
//! - [`config`]: layered typed settings (defaults, file, `RETAIL_<SERVICE>__...` env).
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics, trace-context propagation.
//! - [`server`]: bind, serve with health/reflection/tower stack, graceful drain.
//! - [`error`]: the one error type and its mapping to `tonic::Status`.
//! - [`auth`]: token verification, principals, scope checks, client credentials.
//! - [`db`]: connecting to PostgreSQL or SQLite, migrations.
//! - [`events`]: the outbox event log, its Subscribe server, the consumer runner.
//! - [`idempotency`]: `request_id`-keyed creates and retried transactions.
//! - [`limits`]: size limits of requests and of error statuses.
//! - [`metrics`]: RED and event-consumer metrics on a Prometheus text endpoint.
//! - [`paging`]: AIP-158 page sizes and tokens.
//! - [`money`]: the bound of money amounts every service accepts.
//! - [`service`]: one service as its binary and the suite run it (the generic main).
//! - [`resilience`]: deadlines, retries and circuit breakers for calls to other services.
//! - [`convert`]: small proto <-> domain conversions (timestamps, durations).
//! - [`webhook`]: signed outbound webhooks: the signature, URL and address policy, the HTTP client.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cache;
pub mod config;
pub mod convert;
pub mod db;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod money;
pub mod paging;
pub mod resilience;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod webhook;

pub use error::{ServiceError, ServiceResult};
