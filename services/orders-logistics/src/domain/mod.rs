//! Orders' rules (docs/domain.md, Orders and logistics), without I/O.
//!
//! - [`ids`]: order, return, member and SKU identifiers, parsed from names.
//! - [`order`]: channels and line bounds.
//! - [`lifecycle`]: the order state machine: which action is allowed in which state.
//! - [`tracking`]: tracking events appended in order.
//! - [`returns`]: what may come back, and what it refunds.

pub mod ids;
pub mod lifecycle;
pub mod order;
pub mod returns;
pub mod tracking;
