//! Tracking events are appended in order: a carrier's scans move a parcel forward
//! (picked up, in transit, out for delivery, delivered), never back, and never with a
//! time before the previous event. Exceptions can happen at any stage.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PickedUp,
    InTransit,
    OutForDelivery,
    Delivered,
    Exception,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::PickedUp,
        Kind::InTransit,
        Kind::OutForDelivery,
        Kind::Delivered,
        Kind::Exception,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PickedUp => "picked_up",
            Self::InTransit => "in_transit",
            Self::OutForDelivery => "out_for_delivery",
            Self::Delivered => "delivered",
            Self::Exception => "exception",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Position along the way; exceptions have none.
    pub fn stage(self) -> Option<u8> {
        match self {
            Self::PickedUp => Some(1),
            Self::InTransit => Some(2),
            Self::OutForDelivery => Some(3),
            Self::Delivered => Some(4),
            Self::Exception => None,
        }
    }
}

/// Checks that `kind` at `at` may follow the furthest stage reached so far and the
/// time of the last event.
pub fn may_follow(
    kind: Kind,
    at: DateTime<Utc>,
    furthest: Option<u8>,
    last_at: Option<DateTime<Utc>>,
) -> Result<(), String> {
    if let Some(last) = last_at
        && at < last
    {
        return Err("is before the previous tracking event".into());
    }
    if let (Some(stage), Some(furthest)) = (kind.stage(), furthest)
        && stage < furthest
    {
        return Err(format!("{} cannot follow a later stage", kind.as_str()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, h, 0, 0).unwrap()
    }

    #[test]
    fn scans_move_forward_in_time() {
        assert!(may_follow(Kind::PickedUp, at(1), None, None).is_ok());
        assert!(may_follow(Kind::InTransit, at(2), Some(1), Some(at(1))).is_ok());
        assert!(
            may_follow(Kind::InTransit, at(3), Some(2), Some(at(2))).is_ok(),
            "a repeated stage"
        );
        assert!(may_follow(Kind::PickedUp, at(4), Some(2), Some(at(3))).is_err());
        assert!(
            may_follow(Kind::Delivered, at(1), Some(3), Some(at(3))).is_err(),
            "time goes back"
        );
        assert!(may_follow(Kind::Exception, at(5), Some(3), Some(at(3))).is_ok());
    }
}
