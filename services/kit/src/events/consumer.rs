//! Consuming: the subscription runner that applies a source's events and stores
//! its positions.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use retail_proto::events::event_log_service_client::EventLogServiceClient;
use retail_proto::events::{EventEnvelope, SubscribeRequest};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter,
};

use crate::error::{ServiceError, ServiceResult};

pub mod position_entity {
    //! How far a consumer has applied a source's log, stored with the effects.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consumer_positions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub source: String,
        pub log_position: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use position_entity as consumer_position;

/// What runs once an event's effect has committed (cache invalidation, wake-ups),
/// knowing what the handler learned inside the transaction.
pub type AfterCommit = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a consumer does with its events, inside the transaction that also stores its
/// position. Must be deterministic; may be called again for the same events only if
/// the earlier transaction rolled back.
#[async_trait::async_trait]
pub trait EventHandler: Send + Sync {
    /// Applies a partition's events, consecutive in the log but for other
    /// partitions' events, in log order: a handler may read and write for all of
    /// them at once, as long as the effect is that of applying them one by one. What
    /// it returns runs after the commit, in order (and is dropped if the transaction
    /// rolls back).
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>>;

    /// What the order of effects hangs on: events with one key are applied in log
    /// order by one partition. `None` for an event the handler does nothing with:
    /// every partition passes over it without a transaction. Called by every
    /// partition for every event, so it should not decode the payload. Default:
    /// the key the publisher put in the envelope ([`partition_key_of`]).
    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        Some(partition_key_of(event).to_owned())
    }
}

/// The envelope's partition key as the publisher set it, or, for an event published
/// before envelopes carried one, its aggregate.
pub fn partition_key_of(event: &EventEnvelope) -> &str {
    if event.partition_key.is_empty() {
        &event.aggregate_id
    } else {
        &event.partition_key
    }
}

/// The share of a source's events one consumer task applies: those whose
/// [`EventHandler::partition_key`] hashes to `index` modulo `count`. The tasks of one
/// consumer run side by side, each storing its own position, so a source whose
/// events each take several statements to apply is kept up with in parallel, and
/// events with one key still take effect in log order, exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    /// Every event, in one task.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// The `count` partitions of a consumer.
    pub fn all(count: u32) -> impl Iterator<Item = Self> {
        let count = count.max(1);
        (0..count).map(move |index| Self { index, count })
    }

    /// Whether the event with `key` is this partition's. The hash (FNV-1a) is fixed
    /// so that partitions keep their events across releases.
    pub fn owns(self, key: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        hash % u64::from(self.count) == u64::from(self.index)
    }
}

/// A partition stores how far it has passed over other partitions' events at least
/// this often (in events), and when the log has been quiet this long.
const PASSED_SAVE_EVERY: u64 = 1000;
const PASSED_SAVE_AFTER: Duration = Duration::from_secs(1);

/// Applies a source's events to the consumer's database, exactly once each.
pub struct Consumer {
    pub name: &'static str,
    pub source: &'static str,
    pub db: DatabaseConnection,
    pub handler: Arc<dyn EventHandler>,
    pub partition: Partition,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Already applied earlier: skipped.
    Duplicate,
    /// Not the next position: resubscribe from the stored one.
    Gap {
        expected: u64,
    },
}

impl Consumer {
    /// The name its position is stored under: the consumer's, with the partition
    /// when there are several.
    fn position_name(&self) -> String {
        match self.partition.count {
            0 | 1 => self.name.to_owned(),
            n => format!("{}#{}/{n}", self.name, self.partition.index),
        }
    }

    /// Whether this partition applies `event`.
    fn owns(&self, event: &EventEnvelope) -> bool {
        self.handler
            .partition_key(event)
            .is_some_and(|key| self.partition.owns(&key))
    }

