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
