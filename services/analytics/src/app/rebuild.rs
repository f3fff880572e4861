//! Rebuilding the projections from the event archive: the archive is replayed
//! into shadow tables (`rebuild_*`) while the serving tables keep serving and the
//! consumers keep applying; then, in one transaction that holds the projection lock
//! (so no consumer batch commits meanwhile), the events archived since are
//! replayed too and the shadow tables take the serving tables' names.
//!
//! The sources are replayed each in log order, merged by the time each batch was
//! archived, which is the order the consumers applied them in.

use retail_kit::error::ServiceResult;
use retail_proto::events::EventEnvelope;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction};

use super::App;
use crate::events::{ARCHIVED, PROJECTION_LOCK};
use crate::projection::Projector;
use crate::store::{self, PROJECTIONS, SHADOW, exec, rows};

/// Events replayed per transaction.
const CHUNK: usize = 500;

/// One source's archive, read in log order.
struct Cursor {
    source: &'static str,
    after: i64,
    buffer: std::collections::VecDeque<(i64, EventEnvelope)>,
    done: bool,
}

impl Cursor {
    async fn head(&mut self, db: &impl ConnectionTrait) -> ServiceResult<Option<i64>> {
        if self.buffer.is_empty() && !self.done {
            let found = rows(
                db,
                "SELECT log_position, event_id, event_type, aggregate_id, partition_key, occur_at, payload, archived_at \
                 FROM event_archive WHERE source = ? AND log_position > ? ORDER BY log_position LIMIT 1000",
                vec![self.source.into(), self.after.into()],
            )
            .await?;
            self.done = found.is_empty();
            for row in found {
                let position = store::int(&row, 0)?;
                let payload: Vec<u8> = row.try_get_by_index(6)?;
                let event = EventEnvelope {
                    id: store::text(&row, 1)?,
                    r#type: store::text(&row, 2)?.clone(),
                    source: self.source.to_owned(),
                    aggregate_id: store::text(&row, 3)?,
                    occur_time: Some(prost_types::Timestamp {
                        seconds: store::int(&row, 5)?,
                        nanos: 0,
                    }),
                    position: position as u64,
                    payload: Some(prost_types::Any {
                        type_url: format!("type.googleapis.com/{}", store::text(&row, 2)?),
                        value: payload,
                    }),
                    partition_key: store::text(&row, 4)?,
                };
                self.after = position;
                self.buffer.push_back((store::int(&row, 7)?, event));
            }
        }
        Ok(self.buffer.front().map(|(at, _)| *at))
    }
}

impl App {
    /// Replays every archived event not yet replayed into the shadow tables, in
    /// transactions of [`CHUNK`] events, or all in `txn` when given.
    async fn replay(&self, cursors: &mut [Cursor], txn: Option<&DatabaseTransaction>) -> ServiceResult<u64> {
        let mut replayed = 0;
        loop {
            let mut batch = Vec::with_capacity(CHUNK);
            while batch.len() < CHUNK {
                let mut next: Option<(usize, i64)> = None;
                for (i, cursor) in cursors.iter_mut().enumerate() {
                    let head = match txn {
                        Some(txn) => cursor.head(txn).await?,
                        None => cursor.head(&self.db).await?,
                    };
                    if let Some(at) = head
                        && next.is_none_or(|(_, best)| at < best)
                    {
                        next = Some((i, at));
                    }
                }
                let Some((i, _)) = next else { break };
                if let Some((_, event)) = cursors[i].buffer.pop_front() {
                    batch.push(event);
                }
            }
            if batch.is_empty() {
                return Ok(replayed);
            }
            replayed += batch.len() as u64;
            match txn {
                Some(txn) => apply(txn, &batch).await?,
                None => {
                    let own = retail_kit::db::begin_write(&self.db).await?;
                    apply(&own, &batch).await?;
                    own.commit().await?;
                }
            }
        }
    }

    /// Rebuilds every projection from the archive and swaps it in; returns the
    /// events replayed.
    pub async fn rebuild(&self) -> ServiceResult<u64> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        for table in PROJECTIONS {
            self.db
                .execute_unprepared(&format!("DROP TABLE IF EXISTS {SHADOW}{table}"))
                .await?;
        }
        for sql in store::projection_ddl(SHADOW, &tag[..12]) {
            self.db.execute_unprepared(&sql).await?;
        }
        let mut cursors: Vec<Cursor> = ARCHIVED
            .iter()
            .map(|source| Cursor {
                source,
                after: 0,
                buffer: Default::default(),
                done: false,
            })
            .collect();
        let mut replayed = self.replay(&mut cursors, None).await?;
        let txn = retail_kit::db::begin_write(&self.db).await?;
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            exec(&txn, "SELECT pg_advisory_xact_lock(?)", vec![PROJECTION_LOCK.into()]).await?;
        }
        for cursor in &mut cursors {
            cursor.done = false;
        }
        replayed += self.replay(&mut cursors, Some(&txn)).await?;
        for table in PROJECTIONS {
            txn.execute_unprepared(&format!("ALTER TABLE {table} RENAME TO old_{table}"))
                .await?;
            txn.execute_unprepared(&format!("ALTER TABLE {SHADOW}{table} RENAME TO {table}"))
                .await?;
            txn.execute_unprepared(&format!("DROP TABLE old_{table}")).await?;
        }
        txn.commit().await?;
        Ok(replayed)
    }
}

async fn apply(txn: &DatabaseTransaction, events: &[EventEnvelope]) -> ServiceResult<()> {
    let mut projector = Projector::new(txn, SHADOW);
    let events: Vec<&EventEnvelope> = events.iter().collect();
    projector.apply_all(&events).await?;
    projector.finish().await
}
