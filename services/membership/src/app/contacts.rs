//! Recognition at a touchpoint and anonymous contacts (docs/domain.md, Identity
//! resolution and merges): a person presents an identifier (and maybe more of the
//! same touch); a member's identifier recognises the member (new or returning),
//! otherwise the device, RFID, beacon or channel ids recognise or open an anonymous
//! contact. The touch is recorded either way. A member seen with a contact's id
//! takes the contact over: its ids become the member's, its touchpoints stay in
//! the member's history. Registration and `AddIdentifier` do the same.

use chrono::{DateTime, Utc};
use retail_kit::convert::timestamp;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::Outgoing;
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::events as ev;
use retail_proto::membership as pb;
use sea_orm::{ConnectionTrait, DatabaseTransaction};

use super::profile::{identifier_from_pb, identifier_kind, profile};
use super::{App, live, stored};
use crate::domain::engagement::TriggerKind;
use crate::domain::fields::{Identifier, IdentifierKind, MAX_IDENTIFIERS, Scene, TouchKind};
use crate::domain::ids::MemberId;
use crate::domain::rules::LoyaltyRules;
use crate::events;
use crate::store::identity::ContactFilter;
use crate::store::{self, identity, loyalty};

/// Touchpoints an anonymous contact shows, newest first.
const CONTACT_TOUCHES_SHOWN: u64 = 20;

/// One touch, checked.
#[derive(Debug, Clone)]
pub(crate) struct Touch {
    pub(crate) scene: Scene,
    pub(crate) place: String,
    pub(crate) kind: TouchKind,
    /// The SKU viewed or tried; '' for other kinds.
    pub(crate) product: String,
    pub(crate) at: DateTime<Utc>,
}

impl Touch {
    /// The trigger this touch is for a member: a check-in at a store or partner
    /// outlet is a scene, a product viewed or tried content.
    fn trigger(&self) -> Option<TriggerKind> {
        if self.kind == TouchKind::CheckIn && self.scene.physical() {
            Some(TriggerKind::CheckIn)
        } else if self.kind.about_product() {
            Some(TriggerKind::Content)
        } else {
            None
        }
    }
}

/// A person at a touchpoint: the identifier presented, the touch, and further
/// identifiers of the same touch.
#[derive(Debug, Clone)]
pub(crate) struct Visit {
    pub(crate) identifier: Identifier,
    pub(crate) touch: Touch,
    pub(crate) linked: Vec<Identifier>,
}

fn contact_merged(contact_id: &str, member_id: &str) -> Outgoing {
    Outgoing::of(&ev::ContactMerged {
        contact_id: contact_id.to_owned(),
        member_id: member_id.to_owned(),
    })
}

fn parsed(row_kind: &str, channel: &str, value: &str) -> ServiceResult<Identifier> {
    Ok(Identifier {
        kind: stored("identifier kind", row_kind, IdentifierKind::parse)?,
        channel: channel.to_owned(),
        value: value.to_owned(),
    })
}

/// Merges the anonymous contacts holding any of `ids` into the member: their ids
/// become the member's (FAILED_PRECONDITION past the member's limit), their
/// touchpoints the member's history. Returns the ids the member gained.
pub(crate) async fn absorb_contacts(
    txn: &DatabaseTransaction,
    member_id: &str,
    ids: &[Identifier],
    now: DateTime<Utc>,
) -> ServiceResult<Vec<Identifier>> {
    let mut gained = Vec::new();
    for id in ids.iter().filter(|i| i.kind.anonymous()) {
        let Some(contact_id) = identity::contact_by_identifier(txn, id).await? else {
            continue;
        };
        let held = identity::contact_identifiers(txn, &contact_id).await?;
        if !identity::merge_contact(txn, &contact_id, member_id, now).await? {
            continue;
        }
        for row in held {
            let id = parsed(&row.kind, &row.channel, &row.value)?;
            if store::member_id_by_identifier(txn, &id).await?.is_some() {
                continue;
            }
            store::insert_identifier(txn, member_id, &id, now).await?;
            gained.push(id);
        }
        contact_merged(&contact_id, member_id).publish(txn, member_id).await?;
    }
    if !gained.is_empty() {
        let count = identity::member_identifier_count(txn, member_id).await?;
        if count > MAX_IDENTIFIERS as u64 {
            return Err(ServiceError::FailedPrecondition(format!(
                "with the anonymous contact's ids the member would have more than {MAX_IDENTIFIERS} identifiers"
            )));
        }
    }
    Ok(gained)
}

fn scene_pb(s: Scene) -> pb::Scene {
    match s {
        Scene::Store => pb::Scene::Store,
        Scene::Online => pb::Scene::Online,
        Scene::PartnerOutlet => pb::Scene::PartnerOutlet,
    }
}

