//! A partner organisation's kind and status machine: `applied -> active ->
//! suspended | terminated`; a suspended partner is reinstated (back to active) or
//! terminated; an applicant may be turned down (terminated); terminated is final.

/// Kind of partner organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartnerType {
    Dealer,
    Agent,
    Franchisee,
}

impl PartnerType {
    pub const ALL: [Self; 3] = [Self::Dealer, Self::Agent, Self::Franchisee];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dealer => "dealer",
            Self::Agent => "agent",
            Self::Franchisee => "franchisee",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Where a partner stands in the programme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartnerState {
    Applied,
    Active,
    Suspended,
    Terminated,
}

impl PartnerState {
    pub const ALL: [Self; 4] = [Self::Applied, Self::Active, Self::Suspended, Self::Terminated];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the partner may move from this state to `to`.
    pub fn may_become(self, to: Self) -> bool {
        use PartnerState::*;
        matches!(
            (self, to),
            (Applied, Active)
                | (Applied, Terminated)
                | (Active, Suspended)
                | (Active, Terminated)
                | (Suspended, Active)
                | (Suspended, Terminated)
        )
    }

    /// Whether the partner's principals may act (sell, earn, redeem, get tokens).
    pub fn in_good_standing(self) -> bool {
        matches!(self, Self::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_read_back_what_they_write() {
        for t in PartnerType::ALL {
            assert_eq!(PartnerType::parse(t.as_str()), Some(t));
        }
        for s in PartnerState::ALL {
            assert_eq!(PartnerState::parse(s.as_str()), Some(s));
        }
        assert_eq!(PartnerType::parse("Dealer"), None);
        assert_eq!(PartnerState::parse("closed"), None);
    }

    #[test]
    fn the_status_machine_allows_exactly_its_arrows() {
        use PartnerState::*;
        let allowed = [
            (Applied, Active),
            (Applied, Terminated),
            (Active, Suspended),
            (Active, Terminated),
            (Suspended, Active),
            (Suspended, Terminated),
        ];
        for from in PartnerState::ALL {
            for to in PartnerState::ALL {
                assert_eq!(from.may_become(to), allowed.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
        assert!(!Terminated.may_become(Active), "terminated is final");
        assert!(Active.in_good_standing());
        assert!(!Suspended.in_good_standing() && !Applied.in_good_standing());
    }
}
