//! A member's data export and its erasure.

use chrono::Utc;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency;
use retail_proto::membership as pb;

use super::points::with_kinds;
use super::{App, live, stored};
use crate::domain::fields::{Identifier, IdentifierKind};
use crate::domain::ids::MemberId;
use crate::domain::points::EntryKind;
use crate::events;
use crate::store::{self, loyalty};

/// Everything membership holds on a member.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    pub(crate) member: pb::Member,
    pub(crate) view: store::MemberView,
    /// Every consent decision, oldest first.
    pub(crate) consent_history: Vec<store::consent::Model>,
    pub(crate) points_entries: Vec<(EntryKind, store::points_entry::Model)>,
    pub(crate) tier_changes: Vec<store::tier_change::Model>,
}

impl App {
    pub(crate) async fn export(&self, id: &MemberId) -> ServiceResult<Export> {
        let member = live(&self.db, id.as_str()).await?;
        let consent_history = store::consent_history(&self.db, id.as_str()).await?;
        let view = store::view(&self.db, member).await?;
        Ok(Export {
            member: self.profile(&view)?,
            view,
            consent_history,
            points_entries: with_kinds(loyalty::all_entries(&self.db, id.as_str()).await?)?,
            tier_changes: loyalty::tier_changes(&self.db, id.as_str(), None).await?,
        })
    }

    /// Removes the member's personal data for good; the cache forgets the profile
    /// and every identifier at once.
    pub(crate) async fn erase(&self, id: &MemberId) -> ServiceResult<()> {
        let now = Utc::now();
        let (version, identifiers) = idempotency::transaction(&self.db, |txn| {
            let id = id.as_str().to_owned();
            Box::pin(async move {
                let member = live(txn, &id).await?;
                let view = store::view(txn, member).await?;
                let identifiers = view
                    .identifiers
                    .iter()
                    .map(|i| {
                        Ok(Identifier {
                            kind: stored("identifier kind", &i.kind, IdentifierKind::parse)?,
                            channel: i.channel.clone(),
                            value: i.value.clone(),
                        })
                    })
                    .collect::<ServiceResult<Vec<_>>>()?;
                store::erase(txn, &id, now).await?;
                // The duplicates merged into the member are the same person.
                for merged in store::identity::merged_into(txn, &id).await? {
                    store::erase(txn, &merged, now).await?;
                }
                let version = store::touch(txn, &id, now).await?.version;
                events::member_erased(&id).publish(txn, &id).await?;
                Ok((version, identifiers))
            })
        })
        .await?;
        self.after_commit(id, version, &identifiers).await;
        tracing::info!(member_id = %id, "member erased");
        Ok(())
    }
}
