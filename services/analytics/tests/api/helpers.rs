//! Starts analytics on port 0 against a fresh database, following fake event logs
//! served in process, with tokens signed by a test key that stands in for identity.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::{Message, Name};
use retail_analytics::Settings;
use retail_proto::analytics::analytics_admin_service_client::AnalyticsAdminServiceClient;
use retail_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use retail_proto::analytics::touchpoint_service_client::TouchpointServiceClient;
use retail_proto::analytics::{self as pb};
use retail_proto::events::event_log_service_server::{EventLogService, EventLogServiceServer};
use retail_proto::events::{self as ev, EventEnvelope, SubscribeRequest, SubscribeResponse};
use retail_testkit::TestDatabase;
use sea_orm::ConnectionTrait;
use tonic::transport::Channel;

/// The process's logs, shown when a test waits in vain.
pub static LOGS: std::sync::OnceLock<retail_testkit::CapturedLogs> = std::sync::OnceLock::new();

pub use retail_testkit::tokens::{staff_token, violated_fields, with_token};

pub fn reader<T>(message: T) -> tonic::Request<T> {
    with_token(&staff_token(&["analytics.read"]), message)
}

pub fn writer<T>(message: T) -> tonic::Request<T> {
    with_token(&staff_token(&["analytics.write"]), message)
}

pub fn admin<T>(message: T) -> tonic::Request<T> {
    with_token(&staff_token(&["analytics.admin"]), message)
}

pub fn ts(t: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t, nanos: 0 })
}

pub fn period(start: i64, end: i64) -> Option<pb::Period> {
    Some(pb::Period {
        start_time: ts(start),
        end_time: ts(end),
    })
}

pub const DAY: i64 = 86_400;

/// Fake event logs: each source's events, streamed in batches of `batch` with a
/// pause between them, then held open.
#[derive(Debug, Clone, Default)]
pub struct FakeLogs {
    pub logs: Arc<Mutex<BTreeMap<String, Vec<EventEnvelope>>>>,
    pub batch: usize,
    pub pause_ms: u64,
}

impl FakeLogs {
    /// Appends an event to `source`'s log at the next position.
    pub fn push<M: Message + Name>(&self, source: &str, aggregate: &str, at: i64, message: &M) {
        let mut logs = self.logs.lock().unwrap();
        let log = logs.entry(source.to_owned()).or_default();
        let position = log.len() as u64 + 1;
        log.push(EventEnvelope {
            id: format!("{source}-{position}"),
            r#type: M::full_name(),
            source: source.to_owned(),
            aggregate_id: aggregate.to_owned(),
            occur_time: ts(at),
            position,
            payload: Some(prost_types::Any {
                type_url: M::type_url(),
                value: message.encode_to_vec(),
            }),
            partition_key: aggregate.to_owned(),
        });
    }

    pub fn len(&self, source: &str) -> u64 {
        self.logs
            .lock()
            .unwrap()
            .get(source)
            .map(|l| l.len() as u64)
            .unwrap_or(0)
    }

