//! The `retail-suite` binary's library: every service in one process (`up`), the
//! demo data (`seed`), the load benchmarks (`bench`) with their echo baseline, and
//! the suite's settings. The binary, and tests that need the baseline, use it.

#![forbid(unsafe_code)]

pub mod bench;
pub mod demo;
pub mod echo;
pub mod seed;
pub mod seed_campaign;
pub mod seed_partner;
pub mod settings;
pub mod up;
