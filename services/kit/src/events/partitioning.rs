//! A consumer's partition count, stored with its positions, and the carry-over of
//! the positions when the count changes (see the module docs of [`super`]).

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    QueryFilter, QuerySelect,
};
use serde::{Deserialize, Serialize};

use super::consumer::{Partition, position_entity as consumer_position};
use crate::error::{ServiceError, ServiceResult};

pub mod entity {
    //! A consumer's partition count, and the positions of the counts before it
    //! that still decide which events were applied.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consumer_partitions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub source: String,
        /// How many partitions the positions of `consumer_positions` are for.
        pub partitions: i32,
        /// JSON: the earlier counts' final positions (`[{"partitions": 2,
        /// "positions": [150, 163]}]`) as long as some are ahead of the current
        /// positions; NULL when none are.
        pub carried: Option<String>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity as partitioning;

/// The final positions of one earlier partition count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Layer {
    partitions: u32,
    positions: Vec<u64>,
}

impl Layer {
    fn highest(&self) -> u64 {
        self.positions.iter().copied().max().unwrap_or(0)
    }
}

/// What earlier partition counts applied beyond the current positions: the new
/// partitions start from the lowest of the old positions, and pass over each event
/// the old partition of its key had already applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Carried(Vec<Layer>);

impl Carried {
    /// Whether an earlier count's partition already applied the event at
    /// `position` with `key`.
    pub(super) fn applied(&self, key: &str, position: u64) -> bool {
        self.0.iter().any(|layer| {
            let owner = Partition::of_key(key, layer.partitions);
            layer
                .positions
                .get(owner.index as usize)
                .is_some_and(|&applied| position <= applied)
        })
    }

    fn parse(stored: Option<&str>) -> ServiceResult<Self> {
        match stored {
            None | Some("") => Ok(Self::default()),
            Some(json) => serde_json::from_str(json)
                .map(Self)
                .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable carried positions"))),
        }
    }

    fn to_stored(&self) -> ServiceResult<Option<String>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(&self.0)
            .map(Some)
            .map_err(|e| ServiceError::internal(anyhow::Error::new(e)))
    }
}

/// The name a partition's position is stored under: the consumer's, with the
/// partition when there are several.
pub(super) fn position_name(consumer: &str, partition: Partition) -> String {
    match partition.count {
        0 | 1 => consumer.to_owned(),
        n => format!("{consumer}#{}/{n}", partition.index),
    }
}

/// The partition a stored position's name stands for, if it is `consumer`'s.
fn partition_of(consumer: &str, name: &str) -> Option<Partition> {
    if name == consumer {
        return Some(Partition::WHOLE);
    }
    let (index, count) = name.strip_prefix(consumer)?.strip_prefix('#')?.split_once('/')?;
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index < count).then_some(Partition { index, count })
}

/// Where a consumer's stored partitioning stands against the count it runs with.
#[derive(Debug)]
pub(super) enum Settled {
    /// The stored count is this one: what earlier counts applied beyond the
    /// positions.
    Ready(Carried),
    /// The positions are for `from` partitions: they must be carried over first.
    Changed { from: u32 },
}

/// The stored partitioning of `consumer`, recording `count` for a consumer that has
/// none yet (a new one, or one whose positions were stored before the count was).
pub(super) async fn settle(
    db: &DatabaseConnection,
    consumer: &str,
    source: &str,
    count: u32,
) -> ServiceResult<Settled> {
    let count = count.max(1);
    for _ in 0..2 {
        if let Some(row) = partitioning::Entity::find_by_id((consumer.to_owned(), source.to_owned()))
            .one(db)
            .await?
        {
            let stored = row.partitions.max(1) as u32;
            return Ok(if stored == count {
                Settled::Ready(Carried::parse(row.carried.as_deref())?)
            } else {
                Settled::Changed { from: stored }
            });
        }
        match latest_unrecorded_count(db, consumer, source).await? {
            Some(from) if from != count => return Ok(Settled::Changed { from }),
            _ => {}
        }
        let inserted = partitioning::ActiveModel {
            consumer: Set(consumer.to_owned()),
            source: Set(source.to_owned()),
            partitions: Set(count as i32),
            carried: Set(None),
            updated_at: Set(Utc::now()),
        }
        .insert(db)
        .await;
        match inserted {
            Ok(_) => return Ok(Settled::Ready(Carried::default())),
            // Another runner recorded it meanwhile: read what it recorded.
            Err(err) if crate::db::is_unique_violation(&err) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Err(ServiceError::Aborted(
        "the consumer's partitioning changed while it was read; retrying".into(),
    ))
}

/// For positions stored before the partition count was: the count of the most
/// recently updated position, if `consumer` has any. Positions of one count only
/// are ever used at a time, so the newest tells the count it ran with last.
async fn latest_unrecorded_count(
    db: &impl ConnectionTrait,
    consumer: &str,
    source: &str,
) -> ServiceResult<Option<u32>> {
    let rows = positions_of(db, consumer, source).await?;
    Ok(rows
        .iter()
        .max_by_key(|(_, row)| row.updated_at)
        .map(|(partition, _)| partition.count.max(1)))
}

async fn positions_of(
    db: &impl ConnectionTrait,
    consumer: &str,
    source: &str,
) -> ServiceResult<Vec<(Partition, consumer_position::Model)>> {
    let rows = consumer_position::Entity::find()
        .filter(consumer_position::Column::Source.eq(source))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| partition_of(consumer, &row.consumer).map(|p| (p, row)))
        .collect())
}

