//! Starts channel-partner on port 0 against a fresh database, with tokens signed by a
//! test key that stands in for identity, following a stand-in for orders' event log
//! (a kit event log on its own database, served on port 0) that tests publish
//! order events into.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use retail_channel_partner::downstream::{Downstream, QuoteOrder};
use retail_channel_partner::{App, Settings};
use retail_kit::auth::{AuthLayer, PrincipalKind, ServiceTokenSource, Verifier};
use retail_kit::events::{EventLog, EventLogApi, Outgoing};
use retail_kit::server::{self, ServiceRoutes};
use retail_proto::common::Money;
use retail_proto::events::event_log_service_server::{self, EventLogServiceServer};
use retail_proto::events::{self as ev};
use retail_proto::partner::deal_service_client::DealServiceClient;
use retail_proto::partner::incentive_service_client::IncentiveServiceClient;
use retail_proto::partner::lead_service_client::LeadServiceClient;
use retail_proto::partner::opportunity_service_client::OpportunityServiceClient;
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_proto::partner::price_policy_service_client::PricePolicyServiceClient;
use retail_proto::partner::target_service_client::TargetServiceClient;
use retail_proto::partner::{self as pb};
use retail_testkit::TestDatabase;
use retail_testkit::tokens::{claims, sign};
use sea_orm::{DatabaseConnection, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub use retail_testkit::tokens::{staff_token, violated_fields, with_token};

/// What a partner principal may hold.
pub const SCOPES: &[&str] = &["partner.read", "partner.write"];

pub fn admin() -> String {
    staff_token(&["partner.read", "partner.write", "partner.admin"])
}

/// A token of a user of `partner`.
pub fn partner_user(partner: &str) -> String {
    sign(&claims(
        &format!("user-of-{partner}"),
        PrincipalKind::PartnerUser,
        SCOPES,
        Some(partner),
    ))
}

pub fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(&admin(), message)
}

/// A request of user `user_id` of `partner` (a rep, if a rep is linked to the user).
pub fn as_user<T>(partner: &str, user_id: &str, message: T) -> tonic::Request<T> {
    with_token(
        &sign(&claims(user_id, PrincipalKind::PartnerUser, SCOPES, Some(partner))),
        message,
    )
}

pub fn as_partner<T>(partner: &str, message: T) -> tonic::Request<T> {
    with_token(&partner_user(partner), message)
}

/// The outbox tables of a publisher.
struct OutboxOnly;

#[async_trait::async_trait]
impl MigratorTrait for OutboxOnly {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![
            Box::new(retail_kit::events::migration::CreateOutbox),
            Box::new(retail_kit::events::migration::PartialOutboxIndexes),
            Box::new(retail_kit::events::migration::OutboxPartitionKey),
        ]
    }
}

/// Orders' event log as this service sees it: tests publish into it.
pub struct OrdersLog {
    pub addr: SocketAddr,
    db: DatabaseConnection,
    log: Arc<EventLog>,
    _database: TestDatabase,
}

impl OrdersLog {
    pub async fn start() -> Self {
        let database = TestDatabase::new().await.unwrap();
        let settings = retail_kit::config::DatabaseSettings {
            url: database.secret_url(),
            ..Default::default()
        };
        let db = retail_kit::db::connect_and_migrate::<OutboxOnly>(&settings)
            .await
            .unwrap();
        let log = EventLog::new(
            db.clone(),
            "orders",
            Duration::from_millis(20),
            Duration::from_millis(1),
        );
        let _appender = log.spawn_appender();
        let server_settings = retail_kit::config::ServerSettings::default();
        let bound = server::bind(&server_settings).await.unwrap();
        let addr = bound.local_addr();
        let verifier = Arc::new(Verifier::new(
            "retail-identity",
            retail_testkit::tokens::test_keys(),
            Duration::from_millis(100),
        ));
        let api = EventLogApi::new(log.clone());
        tokio::spawn(async move {
            server::serve(
                bound,
                &server_settings,
                ServiceRoutes {
                    routes: tonic::service::Routes::new(EventLogServiceServer::new(api)),
                    names: vec![event_log_service_server::SERVICE_NAME],
                    auth: Some(AuthLayer::new(verifier, &[])),
                },
                std::future::pending(),
            )
            .await
        });
        Self {
            addr,
            db,
            log,
            _database: database,
        }
    }

    async fn publish(&self, out: Outgoing, order_id: &str) {
        let txn = self.db.begin().await.unwrap();
        out.publish(&txn, order_id).await.unwrap();
        txn.commit().await.unwrap();
        self.log.committed();
    }

    /// A paid partner order.
    pub async fn paid(&self, order_id: &str, partner: &str, rep: &str, amount_minor: i64, at: DateTime<Utc>) {
        let e = ev::OrderPaid {
            order_id: order_id.into(),
            parties: Some(parties(partner, rep)),
            lines: vec![],
            amount: Some(eur(amount_minor)),
            pay_time: Some(retail_kit::convert::timestamp(at)),
        };
        self.publish(Outgoing::of(&e), order_id).await;
    }

