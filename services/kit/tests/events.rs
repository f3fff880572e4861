//! The event backbone end to end: a publisher's outbox served over gRPC, and a
//! consumer that is killed and restarted while 1,000 transactions commit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use retail_kit::auth::{AUDIENCE, AuthLayer, Claims, KeySource, PrincipalKind, VerificationKey, Verifier};
use retail_kit::config::{DatabaseSettings, ServerSettings};
use retail_kit::events::{self, AfterCommit, Consumer, EventHandler, EventLog, EventLogApi};
use retail_kit::server::{self, ServiceRoutes};
use retail_kit::{ServiceError, ServiceResult};
use retail_proto::common::Money;
use retail_proto::events::EventEnvelope;
use retail_proto::events::event_log_service_client::EventLogServiceClient;
use retail_proto::events::event_log_service_server::{EventLogServiceServer, SERVICE_NAME};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, Statement, TransactionTrait};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

mod common;

/// The appender's wait after a commit notice.
const LINGER: Duration = Duration::from_millis(25);

async fn database() -> (DatabaseConnection, retail_testkit::TestDatabase) {
    let (db, test_db) = common::kit_database().await;
    db.execute_unprepared(
        "CREATE TABLE applied_events (event_id VARCHAR(36) PRIMARY KEY, log_position BIGINT NOT NULL, \
         partition_key VARCHAR(16) NOT NULL, applied_seq BIGINT NOT NULL)",
    )
    .await
    .unwrap();
    (db, test_db)
}

#[derive(Debug)]
struct StaticKeys(Vec<VerificationKey>);

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    async fn fetch(&self) -> anyhow::Result<Vec<VerificationKey>> {
        Ok(self.0.clone())
    }
}

/// Serves the log behind the real auth layer; returns a client with a token that
/// holds `events.read`.
async fn serve_log(log: Arc<EventLog>) -> (std::net::SocketAddr, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let verifier = Arc::new(Verifier::new(
        "retail-identity",
        Arc::new(StaticKeys(vec![VerificationKey {
            key_id: "k".into(),
            public_key: key.verifying_key().to_bytes().to_vec(),
            expires_at: None,
        }])),
        Duration::from_millis(100),
    ));
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: "retail-identity".into(),
        aud: AUDIENCE.into(),
        sub: "consumer".into(),
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: "j".into(),
        kind: PrincipalKind::Service,
        roles: vec![],
        scope: "events.read".into(),
        partner_id: None,
        sid: None,
        stores: Vec::new(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k".into());
    let der = key.to_pkcs8_der().unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();

    let settings = ServerSettings::default();
    let bound = server::bind(&settings).await.unwrap();
    let addr = bound.local_addr();
    tokio::spawn(async move {
        server::serve(
            bound,
            &settings,
            ServiceRoutes {
                routes: tonic::service::Routes::new(EventLogServiceServer::new(EventLogApi::new(log))),
                names: vec![SERVICE_NAME],
                auth: Some(AuthLayer::new(verifier, &[])),
            },
            std::future::pending(),
        )
        .await
    });
    (addr, token)
}

type Client = EventLogServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

async fn client(addr: std::net::SocketAddr, token: &str) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EventLogServiceClient::with_interceptor(channel, Bearer(format!("Bearer {token}").parse().unwrap()))
}

/// Records each event id once; a second application would violate the primary key.
/// Records each event with its key (the amount modulo 7) and the order in which
/// the consumer's partitions applied it.
/// Events with the key `ignored` are ones the handler does nothing with.
#[derive(Default)]
struct RecordEvents {
    seq: std::sync::atomic::AtomicI64,
    ignored: Option<&'static str>,
}

/// The amount of a test event (a `Money` payload); 0 if it has none.
fn amount_of(event: &EventEnvelope) -> i64 {
    use prost::Message;
    event
        .payload
        .as_ref()
        .and_then(|p| Money::decode(p.value.as_slice()).ok())
        .map(|m| m.amount_minor)
        .unwrap_or_default()
}

/// The amounts of `events`, in ascending order.
fn sorted_amounts(events: &[EventEnvelope]) -> Vec<i64> {
    let mut amounts: Vec<i64> = events.iter().map(amount_of).collect();
    amounts.sort_unstable();
    amounts
}

