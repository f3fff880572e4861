//! A member's consent decisions: every one is kept, the newest per channel holds.

use chrono::Utc;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency;
use retail_proto::membership as pb;

use super::{App, live};
use crate::domain::fields::ConsentChannel;
use crate::domain::ids::MemberId;
use crate::events;
use crate::store;

impl App {
    /// Records a consent decision for `channel` from `source`.
    pub(crate) async fn set_consent(
        &self,
        id: &MemberId,
        channel: ConsentChannel,
        granted: bool,
        source: String,
    ) -> ServiceResult<pb::Member> {
        let now = Utc::now();
        let version = idempotency::transaction(&self.db, |txn| {
            let (id, source) = (id.as_str().to_owned(), source.clone());
            Box::pin(async move {
                live(txn, &id).await?;
                store::insert_consent(
                    txn,
                    store::consent::Model {
                        id: store::new_id(),
                        member_id: id.clone(),
                        channel: channel.as_str().to_owned(),
                        granted,
                        source,
                        decided_at: now,
                    },
                )
                .await?;
                let version = store::touch(txn, &id, now).await?.version;
                events::consent_changed(&id, channel, granted).publish(txn, &id).await?;
                Ok(version)
            })
        })
        .await?;
        self.after_commit(id, version, &[]).await;
        self.current_profile(id).await
    }
}
