//! What membership publishes on its event log (`retail.events.v1`), each event typed
//! by its message's full name, its reaction to analytics' log (an overdue member
//! starts the overdue campaigns, [`AnalyticsEvents`]) and to the orders event log: a paid order
//! adds spend, a purchase (for the lifecycle) and points with the tier multiplier; a
//! refunded return or a cancelled paid order reverses spend and points
//! (docs/domain.md, Points). The same recording serves the back-office
//! `RecordPurchase` RPC.
//!
//! The kit's consumer applies each event and stores its position in one transaction,
//! so every event takes effect exactly once; partitions by member apply the log in
//! parallel, each member's events in log order; an order already recorded (by the RPC,
//! say) is skipped, and so are members that no longer exist. An amount above the
//! suite's bound ([`MAX_AMOUNT_MINOR`]) is skipped with a warning, as the RPC refuses
//! it; points a payment would earn above the balance's cap are not earned.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use prost::{Message, Name};
use retail_kit::convert::{from_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::{AfterCommit, EventHandler, Outgoing};
use retail_kit::money::MAX_AMOUNT_MINOR;
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::DatabaseTransaction;

use crate::app::{App, PurchaseInput, Score};
use crate::domain::engagement::ContactOutcome;
use crate::domain::fields::ConsentChannel;
use crate::domain::points::EntryKind;
use crate::domain::tiers::TierChangeReason;
use crate::store::{self, Standing, campaign};

pub(crate) fn member_registered(member: &store::member::Model, at: DateTime<Utc>) -> Outgoing {
    Outgoing::of(&ev::MemberRegistered {
        member_id: member.id.clone(),
        region: member.region.clone(),
        register_time: Some(timestamp(at)),
    })
}

/// The member's `fields` changed, as of `version`.
pub(crate) fn member_updated(id: &str, fields: Vec<String>, version: i64) -> Outgoing {
    Outgoing::of(&ev::MemberUpdated {
        member_id: id.to_owned(),
        changed_fields: fields,
        version,
    })
}

pub(crate) fn consent_changed(id: &str, channel: ConsentChannel, granted: bool) -> Outgoing {
    Outgoing::of(&ev::ConsentChanged {
        member_id: id.to_owned(),
        channel: channel.as_str().to_owned(),
        granted,
    })
}

pub(crate) fn member_erased(id: &str) -> Outgoing {
    Outgoing::of(&ev::MemberErased {
        member_id: id.to_owned(),
    })
}

/// Points changed by `points`, leaving the member at `standing`.
pub(crate) fn points_changed(id: &str, kind: EntryKind, points: i64, reference: &str, standing: &Standing) -> Outgoing {
    Outgoing::of(&ev::PointsChanged {
        member_id: id.to_owned(),
        kind: kind.as_str().to_owned(),
        points,
        balance: standing.points_balance,
        debt: standing.points_debt,
        reference: reference.to_owned(),
    })
}

pub(crate) fn tier_changed(id: &str, from: &str, to: &str, reason: TierChangeReason) -> Outgoing {
    Outgoing::of(&ev::TierChanged {
        member_id: id.to_owned(),
        from_tier: from.to_owned(),
        to_tier: to.to_owned(),
        reason: reason.as_str().to_owned(),
    })
}

/// A member's lifecycle state was found changed at `at`.
pub(crate) fn lifecycle_changed(id: &str, from: &str, to: &str, at: DateTime<Utc>) -> Outgoing {
    Outgoing::of(&ev::LifecycleChanged {
        member_id: id.to_owned(),
        from_state: from.to_owned(),
        to_state: to.to_owned(),
        detect_time: Some(timestamp(at)),
    })
}

/// A campaign decided for a member at `at` (`outcome` as stored on the decision),
/// the member then in lifecycle state `lifecycle`; purchases until `attribution_end`
/// count as the campaign's response.
pub(crate) fn campaign_member_decided(
    campaign: &campaign::Model,
    member_id: &str,
    outcome: ContactOutcome,
    lifecycle: &str,
    at: DateTime<Utc>,
    attribution_end: DateTime<Utc>,
) -> Outgoing {
    Outgoing::of(&ev::CampaignMemberDecided {
        campaign_id: campaign.id.clone(),
        member_id: member_id.to_owned(),
        channel: campaign.channel.clone(),
        outcome: outcome.as_str().to_owned(),
        control: outcome == ContactOutcome::Control,
        lifecycle_state: lifecycle.to_owned(),
        decide_time: Some(timestamp(at)),
        attribution_end_time: Some(timestamp(attribution_end)),
    })
}

/// A campaign was created or changed state, at `at`.
pub(crate) fn campaign_changed(campaign: &campaign::Model, state: &str, at: DateTime<Utc>) -> Outgoing {
    Outgoing::of(&ev::CampaignChanged {
        campaign_id: campaign.id.clone(),
        display_name: campaign.display_name.clone(),
        state: state.to_owned(),
        segment_id: campaign.segment_id.clone(),
        channel: campaign.channel.clone(),
        change_time: Some(timestamp(at)),
    })
}

/// Consumer name and source, as stored with the position.
pub(crate) const CONSUMER: &str = "membership";
pub(crate) const SOURCE: &str = "orders";

/// The order events membership applies, by type name.
struct Consumed {
    paid: String,
    refunded: String,
    cancelled: String,
}

static CONSUMED: LazyLock<Consumed> = LazyLock::new(|| Consumed {
    paid: ev::OrderPaid::full_name(),
    refunded: ev::OrderRefunded::full_name(),
    cancelled: ev::OrderCancelled::full_name(),
});

/// The consumer of the orders log.
#[derive(Debug, Clone)]
pub struct OrderEvents {
    app: Arc<App>,
}

impl OrderEvents {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn decode<M: Message + Default>(event: &EventEnvelope) -> ServiceResult<M> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    M::decode(bytes).map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable event")))
}

/// The member and the purchase or refund an event stands for, if it stands for one.
fn purchase_of(event: &EventEnvelope) -> ServiceResult<Option<(String, String, PurchaseInput)>> {
    let at = |ts: &Option<prost_types::Timestamp>| ts.as_ref().and_then(from_timestamp).unwrap_or_else(Utc::now);
    let kind = event.r#type.as_str();
    let out = if kind == CONSUMED.paid {
        let e: ev::OrderPaid = decode(event)?;
        let parties = e.parties.unwrap_or_default();
        let amount = e.amount.unwrap_or_default();
        (
            parties.member_id.clone(),
            amount.currency_code,
            PurchaseInput {
                order_id: e.order_id,
                amount_minor: amount.amount_minor,
                at: at(&e.pay_time),
                channel: parties.channel,
                refund: false,
                reference: String::new(),
            },
        )
    } else if kind == CONSUMED.refunded {
        let e: ev::OrderRefunded = decode(event)?;
        let parties = e.parties.unwrap_or_default();
        let amount = e.amount.unwrap_or_default();
        (
            parties.member_id.clone(),
            amount.currency_code,
            PurchaseInput {
                order_id: e.order_id,
                amount_minor: amount.amount_minor,
                at: at(&e.refund_time),
                channel: parties.channel,
                refund: true,
                reference: format!("return-{}", e.return_id),
            },
        )
    } else if kind == CONSUMED.cancelled {
        let e: ev::OrderCancelled = decode(event)?;
        let parties = e.parties.unwrap_or_default();
        let amount = e.refunded.unwrap_or_default();
        (
            parties.member_id.clone(),
            amount.currency_code,
            PurchaseInput {
                order_id: e.order_id.clone(),
                amount_minor: amount.amount_minor,
                at: at(&e.cancel_time),
                channel: parties.channel,
                refund: true,
                reference: format!("cancel-{}", e.order_id),
            },
        )
    } else {
        return Ok(None);
    };
    let (member, currency, input) = out;
    if member.is_empty() || input.amount_minor <= 0 {
        return Ok(None);
    }
    Ok(Some((member, currency, input)))
}

#[async_trait::async_trait]
impl EventHandler for OrderEvents {
    /// Consecutive payments are recorded together, refunds one by one between them,
    /// so each member's events apply in log order.
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        let app = &self.app;
        let rules = &app.rules;
        let now = Utc::now();
        let mut changed = Vec::new();
        let mut payments = Vec::new();
        for event in events {
            let Some((member, currency, input)) = purchase_of(event)? else {
                continue;
            };
            if currency != rules.currency {
                tracing::warn!(order_id = %input.order_id, %currency, "order in another currency than membership's; not recorded");
                continue;
            }
            // Refused like the same amount through the RPC, and passed over: the
            // event cannot be applied, and retrying it would stop the partition.
            if input.amount_minor > MAX_AMOUNT_MINOR {
                tracing::warn!(order_id = %input.order_id, "order amount above the suite's bound; not recorded");
                continue;
            }
            if input.refund {
                app.pay_batch(txn, std::mem::take(&mut payments), now, &mut changed)
                    .await?;
                app.refund_in_batch(txn, member, input, now, &mut changed).await?;
            } else {
                payments.push((member, input));
            }
        }
        app.pay_batch(txn, payments, now, &mut changed).await?;
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        // Fence the cache at the versions this transaction commits, before the
        // commit: from then on no older profile can be written back (if the process
        // dies right after the commit, the fences in Redis still hold). After the
        // commit they are invalidated again where Redis missed one, and in this
        // process, and the appender is woken for the events the changes published.
        app.fence(&mut changed).await;
        let app = app.clone();
        Ok(vec![Box::pin(async move {
            app.refence(&changed).await;
            app.log.committed();
        })])
    }

    /// A member's purchases and refunds are applied in order, by one partition;
    /// other order events are passed over ([`route`]).
    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        route(event)
    }
}

