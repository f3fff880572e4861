//! Ordering: the appender gives committed outbox rows their positions.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use retail_proto::events::EventEnvelope;
use sea_orm::sqlx::{self, PgConnection};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, FromQueryResult, Statement};

use super::log::EventLog;
use super::outbox::entity as outbox;
use crate::error::{ServiceError, ServiceResult};

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
               outbox.aggregate_id AS aggregate_id, outbox.payload AS payload, outbox.occurred_at AS occurred_at, \
               outbox.partition_key AS partition_key";

/// A row as [`APPEND`] returns it, read by sqlx (PostgreSQL).
type AppendedRow = (String, i64, String, String, Vec<u8>, DateTime<Utc>, Option<String>);

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
pub(super) struct Lease {
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
                |(id, position, event_type, aggregate_id, payload, occurred_at, partition_key)| outbox::Model {
                    id,
                    log_position: Some(position),
                    event_type,
                    aggregate_id,
                    payload,
                    occurred_at,
                    partition_key,
                },
            )
            .collect())
    }
}

/// Ends the appender's session, and with it the lock, however its task ends.
pub(super) struct ReleaseOnDrop<'a>(&'a Arc<EventLog>);

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

impl EventLog {
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
            crate::metrics::log_head(self.source, last);
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
}

#[cfg(test)]
mod tests {
    use super::{APPEND, APPEND_BATCH};

    #[test]
    fn a_pass_positions_at_most_a_batch() {
        assert!(APPEND.contains(&format!("LIMIT {APPEND_BATCH})")));
    }
}
