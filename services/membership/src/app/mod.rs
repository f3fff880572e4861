//! Membership's use cases, one method each, on parsed input: profiles and
//! recognition ([`members`]), identifiers, tags and consents ([`identifiers`],
//! [`tags`], [`consents`]), export and erasure ([`privacy`]), purchases, the points
//! ledger and the orders log's batches ([`points`], [`orders_log`]), tiers
//! ([`tiers`]), and segments and campaigns ([`engagement`]).
//!
//! Every change runs in one transaction with its events; after the commit the cache
//! forgets the member up to the version the change committed. A committed change is
//! never hidden by an older cached profile, and an erased member is never served: an
//! invalidation Redis misses keeps the key on the database until a retry delivers it.
//! Other replicas sharing the Redis may serve the older profile for at most
//! [`retail_kit::cache::STALENESS_BOUND`] (2 s) after Redis answers again.

mod consents;
mod contacts;
pub(crate) mod engagement;
mod identifiers;
mod members;
mod merge;
pub(crate) mod orders_log;
mod points;
mod privacy;
mod profile;
mod tags;
mod tiers;
mod webhook_sender;

use std::sync::Arc;

use retail_kit::cache::VersionedCache;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::EventLog;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::domain::fields::Identifier;
use crate::domain::ids::MemberId;
use crate::domain::rules::LoyaltyRules;
use crate::store;

pub(crate) use contacts::{Touch, Visit};
pub use engagement::{CouponIssuer, LogSender, MessageSender, OutgoingMessage, RetryPolicy};
pub(crate) use engagement::{EngagementRules, NewCampaign, campaign_schedule};
pub(crate) use members::{ListMembers, MemberRead, Profile, ProfileChange, Registration};
pub(crate) use merge::Merge;
pub(crate) use points::{Balance, PurchaseInput};
pub(crate) use privacy::Export;
pub(crate) use profile::{consent, consent_channel, lifecycle_state};
pub(crate) use tags::{Score, TagChange};
pub use webhook_sender::WebhookSender;

/// The service's state and its use cases.
#[derive(Debug)]
pub struct App {
    pub(crate) db: DatabaseConnection,
    pub(crate) cache: Arc<VersionedCache>,
    pub(crate) log: Arc<EventLog>,
    pub(crate) rules: LoyaltyRules,
    pub(crate) engagement: EngagementRules,
    pub(crate) sender: Arc<dyn MessageSender>,
    /// Catalog's coupon codes for coupon campaigns; unset without a catalog URL.
    coupons: std::sync::RwLock<Option<Arc<dyn CouponIssuer>>>,
}

/// The cache key of a member's whole profile.
fn member_key(id: &str) -> String {
    format!("member:{id}")
}

/// The cache key of a member's tier alone. Every change through the RPCs and jobs
/// invalidates it, but a payment from the orders log only when it changed the tier
/// (see [`App::forget_member`]), so pricing's tier reads stay hits while the
/// member buys.
fn tier_key(id: &str) -> String {
    format!("member-tier:{id}")
}

pub(crate) fn member_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("member", format!("members/{id}"))
}

/// Loads a live member; NOT_FOUND for unknown and erased ones, FAILED_PRECONDITION
/// naming the survivor for a merged one (changes go to the survivor).
pub(crate) async fn live(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<store::member::Model> {
    match store::find_member(conn, id).await? {
        Some(m) if m.erased_at.is_some() => Err(member_not_found(id)),
        Some(m) => match &m.merged_into {
            Some(survivor) => Err(ServiceError::FailedPrecondition(format!(
                "the member was merged into members/{survivor}"
            ))),
            None => Ok(m),
        },
        None => Err(member_not_found(id)),
    }
}

/// A state or kind as stored; a value this build does not know is an internal error.
pub(crate) fn stored<T>(what: &str, raw: &str, parse: impl FnOnce(&str) -> Option<T>) -> ServiceResult<T> {
    parse(raw).ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored {what} {raw:?}")))
}

impl App {
    pub(crate) fn new(
        db: DatabaseConnection,
        cache: Arc<VersionedCache>,
        log: Arc<EventLog>,
        rules: LoyaltyRules,
        engagement: EngagementRules,
    ) -> Self {
        Self {
            db,
            cache,
            log,
            rules,
            engagement,
            sender: engagement::default_sender(),
            coupons: std::sync::RwLock::new(None),
        }
    }

    /// Gets coupon campaigns' codes from `issuer` (catalog, or a stand-in in tests).
    pub fn set_coupon_issuer(&self, issuer: Arc<dyn CouponIssuer>) {
        if let Ok(mut slot) = self.coupons.write() {
            *slot = Some(issuer);
        }
    }

    /// The coupon issuer, if catalog is configured.
    pub(crate) fn coupon_issuer(&self) -> Option<Arc<dyn CouponIssuer>> {
        self.coupons.read().ok().and_then(|slot| slot.clone())
    }

    /// Delivers campaign messages through `sender` instead of the default log.
    pub fn set_message_sender(&mut self, sender: Arc<dyn MessageSender>) {
        self.sender = sender;
    }

    /// Invalidates the member's cached profile up to `version`, and its cached tier
    /// too unless the change left the tier alone (`tier_changed` false). False if
    /// Redis missed one of them.
    pub(crate) async fn forget_member(&self, member_id: &str, version: i64, tier_changed: bool) -> bool {
        let version = version.max(0) as u64;
        let mut reached = self.cache.invalidate(&member_key(member_id), version).await;
        if tier_changed {
            reached &= self.cache.invalidate(&tier_key(member_id), version).await;
        }
        reached
    }

    /// [`Self::forget_member`] in this process alone ([`VersionedCache::invalidate_here`]).
    pub(crate) fn forget_member_here(&self, member_id: &str, version: i64, tier_changed: bool) {
        let version = version.max(0) as u64;
        self.cache.invalidate_here(&member_key(member_id), version);
        if tier_changed {
            self.cache.invalidate_here(&tier_key(member_id), version);
        }
    }

    /// After a committed change of the profile: the cache forgets the member and
    /// `identifiers` up to `version`, and subscribers wake up.
    async fn after_commit(&self, member_id: &MemberId, version: i64, identifiers: &[Identifier]) {
        self.forget_member(member_id.as_str(), version, true).await;
        let version = version.max(0) as u64;
        for id in identifiers {
            self.cache.invalidate(&id.cache_key(), version).await;
        }
        self.log.committed();
    }

    /// After a committed change of points or tier: the cache forgets the member
    /// (profile and tier) up to `committed`, the version the change committed (read
    /// when the caller does not know it), and subscribers wake up.
    async fn finish(&self, member_id: &MemberId, committed: Option<i64>) {
        let member_id = member_id.as_str();
        let version = match committed {
            Some(version) => Some(version),
            None => match store::find_member(&self.db, member_id).await {
                Ok(member) => member.map(|m| m.version),
                Err(e) => {
                    // The cached entries stay until their time to live runs out.
                    tracing::warn!(member_id, error = %e, "the member's version could not be read to invalidate the cache");
                    None
                }
            },
        };
        if let Some(version) = version {
            self.forget_member(member_id, version, true).await;
        }
        self.log.committed();
    }
}
