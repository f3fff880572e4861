//! Serving: reading the positioned log, following it, retention, and the
//! `EventLogService` server.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use retail_proto::events::event_log_service_server::EventLogService;
use retail_proto::events::{EventEnvelope, SubscribeRequest, SubscribeResponse};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::{Notify, watch};
use tonic::{Request, Response, Status};

use super::EVENTS_READ;
use super::appender::Lease;
use super::outbox::entity as outbox;
use crate::auth::Principal;
use crate::convert::timestamp;
use crate::error::{ServiceError, ServiceResult};

/// Events the followers of one log share, at most: the newest run appended or read.
const RECENT_EVENTS: usize = 2048;

/// A service's event log over its outbox table.
#[derive(Debug)]
pub struct EventLog {
    pub(super) db: DatabaseConnection,
    pub(super) source: &'static str,
    /// The newest contiguous run of events the appender positioned or a follower
    /// read, oldest first. Positions
    /// are dense and never reassigned, so every follower that reaches this run (the
    /// partitions of one consumer follow a log side by side) takes it from here
    /// instead of reading the same rows again.
    pub(super) recent: std::sync::Mutex<VecDeque<EventEnvelope>>,
    /// PostgreSQL: the appender's session and lock, between passes.
    pub(super) lease: tokio::sync::Mutex<Option<Lease>>,
    /// Latest position this replica has appended or seen.
    pub(super) latest: watch::Sender<u64>,
    pub(super) wake: Notify,
    pub(super) closed: watch::Sender<bool>,
    pub(super) poll: Duration,
    /// The appender's wait after a commit notice (`EventsSettings::append_linger_ms`).
    pub(super) linger: Duration,
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
    pub(super) fn remember(&self, after: u64, events: &[EventEnvelope]) {
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

    pub(super) fn envelope(&self, row: outbox::Model) -> EventEnvelope {
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
            partition_key: row.partition_key.unwrap_or_default(),
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
