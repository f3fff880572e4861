//! What a member is recognised by: phone numbers, email addresses, cards, external ids.

use chrono::Utc;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency;
use retail_proto::membership as pb;

use super::{App, live};
use crate::domain::fields::{Identifier, MAX_IDENTIFIERS};
use crate::domain::ids::MemberId;
use crate::events;
use crate::store;

impl App {
    /// Adds an identifier; ALREADY_EXISTS if it belongs to a member already.
    pub(crate) async fn add_identifier(&self, id: &MemberId, identifier: Identifier) -> ServiceResult<pb::Member> {
        let now = Utc::now();
        let version = idempotency::transaction(&self.db, |txn| {
            let (id, identifier) = (id.as_str().to_owned(), identifier.clone());
            Box::pin(async move {
                let member = live(txn, &id).await?;
                let view = store::view(txn, member).await?;
                if view.identifiers.len() >= MAX_IDENTIFIERS {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "a member has at most {MAX_IDENTIFIERS} identifiers"
                    )));
                }
                store::insert_identifier(txn, &id, &identifier, now).await?;
                super::contacts::absorb_contacts(txn, &id, std::slice::from_ref(&identifier), now).await?;
                let version = store::touch(txn, &id, now).await?.version;
                events::member_updated(&id, vec!["identifiers".into()], version)
                    .publish(txn, &id)
                    .await?;
                Ok(version)
            })
        })
        .await?;
        self.after_commit(id, version, &[identifier]).await;
        self.current_profile(id).await
    }

    /// Removes one of the member's identifiers; NOT_FOUND if it has no such one.
    pub(crate) async fn remove_identifier(&self, id: &MemberId, identifier: Identifier) -> ServiceResult<pb::Member> {
        let now = Utc::now();
        let version = idempotency::transaction(&self.db, |txn| {
            let (id, identifier) = (id.as_str().to_owned(), identifier.clone());
            Box::pin(async move {
                live(txn, &id).await?;
                if !store::delete_identifier(txn, &id, &identifier).await? {
                    return Err(ServiceError::not_found("identifier", "on this member"));
                }
                let version = store::touch(txn, &id, now).await?.version;
                events::member_updated(&id, vec!["identifiers".into()], version)
                    .publish(txn, &id)
                    .await?;
                Ok(version)
            })
        })
        .await?;
        self.after_commit(id, version, &[identifier]).await;
        self.current_profile(id).await
    }
}
