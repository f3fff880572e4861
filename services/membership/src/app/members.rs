//! Registration, reads (whole, row-only, tier-only), recognition by identifier,
//! the member list and profile updates.

use chrono::Utc;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::membership as pb;
use sea_orm::{ActiveValue::Set, IntoActiveModel};

use super::profile::{lifecycle_state, profile};
use super::tags::TagChange;
use super::{App, live};
use crate::domain::fields::{ConsentChannel, Identifier};
use crate::domain::ids::MemberId;
use crate::domain::lifecycle::LifecycleState;
use crate::events;
use crate::store;

/// A member's own fields, checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    pub(crate) display_name: String,
    pub(crate) gender: String,
    pub(crate) birth_date: Option<String>,
    pub(crate) region: String,
    pub(crate) attributes_json: String,
}

/// A new member with what it is recognised by, its tags and consents.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) profile: Profile,
    pub(crate) identifiers: Vec<Identifier>,
    pub(crate) tags: Vec<TagChange>,
    /// One decision per channel, with its source.
    pub(crate) consents: Vec<(ConsentChannel, bool, String)>,
}

/// The fields of `profile` named by `paths` (each one of `display_name`, `gender`,
/// `birth_date`, `region`, `attributes`).
#[derive(Debug, Clone)]
pub(crate) struct ProfileChange {
    pub(crate) profile: Profile,
    pub(crate) paths: Vec<String>,
}

/// How much of a member a read needs, which decides where it is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberRead {
    /// The tier alone: its own cache key.
    Tier,
    /// Fields of the member row alone.
    Row,
    /// The whole profile.
    Full,
}

/// A page of the member list.
#[derive(Debug, Clone)]
pub(crate) struct ListMembers {
    pub(crate) filter: store::MemberFilter,
    pub(crate) lifecycle: Option<LifecycleState>,
    pub(crate) page: Page,
}

/// Whether the page's last member is also the last row the scan read.
fn member_is_last(members: &[pb::Member], last_id: &str) -> bool {
    members.last().is_some_and(|m| m.name.ends_with(last_id))
}

