//! Scopes are the unit of permission in tokens. Identity owns the catalogue: every
//! scope any service checks is listed here, with the roles and principal kinds that
//! may hold it.

use std::collections::BTreeSet;

/// Every scope the suite knows.
pub const ALL: &[&str] = &[
    USERS_READ,
    USERS_WRITE,
    API_KEYS_READ,
    API_KEYS_WRITE,
    SERVICE_ACCOUNTS_READ,
    SERVICE_ACCOUNTS_WRITE,
    KEYS_WRITE,
    AUDIT_READ,
    "membership.members.read",
    "membership.members.write",
    "membership.points.write",
    "membership.admin",
    "membership.engagement.read",
    "membership.engagement.write",
    "catalog.read",
    "catalog.write",
    "catalog.pricing.write",
    "inventory.write",
    "inventory.reserve",
    "orders.read",
    "orders.write",
    "partner.read",
    "partner.write",
    "partner.admin",
    "analytics.read",
    "analytics.write",
    "analytics.admin",
    "events.read",
];

pub const USERS_READ: &str = "identity.users.read";
pub const USERS_WRITE: &str = "identity.users.write";
pub const API_KEYS_READ: &str = "identity.api_keys.read";
pub const API_KEYS_WRITE: &str = "identity.api_keys.write";
pub const SERVICE_ACCOUNTS_READ: &str = "identity.service_accounts.read";
pub const SERVICE_ACCOUNTS_WRITE: &str = "identity.service_accounts.write";
pub const KEYS_WRITE: &str = "identity.keys.write";
pub const AUDIT_READ: &str = "identity.audit.read";

/// What partner principals (users and API keys) may ever hold.
pub const PARTNER: &[&str] = &[
    "catalog.read",
    "orders.read",
    "orders.write",
    "partner.read",
    "partner.write",
];

/// Staff roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    StoreManager,
    Analyst,
    Support,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::StoreManager => "store_manager",
            Self::Analyst => "analyst",
            Self::Support => "support",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "store_manager" => Some(Self::StoreManager),
            "analyst" => Some(Self::Analyst),
            "support" => Some(Self::Support),
            _ => None,
        }
    }

    /// The scopes a role grants.
    pub fn scopes(self) -> Vec<&'static str> {
        match self {
            Self::Admin => ALL.to_vec(),
            Self::StoreManager => vec![
                USERS_READ,
                "membership.members.read",
                "membership.members.write",
                "membership.points.write",
                "catalog.read",
                "catalog.write",
                "inventory.write",
                "orders.read",
                "orders.write",
                "partner.read",
                "analytics.read",
            ],
            Self::Analyst => ALL
                .iter()
                .copied()
                .filter(|s| s.ends_with(".read") && !s.starts_with("identity."))
                .collect(),
            Self::Support => vec![
                "membership.members.read",
                "membership.members.write",
                "catalog.read",
                "orders.read",
                "orders.write",
            ],
        }
    }
}

/// Roles as stored: space-separated names; a name this build does not know grants
/// nothing and is dropped.
pub fn roles_of(stored: &str) -> Vec<Role> {
    stored.split_whitespace().filter_map(Role::parse).collect()
}

/// Roles as stored: their names, sorted, each once, space-separated.
pub fn join_roles(roles: &[Role]) -> String {
    let set: BTreeSet<_> = roles.iter().map(|r| r.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

/// Scopes as stored: space-separated.
pub fn split(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}

/// Scopes to store: sorted, each once, space-separated.
pub fn join<'a>(scopes: impl IntoIterator<Item = &'a String>) -> String {
    let set: BTreeSet<_> = scopes.into_iter().map(String::as_str).collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

/// Union of the scopes of `roles`, sorted.
pub fn for_roles(roles: &[Role]) -> BTreeSet<&'static str> {
    roles.iter().flat_map(|r| r.scopes()).collect()
}

pub fn is_known(scope: &str) -> bool {
    ALL.contains(&scope)
}

pub fn is_partner_scope(scope: &str) -> bool {
    PARTNER.contains(&scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_holds_every_scope_and_others_no_identity_administration() {
        assert_eq!(for_roles(&[Role::Admin]).len(), ALL.len());
        for role in [Role::StoreManager, Role::Analyst, Role::Support] {
            let scopes = for_roles(&[role]);
            assert!(!scopes.contains(USERS_WRITE), "{role:?}");
            assert!(!scopes.contains(API_KEYS_WRITE), "{role:?}");
            assert!(!scopes.contains(KEYS_WRITE), "{role:?}");
        }
    }

    #[test]
    fn analysts_only_read() {
        assert!(for_roles(&[Role::Analyst]).iter().all(|s| s.ends_with(".read")));
    }

    #[test]
    fn every_role_scope_is_in_the_catalogue() {
        for role in [Role::Admin, Role::StoreManager, Role::Analyst, Role::Support] {
            assert!(role.scopes().iter().all(|s| is_known(s)));
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert!(PARTNER.iter().all(|s| is_known(s)));
    }

    #[test]
    fn stored_roles_and_scopes_are_sorted_sets_and_unknown_roles_are_dropped() {
        assert_eq!(
            join_roles(&[Role::Support, Role::Admin, Role::Support]),
            "admin support"
        );
        assert_eq!(roles_of("support bogus admin"), vec![Role::Support, Role::Admin]);
        let scopes = vec![
            "orders.read".to_owned(),
            "catalog.read".to_owned(),
            "orders.read".to_owned(),
        ];
        assert_eq!(join(&scopes), "catalog.read orders.read");
        assert_eq!(split(" catalog.read  orders.read"), vec!["catalog.read", "orders.read"]);
    }
}
