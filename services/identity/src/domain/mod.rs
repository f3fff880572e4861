//! Identity's rules as plain types and functions, without I/O.
//!
//! - [`scopes`]: the scope catalogue and what each role and principal kind may hold.
//! - [`fields`]: parsed request fields (usernames, emails, passwords, ids).
//! - [`ids`]: user and API key ids, parsed from resource names.
//! - [`users`]: user kinds and the scopes their tokens grant.
//! - [`passwords`]: argon2id hashing and verification.
//! - [`secrets`]: generation and hashing of API keys, client secrets, refresh tokens.
//! - [`lockout`]: the brute-force policy (slow down, then lock).

pub mod fields;
pub(crate) mod ids;
pub(crate) mod lockout;
pub(crate) mod passwords;
pub(crate) mod scopes;
pub(crate) mod secrets;
pub(crate) mod users;