fn touch_kind_pb(k: TouchKind) -> pb::TouchKind {
    match k {
        TouchKind::CheckIn => pb::TouchKind::CheckIn,
        TouchKind::Visit => pb::TouchKind::Visit,
        TouchKind::ViewProduct => pb::TouchKind::ViewProduct,
        TouchKind::TryProduct => pb::TouchKind::TryProduct,
    }
}

fn touchpoint_pb(t: &store::touchpoint::Model) -> ServiceResult<pb::Touchpoint> {
    Ok(pb::Touchpoint {
        scene: scene_pb(stored("scene", &t.scene, Scene::parse)?) as i32,
        place: t.place.clone(),
        kind: touch_kind_pb(stored("touch kind", &t.kind, TouchKind::parse)?) as i32,
        product: t.product.clone(),
        occur_time: Some(timestamp(t.occurred_at)),
    })
}

async fn contact_pb(
    conn: &impl ConnectionTrait,
    contact: &store::anonymous_contact::Model,
) -> ServiceResult<pb::AnonymousContact> {
    let identifiers = identity::contact_identifiers(conn, &contact.id)
        .await?
        .iter()
        .map(|row| {
            let id = parsed(&row.kind, &row.channel, &row.value)?;
            Ok(pb::Identifier {
                kind: identifier_kind(id.kind) as i32,
                value: id.value,
                channel: id.channel,
            })
        })
        .collect::<ServiceResult<_>>()?;
    let touchpoints = identity::contact_touchpoints(conn, &contact.id, CONTACT_TOUCHES_SHOWN)
        .await?
        .iter()
        .map(touchpoint_pb)
        .collect::<ServiceResult<_>>()?;
    Ok(pb::AnonymousContact {
        name: format!("contacts/{}", contact.id),
        identifiers,
        touchpoints,
        create_time: Some(timestamp(contact.created_at)),
        last_seen_time: Some(timestamp(contact.last_seen_at)),
        merged_into: contact
            .merged_into
            .as_ref()
            .map(|id| format!("members/{id}"))
            .unwrap_or_default(),
        merge_time: contact.merged_at.map(timestamp),
    })
}

fn touch_row(touch: &Touch, member_id: Option<&str>, contact_id: Option<&str>) -> store::touchpoint::Model {
    store::touchpoint::Model {
        id: store::new_id(),
        member_id: member_id.map(str::to_owned),
        contact_id: contact_id.map(str::to_owned),
        scene: touch.scene.as_str().to_owned(),
        place: touch.place.clone(),
        kind: touch.kind.as_str().to_owned(),
        product: touch.product.clone(),
        occurred_at: touch.at,
    }
}

/// Recognises the visitor and records the touch, in the caller's transaction.
async fn visit_in(
    txn: &DatabaseTransaction,
    rules: &LoyaltyRules,
    visit: &Visit,
    now: DateTime<Utc>,
) -> ServiceResult<pb::IdentifyVisitorResponse> {
    let mut presented = vec![visit.identifier.clone()];
    for id in &visit.linked {
        if !presented.contains(id) {
            presented.push(id.clone());
        }
    }
    let mut member_id = None;
    for id in &presented {
        if let Some(found) = store::member_id_by_identifier(txn, id).await? {
            member_id = Some(found);
            break;
        }
    }
    if let Some(member_id) = member_id {
        let member = live(txn, &member_id).await?;
        let returning = identity::member_touch_count(txn, &member_id).await? > 0
            || !loyalty::purchases_after(txn, &member_id, None).await?.is_empty();
        // The contacts of the other ids become the member; ids nobody holds that
        // keep no personal data are the member's from now on.
        let others: Vec<Identifier> = presented.iter().filter(|i| **i != visit.identifier).cloned().collect();
        let mut gained = absorb_contacts(txn, &member_id, &others, now).await?;
        let mut held = identity::member_identifier_count(txn, &member_id).await?;
        for id in others.iter().filter(|i| i.kind.anonymous()) {
            if held >= MAX_IDENTIFIERS as u64 {
                break;
            }
            if store::member_id_by_identifier(txn, id).await?.is_none()
                && identity::contact_by_identifier(txn, id).await?.is_none()
            {
                store::insert_identifier(txn, &member_id, id, now).await?;
                gained.push(id.clone());
                held += 1;
            }
        }
        identity::insert_touchpoint(txn, touch_row(&visit.touch, Some(&member_id), None)).await?;
        let member = if gained.is_empty() {
            member
        } else {
            let version = store::touch(txn, &member_id, now).await?.version;
            events::member_updated(&member_id, vec!["identifiers".into()], version)
                .publish(txn, &member_id)
                .await?;
            live(txn, &member_id).await?
        };
        let view = store::view(txn, member).await?;
        return Ok(pb::IdentifyVisitorResponse {
            recognition: (if returning {
                pb::Recognition::ReturningMember
            } else {
                pb::Recognition::NewMember
            }) as i32,
            member: Some(profile(rules, &view)?),
            contact: None,
        });
    }
    let anonymous: Vec<&Identifier> = presented.iter().filter(|i| i.kind.anonymous()).collect();
    if anonymous.is_empty() {
        return Err(ServiceError::not_found("member", "with this identifier"));
    }
    let mut contact_id = None;
    for id in &anonymous {
        if let Some(found) = identity::contact_by_identifier(txn, id).await? {
            contact_id = Some(found);
            break;
        }
    }
    let new = contact_id.is_none();
    let contact_id = match contact_id {
        Some(id) => id,
        None => {
            let id = store::new_id();
            identity::insert_contact(txn, &id, now).await?;
            id
        }
    };
    for id in anonymous {
        if identity::contact_by_identifier(txn, id).await?.is_none() {
            identity::insert_contact_identifier(txn, &contact_id, id, now).await?;
        }
    }
    identity::seen_contact(txn, &contact_id, now).await?;
    identity::insert_touchpoint(txn, touch_row(&visit.touch, None, Some(&contact_id))).await?;
    let contact = identity::find_contact(txn, &contact_id)
        .await?
        .ok_or_else(|| ServiceError::Aborted("the contact changed meanwhile; retry".into()))?;
    Ok(pb::IdentifyVisitorResponse {
        recognition: (if new {
            pb::Recognition::NewContact
        } else {
            pb::Recognition::ReturningContact
        }) as i32,
        member: None,
        contact: Some(contact_pb(txn, &contact).await?),
    })
}

