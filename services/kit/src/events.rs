//! The event backbone: a transactional outbox that is the service's event log, the
//! `EventLogService/Subscribe` server, and the consumer runner.
//!
//! - Publishing: [`publish`] inserts the event into `outbox` inside the caller's
//!   transaction, without a position. Nothing is published that did not commit.
//! - Ordering: one appender at a time (SQLite has a single writer; on PostgreSQL the
//!   replica holding the appender lock, see [`Lease`]) gives committed, unpositioned
//!   rows the next positions in one statement. A row becomes visible to readers only
//!   with its position, and positions are given out in the appender's commit order,
//!   so a reader that has seen position N never misses a later commit with a smaller
//!   number. Positions are dense: 1, 2, 3, ...
//! - Serving: [`EventLogApi`] streams positioned rows after a position and wakes up as
//!   soon as the appender commits (or within `poll` for other replicas' appends).
//!   Subscribers reading the same stretch of the log (a consumer's partitions) share
//!   one read of it, and the events this replica's appender positions reach them
//!   without any read.
//! - Consuming: [`Consumer`] applies each event and stores its position in the
//!   consumer's own database in one transaction: exactly-once effects, at-least-once
//!   delivery. A duplicate is skipped; a gap makes it resubscribe from what it has.
//! - Retention: [`EventLog::purge`] drops old positioned rows; subscribing from before
//!   the oldest kept event is OUT_OF_RANGE.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use retail_proto::events::event_log_service_client::EventLogServiceClient;
use retail_proto::events::event_log_service_server::EventLogService;
use retail_proto::events::{EventEnvelope, SubscribeRequest, SubscribeResponse};
use sea_orm::sea_query::Expr;
use sea_orm::sqlx::{self, PgConnection};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use tokio::sync::{Notify, watch};
use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::convert::timestamp;
use crate::error::{ServiceError, ServiceResult};

/// Scope needed to subscribe to any service's event log.
pub const EVENTS_READ: &str = "events.read";

pub mod entity {
    pub mod outbox {
        //! One row per published event; `log_position` is set once the appender has
        //! ordered it.
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "outbox")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            #[sea_orm(unique)]
            pub log_position: Option<i64>,
            /// Fully qualified protobuf type of the payload.
            pub event_type: String,
            pub aggregate_id: String,
            pub payload: Vec<u8>,
            pub occurred_at: DateTimeUtc,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod consumer_position {
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
}

pub mod migration {
    //! `outbox` (for publishers) and `consumer_positions` (for consumers).
    use sea_orm_migration::{prelude::*, schema::*};

    #[derive(DeriveIden)]
    enum Outbox {
        Table,
        Id,
        LogPosition,
        EventType,
        AggregateId,
        Payload,
        OccurredAt,
    }

    #[derive(DeriveIden)]
    enum ConsumerPositions {
        Table,
        Consumer,
        Source,
        LogPosition,
        UpdatedAt,
    }

    #[derive(Debug)]
    pub struct CreateOutbox;

    impl MigrationName for CreateOutbox {
        fn name(&self) -> &str {
            "m20261122_000003_create_outbox"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateOutbox {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(string_len(Outbox::Id, 36).primary_key())
                    .col(big_integer_null(Outbox::LogPosition).unique_key())
                    .col(string_len(Outbox::EventType, 200))
                    .col(string_len(Outbox::AggregateId, 128))
                    .col(blob(Outbox::Payload))
                    .col(timestamp_with_time_zone(Outbox::OccurredAt))
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .name("idx_outbox_unpositioned")
                    .table(Outbox::Table)
                    .col(Outbox::LogPosition)
                    .col(Outbox::OccurredAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(Outbox::Table).to_owned()).await
        }
    }

    /// Keeps each of the outbox's position indexes to the rows it serves:
    /// `idx_outbox_queue`, replacing `idx_outbox_unpositioned`, to the rows waiting
    /// for a position (the appender's queue, in its order), and the unique position
    /// index to positioned rows. A row then enters one of them when it is written
    /// and the other when it is positioned, where before it entered both each time;
    /// and a read of the newest positions never walks entries of unpositioned rows.
    /// (SQLite keeps the table's inline unique constraint, which it cannot drop and
    /// which holds no NULLs anyway.)
    #[derive(Debug)]
    pub struct PartialOutboxIndexes;

