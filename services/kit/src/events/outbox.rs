//! Publishing: an event's row in the outbox, written in the caller's transaction.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseTransaction};

use crate::error::ServiceResult;
use entity as outbox;

pub mod entity {
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
        /// What a partitioned consumer routes the event by (the envelope's
        /// `partition_key`); NULL for rows written before the column existed.
        pub partition_key: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An event ready for the outbox, typed by its message's full name
/// (`prost::Name`, e.g. `retail.events.v1.OrderPaid`): no event type is written out
/// by hand, and a consumer compares with the same name.
#[derive(Debug, Clone)]
pub struct Outgoing {
    type_name: String,
    payload: Vec<u8>,
    /// The key consumers partition by, when it is not the aggregate.
    partition_key: Option<String>,
}

impl Outgoing {
    pub fn of<M: prost::Message + prost::Name>(message: &M) -> Self {
        Self {
            type_name: M::full_name(),
            payload: message.encode_to_vec(),
            partition_key: None,
        }
    }

    /// Keys the event by `key` instead of its aggregate: a partitioned consumer
    /// applies the events of one key in log order, in one partition (order events
    /// by their member, say, whose points they change). An empty key leaves the
    /// aggregate as the key.
    #[must_use]
    pub fn partitioned_by(mut self, key: &str) -> Self {
        self.partition_key = Some(key.to_owned()).filter(|k| !k.is_empty());
        self
    }

    /// The key consumers partition it by, if it is not the aggregate.
    pub fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }

    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The outbox row that publishes it for `aggregate_id`, for a guarded write.
    pub fn outbox_row(&self, aggregate_id: &str) -> outbox::ActiveModel {
        let mut row = outbox_row(&self.type_name, aggregate_id, self.payload.clone());
        if let Some(key) = &self.partition_key {
            row.partition_key = Set(Some(key.clone()));
        }
        row
    }

    /// Writes it into the outbox of the caller's transaction; see [`publish`].
    pub async fn publish(&self, txn: &DatabaseTransaction, aggregate_id: &str) -> ServiceResult<String> {
        let row = self.outbox_row(aggregate_id).insert(txn).await?;
        Ok(row.id)
    }
}

/// Writes an event into the outbox of the caller's transaction. Call
/// [`super::EventLog::committed`] after the commit to deliver it without waiting for a poll.
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
/// Consumers partition it by its aggregate ([`Outgoing::partitioned_by`] for
/// another key).
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
        partition_key: Set(Some(aggregate_id.to_owned())),
    }
}