fn key_of(event: &EventEnvelope) -> String {
    format!("k{}", amount_of(event) % 7)
}

#[async_trait::async_trait]
impl EventHandler for RecordEvents {
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        let backend = txn.get_database_backend();
        for event in events {
            let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                match backend {
                    sea_orm::DatabaseBackend::Postgres => {
                        "INSERT INTO applied_events (event_id, log_position, partition_key, applied_seq) \
                         VALUES ($1, $2, $3, $4)"
                    }
                    _ => {
                        "INSERT INTO applied_events (event_id, log_position, partition_key, applied_seq) \
                         VALUES (?, ?, ?, ?)"
                    }
                },
                [
                    event.id.clone().into(),
                    (event.position as i64).into(),
                    key_of(event).into(),
                    seq.into(),
                ],
            ))
            .await
            .map_err(ServiceError::from)?;
        }
        Ok(Vec::new())
    }

    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        Some(key_of(event)).filter(|key| Some(key.as_str()) != self.ignored)
    }
}

async fn publish_one(db: &DatabaseConnection, log: &EventLog, i: i64, commit: bool) {
    let txn = db.begin().await.unwrap();
    events::publish(
        &txn,
        "retail.common.v1.Money",
        &format!("agg-{i}"),
        &Money {
            currency_code: "EUR".into(),
            amount_minor: i,
        },
    )
    .await
    .unwrap();
    if commit {
        txn.commit().await.unwrap();
        log.committed();
    } else {
        txn.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn events_the_handler_ignores_are_passed_over_and_positions_still_reach_the_end() {
    let (publisher_db, _p) = database().await;
    let (consumer_db, _c) = database().await;
    let log = EventLog::new(publisher_db.clone(), "test", Duration::from_millis(50), LINGER);
    let appender = log.spawn_appender();
    let (addr, token) = serve_log(log.clone()).await;
    let handler = Arc::new(RecordEvents {
        ignored: Some("k0"),
        ..RecordEvents::default()
    });
    let consumer = |partition| Consumer {
        name: "ignoring",
        source: "test",
        db: consumer_db.clone(),
        handler: handler.clone(),
        partition,
    };
    for i in 0..140 {
        publish_one(&publisher_db, &log, i, true).await;
    }
    let tasks: Vec<_> = events::Partition::all(2)
        .map(|partition| {
            let (consumer, token) = (consumer(partition), token.clone());
            tokio::spawn(async move {
                let client = client(addr, &token).await;
                consumer.run(client, std::future::pending()).await;
            })
        })
        .collect();
    // Every partition's stored position reaches the end of the log, although the
    // last events are ones it passed over (saved once the log is quiet).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut lowest = u64::MAX;
        for partition in events::Partition::all(2) {
            lowest = lowest.min(consumer(partition).position().await.unwrap());
        }
        if lowest >= 140 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "positions stopped at {lowest}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for task in tasks {
        task.abort();
    }
    appender.abort();
    let rows = consumer_db
        .query_all_raw(Statement::from_string(
            consumer_db.get_database_backend(),
            "SELECT partition_key FROM applied_events",
        ))
        .await
        .unwrap();
    let keys: Vec<String> = rows.iter().map(|r| r.try_get_by_index::<String>(0).unwrap()).collect();
    assert_eq!(keys.len(), 120, "every event but the 20 ignored ones, once each");
    assert!(keys.iter().all(|k| k != "k0"), "an ignored event reached the handler");
}

#[tokio::test]
async fn events_of_concurrent_transactions_arrive_once_in_order_across_consumer_restarts() {
    arrive_once_in_order_across_restarts(1).await;
}

#[tokio::test]
async fn partitioned_consumers_apply_each_event_once_and_each_key_in_log_order_across_restarts() {
    arrive_once_in_order_across_restarts(3).await;
}

async fn arrive_once_in_order_across_restarts(partitions: u32) {
    let (publisher_db, _p) = database().await;
    let (consumer_db, _c) = database().await;
    let log = EventLog::new(publisher_db.clone(), "test", Duration::from_millis(50), LINGER);
    let appender = log.spawn_appender();
    let (addr, token) = serve_log(log.clone()).await;

    let handler = Arc::new(RecordEvents::default());
    let consumer = |partition| Consumer {
        name: "tester",
        source: "test",
        db: consumer_db.clone(),
        handler: handler.clone(),
        partition,
    };
    let run_consumer = || {
        events::Partition::all(partitions)
            .map(|partition| {
                let consumer = consumer(partition);
                let token = token.clone();
                tokio::spawn(async move {
                    let client = client(addr, &token).await;
                    consumer.run(client, std::future::pending()).await;
                })
            })
            .collect::<Vec<_>>()
    };
    let stop = |tasks: Vec<tokio::task::JoinHandle<()>>| async move {
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    };
    let lowest_position = || async {
        let mut lowest = u64::MAX;
        for partition in events::Partition::all(partitions) {
            lowest = lowest.min(consumer(partition).position().await.unwrap());
        }
        lowest
    };

    // 1,000 committed transactions and 100 rolled back, all at once.
    let publishers: Vec<_> = (0..1100)
        .map(|i| {
            let (db, log) = (publisher_db.clone(), log.clone());
            tokio::spawn(async move { publish_one(&db, &log, i, i % 11 != 10).await })
        })
        .collect();

    // Kill the consumer at pseudo-random moments while events flow.
    let mut running = run_consumer();
    for pause_ms in [37u64, 110, 5, 260, 73, 150] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        stop(running).await;
        running = run_consumer();
    }
    for p in publishers {
        p.await.unwrap();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if lowest_position().await >= 1000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "consumer did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(running).await;
    appender.abort();

    let rows = consumer_db
        .query_all_raw(Statement::from_string(
            consumer_db.get_database_backend(),
            "SELECT event_id, log_position, partition_key, applied_seq FROM applied_events ORDER BY log_position",
        ))
        .await
        .unwrap();
    let positions: Vec<i64> = rows.iter().map(|r| r.try_get_by_index::<i64>(1).unwrap()).collect();
    assert_eq!(
        positions,
        (1..=1000).collect::<Vec<i64>>(),
        "dense, ordered, no duplicate"
    );
    let ids: HashSet<String> = rows.iter().map(|r| r.try_get_by_index::<String>(0).unwrap()).collect();
    assert_eq!(ids.len(), 1000);

    // Each key's events took effect in log order, whichever partition had them.
    let mut by_key: std::collections::HashMap<String, Vec<(i64, i64)>> = Default::default();
    for row in &rows {
        by_key
            .entry(row.try_get_by_index::<String>(2).unwrap())
            .or_default()
            .push((
                row.try_get_by_index::<i64>(3).unwrap(),
                row.try_get_by_index::<i64>(1).unwrap(),
            ));
    }
    assert_eq!(by_key.len(), 7);
    for (key, mut applied) in by_key {
        applied.sort_unstable();
        let positions: Vec<i64> = applied.iter().map(|(_, p)| *p).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{key} applied out of log order: {positions:?}"
        );
    }

    // Rolled-back transactions published nothing: exactly the committed amounts arrived.
    let events = log.read_after(0, 2000).await.unwrap();
    let amounts = sorted_amounts(&events);
    let expected: Vec<i64> = (0..1100).filter(|i| i % 11 != 10).collect();
    assert_eq!(amounts, expected);
    for partition in events::Partition::all(partitions) {
        assert_eq!(consumer(partition).position().await.unwrap(), 1000);
    }
}