    /// The last applied position (0 if none).
    pub async fn position(&self) -> ServiceResult<u64> {
        let row = consumer_position::Entity::find_by_id((self.position_name(), self.source.to_owned()))
            .one(&self.db)
            .await?;
        Ok(row.map(|r| r.log_position.max(0) as u64).unwrap_or(0))
    }

    async fn ensure_row(&self) -> ServiceResult<()> {
        if consumer_position::Entity::find_by_id((self.position_name(), self.source.to_owned()))
            .one(&self.db)
            .await?
            .is_none()
        {
            let inserted = consumer_position::ActiveModel {
                consumer: Set(self.position_name()),
                source: Set(self.source.to_owned()),
                log_position: Set(0),
                updated_at: Set(Utc::now()),
            }
            .insert(&self.db)
            .await;
            match inserted {
                Ok(_) => {}
                Err(err) if crate::db::is_unique_violation(&err) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Applies one event and advances the position in one transaction.
    pub async fn apply(&self, event: &EventEnvelope) -> ServiceResult<Applied> {
        self.apply_batch(std::slice::from_ref(event)).await
    }

    /// Applies consecutive events and advances the position in one transaction, so a
    /// consumer keeps up with a busy source (one commit per batch, not per event).
    /// Events at or below the stored position are skipped, and so are other
    /// partitions' events (the position passes over them); the batch stops at a
    /// gap, after applying what came before it. If any event fails, nothing of the
    /// batch takes effect.
    pub async fn apply_batch(&self, events: &[EventEnvelope]) -> ServiceResult<Applied> {
        self.apply_after(events, 0, None).await
    }

    /// [`Self::apply_batch`] for a subscription that has already passed over every
    /// event up to `passed` (other partitions' events it did not store a position
    /// for): the batch continues from there, and the stored position moves past them.
    /// `stored` is the position the subscription stored last, if it knows it: then it
    /// is not read again, and if another replica of the consumer moved it meanwhile
    /// nothing takes effect and the subscription must start over (ABORTED).
    async fn apply_after(&self, events: &[EventEnvelope], passed: u64, stored: Option<u64>) -> ServiceResult<Applied> {
        let txn = crate::db::begin_write(&self.db).await?;
        let current = match stored {
            Some(stored) => stored,
            None => consumer_position::Entity::find_by_id((self.position_name(), self.source.to_owned()))
                .one(&txn)
                .await?
                .map(|r| r.log_position.max(0) as u64)
                .unwrap_or(0),
        };
        let mut next = current.max(passed) + 1;
        let mut owned = Vec::new();
        let mut gap = None;
        for event in events {
            if event.position < next {
                continue;
            }
            if event.position != next {
                gap = Some(next);
                break;
            }
            if self.owns(event) {
                owned.push(event);
            }
            next += 1;
        }
        if next == current + 1 {
            return Ok(match gap {
                Some(expected) => Applied::Gap { expected },
                None => Applied::Duplicate,
            });
        }
        let after_commit = if owned.is_empty() {
            Vec::new()
        } else {
            self.handler.handle(&txn, &owned).await?
        };
        // Conditional on the position read (or known): a concurrent replica of this consumer
        // that applied the same events first makes this one roll back.
        let advanced = consumer_position::Entity::update_many()
            .col_expr(consumer_position::Column::LogPosition, Expr::value((next - 1) as i64))
            .col_expr(consumer_position::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(consumer_position::Column::Consumer.eq(self.position_name()))
            .filter(consumer_position::Column::Source.eq(self.source))
            .filter(consumer_position::Column::LogPosition.eq(current as i64))
            .exec(&txn)
            .await?;
        if advanced.rows_affected != 1 {
            if stored.is_some() {
                return Err(ServiceError::Aborted(
                    "another replica of this consumer moved its position; resubscribing".into(),
                ));
            }
            return Ok(Applied::Duplicate);
        }
        txn.commit().await?;
        for then in after_commit {
            then.await;
        }
        Ok(match gap {
            Some(expected) => Applied::Gap { expected },
            None => Applied::Applied,
        })
    }

    /// Subscribes to `channel` (the source's event log) from the stored position and
    /// applies events until `shutdown`, reconnecting with backoff on any failure.
    pub async fn run<T>(self, client: EventLogServiceClient<T>, shutdown: impl std::future::Future<Output = ()>)
    where
        T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
        T::Error: Into<tonic::codegen::StdError>,
        T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
        <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
        T::Future: Send,
    {
        tokio::pin!(shutdown);
        const FIRST_BACKOFF: Duration = Duration::from_millis(100);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let session = self.session(client.clone());
            tokio::select! {
                () = &mut shutdown => return,
                result = session => {
                    if let Err(err) = result {
                        tracing::warn!(consumer = self.name, source = self.source, partition = self.partition.index, error = ?err, "event subscription ended; reconnecting");
                    }
                }
            }
            // A session that ran for a while was healthy: its end is a new failure,
            // not the latest of a series.
            if started.elapsed() >= Duration::from_secs(10) {
                backoff = FIRST_BACKOFF;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn session<T>(&self, mut client: EventLogServiceClient<T>) -> ServiceResult<()>
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<tonic::codegen::StdError>,
        T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
        <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    {
        self.ensure_row().await?;
        let after = self.position().await?;
        // `seen`: every event up to it was applied or is another partition's;
        // `stored`: the position stored last. Batches holding none of this
        // partition's events only move `seen`; the position is stored with the next
        // batch of its own, after a bounded stretch, or when the log goes quiet.
        let (mut seen, mut stored) = (after, after);
        let mut stream = client
            .subscribe(SubscribeRequest {
                after_position: after,
                max_batch_size: 500,
            })
            .await
            .map_err(|s| ServiceError::Unavailable(format!("subscribe failed: {}", s.message())))?
            .into_inner();
        loop {
            let received = if seen > stored {
                match tokio::time::timeout(PASSED_SAVE_AFTER, stream.message()).await {
                    Ok(received) => received,
                    Err(_) => {
                        self.apply_after(&[], seen, Some(stored)).await?;
                        stored = seen;
                        continue;
                    }
                }
            } else {
                stream.message().await
            };
            let batch =
                received.map_err(|s| ServiceError::Unavailable(format!("event stream failed: {}", s.message())))?;
            let Some(batch) = batch else {
                return Err(ServiceError::Unavailable("event stream closed".into()));
            };
            let (Some(first), Some(last)) = (batch.events.first(), batch.events.last()) else {
                continue;
            };
            let (first, last) = (first.position, last.position);
            let nothing_to_apply = !batch.events.iter().any(|e| self.owns(e));
            if nothing_to_apply && first == seen + 1 && last - stored < PASSED_SAVE_EVERY {
                seen = last;
                continue;
            }
            if let Applied::Gap { expected } = self.apply_after(&batch.events, seen, Some(stored)).await? {
                return Err(ServiceError::Aborted(format!(
                    "expected position {expected}; resubscribing"
                )));
            }
            seen = seen.max(last);
            stored = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Partition;

    #[test]
    fn every_key_belongs_to_exactly_one_partition_and_keeps_it() {
        for count in [1u32, 2, 3, 4, 7] {
            for i in 0..500 {
                let key = format!("member-{i}");
                let owners = Partition::all(count).filter(|p| p.owns(&key)).count();
                assert_eq!(owners, 1, "{key} of {count}");
            }
        }
        // The hash is part of the stored positions' meaning: it must not change.
        let owner = |key: &str| Partition::all(4).position(|p| p.owns(key));
        assert_eq!(
            (owner(""), owner("a"), owner("member-1")),
            (Some(1), Some(0), Some(owner_of_member_1()))
        );
        fn owner_of_member_1() -> usize {
            // FNV-1a 64 of "member-1" modulo 4, computed independently.
            let mut h: u64 = 0xcbf29ce484222325;
            for b in b"member-1" {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x100000001b3);
            }
            (h % 4) as usize
        }
    }
}
