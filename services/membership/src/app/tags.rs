//! A member's tags.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency;
use retail_proto::membership as pb;

use super::{App, live};
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
    /// [`MAX_TAGS`].
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
                if view.tags.len() > MAX_TAGS {
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
