//! Membership's rules (docs/domain.md, Membership), deterministic: everything that depends
//! on "now" takes an explicit `as_of`.
//!
//! - [`fields`]: identifiers, tags, consent channels, birth dates.
//! - [`money`]: minor units and currency exponents.
//! - [`tiers`]: the tier ladder, qualifying spend, upgrades and delayed downgrades,
//!   percentile mode.
//! - [`points`]: earning, lots with expiry, first-expiring-first redemption, reversal
//!   with debt.
//! - [`lifecycle`]: the lifecycle state of a purchase history.
//! - [`engagement`]: tag categories and durability, computed tags, segment rules,
//!   campaign rules.
//! - [`schedule`]: the occurrences of recurring planned campaigns.

pub(crate) mod engagement;
pub(crate) mod fields;
pub(crate) mod ids;
pub(crate) mod lifecycle;
pub(crate) mod money;
pub mod points;
pub(crate) mod rules;
pub(crate) mod schedule;
pub(crate) mod tiers;
