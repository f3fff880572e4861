//! Analytics' rules without I/O: the KPI formulas ([`kpi`]), the customer
//! lifecycle ([`lifecycle`]) and the touchpoints' kinds and checks
//! ([`touchpoint`]).

pub mod kpi;
pub mod lifecycle;
pub mod touchpoint;

/// Seconds of a day.
pub const DAY: i64 = 86_400;