/// The partition key of an order event: its member for the events membership
/// applies, `None` for the others. Orders keys its events by member in the
/// envelope, so routing decodes nothing; an event published before envelopes
/// carried the key is decoded for it, and an unreadable one goes to the handler,
/// which refuses it.
fn route(event: &EventEnvelope) -> Option<String> {
    let ty = event.r#type.as_str();
    if ty != CONSUMED.paid && ty != CONSUMED.refunded && ty != CONSUMED.cancelled {
        return None;
    }
    if !event.partition_key.is_empty() {
        return Some(event.partition_key.clone());
    }
    match purchase_of(event) {
        Ok(Some((member, _, _))) => Some(member),
        Ok(None) => None,
        Err(_) => Some(event.aggregate_id.clone()),
    }
}

/// Consumer name and source of analytics' log, as stored with the position.
pub(crate) const ANALYTICS_CONSUMER: &str = "membership";
pub(crate) const ANALYTICS_SOURCE: &str = "analytics";

/// The consumer of analytics' log, in the transaction that stores the log position:
/// a member found overdue starts the overdue campaigns for it (each campaign decides
/// for a member once, so an event delivered again contacts nobody twice); a scored
/// member's RFM segment and predicted tags are recorded ([`App::apply_score`]). An
/// event about a merged member applies to its survivor, one about an unknown or
/// erased member to nobody.
#[derive(Debug, Clone)]
pub struct AnalyticsEvents {
    app: Arc<App>,
}

