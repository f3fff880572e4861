//! A member as served: the profile message with its lifecycle state and qualifying
//! spend worked out from the purchases. The cache keeps profiles in this form, so a
//! hit is answered as stored.

use std::collections::BTreeMap;

use chrono::Utc;
use prost::Message;
use retail_kit::convert::timestamp;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_proto::common::Money;
use retail_proto::membership as pb;
use sea_orm::{AccessMode, IsolationLevel, TransactionTrait};

use super::{App, live, member_key, member_not_found, stored, tier_key};
use crate::domain::engagement;
use crate::domain::fields::{ConsentChannel, Identifier, IdentifierKind};
use crate::domain::ids::MemberId;
use crate::domain::lifecycle::LifecycleState;
use crate::domain::points::PurchaseKind;
use crate::domain::rules::LoyaltyRules;
use crate::store::{self, MemberView};

/// Merges chain (a survivor merged later in turn) at most this deep when read.
const MAX_REDIRECTS: usize = 16;

/// The survivor a profile read for `id` redirects to: a profile naming another member.
fn redirect(name: &str, id: &str) -> Option<String> {
    name.strip_prefix("members/")
        .filter(|named| *named != id)
        .map(str::to_owned)
}

fn too_many_redirects() -> ServiceError {
    ServiceError::internal(anyhow::anyhow!("a chain of merged members is too long to follow"))
}

fn decode_member(bytes: &[u8]) -> ServiceResult<pb::Member> {
    pb::Member::decode(bytes)
        .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("cached member is unreadable")))
}

pub(crate) fn identifier_kind(kind: IdentifierKind) -> pb::IdentifierKind {
    match kind {
        IdentifierKind::Phone => pb::IdentifierKind::Phone,
        IdentifierKind::Email => pb::IdentifierKind::Email,
        IdentifierKind::Card => pb::IdentifierKind::Card,
        IdentifierKind::External => pb::IdentifierKind::External,
        IdentifierKind::Device => pb::IdentifierKind::Device,
        IdentifierKind::Rfid => pb::IdentifierKind::Rfid,
        IdentifierKind::Beacon => pb::IdentifierKind::Beacon,
    }
}

/// A served identifier back in its parsed form (served ones are normalised).
pub(crate) fn identifier_from_pb(id: &pb::Identifier) -> Option<Identifier> {
    let kind = match pb::IdentifierKind::try_from(id.kind).ok()? {
        pb::IdentifierKind::Phone => IdentifierKind::Phone,
        pb::IdentifierKind::Email => IdentifierKind::Email,
        pb::IdentifierKind::Card => IdentifierKind::Card,
        pb::IdentifierKind::External => IdentifierKind::External,
        pb::IdentifierKind::Device => IdentifierKind::Device,
        pb::IdentifierKind::Rfid => IdentifierKind::Rfid,
        pb::IdentifierKind::Beacon => IdentifierKind::Beacon,
        pb::IdentifierKind::Unspecified => return None,
    };
    Some(Identifier {
        kind,
        channel: id.channel.clone(),
        value: id.value.clone(),
    })
}

pub(crate) fn consent_channel(channel: ConsentChannel) -> pb::ConsentChannel {
    match channel {
        ConsentChannel::Sms => pb::ConsentChannel::Sms,
        ConsentChannel::Email => pb::ConsentChannel::Email,
        ConsentChannel::AppPush => pb::ConsentChannel::AppPush,
        ConsentChannel::Social => pb::ConsentChannel::Social,
    }
}

pub(crate) fn lifecycle_state(state: LifecycleState) -> pb::LifecycleState {
    match state {
        LifecycleState::Prospect => pb::LifecycleState::Prospect,
        LifecycleState::NewOnce => pb::LifecycleState::NewOnce,
        LifecycleState::NewRepeat => pb::LifecycleState::NewRepeat,
        LifecycleState::OldOnce => pb::LifecycleState::OldOnce,
        LifecycleState::OldRepeat => pb::LifecycleState::OldRepeat,
        LifecycleState::Silent => pb::LifecycleState::Silent,
        LifecycleState::Sleeping => pb::LifecycleState::Sleeping,
        LifecycleState::Lost => pb::LifecycleState::Lost,
    }
}