    /// Serves `source`'s log on a port of its own.
    pub async fn serve(&self, source: &str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = OneLog {
            logs: self.clone(),
            source: source.to_owned(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EventLogServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

#[derive(Clone)]
struct OneLog {
    logs: FakeLogs,
    source: String,
}

type BatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<SubscribeResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl EventLogService for OneLog {
    type SubscribeStream = BatchStream;

    async fn subscribe(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let after = request.into_inner().after_position;
        let events: Vec<EventEnvelope> = self
            .logs
            .logs
            .lock()
            .unwrap()
            .get(&self.source)
            .map(|l| l.iter().filter(|e| e.position > after).cloned().collect())
            .unwrap_or_default();
        let (batch, pause) = (self.logs.batch.max(1), self.logs.pause_ms);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in events.chunks(batch) {
                if tx.send(Ok(SubscribeResponse { events: chunk.to_vec() })).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            // Held open like a live log.
            tx.closed().await;
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub app: Arc<retail_analytics::app::App>,
    pub kpis: AnalyticsServiceClient<Channel>,
    pub touch: TouchpointServiceClient<Channel>,
    pub admin: AnalyticsAdminServiceClient<Channel>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Analytics on `database` following the given sources' fake logs.
pub async fn start(
    database: &TestDatabase,
    sources: &[(&str, SocketAddr)],
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 8;
    settings.events.poll_ms = 50;
    for (source, addr) in sources {
        let url = Some(format!("http://{addr}"));
        match *source {
            "orders" => settings.sources.orders_url = url,
            "membership" => settings.sources.membership_url = url,
            "catalog" => settings.sources.catalog_url = url,
            "partner" => settings.sources.partner_url = url,
            other => panic!("unknown source {other}"),
        }
    }
    configure(&mut settings);
    LOGS.get_or_init(retail_testkit::capture_logs);
    let application = retail_analytics::Application::build_with(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap();
    let addr = application.local_addr();
    let app = application.app();
    let task = tokio::spawn(application.run(std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    TestApp {
        addr,
        app,
        kpis: AnalyticsServiceClient::new(channel.clone()),
        touch: TouchpointServiceClient::new(channel.clone()),
        admin: AnalyticsAdminServiceClient::new(channel),
        task,
    }
}

impl TestApp {
    /// Waits until each source's position reaches its log's end.
    pub async fn caught_up(&self, ends: &[(&str, u64)]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let positions = self.app.freshness().await.unwrap();
            let done = ends
                .iter()
                .all(|(source, end)| positions.iter().any(|p| p.source == *source && p.position >= *end));
            if done {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let logs = LOGS.get().map(|l| l.contents()).unwrap_or_default();
                let lines: Vec<&str> = logs.lines().collect();
                let warnings: Vec<&str> = lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.contains(" WARN retail"))
                    .flat_map(|(i, _)| lines[i..(i + 6).min(lines.len())].iter().copied())
                    .take(30)
                    .collect();
                panic!("never caught up: {positions:?}\n{}", warnings.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Every projection table and the archive, each row as text, sorted: two
/// databases with the same dump hold the same projections.
pub async fn dump(db: &sea_orm::DatabaseConnection) -> BTreeMap<String, Vec<String>> {
    let tables: &[(&str, &str)] = &[
        ("rollups", "grain, dim, dim_key, metric, bucket, value"),
        ("seen", "set_name, bucket, subject"),
        (
            "members",
            "member_id, registered_at, region, tier, activated_at, erased, acquisition_channel, first_purchase, last_purchase",
        ),
        ("consents", "member_id, channel, granted"),
        (
            "purchases",
            "order_id, member_id, channel, store, partner, rep, region, tier, paid_at, amount, units, refunded, cancelled",
        ),
        ("order_lines", "order_id, ordinal, sku, quantity, unit_minor"),
        ("skus", "sku, product_id, category"),
        ("stock", "sku, warehouse, sellable"),
        ("listings", "sku, channel, listed"),
        ("last_sales", "sku, sold_at"),
        (
            "targets",
            "target_id, subject_kind, partner, rep, period_kind, start_at, end_at, amount, attained_at",
        ),
        ("partners", "partner_id, level, status"),
        ("opportunity_stages", "opportunity, stage, partner, rep, reached_at"),
        (
            "campaigns",
            "campaign_id, display_name, state, segment_id, channel, changed_at",
        ),
        (
            "campaign_contacts",
            "campaign_id, member_id, channel, outcome, control, lifecycle, contacted_at, window_end",
        ),
        ("member_merges", "merged_id, survivor_id, merged_at"),
        (
            "event_archive",
            "source, log_position, month, event_id, event_type, occur_at",
        ),
    ];
    let mut out = BTreeMap::new();
    for (table, columns) in tables {
        let casts: Vec<String> = columns
            .split(", ")
            .map(|c| format!("COALESCE(CAST({c} AS TEXT), '-')"))
            .collect();
        let sql = format!("SELECT {} FROM {table}", casts.join(" || '|' || "));
        let rows = db
            .query_all_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap();
        let mut lines: Vec<String> = rows.iter().map(|r| r.try_get_by_index::<String>(0).unwrap()).collect();
        lines.sort();
        out.insert((*table).to_owned(), lines);
    }
    // The buyers bitmaps as the member ids in each cell: the numbers behind them
    // depend on the order members first paid in, which batching may change.
    let numbers: BTreeMap<u32, String> =
        retail_analytics::store::rows(db, "SELECT number, member_id FROM customer_numbers", vec![])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.try_get_by_index::<i64>(0).unwrap() as u32,
                    r.try_get_by_index::<String>(1).unwrap(),
                )
            })
            .collect();
    let mut lines: Vec<String> = retail_analytics::store::rows(db, "SELECT cell, members FROM buyers", vec![])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let bytes = r.try_get_by_index::<Vec<u8>>(1).unwrap();
            let bitmap = roaring::RoaringBitmap::deserialize_from(&bytes[..]).unwrap();
            let mut ids: Vec<&str> = bitmap.iter().map(|n| numbers[&n].as_str()).collect();
            ids.sort();
            format!("{}|{}", r.try_get_by_index::<String>(0).unwrap(), ids.join(","))
        })
        .collect();
    lines.sort();
    out.insert("buyers".to_owned(), lines);
    out
}

pub fn money(amount_minor: i64) -> Option<retail_proto::common::Money> {
    Some(retail_proto::common::Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

pub fn parties(member: &str, channel: &str, store: &str) -> Option<ev::OrderParties> {
    Some(ev::OrderParties {
        member_id: member.into(),
        channel: channel.into(),
        store: store.into(),
        ..Default::default()
    })
}

pub fn line(sku: &str, quantity: i64, unit: i64) -> ev::OrderedUnits {
    ev::OrderedUnits {
        sku_code: sku.into(),
        quantity,
        unit_price: money(unit),
    }
}
