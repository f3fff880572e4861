//! The partner programme's rules, without I/O: identifiers, the partner's status
//! machine.

pub mod ids;
pub mod partner;