/// A consent decision as served.
pub(crate) fn consent(c: &store::consent::Model) -> ServiceResult<pb::Consent> {
    Ok(pb::Consent {
        channel: consent_channel(stored("consent channel", &c.channel, ConsentChannel::parse)?) as i32,
        granted: c.granted,
        source: c.source.clone(),
        update_time: Some(timestamp(c.decided_at)),
    })
}

/// The member as served, its lifecycle and spend as of now.
pub(crate) fn profile(rules: &LoyaltyRules, v: &MemberView) -> ServiceResult<pb::Member> {
    let m = &v.member;
    let now = Utc::now();
    let spend_records: Vec<_> = v.purchases.iter().map(|p| (p.occurred_at, p.amount_minor)).collect();
    let mut paid_at = Vec::new();
    for p in &v.purchases {
        if stored("purchase kind", &p.kind, PurchaseKind::parse)? == PurchaseKind::Paid {
            paid_at.push(p.occurred_at);
        }
    }
    let attributes: BTreeMap<String, String> = serde_json::from_str(&m.attributes_json).unwrap_or_default();
    Ok(pb::Member {
        name: format!("members/{}", m.id),
        display_name: m.display_name.clone(),
        gender: m.gender.clone(),
        birth_date: m.birth_date.clone().unwrap_or_default(),
        region: m.region.clone(),
        attributes,
        identifiers: v
            .identifiers
            .iter()
            .map(|i| {
                Ok(pb::Identifier {
                    kind: identifier_kind(stored("identifier kind", &i.kind, IdentifierKind::parse)?) as i32,
                    value: i.value.clone(),
                    channel: i.channel.clone(),
                })
            })
            .collect::<ServiceResult<_>>()?,
        tags: v
            .tags
            .iter()
            .filter(|t| engagement::tag_holds(t.expires_at, now))
            .map(|t| pb::Tag {
                path: t.path.clone(),
                value: t.value.clone(),
                dynamic: t.dynamic,
                source: t.source.clone(),
                update_time: Some(timestamp(t.updated_at)),
                expire_time: t.expires_at.map(timestamp),
                category: engagement::TagCategory::of(&t.path)
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
            })
            .collect(),
        consents: v.consents.iter().map(consent).collect::<ServiceResult<_>>()?,
        tier: m.tier.clone(),
        points_balance: m.points_balance,
        lifecycle_state: lifecycle_state(rules.lifecycle(&paid_at, now)) as i32,
        qualifying_spend: Some(Money {
            currency_code: rules.currency.clone(),
            amount_minor: rules.spend(&spend_records, now),
        }),
        register_time: Some(timestamp(m.registered_at)),
        update_time: Some(timestamp(m.updated_at)),
        erased: m.erased_at.is_some(),
        version: m.version,
        rfm_segment: m.rfm_segment.clone().unwrap_or_default(),
    })
}

impl App {
    pub(crate) fn profile(&self, v: &MemberView) -> ServiceResult<pb::Member> {
        profile(&self.rules, v)
    }

    /// The member as served: from the cache, else from the database (and cached).
    /// A merged member answers as its survivor (the answer names the survivor).
    pub(crate) async fn cached_member(&self, id: &MemberId) -> ServiceResult<pb::Member> {
        let mut id = id.as_str().to_owned();
        for _ in 0..MAX_REDIRECTS {
            let member = self.cached_profile(&id).await?;
            match redirect(&member.name, &id) {
                Some(survivor) => id = survivor,
                None => return Ok(member),
            }
        }
        Err(too_many_redirects())
    }