#[tokio::test]
async fn a_rolled_back_transaction_publishes_nothing() {
    let (db, _d) = database().await;
    let log = EventLog::new(db.clone(), "test", Duration::from_millis(50), LINGER);
    publish_one(&db, &log, 1, false).await;
    assert_eq!(log.append_pending().await.unwrap(), 0);
    assert!(log.read_after(0, 10).await.unwrap().is_empty());
    publish_one(&db, &log, 2, true).await;
    assert_eq!(log.append_pending().await.unwrap(), 1);
    let events = log.read_after(0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].position, 1);
    assert_eq!(events[0].source, "test");
    assert_eq!(events[0].r#type, "retail.common.v1.Money");
}

/// Retention removes only a prefix of the log: an event stamped later than the
/// one after it (committed later, or by a replica whose clock runs ahead) keeps
/// everything after it, so the kept log has no hole.
#[tokio::test]
async fn retention_removes_only_a_prefix_of_the_log() {
    use retail_kit::events::entity::outbox;
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let (db, _d) = database().await;
    let log = EventLog::new(db.clone(), "test", Duration::from_millis(50), LINGER);
    for i in 0..5 {
        publish_one(&db, &log, i, true).await;
    }
    log.append_pending().await.unwrap();
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::OccurredAt,
            Expr::value(cutoff + chrono::Duration::hours(1)),
        )
        .filter(outbox::Column::LogPosition.eq(2))
        .exec(&db)
        .await
        .unwrap();
    assert_eq!(log.purge(cutoff).await.unwrap(), 1, "only position 1 goes");
    let kept: Vec<u64> = log
        .read_after(1, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(kept, [2, 3, 4, 5]);
}

