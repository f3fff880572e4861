//! The membership service (in progress): its business rules come first, as plain
//! types and functions without I/O in [`domain`]; the gRPC API, store, cache and
//! events build on them.

#![forbid(unsafe_code)]

pub mod domain;