    impl MigrationName for PartialOutboxIndexes {
        fn name(&self) -> &str {
            "m20261124_000005_partial_outbox_indexes"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for PartialOutboxIndexes {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            let db = m.get_connection();
            db.execute_unprepared(
                "CREATE INDEX idx_outbox_queue ON outbox (occurred_at, id) WHERE log_position IS NULL",
            )
            .await?;
            db.execute_unprepared("DROP INDEX idx_outbox_unpositioned").await?;
            if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
                db.execute_unprepared(
                    "CREATE UNIQUE INDEX uq_outbox_log_position ON outbox (log_position) \
                     WHERE log_position IS NOT NULL",
                )
                .await?;
                db.execute_unprepared("ALTER TABLE outbox DROP CONSTRAINT outbox_log_position_key")
                    .await?;
            }
            Ok(())
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            let db = m.get_connection();
            if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
                db.execute_unprepared(
                    "ALTER TABLE outbox ADD CONSTRAINT outbox_log_position_key UNIQUE (log_position)",
                )
                .await?;
                db.execute_unprepared("DROP INDEX uq_outbox_log_position").await?;
            }
            db.execute_unprepared("CREATE INDEX idx_outbox_unpositioned ON outbox (log_position, occurred_at)")
                .await?;
            db.execute_unprepared("DROP INDEX idx_outbox_queue").await?;
            Ok(())
        }
    }

    #[derive(Debug)]
    pub struct CreateConsumerPositions;

    impl MigrationName for CreateConsumerPositions {
        fn name(&self) -> &str {
            "m20261122_000004_create_consumer_positions"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateConsumerPositions {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.create_table(
                Table::create()
                    .table(ConsumerPositions::Table)
                    .if_not_exists()
                    .col(string_len(ConsumerPositions::Consumer, 64))
                    .col(string_len(ConsumerPositions::Source, 64))
                    .col(big_integer(ConsumerPositions::LogPosition))
                    .col(timestamp_with_time_zone(ConsumerPositions::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(ConsumerPositions::Consumer)
                            .col(ConsumerPositions::Source),
                    )
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(ConsumerPositions::Table).to_owned())
                .await
        }
    }
}

use entity::{consumer_position, outbox};

/// An event ready for the outbox, typed by its message's full name
/// (`prost::Name`, e.g. `retail.events.v1.OrderPaid`): no event type is written out
/// by hand, and a consumer compares with the same name.
#[derive(Debug, Clone)]
pub struct Outgoing {
    type_name: String,
    payload: Vec<u8>,
}

impl Outgoing {
    pub fn of<M: prost::Message + prost::Name>(message: &M) -> Self {
        Self {
            type_name: M::full_name(),
            payload: message.encode_to_vec(),
        }
    }

    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The outbox row that publishes it for `aggregate_id`, for a guarded write.
    pub fn outbox_row(&self, aggregate_id: &str) -> outbox::ActiveModel {
        outbox_row(&self.type_name, aggregate_id, self.payload.clone())
    }