    /// The cached profile of `id`: for a merged member, a profile naming only its
    /// survivor (the redirect), which stays true since a merged member never changes.
    async fn cached_profile(&self, id: &str) -> ServiceResult<pb::Member> {
        let bytes = self
            .cache
            .get_or_load(&member_key(id), || async {
                // One snapshot: the member row (points, version) and its purchases
                // (spend, lifecycle) as of the same commit.
                let txn = match self.db.get_database_backend() {
                    sea_orm::DatabaseBackend::Postgres => {
                        self.db
                            .begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
                            .await?
                    }
                    // A SQLite transaction reads one snapshot anyway.
                    _ => self.db.begin().await?,
                };
                let Some(member) = store::find_member(&txn, id).await? else {
                    return Ok(None);
                };
                if member.erased_at.is_some() {
                    return Ok(None);
                }
                let version = member.version.max(0) as u64;
                if let Some(survivor) = &member.merged_into {
                    let redirect = pb::Member {
                        name: format!("members/{survivor}"),
                        version: member.version,
                        ..pb::Member::default()
                    };
                    return Ok(Some((version, redirect.encode_to_vec())));
                }
                let view = store::view(&txn, member).await?;
                txn.commit().await?;
                Ok(Some((version, self.profile(&view)?.encode_to_vec())))
            })
            .await?;
        match bytes {
            Some(bytes) => decode_member(&bytes),
            None => Err(member_not_found(id)),
        }
    }

    /// The member's own fields (those of its row): from the cached profile if there
    /// is one, else from the member row alone. Not cached: the cache holds whole
    /// profiles. A merged member answers as its survivor.
    pub(crate) async fn member_row(&self, id: &MemberId) -> ServiceResult<pb::Member> {
        let mut id = id.as_str().to_owned();
        for _ in 0..MAX_REDIRECTS {
            if let Some(bytes) = self.cache.peek(&member_key(&id)).await {
                let member = decode_member(&bytes)?;
                match redirect(&member.name, &id) {
                    Some(survivor) => {
                        id = survivor;
                        continue;
                    }
                    None => return Ok(member),
                }
            }
            match store::find_member(&self.db, &id).await? {
                Some(member) if member.erased_at.is_none() => match member.merged_into {
                    Some(survivor) => id = survivor,
                    None => {
                        return self.profile(&MemberView {
                            member,
                            identifiers: Vec::new(),
                            tags: Vec::new(),
                            consents: Vec::new(),
                            purchases: Vec::new(),
                        });
                    }
                },
                _ => return Err(member_not_found(&id)),
            }
        }
        Err(too_many_redirects())
    }

    /// The member's name and tier, through the tier's own cache key ([`tier_key`]).
    /// A merged member's key holds its survivor's id (after a NUL byte, which no
    /// tier name starts with), and the survivor's tier is read.
    pub(crate) async fn member_tier(&self, id: &MemberId) -> ServiceResult<pb::Member> {
        let mut id = id.as_str().to_owned();
        for _ in 0..MAX_REDIRECTS {
            let tier = self
                .cache
                .get_or_load(&tier_key(&id), || async {
                    Ok(match store::find_member(&self.db, &id).await? {
                        Some(m) if m.erased_at.is_none() => {
                            let value = match m.merged_into {
                                Some(survivor) => format!("\u{0}{survivor}"),
                                None => m.tier,
                            };
                            Some((m.version.max(0) as u64, value.into_bytes()))
                        }
                        _ => None,
                    })
                })
                .await?
                .ok_or_else(|| member_not_found(&id))?;
            let tier = String::from_utf8(tier.to_vec())
                .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("cached tier is unreadable")))?;
            match tier.strip_prefix('\u{0}') {
                Some(survivor) => id = survivor.to_owned(),
                None => {
                    return Ok(pb::Member {
                        name: format!("members/{id}"),
                        tier,
                        ..pb::Member::default()
                    });
                }
            }
        }
        Err(too_many_redirects())
    }

    /// The live member as it is now, from the database.
    pub(crate) async fn current_profile(&self, id: &MemberId) -> ServiceResult<pb::Member> {
        let member = live(&self.db, id.as_str()).await?;
        self.profile(&store::view(&self.db, member).await?)
    }
}