impl App {
    /// Registers a member with its identifiers, tags and consents; once per `key`.
    pub(crate) async fn register<R>(
        &self,
        caller: &str,
        registration: Registration,
        key: Option<&IdempotencyKey>,
        render: fn(&pb::Member) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + 'static,
    {
        let now = Utc::now();
        let Registration {
            profile: fields,
            identifiers,
            tags,
            consents,
        } = registration;
        let model = store::member::Model {
            id: MemberId::new().as_str().to_owned(),
            display_name: fields.display_name,
            gender: fields.gender,
            birth_date: fields.birth_date,
            region: fields.region,
            attributes_json: fields.attributes_json,
            tier: self.rules.base_tier().to_owned(),
            points_balance: 0,
            points_debt: 0,
            registered_at: now,
            updated_at: now,
            erased_at: None,
            version: 1,
            merged_into: None,
            merged_at: None,
            rfm_segment: None,
        };
        let rules = self.rules.clone();
        let caller = caller.to_owned();
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, identifiers, rules) = (model.clone(), identifiers.clone(), rules.clone());
            let (tags, consents, caller) = (tags.clone(), consents.clone(), caller.clone());
            Box::pin(async move {
                store::insert_member(txn, model.clone()).await?;
                for id in &identifiers {
                    store::insert_identifier(txn, &model.id, id, now).await?;
                }
                // The person was seen before as an anonymous contact: it becomes the member.
                super::contacts::absorb_contacts(txn, &model.id, &identifiers, now).await?;
                for tag in tags {
                    store::upsert_tag(txn, tag.row(&model.id, &caller, now)).await?;
                }
                for (channel, granted, source) in consents {
                    store::insert_consent(
                        txn,
                        store::consent::Model {
                            id: store::new_id(),
                            member_id: model.id.clone(),
                            channel: channel.as_str().to_owned(),
                            granted,
                            source,
                            decided_at: now,
                        },
                    )
                    .await?;
                    events::consent_changed(&model.id, channel, granted)
                        .publish(txn, &model.id)
                        .await?;
                }
                events::member_registered(&model, now).publish(txn, &model.id).await?;
                let view = store::view(txn, model).await?;
                Ok(render(&profile(&rules, &view)?))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// A member, as much of it as `read` needs.
    pub(crate) async fn get(&self, id: &MemberId, read: MemberRead) -> ServiceResult<pb::Member> {
        match read {
            MemberRead::Tier => self.member_tier(id).await,
            MemberRead::Row => self.member_row(id).await,
            MemberRead::Full => self.cached_member(id).await,
        }
    }

    /// The member an identifier belongs to, through the cache.
    pub(crate) async fn identify(&self, id: &Identifier) -> ServiceResult<pb::Member> {
        let not_found = || ServiceError::not_found("member", "with this identifier");
        let member_id = self
            .cache
            .get_or_load(&id.cache_key(), || async {
                let Some(member_id) = store::member_id_by_identifier(&self.db, id).await? else {
                    return Ok(None);
                };
                let version = store::find_member(&self.db, &member_id)
                    .await?
                    .map(|m| m.version.max(0) as u64)
                    .unwrap_or(0);
                Ok(Some((version, member_id.into_bytes())))
            })
            .await?
            .ok_or_else(not_found)?;
        let member_id = String::from_utf8(member_id.to_vec()).map_err(|_| not_found())?;
        self.cached_member(&MemberId::from_stored(member_id)).await
    }

    /// A page of live members; the next page's token is empty at the end.
    pub(crate) async fn list(&self, list: ListMembers) -> ServiceResult<(Vec<pb::Member>, String)> {
        let ListMembers {
            filter,
            lifecycle,
            page,
        } = list;
        // Lifecycle depends on "now", so it is filtered here while scanning; the scan
        // is bounded, and a page may then come back short with a token to continue.
        let wanted = lifecycle.map(|l| lifecycle_state(l) as i32);
        let mut members = Vec::new();
        let mut cursor = page.after.clone();
        let mut next_page_token = String::new();
        'scan: for _ in 0..20 {
            let rows = store::list_members(&self.db, &page.continued_after(cursor.clone()), &filter).await?;
            let exhausted = rows.len() as u64 <= page.size;
            for row in rows.into_iter().take(page.size as usize) {
                cursor = Some(row.id.clone());
                let member = self.profile(&store::view(&self.db, row).await?)?;
                if wanted.is_none_or(|w| member.lifecycle_state == w) {
                    members.push(member);
                }
                if members.len() as u64 >= page.size {
                    if let Some(last) = &cursor
                        && !(exhausted && member_is_last(&members, last))
                    {
                        next_page_token = page.token_after(last);
                    }
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
            if let Some(last) = &cursor {
                next_page_token = page.token_after(last);
            }
        }
        Ok((members, next_page_token))
    }

    /// Sets the profile fields `change` names.
    pub(crate) async fn update(&self, id: &MemberId, change: ProfileChange) -> ServiceResult<pb::Member> {
        let ProfileChange { profile: fields, paths } = change;
        let current = live(&self.db, id.as_str()).await?;
        let mut active = current.into_active_model();
        for path in &paths {
            match path.as_str() {
                "display_name" => active.display_name = Set(fields.display_name.clone()),
                "gender" => active.gender = Set(fields.gender.clone()),
                "birth_date" => active.birth_date = Set(fields.birth_date.clone()),
                "region" => active.region = Set(fields.region.clone()),
                _ => active.attributes_json = Set(fields.attributes_json.clone()),
            }
        }
        let now = Utc::now();
        let version = idempotency::transaction(&self.db, |txn| {
            let (active, id, paths) = (active.clone(), id.as_str().to_owned(), paths.clone());
            Box::pin(async move {
                store::update_member(txn, active).await?;
                let version = store::touch(txn, &id, now).await?.version;
                events::member_updated(&id, paths, version).publish(txn, &id).await?;
                Ok(version)
            })
        })
        .await?;
        self.after_commit(id, version, &[]).await;
        self.current_profile(id).await
    }
}