    /// Writes it into the outbox of the caller's transaction; see [`publish`].
    pub async fn publish(&self, txn: &DatabaseTransaction, aggregate_id: &str) -> ServiceResult<String> {
        let row = self.outbox_row(aggregate_id).insert(txn).await?;
        Ok(row.id)
    }
}

/// Writes an event into the outbox of the caller's transaction. Call
/// [`EventLog::committed`] after the commit to deliver it without waiting for a poll.
pub async fn publish(
    txn: &DatabaseTransaction,
    event_type: &str,
    aggregate_id: &str,
    payload: &impl prost::Message,
) -> ServiceResult<String> {
    let row = outbox_row(event_type, aggregate_id, payload.encode_to_vec())
        .insert(txn)
        .await?;
    Ok(row.id)
}

/// An event's outbox row, not yet positioned, for [`publish`] or for a
/// [`crate::db::GuardedWrite`] that records the event with the change it reports.
pub fn outbox_row(event_type: &str, aggregate_id: &str, payload: Vec<u8>) -> outbox::ActiveModel {
    outbox::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        // Left out of the insert: the column's default, NULL, until the appender
        // positions the row (and rows of several events stay plain values that a
        // guarded write can insert as one array per column).
        log_position: sea_orm::ActiveValue::NotSet,
        event_type: Set(event_type.to_owned()),
        aggregate_id: Set(aggregate_id.to_owned()),
        payload: Set(payload),
        occurred_at: Set(Utc::now()),
    }
}

/// Positions assigned per appender pass, at most: the `LIMIT` of [`APPEND`].
const APPEND_BATCH: u32 = 1000;

/// Numbers the committed, unpositioned rows after the current maximum, in one
/// statement so the numbering is atomic. It must run where no other appender can run
/// at the same time, and on PostgreSQL in a snapshot taken after the previous pass
/// committed (see [`Lease`]).
const APPEND: &str = "UPDATE outbox SET log_position = numbered.p FROM (\
       SELECT id, (SELECT COALESCE(MAX(log_position), 0) FROM outbox) \
              + ROW_NUMBER() OVER (ORDER BY occurred_at, id) AS p \
       FROM outbox WHERE log_position IS NULL ORDER BY occurred_at, id LIMIT 1000\
     ) AS numbered WHERE outbox.id = numbered.id \
     RETURNING outbox.id AS id, outbox.log_position AS log_position, outbox.event_type AS event_type, \
               outbox.aggregate_id AS aggregate_id, outbox.payload AS payload, outbox.occurred_at AS occurred_at";

/// A row as [`APPEND`] returns it, read by sqlx (PostgreSQL).
type AppendedRow = (String, i64, String, String, Vec<u8>, DateTime<Utc>);

/// The PostgreSQL advisory lock that makes one replica of a service its appender.
const APPENDER_LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('retail.outbox.appender'))";

/// Settings of the appender's session. A pass that hangs fails (and drops the
/// session, so the lock) after 30 s; the server probes an idle connection after
/// 10 s and ends it after 3 unanswered probes 5 s apart, so a holder whose replica
/// vanished without closing its connection (a node lost, a network cut) frees the
/// lock within about 25 s instead of the operating system's hours.
const SESSION_LIMITS: &str = "SET statement_timeout = '30s'; SET tcp_keepalives_idle = 10; \
     SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3";

/// The longest an appender pass may take on the client's side, beyond the server's
/// own statement timeout.
const PASS_TIMEOUT: Duration = Duration::from_secs(35);

/// The appender's own PostgreSQL session, and whether it holds the appender lock.
///
/// The replica whose session holds the (session-level) advisory lock is the appender:
/// each pass is then the one [`APPEND`] statement, in autocommit, whose snapshot is
/// taken under the lock and so after every earlier pass committed. Another replica
/// tries the lock on each of its passes and positions nothing while it does not hold
/// it; its events are positioned by the holder's next pass (at most `poll` later),
/// and it takes over within a pass once the holder's session ends. The lock lives
/// exactly as long as the session: a failed statement drops the session (a new one
/// must win the lock again), and a stopped or aborted appender closes it.
struct Lease {
    session: PgConnection,
    held: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// One pass on the lease in `slot`, opening a session first if there is none.
    /// Positions nothing (an empty result) while another replica holds the lock.
    async fn pass(slot: &mut Option<Self>, db: &DatabaseConnection) -> Result<Vec<outbox::Model>, sqlx::Error> {
        let lease = match slot {
            Some(lease) => lease,
            None => {
                let mut session = db.get_postgres_connection_pool().acquire().await?.detach();
                sqlx::raw_sql(SESSION_LIMITS).execute(&mut session).await?;
                slot.insert(Self { session, held: false })
            }
        };
        if !lease.held {
            lease.held = sqlx::query_scalar::<_, bool>(APPENDER_LOCK)
                .fetch_one(&mut lease.session)
                .await?;
            if !lease.held {
                return Ok(Vec::new());
            }
        }
        let rows = sqlx::query_as::<_, AppendedRow>(APPEND)
            .fetch_all(&mut lease.session)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, position, event_type, aggregate_id, payload, occurred_at)| outbox::Model {
                    id,
                    log_position: Some(position),
                    event_type,
                    aggregate_id,
                    payload,
                    occurred_at,
                },
            )
            .collect())
    }
}

/// Ends the appender's session, and with it the lock, however its task ends.
struct ReleaseOnDrop<'a>(&'a Arc<EventLog>);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut lease) = self.0.lease.try_lock() {
            lease.take();
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // A pass of another caller holds it: take it once that pass is done.
            let log = self.0.clone();
            runtime.spawn(async move {
                log.lease.lock().await.take();
            });
        }
    }
}

