//! Users: staff (who hold roles) and partner users (who belong to one partner and
//! hold the partner scopes), and what their tokens grant.

use retail_kit::auth::PrincipalKind;

use super::scopes::{self, Role};

/// The kind of a user, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    Staff,
    PartnerUser,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staff => "staff",
            Self::PartnerUser => "partner_user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "staff" => Some(Self::Staff),
            "partner_user" => Some(Self::PartnerUser),
            _ => None,
        }
    }

    /// The kind of principal the user's tokens name.
    pub fn principal(self) -> PrincipalKind {
        match self {
            Self::Staff => PrincipalKind::Staff,
            Self::PartnerUser => PrincipalKind::PartnerUser,
        }
    }

    /// Only staff hold roles.
    pub fn has_roles(self) -> bool {
        self == Self::Staff
    }

    /// The scopes a user of this kind with `roles` holds.
    pub fn scopes(self, roles: &[Role]) -> Vec<String> {
        match self {
            Self::PartnerUser => scopes::PARTNER.iter().map(|s| s.to_string()).collect(),
            Self::Staff => scopes::for_roles(roles).into_iter().map(str::to_owned).collect(),
        }
    }
}

/// Most stores a user may be assigned.
pub const MAX_STORES: usize = 64;

/// The store codes of a user as stored (space-separated).
pub fn stores_of(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}

/// Store codes to assign: at most [`MAX_STORES`], each 1-64 characters of
/// `A-Z a-z 0-9 . _ -`; duplicates dropped, sorted; stored space-separated.
pub fn parse_stores(field: &str, codes: &[String]) -> Result<String, retail_kit::error::Violation> {
    if codes.len() > MAX_STORES {
        return Err(retail_kit::error::Violation::new(
            field,
            format!("must have at most {MAX_STORES} entries"),
        ));
    }
    let mut out = std::collections::BTreeSet::new();
    for code in codes {
        let ok = (1..=64).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(retail_kit::error::Violation::new(
                field,
                "store codes are 1-64 characters of A-Z, a-z, 0-9, `.`, `_`, `-`",
            ));
        }
        out.insert(code.as_str());
    }
    Ok(out.into_iter().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_checked_deduplicated_and_sorted() {
        let codes = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse_stores("s", &codes(&["MUC", "BER", "MUC"])).unwrap(), "BER MUC");
        assert_eq!(stores_of("BER MUC"), ["BER", "MUC"]);
        assert_eq!(parse_stores("s", &[]).unwrap(), "");
        assert!(parse_stores("s", &codes(&["B ER"])).is_err());
        assert!(parse_stores("s", &codes(&[""])).is_err());
        assert!(parse_stores("s", &vec!["A".to_owned(); 65]).is_err());
    }

    #[test]
    fn kinds_round_trip_and_unknown_ones_do_not_parse() {
        for kind in [UserKind::Staff, UserKind::PartnerUser] {
            assert_eq!(UserKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(UserKind::parse("service"), None);
        assert_eq!(UserKind::PartnerUser.principal(), PrincipalKind::PartnerUser);
    }

    #[test]
    fn partner_users_hold_the_partner_scopes_whatever_roles_say() {
        let scopes = UserKind::PartnerUser.scopes(&[Role::Admin]);
        assert_eq!(scopes.len(), scopes::PARTNER.len());
        assert!(UserKind::Staff.scopes(&[Role::Admin]).len() > scopes.len());
        assert!(UserKind::Staff.scopes(&[]).is_empty());
    }
}