    /// A refunded return of a partner order.
    pub async fn refunded(
        &self,
        order_id: &str,
        return_id: &str,
        partner: &str,
        rep: &str,
        amount_minor: i64,
        at: DateTime<Utc>,
    ) {
        let e = ev::OrderRefunded {
            order_id: order_id.into(),
            return_id: return_id.into(),
            parties: Some(parties(partner, rep)),
            lines: vec![],
            amount: Some(eur(amount_minor)),
            refund_time: Some(retail_kit::convert::timestamp(at)),
        };
        self.publish(Outgoing::of(&e), order_id).await;
    }
}

pub fn eur(amount_minor: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        amount_minor,
    }
}

fn parties(partner: &str, rep: &str) -> ev::OrderParties {
    ev::OrderParties {
        member_id: String::new(),
        channel: "partner".into(),
        partner_id: partner.into(),
        sales_rep: rep.into(),
        store: String::new(),
    }
}

/// Stands in for catalog (a wholesale list per level) and orders (orders of
/// accepted quotes, one per request id, as orders' idempotency gives them).
#[derive(Debug, Default)]
pub struct FakeDownstream {
    /// (level, SKU code) -> list price.
    pub prices: std::sync::Mutex<std::collections::HashMap<(String, String), i64>>,
    /// Request id -> (order id, the order asked for).
    pub orders: std::sync::Mutex<std::collections::HashMap<String, (String, QuoteOrder)>>,
    /// Placements asked for, repeats included.
    pub placements: std::sync::atomic::AtomicUsize,
}

impl FakeDownstream {
    pub fn price(&self, level: &str, sku: &str, minor: i64) {
        self.prices
            .lock()
            .unwrap()
            .insert((level.to_owned(), sku.to_owned()), minor);
    }