/// Events the followers of one log share, at most: the newest run appended or read.
const RECENT_EVENTS: usize = 2048;

/// A service's event log over its outbox table.
#[derive(Debug)]
pub struct EventLog {
    db: DatabaseConnection,
    source: &'static str,
    /// The newest contiguous run of events the appender positioned or a follower
    /// read, oldest first. Positions
    /// are dense and never reassigned, so every follower that reaches this run (the
    /// partitions of one consumer follow a log side by side) takes it from here
    /// instead of reading the same rows again.
    recent: std::sync::Mutex<VecDeque<EventEnvelope>>,
    /// PostgreSQL: the appender's session and lock, between passes.
    lease: tokio::sync::Mutex<Option<Lease>>,
    /// Latest position this replica has appended or seen.
    latest: watch::Sender<u64>,
    wake: Notify,
    closed: watch::Sender<bool>,
    poll: Duration,
    /// The appender's wait after a commit notice (`EventsSettings::append_linger_ms`).
    linger: Duration,
}

impl EventLog {
    pub fn new(db: DatabaseConnection, source: &'static str, poll: Duration, linger: Duration) -> Arc<Self> {
        Arc::new(Self {
            db,
            source,
            recent: std::sync::Mutex::new(VecDeque::new()),
            lease: tokio::sync::Mutex::new(None),
            latest: watch::channel(0).0,
            wake: Notify::new(),
            closed: watch::channel(false).0,
            poll,
            linger,
        })
    }

    /// Wakes the appender: a transaction that published has committed.
    pub fn committed(&self) {
        self.wake.notify_one();
    }

    /// Ends open subscriptions, so that a shutdown can drain.
    pub fn close(&self) {
        let _ = self.closed.send(true);
        self.wake.notify_one();
    }

