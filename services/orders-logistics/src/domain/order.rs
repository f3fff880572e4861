//! What an order is made of: its channel and its lines.

/// Lines per order (and per return), at most.
pub const MAX_LINES: usize = 200;
/// Units per line, at most.
pub const MAX_UNITS: i64 = 10_000;

/// Where an order was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Store,
    Online,
    /// Sold by a partner (dealer, agent, franchisee); names the partner.
    Partner,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Online => "online",
            Self::Partner => "partner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Store, Self::Online, Self::Partner]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// The end customer a partner sale names: what deal registration locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// 1-200 characters.
    pub display_name: String,
    /// 1-32 characters.
    pub region: String,
    /// At most 32 characters; empty when unknown.
    pub tax_id: String,
}

/// Longest customer name.
pub const MAX_CUSTOMER_NAME: usize = 200;
/// Longest region and tax id.
pub const MAX_CUSTOMER_REGION: usize = 32;
pub const MAX_CUSTOMER_TAX_ID: usize = 32;

/// Whether a line's units are within the rules.
pub fn units_allowed(quantity: i64) -> bool {
    (1..=MAX_UNITS).contains(&quantity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_and_units_have_bounds() {
        for c in [Channel::Store, Channel::Online, Channel::Partner] {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("phone"), None);
        for (q, ok) in [
            (0, false),
            (1, true),
            (MAX_UNITS, true),
            (MAX_UNITS + 1, false),
            (-1, false),
        ] {
            assert_eq!(units_allowed(q), ok, "{q}");
        }
        assert!(!units_allowed(i64::MIN) && !units_allowed(i64::MAX));
    }
}