#[tokio::test]
async fn subscribing_from_before_the_retained_log_is_out_of_range() {
    let (db, _d) = database().await;
    let log = EventLog::new(db.clone(), "test", Duration::from_millis(50), LINGER);
    for i in 0..5 {
        publish_one(&db, &log, i, true).await;
    }
    log.append_pending().await.unwrap();
    let purged = log
        .purge(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 4, "the newest event is always kept");
    let (addr, token) = serve_log(log.clone()).await;
    let mut client = client(addr, &token).await;
    let err = client
        .subscribe(retail_proto::events::SubscribeRequest {
            after_position: 0,
            max_batch_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    let mut stream = client
        .subscribe(retail_proto::events::SubscribeRequest {
            after_position: 4,
            max_batch_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let batch = stream.message().await.unwrap().unwrap();
    assert_eq!(batch.events.iter().map(|e| e.position).collect::<Vec<_>>(), [5]);
}

/// Followers starting at different positions, some of them while events are still
/// being appended, each receive exactly the log: every position once, in order, with
/// the events the database holds, whether a batch came from the database or from the
/// run another follower read.
#[tokio::test]
async fn followers_side_by_side_each_receive_the_whole_log_in_order() {
    let (db, _d) = database().await;
    let log = EventLog::new(db.clone(), "test", Duration::from_millis(20), LINGER);
    const TOTAL: u64 = 300;
    let follow = |after: u64, batch: u64| {
        let mut rx = log.follow(after, batch);
        tokio::spawn(async move {
            let mut got = Vec::new();
            while (got.len() as u64) < TOTAL - after {
                let events = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                    .await
                    .expect("the follower stalled")
                    .expect("the log ended")
                    .unwrap();
                got.extend(events);
            }
            got
        })
    };
    let early: Vec<_> = [(0, 7), (0, 50), (0, 1000), (0, 13)]
        .into_iter()
        .map(|(after, batch)| (after, follow(after, batch)))
        .collect();
    for i in 0..TOTAL as i64 {
        publish_one(&db, &log, i, true).await;
        if i % 17 == 0 {
            log.append_pending().await.unwrap();
        }
    }
    while log.append_pending().await.unwrap() > 0 {}
    // Late followers, from the start and from the middle of the log.
    let late: Vec<_> = [(0, 64), (150, 9), (299, 5)]
        .into_iter()
        .map(|(after, batch)| (after, follow(after, batch)))
        .collect();
    let truth = log.read_after(0, 1000).await.unwrap();
    assert_eq!(truth.len() as u64, TOTAL);
    for (after, task) in early.into_iter().chain(late) {
        let got = task.await.unwrap();
        let positions: Vec<u64> = got.iter().map(|e| e.position).collect();
        assert_eq!(
            positions,
            ((after + 1)..=TOTAL).collect::<Vec<_>>(),
            "follower from {after}"
        );
        assert_eq!(
            got,
            truth[after as usize..],
            "follower from {after} got other events than the log holds"
        );
    }
}

/// Two replicas of one service publish into one outbox, each running its appender:
/// the log stays dense with every event once, and when one replica's appender stops
/// (its session ends, and the appender lock with it) the other positions everything.
#[tokio::test]
async fn two_replicas_share_one_log_and_either_carries_on_alone() {
    let (db_a, test_db) = database().await;
    // The second replica has pools of its own, as a second process would.
    let db_b = retail_kit::db::connect(&DatabaseSettings {
        url: test_db.secret_url(),
        max_connections: 16,
        ..DatabaseSettings::default()
    })
    .await
    .unwrap();
    let a = EventLog::new(db_a.clone(), "test", Duration::from_millis(20), LINGER);
    let b = EventLog::new(db_b.clone(), "test", Duration::from_millis(20), LINGER);
    let a_appender = a.spawn_appender();
    publish_one(&db_a, &a, 0, true).await;
    let mut from_b = b.follow(0, 50);
    let mut received = Vec::new();
    let mut receive_until = async |received: &mut Vec<EventEnvelope>, count: usize| {
        while received.len() < count {
            let batch = tokio::time::timeout(Duration::from_secs(20), from_b.recv())
                .await
                .expect("events stopped arriving")
                .expect("the log ended")
                .unwrap();
            received.extend(batch);
        }
    };
    // The first replica has positioned an event, so it holds the lock (PostgreSQL).
    receive_until(&mut received, 1).await;
    let b_appender = b.spawn_appender();

    let mut writers = Vec::new();
    for (db, log, base) in [(&db_a, &a, 1), (&db_b, &b, 1001)] {
        let (db, log) = (db.clone(), log.clone());
        writers.push(tokio::spawn(async move {
            for i in base..base + 100 {
                publish_one(&db, &log, i, true).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    receive_until(&mut received, 201).await;

    // The first replica's appender stops; the second's events are still positioned.
    a_appender.abort();
    let _ = a_appender.await;
    for i in 2001..2051 {
        publish_one(&db_b, &b, i, true).await;
    }
    receive_until(&mut received, 251).await;
    b_appender.abort();

    let positions: Vec<u64> = received.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=251).collect::<Vec<_>>());
    let ids: HashSet<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 251, "every event once");
    let amounts = sorted_amounts(&received);
    let expected: Vec<i64> = (0..=100).chain(1001..1101).chain(2001..2051).collect();
    assert_eq!(amounts, expected);
}

/// Records the events one partition applies, with the partition's index.
struct RecordPartition {
    index: u32,
    decodes: Arc<std::sync::atomic::AtomicUsize>,
    applied: Arc<std::sync::Mutex<Vec<(u32, EventEnvelope)>>>,
}

#[async_trait::async_trait]
impl EventHandler for RecordPartition {
    async fn handle(&self, _txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        self.decodes
            .fetch_add(events.len(), std::sync::atomic::Ordering::SeqCst);
        let mut applied = self.applied.lock().unwrap();
        applied.extend(events.iter().map(|e| (self.index, (*e).clone())));
        Ok(Vec::new())
    }
}

/// Publishes event `i` keyed by `m{i % 5}` (its aggregate is its own).
async fn publish_keyed(db: &DatabaseConnection, log: &EventLog, i: i64) {
    let txn = db.begin().await.unwrap();
    events::Outgoing::of(&Money {
        currency_code: "EUR".into(),
        amount_minor: i,
    })
    .partitioned_by(&format!("m{}", i % 5))
    .publish(&txn, &format!("agg-{i}"))
    .await
    .unwrap();
    txn.commit().await.unwrap();
    log.committed();
}

/// The key a publisher gives an event travels in its envelope, and a partitioned
/// consumer routes by it: each key's events are applied by the one partition that
/// owns the key, in log order, and no partition decodes a payload to route it.
#[tokio::test]
async fn a_partitioned_consumer_routes_each_event_by_the_publishers_key_in_the_envelope() {
    let (publisher_db, _p) = database().await;
    let (consumer_db, _c) = database().await;
    let log = EventLog::new(publisher_db.clone(), "test", Duration::from_millis(50), LINGER);
    for i in 0..60 {
        publish_keyed(&publisher_db, &log, i).await;
    }
    publish_one(&publisher_db, &log, 60, true).await;
    log.append_pending().await.unwrap();
    let envelopes = log.read_after(0, 100).await.unwrap();
    assert_eq!(envelopes.len(), 61);
    assert_eq!(
        (envelopes[7].aggregate_id.as_str(), envelopes[7].partition_key.as_str()),
        ("agg-7", "m2")
    );
    assert_eq!(
        envelopes[60].partition_key, "agg-60",
        "by default the aggregate is the key"
    );

    let appender = log.spawn_appender();
    let (addr, token) = serve_log(log.clone()).await;
    let decodes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
    let consumer = |partition: events::Partition| Consumer {
        name: "routing",
        source: "test",
        db: consumer_db.clone(),
        handler: Arc::new(RecordPartition {
            index: partition.index,
            decodes: decodes.clone(),
            applied: applied.clone(),
        }),
        partition,
    };
    let tasks: Vec<_> = events::Partition::all(3)
        .map(|partition| {
            let (consumer, token) = (consumer(partition), token.clone());
            tokio::spawn(async move {
                let client = client(addr, &token).await;
                consumer.run(client, std::future::pending()).await;
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while applied.lock().unwrap().len() < 61 {
        assert!(tokio::time::Instant::now() < deadline, "the consumer did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in tasks {
        task.abort();
    }
    appender.abort();
    let applied = applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 61, "every event once");
    assert_eq!(
        decodes.load(std::sync::atomic::Ordering::SeqCst),
        61,
        "one decode per event"
    );
    for (index, event) in &applied {
        let owner = events::Partition::all(3)
            .find(|p| p.owns(&event.partition_key))
            .unwrap();
        assert_eq!(
            *index, owner.index,
            "{} applied by another partition",
            event.partition_key
        );
    }
}

/// Counts every application of an event in the consumer's database (a row per
/// application, committed with the position), so an event applied twice shows
/// twice. With `stall_partition_of`, the events of one partition of that count
/// beyond a position fail, so that partition stops there.
#[derive(Default)]
struct CountApplications {
    stall: Option<(events::Partition, u64)>,
}

#[async_trait::async_trait]
impl EventHandler for CountApplications {
    async fn handle(&self, txn: &DatabaseTransaction, events: &[&EventEnvelope]) -> ServiceResult<Vec<AfterCommit>> {
        let backend = txn.get_database_backend();
        for event in events {
            if let Some((partition, after)) = self.stall
                && partition.owns(&key_of(event))
                && event.position > after
            {
                return Err(ServiceError::Unavailable("stalled".into()));
            }
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                match backend {
                    sea_orm::DatabaseBackend::Postgres => {
                        "INSERT INTO applications (event_id, log_position) VALUES ($1, $2)"
                    }
                    _ => "INSERT INTO applications (event_id, log_position) VALUES (?, ?)",
                },
                [event.id.clone().into(), (event.position as i64).into()],
            ))
            .await
            .map_err(ServiceError::from)?;
        }
        Ok(Vec::new())
    }

    fn partition_key(&self, event: &EventEnvelope) -> Option<String> {
        Some(key_of(event))
    }
}

async fn applications_table(db: &DatabaseConnection) {
    db.execute_unprepared("CREATE TABLE applications (event_id VARCHAR(36) NOT NULL, log_position BIGINT NOT NULL)")
        .await
        .unwrap();
}

/// How often each position was applied, by position.
async fn applications(db: &DatabaseConnection) -> std::collections::BTreeMap<i64, i64> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT log_position, COUNT(*) FROM applications GROUP BY log_position",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get_by_index::<i64>(0).unwrap(),
                r.try_get_by_index::<i64>(1).unwrap(),
            )
        })
        .collect()
}

/// Waits until every partition of consumer `name` (of `count`) stored `position`.
async fn wait_for_positions(db: &DatabaseConnection, name: &'static str, count: u32, position: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut lowest = u64::MAX;
        for partition in events::Partition::all(count) {
            let consumer = Consumer {
                name,
                source: "test",
                db: db.clone(),
                handler: Arc::new(CountApplications::default()),
                partition,
            };
            lowest = lowest.min(consumer.position().await.unwrap());
        }
        if lowest >= position {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "positions stopped at {lowest}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regression: a consumer whose partition count changed started its new
/// partitions at position 0 and applied the log again. Now the count is stored with
/// the positions, the new partitions start after the lowest old position, and the
/// events an old partition had applied beyond it are passed over: with one old
/// partition far behind the other, every event still takes effect exactly once.
#[tokio::test]
async fn changing_the_partition_count_applies_every_event_exactly_once() {
    let (publisher_db, _p) = database().await;
    let (consumer_db, _c) = database().await;
    applications_table(&consumer_db).await;
    let log = EventLog::new(publisher_db.clone(), "test", Duration::from_millis(50), LINGER);
    for i in 0..60 {
        publish_one(&publisher_db, &log, i, true).await;
    }
    log.append_pending().await.unwrap();
    let appender = log.spawn_appender();
    let (addr, token) = serve_log(log.clone()).await;
    let run = |count: u32, handler: Arc<CountApplications>| {
        let (db, token) = (consumer_db.clone(), token.clone());
        tokio::spawn(async move {
            let client = client(addr, &token).await;
            events::ConsumerGroup::new("resized", "test", db, handler, count)
                .run(client, std::future::pending())
                .await;
        })
    };

    // Two partitions apply the first 60 events; of the next 90, the second
    // partition applies none (they fail for it), the first one all of its own.
    let warm = run(2, Arc::new(CountApplications::default()));
    wait_for_positions(&consumer_db, "resized", 2, 60).await;
    warm.abort();
    let _ = warm.await;
    for i in 60..150 {
        publish_one(&publisher_db, &log, i, true).await;
    }
    let stalled = events::Partition { index: 1, count: 2 };
    let first = run(
        2,
        Arc::new(CountApplications {
            stall: Some((stalled, 60)),
        }),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let positions = loop {
        let mut positions = Vec::new();
        for partition in events::Partition::all(2) {
            let consumer = Consumer {
                name: "resized",
                source: "test",
                db: consumer_db.clone(),
                handler: Arc::new(CountApplications::default()),
                partition,
            };
            positions.push(consumer.position().await.unwrap());
        }
        if positions[0] == 150 {
            break positions;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "positions stopped at {positions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.abort();
    let _ = first.await;
    assert_eq!(positions[1], 60, "the second partition stopped");
    let before = applications(&consumer_db).await;
    assert!(before.len() > 100 && before.len() < 150, "{} applied", before.len());

    // Three partitions from now on.
    let second = run(3, Arc::new(CountApplications::default()));
    wait_for_positions(&consumer_db, "resized", 3, 150).await;
    second.abort();
    let _ = second.await;
    appender.abort();

    let applied = applications(&consumer_db).await;
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    assert_eq!(
        applied.keys().copied().collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>(),
        "every event, none skipped"
    );
    use retail_kit::events::entity::consumer_partitioning;
    use sea_orm::EntityTrait;
    let stored = consumer_partitioning::Entity::find_by_id(("resized".to_owned(), "test".to_owned()))
        .one(&consumer_db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.partitions, 3, "the count is stored with the positions");
}

/// Regression: two replicas of a consumer both applied every partition (each
/// batch twice, the slower one rolled back). Now each partition has one owner at a
/// time: the replicas share the partitions, and when one dies (its task aborted and
/// its connections dropped) the other takes its partitions over; every event takes
/// effect exactly once. On SQLite, one process's database, each runs every
/// partition and only the effects are checked.
#[tokio::test]
async fn replicas_share_the_partitions_and_a_survivor_takes_over_a_dead_ones() {
    let (publisher_db, _p) = database().await;
    let (db_a, consumer_test_db) = database().await;
    applications_table(&db_a).await;
    let db_b = retail_kit::db::connect(&DatabaseSettings {
        url: consumer_test_db.secret_url(),
        max_connections: 16,
        ..DatabaseSettings::default()
    })
    .await
    .unwrap();
    let postgres = db_a.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
    let log = EventLog::new(publisher_db.clone(), "test", Duration::from_millis(20), LINGER);
    let appender = log.spawn_appender();
    let (addr, token) = serve_log(log.clone()).await;
    const TOTAL: i64 = 400;
    let publisher = {
        let (db, log) = (publisher_db.clone(), log.clone());
        tokio::spawn(async move {
            for i in 0..TOTAL {
                publish_one(&db, &log, i, true).await;
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        })
    };
    let replica = |db: DatabaseConnection| {
        let group = events::ConsumerGroup::new("shared", "test", db, Arc::new(CountApplications::default()), 4);
        let owned = group.owned();
        let token = token.clone();
        let task = tokio::spawn(async move {
            let client = client(addr, &token).await;
            group.run(client, std::future::pending()).await;
        });
        (task, owned)
    };
    let (task_a, owned_a) = replica(db_a.clone());
    let (task_b, mut owned_b) = replica(db_b.clone());

    if postgres {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (a, b) = (owned_a.borrow().clone(), owned_b.borrow().clone());
            if a.len() == 2 && b.len() == 2 {
                let mut all: Vec<u32> = a.iter().chain(&b).copied().collect();
                all.sort_unstable();
                assert_eq!(all, [0, 1, 2, 3], "each partition has one owner");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replicas did not share the partitions: {a:?} and {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let some events flow through both, then the first replica dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    task_a.abort();
    let _ = task_a.await;
    db_a.close().await.unwrap();
    let died = tokio::time::Instant::now();
    if postgres {
        let taken = tokio::time::timeout(
            Duration::from_secs(5),
            owned_b.wait_for(|owned| owned.as_slice() == [0, 1, 2, 3]),
        )
        .await
        .is_ok();
        assert!(
            taken,
            "the survivor did not take the dead replica's partitions over: it runs {:?}",
            owned_b.borrow().clone()
        );
        println!("taken over after {:?}", died.elapsed());
    }
    publisher.await.unwrap();
    wait_for_positions(&db_b, "shared", 4, TOTAL as u64).await;
    task_b.abort();
    let _ = task_b.await;
    appender.abort();

    let applied = applications(&db_b).await;
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    assert_eq!(
        applied.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>(),
        "every event, none skipped"
    );
}

/// In a rolling update that changes the partition count, the replicas with the new
/// count wait while a replica still runs the old one (on PostgreSQL: it holds the
/// consumer's partitioning lock), then carry the positions over and apply the
/// rest: every event exactly once.
#[tokio::test]
async fn a_new_partition_count_waits_until_no_replica_runs_the_old_one() {
    let (publisher_db, _p) = database().await;
    let (db_a, consumer_test_db) = database().await;
    applications_table(&db_a).await;
    let db_b = retail_kit::db::connect(&DatabaseSettings {
        url: consumer_test_db.secret_url(),
        max_connections: 16,
        ..DatabaseSettings::default()
    })
    .await
    .unwrap();
    let postgres = db_a.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
    let log = EventLog::new(publisher_db.clone(), "test", Duration::from_millis(20), LINGER);
    let appender = log.spawn_appender();
    let (addr, token) = serve_log(log.clone()).await;
    for i in 0..100 {
        publish_one(&publisher_db, &log, i, true).await;
    }
    let replica = |db: DatabaseConnection, count: u32| {
        let group = events::ConsumerGroup::new("rolling", "test", db, Arc::new(CountApplications::default()), count);
        let owned = group.owned();
        let token = token.clone();
        let task = tokio::spawn(async move {
            let client = client(addr, &token).await;
            group.run(client, std::future::pending()).await;
        });
        (task, owned)
    };
    let (old, _) = replica(db_a.clone(), 2);
    wait_for_positions(&db_a, "rolling", 2, 100).await;
    let (new, mut owned_new) = replica(db_b.clone(), 3);
    for i in 100..200 {
        publish_one(&publisher_db, &log, i, true).await;
    }
    if postgres {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            owned_new.borrow().is_empty(),
            "a replica of the new count ran while one of the old count did"
        );
        wait_for_positions(&db_a, "rolling", 2, 200).await;
    }
    old.abort();
    let _ = old.await;
    db_a.close().await.unwrap();
    if postgres {
        let took = tokio::time::timeout(
            Duration::from_secs(5),
            owned_new.wait_for(|owned| owned.as_slice() == [0, 1, 2]),
        )
        .await
        .is_ok();
        assert!(took, "the new count did not take over");
    }
    wait_for_positions(&db_b, "rolling", 3, 200).await;
    new.abort();
    let _ = new.await;
    appender.abort();

    let applied = applications(&db_b).await;
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    assert_eq!(
        applied.keys().copied().collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>(),
        "every event, none skipped"
    );
}