    /// One appender pass: positions every committed, unpositioned row (up to a batch).
    /// On PostgreSQL, a replica that does not hold the appender lock positions
    /// nothing (see [`Lease`]).
    /// The events it positioned are remembered as the newest run, so this replica's
    /// followers take them without reading them back.
    pub async fn append_pending(&self) -> ServiceResult<u64> {
        let appended = match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let mut lease = self.lease.lock().await;
                // The server ends a hung statement (`SESSION_LIMITS`); this bounds a
                // pass whose server or network vanished, which no reply would end.
                let pass = match tokio::time::timeout(PASS_TIMEOUT, Lease::pass(&mut lease, &self.db)).await {
                    Ok(pass) => pass.map_err(anyhow::Error::new),
                    Err(_) => Err(anyhow::anyhow!("an appender pass took longer than {PASS_TIMEOUT:?}")),
                };
                if pass.is_err() {
                    // The session may be gone, and the lock with it: start over.
                    lease.take();
                }
                pass.map_err(ServiceError::internal)?
            }
            backend => {
                let txn = crate::db::begin_write(&self.db).await?;
                let rows = txn.query_all_raw(Statement::from_string(backend, APPEND)).await?;
                txn.commit().await?;
                rows.iter()
                    .map(|row| outbox::Model::from_query_result(row, ""))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let count = appended.len() as u64;
        let mut events: Vec<EventEnvelope> = appended.into_iter().map(|row| self.envelope(row)).collect();
        events.sort_unstable_by_key(|e| e.position);
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            let (first, last) = (first.position, last.position);
            // Remembered before followers are woken, so that they find it.
            self.remember(first.saturating_sub(1), &events);
            self.latest.send_if_modified(|latest| {
                let changed = last > *latest;
                *latest = (*latest).max(last);
                changed
            });
        }
        Ok(count)
    }

    /// The highest position appended so far (0 for an empty log).
    pub async fn max_position(&self) -> ServiceResult<u64> {
        let row = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::LogPosition.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?;
        Ok(row.flatten().unwrap_or(0).max(0) as u64)
    }

    async fn min_position(&self) -> ServiceResult<Option<u64>> {
        let row = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::LogPosition.min(), "min")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?;
        Ok(row.flatten().map(|p| p.max(0) as u64))
    }

    /// Runs the appender until the log is closed: on every commit notice, and every
    /// `poll` for rows committed by other replicas.
    pub fn spawn_appender(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let _release = ReleaseOnDrop(&log);
            let mut closed = log.closed.subscribe();
            loop {
                match log.append_pending().await {
                    // A full batch: more may be waiting.
                    Ok(n) if n >= APPEND_BATCH as u64 => continue,
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = ?err, source = log.source, "event appender pass failed"),
                }
                if *closed.borrow() {
                    break;
                }
                tokio::select! {
                    () = log.wake.notified() => tokio::time::sleep(log.linger).await,
                    () = tokio::time::sleep(log.poll) => {}
                    _ = closed.changed() => {}
                }
            }
        })
    }

    /// Runs retention every hour: removes events older than `keep`.
    pub fn spawn_retention(self: &Arc<Self>, keep: chrono::Duration) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                if let Err(err) = log.purge(Utc::now() - keep).await {
                    tracing::warn!(error = ?err, source = log.source, "event log retention failed");
                }
            }
        })
    }

    /// Follows the log from `after`: contiguous batches of up to `batch` events, each
    /// sent as soon as it is appended (this replica's appends wake it at once, other
    /// replicas' are seen within `poll`). Ends after an error (sent last), when the log
    /// is closed, or when the receiver is dropped.
    pub fn follow(
        self: &Arc<Self>,
        after: u64,
        batch: u64,
    ) -> tokio::sync::mpsc::Receiver<ServiceResult<Vec<EventEnvelope>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let log = self.clone();
        tokio::spawn(async move {
            let mut cursor = after;
            let mut latest = log.latest.subscribe();
            let mut closed = log.closed.subscribe();
            loop {
                if *closed.borrow() {
                    break;
                }
                let events = match log.read_after_shared(cursor, batch).await {
                    Ok(events) => events,
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        break;
                    }
                };
                // Only a contiguous run is sent: positions are dense, so a hole can
                // only be a purge race, and the next read resolves it.
                let contiguous: Vec<_> = events
                    .into_iter()
                    .enumerate()
                    .take_while(|(i, e)| e.position == cursor + 1 + *i as u64)
                    .map(|(_, e)| e)
                    .collect();
                let full = contiguous.len() as u64 >= batch;
                if let Some(last) = contiguous.last() {
                    cursor = last.position;
                    if tx.send(Ok(contiguous)).await.is_err() {
                        break;
                    }
                    // A short batch read the end of the log: wait for the next
                    // append (seen since the read, if it happened meanwhile).
                    if full {
                        continue;
                    }
                }
                tokio::select! {
                    _ = latest.changed() => {}
                    () = tokio::time::sleep(log.poll) => {}
                    _ = closed.changed() => {}
                    () = tx.closed() => break,
                }
            }
        });
        rx
    }

    /// Positioned events after `after`, in order.
    ///
    /// Positions are consecutive, so the read is the range `after + 1 ..= after +
    /// limit`. The upper bound also ends the index scan at the last positioned row:
    /// with only `> after`, a scan past the newest event walks every unpositioned
    /// (NULL) entry of the index, the dead ones each positioned event leaves
    /// behind included, and an empty poll grows with the table.
    pub async fn read_after(&self, after: u64, limit: u64) -> ServiceResult<Vec<EventEnvelope>> {
        let rows = outbox::Entity::find()
            .filter(outbox::Column::LogPosition.gt(after as i64))
            .filter(outbox::Column::LogPosition.lte(after.saturating_add(limit).min(i64::MAX as u64) as i64))
            .order_by_asc(outbox::Column::LogPosition)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|row| self.envelope(row)).collect())
    }

    /// [`Self::read_after`] for followers: from the run another follower read when it
    /// holds the next event, else from the database (and remembered).
    async fn read_after_shared(&self, after: u64, limit: u64) -> ServiceResult<Vec<EventEnvelope>> {
        if let Some(events) = self.recent_after(after, limit) {
            return Ok(events);
        }
        let events = self.read_after(after, limit).await?;
        self.remember(after, &events);
        Ok(events)
    }

    /// The remembered events after `after` (at most `limit`), if the run holds the
    /// event right after it and answers the read as the database would: a full batch,
    /// or everything up to the newest position appended here. (A short batch from a
    /// run that ends before that would leave the follower waiting for the next poll.)
    fn recent_after(&self, after: u64, limit: u64) -> Option<Vec<EventEnvelope>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let first = recent.front()?.position;
        let last = recent.back()?.position;
        if first > after + 1 || last <= after {
            return None;
        }
        if last - after < limit && last < *self.latest.borrow() {
            return None;
        }
        let skip = (after + 1 - first) as usize;
        Some(recent.iter().skip(skip).take(limit as usize).cloned().collect())
    }

    /// Keeps the contiguous start of a read (`after + 1`, `after + 2`, ...): it extends
    /// the remembered run when it continues it, or replaces an older run.
    fn remember(&self, after: u64, events: &[EventEnvelope]) {
        let run: Vec<&EventEnvelope> = events
            .iter()
            .enumerate()
            .take_while(|(i, e)| e.position == after + 1 + *i as u64)
            .map(|(_, e)| e)
            .collect();
        let Some(newest) = run.last().map(|e| e.position) else {
            return;
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let last = recent.back().map(|e| e.position);
        match last {
            Some(last) if last >= newest => return,
            // Continues (or overlaps) the run: append what is new.
            Some(last) if last >= after => {
                recent.extend(run.into_iter().filter(|e| e.position > last).cloned());
            }
            // A gap, or nothing yet: this read is the run now.
            _ => {
                recent.clear();
                recent.extend(run.into_iter().cloned());
            }
        }
        while recent.len() > RECENT_EVENTS {
            recent.pop_front();
        }
    }

    fn envelope(&self, row: outbox::Model) -> EventEnvelope {
        EventEnvelope {
            id: row.id,
            r#type: row.event_type.clone(),
            source: self.source.to_owned(),
            aggregate_id: row.aggregate_id,
            occur_time: Some(timestamp(row.occurred_at)),
            position: row.log_position.unwrap_or_default().max(0) as u64,
            payload: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", row.event_type),
                value: row.payload,
            }),
        }
    }

    /// Removes positioned events that occurred before `cutoff`, always keeping the
    /// newest so positions continue after it.
    pub async fn purge(&self, cutoff: DateTime<Utc>) -> ServiceResult<u64> {
        let max = self.max_position().await? as i64;
        // Only ever a prefix of the log: times do not always rise with positions
        // (a transaction commits after a later one, replicas' clocks differ), and a
        // hole inside the kept log would stop every follower there.
        let first_kept = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::LogPosition.min(), "min")
            .filter(outbox::Column::LogPosition.is_not_null())
            .filter(outbox::Column::OccurredAt.gte(cutoff))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten()
            .map_or(max, |first| first.min(max));
        let result = outbox::Entity::delete_many()
            .filter(outbox::Column::LogPosition.is_not_null())
            .filter(outbox::Column::LogPosition.lt(first_kept))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}

