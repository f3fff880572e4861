//! The partner programme's rules, without I/O: identifiers, the partner's status
//! machine, the level ladder, target periods, the points ledgers' arithmetic.

pub mod ids;
pub mod levels;
pub mod partner;
pub mod period;
pub mod points;
pub mod policy;
pub mod quotes;
pub mod sales;
