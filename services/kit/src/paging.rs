//! AIP-158 pagination: `page_size` with a default and a maximum, and opaque
//! `page_token`s that carry the last key seen and are bound to the request's filters
//! (a token from one filter cannot be replayed with another).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ServiceError, ServiceResult};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;

/// A parsed page request: how many rows, and the key to continue after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: u64,
    pub after: Option<String>,
    filter: String,
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Last key of the previous page.
    k: String,
    /// Short hash of the filters the token belongs to.
    f: String,
}

fn filter_hash(filter: &str) -> String {
    let digest = Sha256::digest(filter.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..8])
}

impl Page {
    /// Parses `page_size` and `page_token`; `filter` is any string describing the
    /// request's filters.
    pub fn parse(page_size: i32, page_token: &str, filter: &str) -> ServiceResult<Self> {
        let size = match page_size {
            n if n < 0 => return Err(ServiceError::invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as u64).min(MAX_PAGE_SIZE),
        };
        let filter = filter_hash(filter);
        let after = if page_token.is_empty() {
            None
        } else {
            let invalid = || ServiceError::invalid("page_token", "is not a token returned by this list");
            let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| invalid())?;
            let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
            if token.f != filter {
                return Err(ServiceError::invalid(
                    "page_token",
                    "belongs to a request with other filters",
                ));
            }
            Some(token.k)
        };
        Ok(Self { size, after, filter })
    }

    /// The same request continued after `key` (for scans that filter in memory).
    pub fn continued_after(&self, key: Option<String>) -> Self {
        Self {
            size: self.size,
            after: key,
            filter: self.filter.clone(),
        }
    }

    /// A token that continues this request after `key`.
    pub fn token_after(&self, key: &str) -> String {
        let token = Token {
            k: key.to_owned(),
            f: self.filter.clone(),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }

    /// How many rows to fetch: one more than the page, to learn whether another follows.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// Trims the fetched rows to the page and returns the next page token.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        if rows.len() as u64 > self.size {
            rows.truncate(self.size as usize);
            let next = rows.last().map(|last| self.token_after(&key(last))).unwrap_or_default();
            (rows, next)
        } else {
            (rows, String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(Page::parse(0, "", "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(10_000, "", "").unwrap().size, MAX_PAGE_SIZE);
        assert!(Page::parse(-1, "", "").is_err());
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_filters() {
        let page = Page::parse(2, "", "partner=a").unwrap();
        let (rows, next) = page.finish(vec!["1", "2", "3"], |s| s.to_string());
        assert_eq!(rows, ["1", "2"]);
        let again = Page::parse(2, &next, "partner=a").unwrap();
        assert_eq!(again.after.as_deref(), Some("2"));
        assert!(Page::parse(2, &next, "partner=b").is_err());
        assert!(Page::parse(2, "garbage!", "partner=a").is_err());
    }

    #[test]
    fn the_last_page_has_no_token() {
        let page = Page::parse(5, "", "").unwrap();
        let (rows, next) = page.finish(vec![1, 2], |n| n.to_string());
        assert_eq!(rows.len(), 2);
        assert!(next.is_empty());
    }
}
