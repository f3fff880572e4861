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

/// A sales rep's id (a UUID v7), `salesReps/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepId(String);

impl RepId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// From `salesReps/{sales_rep_id}`.
    pub fn parse_name(name: &str) -> Result<Self, String> {
        retail_kit::convert::uuid_id(name, "salesReps").map(Self)
    }

    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn resource_name(&self) -> String {
        format!("salesReps/{}", self.0)
    }
}

impl Default for RepId {
    fn default() -> Self {
        Self::new()
    }
}

/// Who a target or a ledger belongs to: a partner organisation or a sales rep.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Partner(PartnerId),
    Rep(RepId),
}

impl Subject {
    /// From `partners/{partner_id}` or `salesReps/{sales_rep_id}`.
    pub fn parse_name(name: &str) -> Result<Self, String> {
        if name.starts_with("partners/") {
            PartnerId::parse_name(name).map(Self::Partner)
        } else if name.starts_with("salesReps/") {
            RepId::parse_name(name).map(Self::Rep)
        } else {
            Err("must be partners/{partner_id} or salesReps/{sales_rep_id}".into())
        }
    }

    pub fn resource_name(&self) -> String {
        match self {
            Self::Partner(p) => p.resource_name(),
            Self::Rep(r) => r.resource_name(),
        }
    }

    /// `partner` or `rep`, as stored with targets.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Partner(_) => "partner",
            Self::Rep(_) => "rep",
        }
    }

    /// The subject's ledger: its owner's name + `/ledger`, parsed from that.
    pub fn parse_ledger(name: &str) -> Result<Self, String> {
        let owner = name
            .strip_suffix("/ledger")
            .ok_or_else(|| "must be partners/{partner_id}/ledger or salesReps/{sales_rep_id}/ledger".to_owned())?;
        Self::parse_name(owner)
    }

    /// The id a ledger is stored under: the owner's resource name.
    pub fn ledger_id(&self) -> String {
        self.resource_name()
    }

    pub fn ledger_name(&self) -> String {
        format!("{}/ledger", self.resource_name())
    }
}

/// A redemption: `{ledger}/redemptions/{redemption_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedemptionName {
    pub ledger: Subject,
    pub id: String,
}

impl RedemptionName {
    pub fn parse(name: &str) -> Result<Self, String> {
        const SHAPE: &str = "must be {ledger}/redemptions/{redemption_id}";
        let (ledger, id) = name.rsplit_once("/redemptions/").ok_or(SHAPE)?;
        let ledger = Subject::parse_ledger(ledger).map_err(|_| SHAPE.to_owned())?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| SHAPE)?.to_string();
        Ok(Self { ledger, id })
    }

    pub fn resource_name(&self) -> String {
        format!("{}/redemptions/{}", self.ledger.ledger_name(), self.id)
    }
}

/// A uuid id of a top-level collection (`targets`, `catalogItems`).
pub fn collection_id(name: &str, collection: &str) -> Result<String, String> {
    retail_kit::convert::uuid_id(name, collection)
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

    #[test]
    fn subjects_ledgers_and_redemptions_read_back_their_names() {
        let rep = RepId::new();
        for name in ["partners/acme".to_owned(), rep.resource_name()] {
            let s = Subject::parse_name(&name).unwrap();
            assert_eq!(s.resource_name(), name);
            assert_eq!(Subject::parse_ledger(&s.ledger_name()).unwrap(), s);
            let r = RedemptionName {
                ledger: s.clone(),
                id: uuid::Uuid::now_v7().to_string(),
            };
            assert_eq!(RedemptionName::parse(&r.resource_name()).unwrap(), r);
        }
        assert!(Subject::parse_name("members/x").is_err());
        assert!(Subject::parse_name("salesReps/not-a-uuid").is_err());
        assert!(Subject::parse_ledger("partners/acme").is_err());
        assert!(RedemptionName::parse("partners/acme/ledger/redemptions/nope").is_err());
    }
}
