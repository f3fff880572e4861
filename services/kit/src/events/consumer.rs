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
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};

use tokio::sync::watch;

use super::Transport;
use super::lease::Replica;
use super::partitioning::{self, Carried};
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
        self.count <= 1 || hash(key) % u64::from(self.count) == u64::from(self.index)
    }

    /// The partition of `count` that owns `key`.
    pub fn of_key(key: &str, count: u32) -> Self {
        let count = count.max(1);
        Self {
            index: (hash(key) % u64::from(count)) as u32,
            count,
        }
    }
}

/// FNV-1a, 64 bits: part of the stored positions' meaning, so it must not change.
pub(super) fn hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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

/// The partitions of a consumer that one replica of a service runs: on
/// PostgreSQL each partition is applied by one replica at a time, the replicas
/// share the partitions out evenly, and a replica takes over the partitions of one
/// that ended within about a second (see the module docs). On SQLite, one
/// process's database, the replica runs every partition.
pub struct ConsumerGroup {
    replica: Replica,
}

impl std::fmt::Debug for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerGroup")
            .field("name", &self.replica.name)
            .field("source", &self.replica.source)
            .field("partitions", &self.replica.partitions)
            .finish_non_exhaustive()
    }
}

impl ConsumerGroup {
    /// The `partitions` partitions of consumer `name` of `source`'s log.
    pub fn new(
        name: &'static str,
        source: &'static str,
        db: DatabaseConnection,
        handler: Arc<dyn EventHandler>,
        partitions: u32,
    ) -> Self {
        Self {
            replica: Replica {
                name,
                source,
                db,
                handler,
                partitions: partitions.max(1),
                only: None,
                owned: watch::channel(Vec::new()).0,
            },
        }
    }

    /// The indexes of the partitions this replica runs at the moment, ascending.
    pub fn owned(&self) -> watch::Receiver<Vec<u32>> {
        self.replica.owned.subscribe()
    }

    /// Runs the partitions this replica holds the leases of until `shutdown`,
    /// taking and giving up leases as replicas come and go.
    pub async fn run<T>(self, client: EventLogServiceClient<T>, shutdown: impl std::future::Future<Output = ()>)
    where
        T: Transport,
    {
        self.replica.run(client, shutdown).await;
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
        partitioning::position_name(self.name, self.partition)
    }

    /// Whether this partition applies `event`: its key is this partition's, and no
    /// partition of an earlier count applied it already (`carried`).
    fn owns(&self, event: &EventEnvelope, carried: &Carried) -> bool {
        self.handler
            .partition_key(event)
            .is_some_and(|key| self.partition.owns(&key) && !carried.applied(&key, event.position))
    }

    /// What earlier partition counts applied beyond the positions, if the stored
    /// count is this consumer's.
    async fn carried(&self) -> ServiceResult<Carried> {
        match partitioning::settle(&self.db, self.name, self.source, self.partition.count).await? {
            partitioning::Settled::Ready(carried) => Ok(carried),
            partitioning::Settled::Changed { from } => Err(ServiceError::FailedPrecondition(format!(
                "consumer {} of {} has positions for {from} partitions, this runner is one of {}; \
                 they are carried over once no runner of the old count is left",
                self.name, self.source, self.partition.count
            ))),
        }
    }

    /// The last applied position (0 if none).
    pub async fn position(&self) -> ServiceResult<u64> {
        let row = consumer_position::Entity::find_by_id((self.position_name(), self.source.to_owned()))
            .one(&self.db)
            .await?;
        Ok(row.map(|r| r.log_position.max(0) as u64).unwrap_or(0))
    }