    pub fn order_count(&self) -> usize {
        self.orders.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Downstream for FakeDownstream {
    async fn list_prices(
        &self,
        _currency: &str,
        level: &str,
        lines: &[(String, i64)],
    ) -> Result<Vec<i64>, tonic::Status> {
        let prices = self.prices.lock().unwrap();
        lines
            .iter()
            .map(|(sku, _)| {
                prices
                    .get(&(level.to_owned(), sku.clone()))
                    .copied()
                    .ok_or_else(|| tonic::Status::failed_precondition(format!("skus/{sku} is not on {level}'s list")))
            })
            .collect()
    }

    async fn place_quote_order(&self, order: &QuoteOrder) -> Result<String, tonic::Status> {
        self.placements.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Placing takes a while: concurrent acceptances overlap.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut orders = self.orders.lock().unwrap();
        let id = orders
            .entry(order.request_id.clone())
            .or_insert_with(|| (uuid::Uuid::now_v7().to_string(), order.clone()))
            .0
            .clone();
        Ok(id)
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub downstream: Arc<FakeDownstream>,
    pub orders: OrdersLog,
    settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new().await.unwrap();
    let orders = OrdersLog::start().await;
    let mut settings = Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 8;
    settings.events.poll_ms = 50;
    settings.orders.events_url = Some(format!("http://{}", orders.addr));
    configure(&mut settings);
    let downstream = Arc::new(FakeDownstream::default());
    let (addr, app, stop, task) = start(settings.clone(), downstream.clone()).await;
    TestApp {
        addr,
        app,
        downstream,
        orders,
        settings,
        stop: Some(stop),
        task: Some(task),
        _database: database,
    }
}

type Started = (
    SocketAddr,
    Arc<App>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

async fn start(settings: Settings, downstream: Arc<FakeDownstream>) -> Started {
    let token = sign(&claims("partner", PrincipalKind::Service, &["events.read"], None));
    let app = retail_channel_partner::Application::build_with_keys(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap()
        .with_service_tokens(ServiceTokenSource::fixed(token))
        .with_downstream(downstream);
    let addr = app.local_addr();
    let state = app.app();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    (addr, state, stop, task)
}

pub fn dealer(display_name: &str) -> pb::Partner {
    pb::Partner {
        display_name: display_name.into(),
        r#type: pb::PartnerType::Dealer as i32,
        region: "north".into(),
        ..Default::default()
    }
}

impl TestApp {
    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy()
    }

    pub fn client(&self) -> PartnerServiceClient<Channel> {
        PartnerServiceClient::new(self.channel())
    }

    pub fn targets(&self) -> TargetServiceClient<Channel> {
        TargetServiceClient::new(self.channel())
    }

    pub fn policy(&self) -> PricePolicyServiceClient<Channel> {
        PricePolicyServiceClient::new(self.channel())
    }

    pub fn incentives(&self) -> IncentiveServiceClient<Channel> {
        IncentiveServiceClient::new(self.channel())
    }

    pub fn deals(&self) -> DealServiceClient<Channel> {
        DealServiceClient::new(self.channel())
    }

    pub fn leads(&self) -> LeadServiceClient<Channel> {
        LeadServiceClient::new(self.channel())
    }

    pub fn visits(&self) -> retail_proto::partner::visit_service_client::VisitServiceClient<Channel> {
        retail_proto::partner::visit_service_client::VisitServiceClient::new(self.channel())
    }

    pub fn quotes(&self) -> retail_proto::partner::quote_service_client::QuoteServiceClient<Channel> {
        retail_proto::partner::quote_service_client::QuoteServiceClient::new(self.channel())
    }

    pub fn opportunities(&self) -> OpportunityServiceClient<Channel> {
        OpportunityServiceClient::new(self.channel())
    }

    /// Registers and admits a dealer of `region`.
    pub async fn active_in(&self, id: &str, region: &str) {
        let mut partner = dealer(&format!("Dealer {id}"));
        partner.region = region.into();
        self.client()
            .create_partner(authed(pb::CreatePartnerRequest {
                partner: Some(partner),
                partner_id: id.into(),
                request_id: String::new(),
            }))
            .await
            .unwrap();
        self.client()
            .activate_partner(authed(pb::ActivatePartnerRequest {
                name: format!("partners/{id}"),
                reason: "admitted".into(),
            }))
            .await
            .unwrap();
    }

    /// The events of type `T` on the service's event log so far (waits until at
    /// least `n` are there).
    pub async fn events<T: prost::Message + prost::Name + Default>(&self, n: usize) -> Vec<T> {
        use retail_proto::events::event_log_service_client::EventLogServiceClient;
        let mut log = EventLogServiceClient::new(self.channel());
        let mut stream = log
            .subscribe(with_token(
                &staff_token(&["events.read"]),
                ev::SubscribeRequest {
                    after_position: 0,
                    max_batch_size: 500,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let mut found = Vec::new();
        while found.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("the events in time")
                .unwrap()
                .unwrap();
            for e in batch.events {
                if e.r#type == T::full_name() {
                    let payload = e.payload.unwrap().value;
                    found.push(T::decode(payload.as_slice()).unwrap());
                }
            }
        }
        found
    }

    /// Stops the service (its consumer included) and starts it again on the same
    /// database.
    pub async fn restart(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let (addr, app, stop, task) = start(self.settings.clone(), self.downstream.clone()).await;
        self.addr = addr;
        self.app = app;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// Registers a dealer under `id` as the brand.
    pub async fn create(&self, id: &str) -> Result<pb::Partner, tonic::Status> {
        self.client()
            .create_partner(authed(pb::CreatePartnerRequest {
                partner: Some(dealer(&format!("Dealer {id}"))),
                partner_id: id.into(),
                request_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    /// Registers and admits a dealer.
    pub async fn active(&self, id: &str) -> pb::Partner {
        self.create(id).await.unwrap();
        self.client()
            .activate_partner(authed(pb::ActivatePartnerRequest {
                name: format!("partners/{id}"),
                reason: "admitted".into(),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Registers a rep of `partner` (empty: the brand's).
    pub async fn rep(&self, partner: &str, user_id: &str) -> pb::SalesRep {
        self.client()
            .create_sales_rep(authed(pb::CreateSalesRepRequest {
                sales_rep: Some(pb::SalesRep {
                    partner: if partner.is_empty() {
                        String::new()
                    } else {
                        format!("partners/{partner}")
                    },
                    user_id: user_id.into(),
                    display_name: format!("Rep {user_id}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn target(
        &self,
        subject: &str,
        kind: pb::PeriodKind,
        start: &str,
        amount_minor: i64,
    ) -> Result<pb::Target, tonic::Status> {
        self.targets()
            .create_target(authed(pb::CreateTargetRequest {
                target: Some(pb::Target {
                    subject: subject.into(),
                    period_kind: kind as i32,
                    period_start: start.into(),
                    amount_minor,
                    ..Default::default()
                }),
                request_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_target(&self, name: &str) -> pb::Target {
        self.targets()
            .get_target(authed(pb::GetTargetRequest { name: name.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn ledger(&self, name: &str) -> pb::Ledger {
        self.incentives()
            .get_ledger(authed(pb::GetLedgerRequest { name: name.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn partner(&self, id: &str) -> pb::Partner {
        self.client()
            .get_partner(authed(pb::GetPartnerRequest {
                name: format!("partners/{id}"),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until `check` holds for what `read` returns, or fails after ten seconds.
    pub async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
        &self,
        what: &str,
        read: impl Fn() -> F,
        check: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = read().await;
            if check(&value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never happened: {what}; last {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
