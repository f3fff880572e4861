//! What channel-partner publishes on its event log (`retail.events.v1`), each event
//! typed by its message's full name and keyed by its partner, through the outbox in
//! the transaction of the change it reports.

use chrono::{DateTime, Utc};
use retail_kit::convert::timestamp;
use retail_kit::events::Outgoing;
use retail_proto::events as ev;

use crate::domain::partner::PartnerState;

pub(crate) fn partner_status_changed(
    partner: &str,
    from: Option<PartnerState>,
    to: PartnerState,
    reason: &str,
    at: DateTime<Utc>,
) -> Outgoing {
    Outgoing::of(&ev::PartnerStatusChanged {
        partner_id: partner.to_owned(),
        from_state: from.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        to_state: to.as_str().to_owned(),
        reason: reason.to_owned(),
        change_time: Some(timestamp(at)),
    })
    .partitioned_by(partner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::{Message, Name};

    #[test]
    fn an_event_type_is_its_message_name_and_its_key_the_partner() {
        let out = partner_status_changed("p-1", None, PartnerState::Applied, "registered", Utc::now());
        assert_eq!(out.type_name(), ev::PartnerStatusChanged::full_name());
        assert_eq!(out.partition_key(), Some("p-1"));
        let back = ev::PartnerStatusChanged::decode(out.payload()).unwrap();
        assert_eq!((back.from_state.as_str(), back.to_state.as_str()), ("", "applied"));
    }
}
