//! Analytics' rules without I/O: the KPI formulas ([`kpi`]), the customer
//! lifecycle ([`lifecycle`]), the touchpoints' kinds and checks
//! ([`touchpoint`]) and the partner and sales-rep figures ([`partner`]).

pub mod kpi;
pub mod lifecycle;
pub mod partner;
pub mod touchpoint;

/// Seconds of a day.
pub const DAY: i64 = 86_400;