impl App {
    /// Recognises a visitor and records the touch; once per `key`. A member's
    /// check-in at a store or partner outlet, or a product it viewed or tried,
    /// then starts the campaigns with that trigger (each decides for a member
    /// once, so a repeated touch contacts nobody twice).
    pub(crate) async fn identify_visitor(
        &self,
        visit: Visit,
        key: Option<&IdempotencyKey>,
    ) -> ServiceResult<pb::IdentifyVisitorResponse> {
        let now = retail_kit::convert::now();
        let mut attempts = 0;
        let response = loop {
            let result = idempotency::execute(&self.db, key, Clone::clone, |txn| {
                let (visit, rules) = (visit.clone(), self.rules.clone());
                Box::pin(async move { visit_in(txn, &rules, &visit, now).await })
            })
            .await;
            match result {
                // Two first sightings of one new id raced: the second finds the contact.
                Err(ServiceError::AlreadyExists(_)) if attempts < 2 => attempts += 1,
                other => break other?,
            }
        };
        self.log.committed();
        let Some(member) = &response.member else {
            return Ok(response);
        };
        let member_id = MemberId::parse_name(&member.name)
            .map_err(|e| ServiceError::internal(anyhow::anyhow!("served member name: {e}")))?;
        if !visit.linked.is_empty() {
            let identifiers: Vec<_> = member.identifiers.iter().filter_map(identifier_from_pb).collect();
            self.after_commit(&member_id, member.version, &identifiers).await;
        }
        if let Some(trigger) = visit.touch.trigger() {
            let txn = retail_kit::db::begin_write(&self.db).await?;
            let reacted = self
                .react(&txn, member_id.as_str(), now.max(visit.touch.at), |t| t == trigger)
                .await?;
            txn.commit().await?;
            if let Some(version) = reacted {
                self.forget_member(member_id.as_str(), version, false).await;
            }
            self.log.committed();
        }
        Ok(response)
    }

    /// An anonymous contact: its ids (none once merged), latest touches and the
    /// member it was merged into.
    pub(crate) async fn anonymous_contact(&self, id: &str) -> ServiceResult<pb::AnonymousContact> {
        let contact = identity::find_contact(&self.db, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("contact", format!("contacts/{id}")))?;
        contact_pb(&self.db, &contact).await
    }

    /// A page of the anonymous contacts `filter` selects, oldest first.
    pub(crate) async fn anonymous_contacts(
        &self,
        filter: &ContactFilter,
        page: Page,
    ) -> ServiceResult<(Vec<pb::AnonymousContact>, String)> {
        let rows = identity::list_contacts(&self.db, &page, filter).await?;
        let (rows, next) = page.finish(rows, |c| c.id.clone());
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(contact_pb(&self.db, row).await?);
        }
        Ok((out, next))
    }
}
