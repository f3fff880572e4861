//! Catalog-inventory's rules (docs/domain.md, Catalog and inventory), without I/O. Everything that
//! depends on "now" takes an explicit time.
//!
//! - [`codes`]: SKU and warehouse codes, order ids, channels, roles, titles, tags,
//!   categories.
//! - [`coupons`]: whether a coupon code applies to a basket, and its discount per
//!   line.
//! - [`pricing`]: the price of a line for a channel, tier or partner level, itemised;
//!   competitor undercuts.
//! - [`stock`]: which warehouses hold a reservation's lines; reservation states and
//!   stock movement kinds.
//! - [`reconcile`]: the daily listing reconciliation of a channel.

pub mod codes;
pub mod coupons;
pub mod pricing;
pub mod reconcile;
pub mod stock;