/// Carries `consumer`'s positions over to `count` partitions, in one transaction:
/// every new partition starts after the lowest position of the old ones, and the
/// old positions are kept (in `carried`) to pass over what the old partitions had
/// applied beyond it, so no event is applied twice or skipped. Must run while no
/// partition of the consumer runs (the caller holds the consumer's exclusive lock on
/// PostgreSQL; SQLite's writer is single). Returns the carried positions now in
/// force.
pub(super) async fn carry_over(
    db: &DatabaseConnection,
    consumer: &str,
    source: &str,
    count: u32,
) -> ServiceResult<Carried> {
    let count = count.max(1);
    let txn = crate::db::begin_write(db).await?;
    let postgres = txn.get_database_backend() == DatabaseBackend::Postgres;
    let mut find = partitioning::Entity::find_by_id((consumer.to_owned(), source.to_owned()));
    if postgres {
        // Before anything else: a partition creating its position waits for this
        // transaction, or this one for it (SQLite's writer is single anyway).
        find = find.lock_exclusive();
    }
    let stored = find.one(&txn).await?;
    let (from, mut carried) = match &stored {
        Some(row) if row.partitions.max(1) as u32 == count => return Carried::parse(row.carried.as_deref()),
        Some(row) => (row.partitions.max(1) as u32, Carried::parse(row.carried.as_deref())?),
        None => match latest_unrecorded_count(&txn, consumer, source).await? {
            Some(from) if from != count => (from, Carried::default()),
            _ => return Ok(Carried::default()),
        },
    };
    if postgres {
        // A batch still committing is waited for, and its position read.
        consumer_position::Entity::find()
            .filter(consumer_position::Column::Source.eq(source))
            .lock_exclusive()
            .all(&txn)
            .await?;
    }
    let rows = positions_of(&txn, consumer, source).await?;
    // A partition that never stored a position had applied nothing.
    let old: Vec<u64> = Partition::all(from)
        .map(|partition| {
            rows.iter()
                .find(|(p, _)| *p == partition)
                .map_or(0, |(_, row)| row.log_position.max(0) as u64)
        })
        .collect();
    let start = old.iter().copied().min().unwrap_or(0);
    carried.0.push(Layer {
        partitions: from,
        positions: old.clone(),
    });
    carried.0.retain(|layer| layer.highest() > start);
    let names: Vec<String> = rows.iter().map(|(_, row)| row.consumer.clone()).collect();
    consumer_position::Entity::delete_many()
        .filter(consumer_position::Column::Source.eq(source))
        .filter(consumer_position::Column::Consumer.is_in(names))
        .exec(&txn)
        .await?;
    let now = Utc::now();
    consumer_position::Entity::insert_many(Partition::all(count).map(|partition| consumer_position::ActiveModel {
        consumer: Set(position_name(consumer, partition)),
        source: Set(source.to_owned()),
        log_position: Set(start as i64),
        updated_at: Set(now),
    }))
    .exec(&txn)
    .await?;
    let row = partitioning::ActiveModel {
        consumer: Set(consumer.to_owned()),
        source: Set(source.to_owned()),
        partitions: Set(count as i32),
        carried: Set(carried.to_stored()?),
        updated_at: Set(now),
    };
    if stored.is_some() {
        row.update(&txn).await?;
    } else {
        row.insert(&txn).await?;
    }
    txn.commit().await?;
    tracing::info!(
        consumer,
        source,
        from,
        to = count,
        start,
        "partition count changed: the positions were carried over"
    );
    Ok(carried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_name_is_read_back_as_its_partition() {
        for partition in Partition::all(1).chain(Partition::all(3)) {
            let name = position_name("membership", partition);
            assert_eq!(partition_of("membership", &name), Some(partition), "{name}");
        }
        assert_eq!(partition_of("membership", "membership-old"), None);
        assert_eq!(partition_of("membership", "membership#3/3"), None);
        assert_eq!(partition_of("member", "membership#0/2"), None);
    }

    #[test]
    fn an_event_counts_as_applied_where_its_old_partition_had_reached_it() {
        let key = "member-1";
        let old_owner = Partition::of_key(key, 2).index as usize;
        let mut positions = vec![10, 10];
        positions[old_owner] = 40;
        let carried = Carried(vec![Layer {
            partitions: 2,
            positions,
        }]);
        assert!(carried.applied(key, 40));
        assert!(!carried.applied(key, 41));
        let other = (0..100)
            .map(|i| format!("m{i}"))
            .find(|k| Partition::of_key(k, 2).index as usize != old_owner)
            .unwrap_or_default();
        assert!(carried.applied(&other, 10));
        assert!(
            !carried.applied(&other, 11),
            "the other old partition had stopped at 10"
        );
        let stored = carried.to_stored().unwrap_or_default();
        assert_eq!(Carried::parse(stored.as_deref()).ok(), Some(carried));
    }
}
