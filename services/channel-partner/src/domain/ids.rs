//! Identifiers the service works with, parsed once from resource names at the edge.

use std::fmt;

/// A partner organisation's id: 1-64 characters of A-Z, a-z, 0-9, '-', '_' (the form
/// identity accepts for `partner_id` on users and API keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartnerId(String);

const PARTNER_ID_RULE: &str = "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'";

impl PartnerId {
    /// A fresh id (a UUID v7) for a partner created without one.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// A bare id, as a create request or a principal's `partner_id` carries it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(PARTNER_ID_RULE.to_owned())
        }
    }

    /// From `partners/{partner_id}`.
    pub fn parse_name(name: &str) -> Result<Self, String> {
        let id = name
            .strip_prefix("partners/")
            .ok_or_else(|| "must be partners/{partner_id}".to_owned())?;
        Self::parse(id).map_err(|e| format!("must be partners/{{partner_id}}; the id {e}"))
    }

    /// From an id read back from storage (written by this service).
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn resource_name(&self) -> String {
        format!("partners/{}", self.0)
    }
}

impl Default for PartnerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PartnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partner_ids_take_identitys_form_and_names_their_collection() {
        assert_eq!(PartnerId::parse("acme_north-1").unwrap().as_str(), "acme_north-1");
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(PartnerId::parse(bad).is_err(), "{bad:?}");
        }
        let id = PartnerId::parse_name("partners/acme").unwrap();
        assert_eq!(id.resource_name(), "partners/acme");
        assert!(PartnerId::parse_name("acme").is_err());
        assert!(PartnerId::parse_name("partners/").is_err());
        assert!(PartnerId::parse_name("partners/a/b").is_err());
    }
}
