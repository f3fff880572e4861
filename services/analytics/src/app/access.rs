//! Which stores a caller sees: the one rule the gRPC API and the dashboard apply.
//!
//! A store manager (role `store_manager`, neither `admin` nor `analyst`) sees the
//! stores of his token's `stores` claim only; everyone else allowed to read
//! (admins, analysts, services) sees every store. For a store manager:
//!
//! - a KPI kept per store (sales and satisfaction with dimension `store`, a
//!   store's funnel, its SKU flags and staff) is answered for his stores; another
//!   store is PERMISSION_DENIED;
//! - sales and satisfaction without a store (dimension `all`, or channel, region,
//!   tier, partner, rep, SKU or category, each summed over every store) would show
//!   figures of other stores: PERMISSION_DENIED (the dashboard shows his first
//!   store instead);
//! - member-level rows (RFM members, overdue members) are PERMISSION_DENIED;
//! - brand-wide KPIs without a store dimension (pyramid, member stats,
//!   lifecycle, stickiness, customer value, online funnel, product classes, goods,
//!   partner targets, leads and pipeline) stay readable with `analytics.read`.

use retail_kit::auth::Principal;
use retail_kit::error::{ServiceError, ServiceResult};

/// The stores a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreScope {
    /// Every store: admins, analysts, services.
    Every,
    /// Only these (sorted, each once; possibly none).
    Only(Vec<String>),
}

impl StoreScope {
    pub fn of(principal: &Principal) -> Self {
        let has = |role: &str| principal.roles.iter().any(|r| r == role);
        if has("admin") || has("analyst") || !has("store_manager") {
            return Self::Every;
        }
        let mut own = principal.stores.clone();
        own.sort();
        own.dedup();
        Self::Only(own)
    }

    pub fn is_restricted(&self) -> bool {
        matches!(self, Self::Only(_))
    }

    /// Whether the figures of `store` may be shown.
    pub fn may_see(&self, store: &str) -> bool {
        match self {
            Self::Every => true,
            Self::Only(own) => own.iter().any(|s| s == store),
        }
    }

    /// PERMISSION_DENIED unless `store` is one the caller sees.
    pub fn require_store(&self, store: &str) -> ServiceResult<()> {
        if self.may_see(store) {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied(format!(
                "store {store} is not one of the caller's stores"
            )))
        }
    }

    /// For a KPI kept per dimension (sales, satisfaction): a restricted caller
    /// must ask for one of his stores.
    pub fn require_dimension(&self, dimension: &str, value: &str) -> ServiceResult<()> {
        match self {
            Self::Every => Ok(()),
            Self::Only(_) if dimension == "store" => self.require_store(value),
            Self::Only(_) => Err(ServiceError::PermissionDenied(
                "a store manager sees these figures per store: ask for dimension \"store\" with one of his stores"
                    .into(),
            )),
        }
    }

    /// Member-level rows: admins, analysts and services only.
    pub fn require_member_level(&self) -> ServiceResult<()> {
        match self {
            Self::Every => Ok(()),
            Self::Only(_) => Err(ServiceError::PermissionDenied(
                "member-level rows are for analysts".into(),
            )),
        }
    }

    /// The stores of `all` the caller may pick: a restricted caller his own.
    pub fn narrow(&self, all: Vec<String>) -> Vec<String> {
        match self {
            Self::Every => all,
            Self::Only(own) => own.clone(),
        }
    }

    /// The store a restricted caller is shown when he names none: his first.
    pub fn default_store(&self) -> Option<&str> {
        match self {
            Self::Every => None,
            Self::Only(own) => own.first().map(String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use retail_kit::auth::PrincipalKind;

    use super::*;

    fn principal(kind: PrincipalKind, roles: &[&str], stores: &[&str]) -> Principal {
        Principal {
            subject: "u".into(),
            kind,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            scopes: BTreeSet::from(["analytics.read".to_owned()]),
            partner_id: None,
            stores: stores.iter().map(|s| (*s).to_owned()).collect(),
            session_id: None,
            token_id: "t".into(),
            expires_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn analysts_admins_and_services_see_every_store() {
        for p in [
            principal(PrincipalKind::Staff, &["analyst"], &[]),
            principal(PrincipalKind::Staff, &["admin"], &[]),
            // An analyst who also manages a store is not narrowed by it.
            principal(PrincipalKind::Staff, &["store_manager", "analyst"], &["BER"]),
            principal(PrincipalKind::Service, &[], &[]),
        ] {
            let scope = StoreScope::of(&p);
            assert_eq!(scope, StoreScope::Every);
            assert!(scope.require_store("HAM").is_ok());
            assert!(scope.require_dimension("all", "").is_ok());
            assert!(scope.require_dimension("channel", "online").is_ok());
            assert!(scope.require_member_level().is_ok());
            assert_eq!(scope.narrow(vec!["BER".into(), "HAM".into()]), ["BER", "HAM"]);
            assert_eq!(scope.default_store(), None);
        }
    }

    #[test]
    fn a_store_manager_sees_his_stores_only() {
        let scope = StoreScope::of(&principal(
            PrincipalKind::Staff,
            &["store_manager"],
            &["HAM", "BER", "HAM"],
        ));
        assert_eq!(scope, StoreScope::Only(vec!["BER".into(), "HAM".into()]));
        assert!(scope.require_store("BER").is_ok());
        assert!(scope.require_store("HAM").is_ok());
        let denied = |r: ServiceResult<()>| matches!(r, Err(ServiceError::PermissionDenied(_)));
        assert!(denied(scope.require_store("MUC")));
        assert!(denied(scope.require_store("")));
        assert!(scope.require_dimension("store", "BER").is_ok());
        assert!(denied(scope.require_dimension("store", "MUC")));
        for dim in ["all", "channel", "region", "tier", "partner", "rep", "sku", "category"] {
            assert!(denied(scope.require_dimension(dim, "x")), "{dim}");
        }
        assert!(denied(scope.require_member_level()));
        assert_eq!(scope.narrow(vec!["MUC".into()]), ["BER", "HAM"]);
        assert_eq!(scope.default_store(), Some("BER"));
        // Without stores assigned: none.
        let none = StoreScope::of(&principal(PrincipalKind::Staff, &["store_manager"], &[]));
        assert!(denied(none.require_store("BER")));
        assert_eq!(none.default_store(), None);
        assert!(none.narrow(vec!["BER".into()]).is_empty());
    }
}
