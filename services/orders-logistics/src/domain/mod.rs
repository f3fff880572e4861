//! Orders' rules (docs/domain.md, Orders and logistics), without I/O.
//!
//! - [`lifecycle`]: the order state machine: which action is allowed in which state.
//! - [`tracking`]: tracking events appended in order.
//! - [`returns`]: what may come back, and what it refunds.

pub mod lifecycle;
pub mod returns;
pub mod tracking;
