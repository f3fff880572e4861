//! Leases: which replica of a service applies which partition of a consumer.
//!
//! On PostgreSQL a replica keeps one session of its own (its lease session) and
//! holds, on it, a session-level advisory lock per partition it runs, keyed by the
//! consumer and the partition index. A lock lives exactly as long as the session,
//! so the partitions of a replica that ends (stopped, killed, its connection cut)
//! are free at once and taken by another replica at its next tick. Every tick a
//! replica counts the replicas of its consumer (the lease sessions whose
//! `application_name` names the consumer and the partition count) and keeps its
//! share, `ceil(partitions / replicas)`: it gives up leases above it (highest
//! indexes first) and takes free ones below it. On SQLite, the database of one
//! process, a replica runs every partition.
//!
//! The lease sessions also hold the consumer's partitioning lock in shared mode;
//! carrying the positions over to a new partition count takes it in exclusive mode,
//! so it happens only while no replica runs any partition of the consumer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use retail_proto::events::event_log_service_client::EventLogServiceClient;
use sea_orm::sqlx::{self, PgConnection};
use sea_orm::{DatabaseBackend, DatabaseConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Transport;
use super::consumer::{Consumer, EventHandler, Partition, hash};
use super::partitioning::{self, Settled};
use crate::error::{ServiceError, ServiceResult};

/// How often a replica looks at its leases: a dead replica's partitions are taken
/// over within about this (plus the moment the server needs to end its session).
const LEASE_TICK: Duration = Duration::from_millis(250);

/// The longest one look at the leases may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a lease session. A statement that hangs fails after 5 s; the server
/// probes an idle connection after 2 s and ends it after 2 unanswered probes 1 s
/// apart, so the leases of a replica that vanished without closing its connection
/// (a node lost, a network cut) are free within about 4 s.
const LEASE_SESSION: &str = "SET statement_timeout = '5s'; SET tcp_keepalives_idle = 2; \
     SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 2";

/// The second key of the consumer-wide partitioning lock (partitions use their
/// index).
const PARTITIONING: i32 = -1;

/// A replica's share of a consumer's partitions.
pub(super) struct Replica {
    pub(super) name: &'static str,
    pub(super) source: &'static str,
    pub(super) db: DatabaseConnection,
    pub(super) handler: Arc<dyn EventHandler>,
    pub(super) partitions: u32,
    /// A lone partition ([`Consumer::run`]): only this one, and no sharing.
    pub(super) only: Option<u32>,
    /// The partitions it runs.
    pub(super) owned: watch::Sender<Vec<u32>>,
}

/// A partition's runner task, aborted when dropped: a replica whose own task is
/// aborted or dropped stops its partitions with it.
struct Runner(JoinHandle<()>);

impl Drop for Runner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Runner {
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Aborts the task and waits until it has ended (a batch in flight rolled back).
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

/// A replica's lease session.
struct Session {
    conn: PgConnection,
    /// Whether the stored partition count is this replica's and the session holds
    /// the partitioning lock in shared mode.
    settled: bool,
}

impl Replica {
    /// The first key of every advisory lock of this consumer.
    fn key(&self) -> i32 {
        hash(&format!("{}\n{}", self.name, self.source)) as u32 as i32
    }

    /// The start of the `application_name` of this consumer's lease sessions for
    /// this partition count (a lone partition's sessions are not counted).
    fn tag(&self) -> String {
        let kind = if self.only.is_some() { "lone" } else { "group" };
        // With the replica's 32-digit id it stays within PostgreSQL's 63 bytes.
        format!("retail-lease {kind} {:08x} {} ", self.key() as u32, self.partitions)
    }

    fn candidates(&self) -> Vec<u32> {
        match self.only {
            Some(index) => vec![index],
            None => (0..self.partitions).collect(),
        }
    }

    pub(super) async fn run<T>(self, client: EventLogServiceClient<T>, shutdown: impl std::future::Future<Output = ()>)
    where
        T: Transport,
    {
        tokio::pin!(shutdown);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut runners = BTreeMap::new();
        let mut session = None;
        let mut waited = 0u32;
        let mut tick = tokio::time::interval(LEASE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            let step = match self.db.get_database_backend() {
                DatabaseBackend::Postgres => {
                    let step = self.lease_step(&mut session, &id, &mut runners, &client, &mut waited);
                    match tokio::time::timeout(STEP_TIMEOUT, step).await {
                        Ok(step) => step,
                        Err(_) => Err(ServiceError::Unavailable("the lease session did not answer".into())),
                    }
                }
                _ => self.local_step(&mut runners, &client).await,
            };
            if let Err(err) = step {
                tracing::warn!(consumer = self.name, source = self.source, error = ?err, "consumer leases lost; starting over");
                // The runners stop before the session (and the leases) go.
                stop(&mut runners).await;
                session = None;
            }
            let owned: Vec<u32> = runners.keys().copied().collect();
            self.owned.send_if_modified(|was| {
                let changed = *was != owned;
                *was = owned;
                changed
            });
        }
        stop(&mut runners).await;
        drop(session);
        self.owned.send_replace(Vec::new());
    }

    /// SQLite: every partition, once the positions are for this partition count.
    async fn local_step<T>(
        &self,
        runners: &mut BTreeMap<u32, Runner>,
        client: &EventLogServiceClient<T>,
    ) -> ServiceResult<()>
    where
        T: Transport,
    {
        runners.retain(|_, runner| !runner.is_finished());
        if runners.len() == self.candidates().len() {
            return Ok(());
        }
        if let Settled::Changed { .. } = partitioning::settle(&self.db, self.name, self.source, self.partitions).await?
        {
            partitioning::carry_over(&self.db, self.name, self.source, self.partitions).await?;
        }
        for index in self.candidates() {
            runners
                .entry(index)
                .or_insert_with(|| self.spawn_runner(index, client.clone()));
        }
        Ok(())
    }

    /// PostgreSQL: one look at the leases (see the module docs).
    async fn lease_step<T>(
        &self,
        slot: &mut Option<Session>,
        id: &str,
        runners: &mut BTreeMap<u32, Runner>,
        client: &EventLogServiceClient<T>,
        waited: &mut u32,
    ) -> ServiceResult<()>
    where
        T: Transport,
    {
        let key = self.key();
        let session = match slot {
            Some(session) => session,
            None => {
                let mut conn = self
                    .db
                    .get_postgres_connection_pool()
                    .acquire()
                    .await
                    .map_err(db_error)?
                    .detach();
                sqlx::raw_sql(LEASE_SESSION)
                    .execute(&mut conn)
                    .await
                    .map_err(db_error)?;
                sqlx::query("SELECT set_config('application_name', $1, false)")
                    .bind(format!("{}{id}", self.tag()))
                    .execute(&mut conn)
                    .await
                    .map_err(db_error)?;
                slot.insert(Session { conn, settled: false })
            }
        };
        if !session.settled {
            if let Settled::Changed { from } =
                partitioning::settle(&self.db, self.name, self.source, self.partitions).await?
            {
                if !try_lock(&mut session.conn, key, PARTITIONING).await? {
                    if waited.is_multiple_of(40) {
                        tracing::warn!(
                            consumer = self.name,
                            source = self.source,
                            from,
                            to = self.partitions,
                            "the partition count changed: the positions are carried over once no replica runs the old count; \
                             stop the replicas that still run it"
                        );
                    }
                    *waited += 1;
                    return Ok(());
                }
                let carried = partitioning::carry_over(&self.db, self.name, self.source, self.partitions).await;
                unlock(&mut session.conn, key, PARTITIONING).await?;
                carried?;
            }
            let shared: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock_shared($1, $2)")
                .bind(key)
                .bind(PARTITIONING)
                .fetch_one(&mut session.conn)
                .await
                .map_err(db_error)?;
            if !shared {
                // Another replica is carrying the positions over right now.
                return Ok(());
            }
            session.settled = true;
        }

        // A runner ends only by panicking: its lease goes with it.
        let ended: Vec<u32> = runners
            .iter()
            .filter(|(_, runner)| runner.is_finished())
            .map(|(index, _)| *index)
            .collect();
        for index in ended {
            runners.remove(&index);
            unlock(&mut session.conn, key, index as i32).await?;
        }

        let share = match self.only {
            Some(_) => 1,
            None => {
                let tag = self.tag();
                let replicas: i64 = sqlx::query_scalar(
                    "SELECT count(DISTINCT application_name) FROM pg_stat_activity \
                     WHERE datname = current_database() AND left(application_name, $2) = $1",
                )
                .bind(&tag)
                .bind(tag.chars().count() as i32)
                .fetch_one(&mut session.conn)
                .await
                .map_err(db_error)?;
                self.partitions.div_ceil(replicas.max(1) as u32) as usize
            }
        };
        while runners.len() > share {
            let Some((index, runner)) = runners.pop_last() else {
                break;
            };
            runner.stop().await;
            unlock(&mut session.conn, key, index as i32).await?;
        }
        for index in self.candidates() {
            if runners.len() >= share {
                break;
            }
            if runners.contains_key(&index) {
                continue;
            }
            if try_lock(&mut session.conn, key, index as i32).await? {
                runners.insert(index, self.spawn_runner(index, client.clone()));
            }
        }
        if self.only.is_some() {
            // The group's count above shows the session alive; a lone partition's
            // session is asked, so that a lost lease stops its runner.
            sqlx::query("SELECT 1")
                .execute(&mut session.conn)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    fn spawn_runner<T>(&self, index: u32, client: EventLogServiceClient<T>) -> Runner
    where
        T: Transport,
    {
        let consumer = Consumer {
            name: self.name,
            source: self.source,
            db: self.db.clone(),
            handler: self.handler.clone(),
            partition: Partition {
                index,
                count: self.partitions,
            },
        };
        Runner(tokio::spawn(consumer.follow(client, std::future::pending())))
    }
}

/// Stops every runner (a batch in flight rolls back).
async fn stop(runners: &mut BTreeMap<u32, Runner>) {
    for (_, runner) in std::mem::take(runners) {
        runner.stop().await;
    }
}

async fn try_lock(conn: &mut PgConnection, key: i32, index: i32) -> ServiceResult<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(key)
        .bind(index)
        .fetch_one(conn)
        .await
        .map_err(db_error)
}

async fn unlock(conn: &mut PgConnection, key: i32, index: i32) -> ServiceResult<()> {
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(key)
        .bind(index)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

fn db_error(err: sqlx::Error) -> ServiceError {
    ServiceError::internal(anyhow::Error::new(err).context("consumer lease session"))
}
