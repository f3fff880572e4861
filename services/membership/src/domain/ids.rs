//! Identifiers membership works with, parsed once from resource names at the edge.

use std::fmt;

/// A member's id (a UUID v7: ids sort by registration, which paging relies on).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MemberId(String);

impl MemberId {
    pub(crate) fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// From `members/{member_id}`.
    pub(crate) fn parse_name(name: &str) -> Result<Self, &'static str> {
        let id = name.strip_prefix("members/").ok_or("must be members/{id}")?;
        uuid::Uuid::parse_str(id)
            .map(|u| Self(u.to_string()))
            .map_err(|_| "must be members/{id} with a UUID id")
    }

    /// From an id read back from storage (written by this service).
    pub(crate) fn from_stored(id: String) -> Self {
        Self(id)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for MemberId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_parse_into_canonical_ids_and_bad_ones_say_the_shape() {
        let id = "0190F5B2-8D3E-7C41-9A6B-2F0E1D3C4B5A";
        let parsed = MemberId::parse_name(&format!("members/{id}")).unwrap();
        assert_eq!(parsed.as_str(), id.to_lowercase());
        assert_eq!(MemberId::parse_name(id).unwrap_err(), "must be members/{id}");
        assert!(MemberId::parse_name("members/42").unwrap_err().contains("UUID"));
    }
}
