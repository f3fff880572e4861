//! A member's tags: those staff set, and analytics' predictions (category
//! `predicted`, [`App::apply_score`]) with the member's RFM segment.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency;
use retail_proto::membership as pb;
use sea_orm::DatabaseTransaction;

use super::{App, live};
use crate::domain::engagement::{self, MAX_PREDICTED_TAGS, RFM_SEGMENTS, TagCategory};
use crate::domain::fields::MAX_TAGS;
use crate::domain::ids::MemberId;
use crate::events;
use crate::store;

/// A tag to set, checked; an empty source is the caller's.
#[derive(Debug, Clone)]
pub(crate) struct TagChange {
    pub(crate) path: String,
    pub(crate) value: String,
    pub(crate) dynamic: bool,
    pub(crate) source: String,
    /// When the tag stops being true.
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

impl TagChange {
    pub(crate) fn row(self, member_id: &str, caller: &str, now: DateTime<Utc>) -> store::tag::Model {
        store::tag::Model {
            member_id: member_id.to_owned(),
            path: self.path,
            value: self.value,
            dynamic: self.dynamic,
            source: if self.source.is_empty() {
                caller.to_owned()
            } else {
                self.source
            },
            updated_at: now,
            expires_at: self.expires_at,
        }
    }
}

impl App {
    /// Removes the tags at `remove` and sets `set`; a member keeps at most
    /// [`MAX_TAGS`] besides analytics' predictions.
    pub(crate) async fn set_tags(
        &self,
        caller: &str,
        id: &MemberId,
        set: Vec<TagChange>,
        remove: Vec<String>,
    ) -> ServiceResult<pb::Member> {
        let now = Utc::now();
        let set: Vec<store::tag::Model> = set.into_iter().map(|t| t.row(id.as_str(), caller, now)).collect();
        let version = idempotency::transaction(&self.db, |txn| {
            let (id, set, remove) = (id.as_str().to_owned(), set.clone(), remove.clone());
            Box::pin(async move {
                let member = live(txn, &id).await?;
                for path in &remove {
                    store::delete_tag(txn, &id, path).await?;
                }
                for tag in set {
                    store::upsert_tag(txn, tag).await?;
                }
                let view = store::view(txn, member).await?;
                // Analytics' predictions do not count against the member's own tags.
                let own = view
                    .tags
                    .iter()
                    .filter(|t| TagCategory::of(&t.path) != Some(TagCategory::Predicted))
                    .count();
                if own > MAX_TAGS {
                    return Err(ServiceError::invalid(
                        "set",
                        format!("a member has at most {MAX_TAGS} tags"),
                    ));
                }
                let version = store::touch(txn, &id, now).await?.version;
                events::member_updated(&id, vec!["tags".into()], version)
                    .publish(txn, &id)
                    .await?;
                Ok(version)
            })
        })
        .await?;
        self.after_commit(id, version, &[]).await;
        self.current_profile(id).await
    }
}

/// Analytics' latest scoring of a member (`MemberScored`): its RFM segment (`None`
/// when not scored) and the predicted tags that hold, by name, with their expiry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Score {
    pub(crate) rfm_segment: Option<String>,
    pub(crate) predicted: Vec<(String, DateTime<Utc>)>,
}

/// Where analytics' predictions are recorded as set.
const ANALYTICS: &str = "analytics";

impl App {
    /// Records analytics' scoring of live member `member_id` in the caller's
    /// transaction (the one storing the log position): the RFM segment, and the
    /// member's `predicted/` tags replaced by the scored ones, each expiring when
    /// analytics said. An unknown segment name is recorded as none and an
    /// unusable tag name passed over (with a warning): the event cannot be
    /// refused, and retrying it would stop the partition. Returns the member's new
    /// version, `None` for an erased or unknown member.
    ///
    /// No `MemberUpdated` is published: analytics counts those as the member's own
    /// activity, and the change is analytics' own finding.
    pub(crate) async fn apply_score(
        &self,
        txn: &DatabaseTransaction,
        member_id: &str,
        score: Score,
        now: DateTime<Utc>,
    ) -> ServiceResult<Option<i64>> {
        let Some(member) = store::find_member(txn, member_id).await? else {
            return Ok(None);
        };
        if member.erased_at.is_some() {
            return Ok(None);
        }
        let segment = score.rfm_segment.filter(|s| {
            let known = RFM_SEGMENTS.contains(&s.as_str());
            if !known {
                tracing::warn!(member_id, segment = %s, "unknown RFM segment in a score; recorded as none");
            }
            known
        });
        // The row first: it serialises with every other change of the member.
        let version = store::set_rfm_segment(txn, member_id, segment, now).await?.version;
        let mut keep = Vec::new();
        for (name, expires_at) in score.predicted.into_iter().take(MAX_PREDICTED_TAGS) {
            match engagement::predicted_tag_path(&name) {
                Some(path) => keep.push((path, expires_at)),
                None => tracing::warn!(member_id, tag = %name, "unusable predicted tag name; passed over"),
            }
        }
        for tag in store::identity::tags_of(txn, member_id).await? {
            let predicted = TagCategory::of(&tag.path) == Some(TagCategory::Predicted);
            if predicted && !keep.iter().any(|(path, _)| *path == tag.path) {
                store::delete_tag(txn, member_id, &tag.path).await?;
            }
        }
        for (path, expires_at) in keep {
            let change = TagChange {
                path,
                value: String::new(),
                dynamic: true,
                source: ANALYTICS.to_owned(),
                expires_at: Some(expires_at),
            };
            store::upsert_tag(txn, change.row(member_id, ANALYTICS, now)).await?;
        }
        Ok(Some(version))
    }
}