/// `retail.events.v1.EventLogService` over an [`EventLog`].
#[derive(Debug, Clone)]
pub struct EventLogApi {
    log: Arc<EventLog>,
}

impl EventLogApi {
    pub fn new(log: Arc<EventLog>) -> Self {
        Self { log }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventLogService for EventLogApi {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<EventStream>, Status> {
        Principal::of(&request)?.require_scope(EVENTS_READ)?;
        let req = request.into_inner();
        let batch = match req.max_batch_size {
            n if n < 0 => return Err(ServiceError::invalid("max_batch_size", "must not be negative").into()),
            0 => 100,
            n => (n as u64).min(1000),
        };
        let log = self.log.clone();
        if let Some(min) = log.min_position().await?
            && req.after_position + 1 < min
        {
            return Err(Status::out_of_range(format!(
                "events after position {} are no longer kept; the oldest is {min}",
                req.after_position
            )));
        }
        let events = tokio_stream::wrappers::ReceiverStream::new(log.follow(req.after_position, batch));
        let stream = tokio_stream::StreamExt::map(events, |batch| {
            batch.map(|events| SubscribeResponse { events }).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

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
    /// every partition passes over it without a transaction. Default: the event's
    /// aggregate.
    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        Some(event.aggregate_id.clone())
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
    use super::{APPEND, APPEND_BATCH, Partition};

    #[test]
    fn a_pass_positions_at_most_a_batch() {
        assert!(APPEND.contains(&format!("LIMIT {APPEND_BATCH})")));
    }

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