    /// Creates the partition's position at 0 if it has none, unless the stored
    /// partition count is not this consumer's: then the positions are being carried
    /// over, and a position created now would apply the log again from the start.
    async fn ensure_row(&self) -> ServiceResult<()> {
        let txn = crate::db::begin_write(&self.db).await?;
        let mut stored = partitioning::entity::Entity::find_by_id((self.name.to_owned(), self.source.to_owned()));
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            // A carry-over updates this row first: it waits for this transaction,
            // or this one reads the new count.
            stored = stored.lock_shared();
        }
        let count = stored.one(&txn).await?.map(|row| row.partitions.max(1) as u32);
        if count != Some(self.partition.count.max(1)) {
            return Err(ServiceError::Aborted(format!(
                "the partition count of consumer {} changed; starting over",
                self.name
            )));
        }
        if consumer_position::Entity::find_by_id((self.position_name(), self.source.to_owned()))
            .one(&txn)
            .await?
            .is_none()
        {
            let inserted = consumer_position::ActiveModel {
                consumer: Set(self.position_name()),
                source: Set(self.source.to_owned()),
                log_position: Set(0),
                updated_at: Set(Utc::now()),
            }
            .insert(&txn)
            .await;
            match inserted {
                Ok(_) => {}
                // Created meanwhile by another replica; this transaction is spent.
                Err(err) if crate::db::is_unique_violation(&err) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
        txn.commit().await?;
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
        let carried = self.carried().await?;
        self.apply_after(events, 0, None, &carried).await
    }

    /// [`Self::apply_batch`] for a subscription that has already passed over every
    /// event up to `passed` (other partitions' events it did not store a position
    /// for): the batch continues from there, and the stored position moves past them.
    /// `stored` is the position the subscription stored last, if it knows it: then it
    /// is not read again, and if another replica of the consumer moved it meanwhile
    /// nothing takes effect and the subscription must start over (ABORTED).
    async fn apply_after(
        &self,
        events: &[EventEnvelope],
        passed: u64,
        stored: Option<u64>,
        carried: &Carried,
    ) -> ServiceResult<Applied> {
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
            if self.owns(event, carried) {
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

    /// Subscribes to `client` (the source's event log) from the stored position and
    /// applies events until `shutdown`, reconnecting with backoff on any failure,
    /// while it holds the lease of its partition (see the module docs): replicas
    /// of a consumer that each run this partition take turns, and a replica takes
    /// the partition over within about a second of its holder's end. The
    /// partitions of a replica are better run together by a [`ConsumerGroup`],
    /// which also shares them out among the replicas.
    pub async fn run<T>(self, client: EventLogServiceClient<T>, shutdown: impl std::future::Future<Output = ()>)
    where
        T: Transport,
    {
        let replica = Replica {
            name: self.name,
            source: self.source,
            db: self.db,
            handler: self.handler,
            partitions: self.partition.count.max(1),
            only: Some(self.partition.index),
            owned: watch::channel(Vec::new()).0,
        };
        replica.run(client, shutdown).await;
    }

    /// Follows the log for this partition until `shutdown`, without a lease: the
    /// caller holds it.
    pub(super) async fn follow<T>(
        self,
        client: EventLogServiceClient<T>,
        shutdown: impl std::future::Future<Output = ()>,
    ) where
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
        let carried = self.carried().await?;
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
        let metrics = crate::metrics::ConsumerMetrics::new(self.name, self.source, self.partition.index);
        metrics.connected(true);
        metrics.read(after, None);
        let _disconnected = scopeguard_connected(metrics.clone());
        loop {
            let received = if seen > stored {
                match tokio::time::timeout(PASSED_SAVE_AFTER, stream.message()).await {
                    Ok(received) => received,
                    Err(_) => {
                        self.apply_after(&[], seen, Some(stored), &carried).await?;
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
            let newest = batch.events.last().and_then(|e| e.occur_time.as_ref()).and_then(|t| {
                std::time::SystemTime::UNIX_EPOCH.checked_add(Duration::new(
                    u64::try_from(t.seconds).ok()?,
                    u32::try_from(t.nanos).ok()?,
                ))
            });
            let (first, last) = (first.position, last.position);
            metrics.read(last, newest);
            let nothing_to_apply = !batch.events.iter().any(|e| self.owns(e, &carried));
            if nothing_to_apply && first == seen + 1 && last - stored < PASSED_SAVE_EVERY {
                seen = last;
                continue;
            }
            if let Applied::Gap { expected } = self.apply_after(&batch.events, seen, Some(stored), &carried).await? {
                return Err(ServiceError::Aborted(format!(
                    "expected position {expected}; resubscribing"
                )));
            }
            seen = seen.max(last);
            stored = seen;
        }
    }
}

/// Reports the partition disconnected when its session ends, however it ends.
fn scopeguard_connected(metrics: crate::metrics::ConsumerMetrics) -> impl Drop {
    struct Disconnected(crate::metrics::ConsumerMetrics);
    impl Drop for Disconnected {
        fn drop(&mut self) {
            self.0.connected(false);
        }
    }
    Disconnected(metrics)
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
