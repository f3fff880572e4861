//! The rules of webhooks without I/O: the event types and the signing secrets.
//! What a subscription URL may be, the signature, the retry schedule and which
//! addresses are private are the kit's ([`retail_kit::webhook`]).

pub use retail_kit::webhook::{BadUrl, MAX_URL_LEN, backoff, check_url};

/// The kinds of events a partner can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An order of the partner left the warehouse.
    OrderShipped,
    /// An order of the partner reached its customer.
    OrderDelivered,
    /// A return of the partner's order was refunded.
    OrderReturned,
    /// A lead was offered to the partner.
    LeadAssigned,
    /// A deal lock of the partner ran out.
    LockExpired,
    /// A target of the partner (or one of its reps) was attained.
    TargetAttained,
    /// A redemption of the partner was approved, rejected, fulfilled or cancelled.
    RedemptionDecided,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::OrderShipped,
        Self::OrderDelivered,
        Self::OrderReturned,
        Self::LeadAssigned,
        Self::LockExpired,
        Self::TargetAttained,
        Self::RedemptionDecided,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderShipped => "order.shipped",
            Self::OrderDelivered => "order.delivered",
            Self::OrderReturned => "order.returned",
            Self::LeadAssigned => "lead.assigned",
            Self::LockExpired => "lock.expired",
            Self::TargetAttained => "target.attained",
            Self::RedemptionDecided => "redemption.decided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The event types of a subscription as stored: space-separated, in the order of
/// [`EventType::ALL`], each once.
pub fn join_types(types: &[EventType]) -> String {
    EventType::ALL
        .into_iter()
        .filter(|t| types.contains(t))
        .map(EventType::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stored event types, unknown ones left out.
pub fn split_types(stored: &str) -> Vec<EventType> {
    stored.split_whitespace().filter_map(EventType::parse).collect()
}

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_and_store_in_a_fixed_order() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("order.placed"), None);
        let stored = join_types(&[EventType::LockExpired, EventType::OrderShipped, EventType::OrderShipped]);
        assert_eq!(stored, "order.shipped lock.expired");
        assert_eq!(
            split_types(&stored),
            vec![EventType::OrderShipped, EventType::LockExpired]
        );
    }

    #[test]
    fn secrets_are_fresh_and_long() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), "whsec_".len() + 64);
    }
}