impl AnalyticsEvents {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[async_trait::async_trait]
impl EventHandler for AnalyticsEvents {
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        let (overdue, scored) = (ev::MemberOverdue::full_name(), ev::MemberScored::full_name());
        let now = Utc::now();
        let mut changed = Vec::new();
        for event in events.iter() {
            if event.r#type == overdue {
                let e: ev::MemberOverdue = decode(event)?;
                let Some(member) = store::identity::resolve_member(txn, &e.member_id).await? else {
                    continue;
                };
                if let Some(version) = self.app.react_to_overdue(txn, &member, now).await? {
                    changed.push((member, version));
                }
            } else if event.r#type == scored {
                let e: ev::MemberScored = decode(event)?;
                let Some(member) = store::identity::resolve_member(txn, &e.member_id).await? else {
                    continue;
                };
                if let Some(version) = self.app.apply_score(txn, &member, score_of(e), now).await? {
                    changed.push((member, version));
                }
            }
        }
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let app = self.app.clone();
        Ok(vec![Box::pin(async move {
            for (member, version) in changed {
                app.forget_member(&member, version, false).await;
            }
            app.log.committed();
        })])
    }

    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        (event.r#type == ev::MemberOverdue::full_name() || event.r#type == ev::MemberScored::full_name())
            .then(|| event.aggregate_id.clone())
    }
}

/// The scoring an event reports; a predicted tag without an expiry is passed
/// over (a prediction always has a durability).
fn score_of(e: ev::MemberScored) -> Score {
    Score {
        rfm_segment: Some(e.rfm_segment).filter(|s| !s.is_empty()),
        predicted: e
            .predicted_tags
            .into_iter()
            .filter_map(|t| Some((t.name, t.expire_time.as_ref().and_then(from_timestamp)?)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_type_is_its_message_name() {
        let out = tier_changed("m-1", "silver", "gold", TierChangeReason::Purchase);
        assert_eq!(out.type_name(), format!("{}.TierChanged", ev::TierChanged::PACKAGE));
        let back = ev::TierChanged::decode(out.payload()).unwrap();
        assert_eq!((back.to_tier.as_str(), back.reason.as_str()), ("gold", "purchase"));
        assert_eq!(CONSUMED.paid, format!("{}.OrderPaid", ev::OrderPaid::PACKAGE));
    }

    /// Regression: every partition decoded every order event to find its key.
    /// An unreadable payload shows whether routing decodes it.
    #[test]
    fn an_order_event_is_routed_by_the_envelope_key_without_decoding_its_payload() {
        let event = EventEnvelope {
            r#type: ev::OrderPaid::full_name(),
            aggregate_id: "o-1".into(),
            partition_key: "m-7".into(),
            payload: Some(prost_types::Any {
                type_url: ev::OrderPaid::type_url(),
                value: vec![0xff, 0xff, 0xff],
            }),
            ..Default::default()
        };
        assert!(purchase_of(&event).is_err(), "the payload is unreadable");
        assert_eq!(route(&event), Some("m-7".to_owned()));
        let placed = EventEnvelope {
            r#type: ev::OrderPlaced::full_name(),
            ..event
        };
        assert_eq!(
            route(&placed),
            None,
            "an event membership does nothing with is passed over"
        );
    }
}
