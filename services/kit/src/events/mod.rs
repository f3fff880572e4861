//! The event backbone: a transactional outbox that is the service's event log, the
//! `EventLogService/Subscribe` server, and the consumer runner.
//!
//! - Publishing (`outbox`): [`publish`] or [`Outgoing::publish`]
//!   inserts the event into `outbox` inside the caller's transaction, without a
//!   position. Nothing is published that did not commit.
//! - Ordering (`appender`): one appender at a time (SQLite has a single writer; on
//!   PostgreSQL the replica holding the appender lock) gives committed, unpositioned
//!   rows the next positions in one statement. A row becomes visible to readers only
//!   with its position, and positions are given out in the appender's commit order,
//!   so a reader that has seen position N never misses a later commit with a smaller
//!   number. Positions are dense: 1, 2, 3, ...
//! - Serving (`log`): [`EventLogApi`] streams positioned rows after a position and
//!   wakes up as soon as the appender commits (or within `poll` for other replicas'
//!   appends). Subscribers reading the same stretch of the log (a consumer's
//!   partitions) share one read of it, and the events this replica's appender
//!   positions reach them without any read.
//! - Consuming (`consumer`): [`Consumer`] applies each event and stores its position
//!   in the consumer's own database in one transaction: exactly-once effects,
//!   at-least-once delivery. A duplicate is skipped; a gap makes it resubscribe from
//!   what it has.
//! - Retention: [`EventLog::purge`] drops old positioned rows; subscribing from before
//!   the oldest kept event is OUT_OF_RANGE.
//!
//! # Partitions
//!
//! A consumer may apply a log in several partitions side by side, each storing its
//! own position: partition `i` of `n` applies the events whose partition key hashes
//! (FNV-1a, fixed) to `i` modulo `n`, so the events of one key take effect in log
//! order, exactly once. The key is chosen by the publisher and travels in the
//! envelope (`EventEnvelope.partition_key`, from `outbox.partition_key`): the
//! event's aggregate by default, another key through [`Outgoing::partitioned_by`]
//! (orders keys its events by member). A consumer routes by it without decoding the
//! payload ([`EventHandler::partition_key`], [`partition_key_of`]); only events
//! published before envelopes carried a key (empty) fall back to the consumer's own
//! reading of them.
//!
//! # Changing the partition count
//!
//! The count is stored with the positions (`consumer_partitions`). A consumer that
//! starts with another count carries the positions over, in one transaction, before
//! any partition runs: every new partition starts after the lowest of the old
//! positions, and the old positions are kept with the count
//! (`consumer_partitions.carried`, dropped at a later change once every partition
//! is past them), so that an event the old partition of its key had already applied
//! is passed over. No event is applied twice, none is skipped,
//! and nothing relies on the handler's own idempotency; the stretch between the
//! lowest and the highest old position is read again, nothing older. The carry-over
//! waits until no replica runs the old count (on PostgreSQL it takes the consumer's
//! partitioning lock exclusively, which every running replica holds shared, and warns
//! while it waits): in a rolling update the old replicas keep applying until they
//! stop, and the new ones take over from there. Replicas of the release before the
//! count was stored take no such lock, so change the count in a rollout of its own,
//! not in the one that brings this release.
//!
//! # Leases
//!
//! Each partition is applied by one replica at a time. A [`ConsumerGroup`] (one per
//! replica and consumer) keeps a PostgreSQL session of its own and holds, on it, a
//! session-level advisory lock per partition it runs. Every 250 ms it counts the
//! replicas of the consumer (their lease sessions in `pg_stat_activity`, by
//! `application_name`, so the replicas must connect as one role) and keeps
//! its share, `ceil(partitions / replicas)`: it gives up leases above it and takes free
//! ones below it, so the replicas share the partitions out. A lock lives exactly as
//! long as its session, so a replica that is stopped, killed or cut off frees its
//! partitions at once (a vanished host within about 4 s, through TCP keepalives) and
//! the others take them over at their next tick. A lone [`Consumer::run`] holds the
//! lease of its one partition the same way, without sharing. The lease only keeps the
//! replicas from doing the same work: exactly-once rests on the position stored with
//! the effects, conditional on the position read, so a batch two replicas apply in
//! the moment of a handover takes effect once. On SQLite, one process's database, a
//! replica runs every partition. The lease sessions need direct connections or a
//! session-mode pooler, like the appender's.

mod appender;
mod consumer;
mod lease;
mod log;
pub mod migration;
mod outbox;
mod partitioning;

pub use consumer::{AfterCommit, Applied, Consumer, ConsumerGroup, EventHandler, Partition, partition_key_of};
pub use log::{EventLog, EventLogApi};
pub use outbox::{Outgoing, outbox_row, publish};

/// Scope needed to subscribe to any service's event log.
pub const EVENTS_READ: &str = "events.read";

/// The tables' entities.
pub mod entity {
    pub use super::consumer::position_entity as consumer_position;
    pub use super::outbox::entity as outbox;
    pub use super::partitioning::entity as consumer_partitioning;
}

/// What a consumer's client to another service's event log runs on: any tonic
/// transport (a channel, an intercepted channel that adds the service's token).
pub trait Transport:
    tonic::client::GrpcService<
        tonic::body::Body,
        Error: Into<tonic::codegen::StdError>,
        ResponseBody: tonic::codegen::Body<
            Data = tonic::codegen::Bytes,
            Error: Into<tonic::codegen::StdError> + Send,
        > + Send
                          + 'static,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Transport for T
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    T::Future: Send,
{
}
