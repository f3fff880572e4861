//! Identity's rules as plain types and functions, without I/O.
//!
//! - [`scopes`]: the scope catalogue and what each role and principal kind may hold.
//! - [`fields`]: parsed request fields (usernames, emails, passwords, ids).
//! - [`passwords`]: argon2id hashing and verification.
//! - [`secrets`]: generation and hashing of API keys, client secrets, refresh tokens.
//! - [`lockout`]: the brute-force policy (slow down, then lock).

pub mod fields;
pub mod lockout;
pub mod passwords;
pub mod scopes;
pub mod secrets;
