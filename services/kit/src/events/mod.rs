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
