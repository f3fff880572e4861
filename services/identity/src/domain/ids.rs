//! Identity's own resources' ids, parsed from their resource names (`users/{id}`,
//! `apiKeys/{id}`). An id keeps the name it was asked for by: NOT_FOUND answers with
//! that name, as written.

use retail_kit::error::Violation;

use super::fields::resource_id;

/// A user's id (a UUID), from `users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId {
    id: String,
    name: String,
}

impl UserId {
    pub fn parse(field: &str, name: &str) -> Result<Self, Violation> {
        Ok(Self {
            id: resource_id(field, name, "users")?,
            name: name.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The resource name as it was given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An API key's id (a UUID), from `apiKeys/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyId {
    id: String,
    name: String,
}

impl ApiKeyId {
    pub fn parse(field: &str, name: &str) -> Result<Self, Violation> {
        Ok(Self {
            id: resource_id(field, name, "apiKeys")?,
            name: name.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The resource name as it was given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_from_their_own_collection_only_and_keep_the_given_name() {
        let id = "0190F5B2-8D3E-7C41-9A6B-2F0E1D3C4B5A";
        let user = UserId::parse("name", &format!("users/{id}")).unwrap();
        assert_eq!(user.as_str(), id.to_lowercase());
        assert_eq!(user.name(), format!("users/{id}"));
        assert!(UserId::parse("name", &format!("apiKeys/{id}")).is_err());
        let key = ApiKeyId::parse("name", &format!("apiKeys/{id}")).unwrap();
        assert_eq!(key.as_str(), id.to_lowercase());
        let bad = ApiKeyId::parse("name", "apiKeys/7").unwrap_err();
        assert_eq!(bad.field, "name");
    }
}
