//! Backfilling history: events older than the producers' logs keep, applied and
//! archived like consumed ones by the kit's consumer under the source `import`,
//! so each imported position takes effect exactly once.

use std::sync::Arc;

use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::{Applied, Consumer, Partition};
use retail_proto::events::EventEnvelope;

use super::App;
use crate::events::{CONSUMER, IMPORT, SourceEvents};
use crate::store::exec;

impl App {
    /// Applies events at consecutive positions; returns how many were new and the
    /// last imported position. A gap is FAILED_PRECONDITION naming the position
    /// expected.
    pub async fn import(&self, events: Vec<EventEnvelope>) -> ServiceResult<(u64, u64)> {
        exec(
            &self.db,
            "INSERT INTO consumer_positions (consumer, source, log_position, updated_at) VALUES (?,?,0,?) \
             ON CONFLICT (consumer, source) DO NOTHING",
            vec![CONSUMER.into(), IMPORT.into(), chrono::Utc::now().into()],
        )
        .await?;
        let consumer = Consumer {
            name: CONSUMER,
            source: IMPORT,
            db: self.db.clone(),
            handler: Arc::new(SourceEvents { source: IMPORT }),
            partition: Partition::WHOLE,
        };
        let before = consumer.position().await?;
        if let Applied::Gap { expected } = consumer.apply_batch(&events).await? {
            return Err(ServiceError::FailedPrecondition(format!(
                "events must continue at position {expected}"
            )));
        }
        let after = consumer.position().await?;
        Ok((after - before, after))
    }
}
