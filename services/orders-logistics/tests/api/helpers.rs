//! Starts orders on port 0 against a fresh database, with catalog and membership
//! faked in process and tokens signed by a test key that stands in for identity.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::resilience::CallPolicy;
use retail_orders::Settings;
use retail_orders::downstream::GrpcDownstream;
use retail_proto::common::Money;
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as pb};
use retail_testkit::TestDatabase;
use tonic::transport::Channel;

use crate::fakes::Fakes;

pub use retail_testkit::tokens::{staff_token, violated_fields, with_token};

pub fn admin() -> String {
    staff_token(&["orders.read", "orders.write"])
}

pub fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(&admin(), message)
}

pub fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub fakes: Fakes,
    pub client: OrdersServiceClient<Channel>,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Orders with `configure`d settings; catalog knows SKU `A` (10.00, 10 units) and
/// `B` (25.00, 5 units), membership one gold member.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_priced_by(configure, None).await
}

/// As [`spawn_app_with`], with partner orders priced by the channel-partner at
/// `partner` (if given).
pub async fn spawn_app_priced_by(configure: impl FnOnce(&mut Settings), partner: Option<SocketAddr>) -> TestApp {
    let database = TestDatabase::new().await.unwrap();
    let fakes = Fakes::default();
    {
        let mut w = fakes.world();
        w.prices.insert("A".into(), 1_000);
        w.prices.insert("B".into(), 2_500);
        w.sellable.insert("A".into(), 10);
        w.sellable.insert("B".into(), 5);
        w.tiers.insert(GOLD_MEMBER.into(), "gold".into());
    }
    let (catalog, membership) = fakes.serve().await;
    let mut settings = Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 8;
    settings.events.poll_ms = 50;
    settings.orders.sweep_every_secs = 1;
    configure(&mut settings);
    let lazy = |addr: SocketAddr| Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let policy = CallPolicy {
        timeout: Duration::from_secs(2),
        attempts: 1,
        backoff: Duration::from_millis(10),
        failure_threshold: 1_000,
        cool_down: Duration::from_millis(10),
    };
    let mut downstream = GrpcDownstream::new(lazy(membership), lazy(catalog), None, policy.clone());
    if let Some(partner) = partner {
        downstream = downstream.with_partner(lazy(partner), None, policy);
    }
    let app =
        retail_orders::Application::build_with(settings, retail_testkit::tokens::test_keys(), Arc::new(downstream))
            .await
            .unwrap();
    let addr = app.local_addr();
    tokio::spawn(app.run(std::future::pending()));
    let client = OrdersServiceClient::new(lazy(addr));
    TestApp {
        addr,
        fakes,
        client,
        _database: database,
    }
}

pub const GOLD_MEMBER: &str = "0190f5b2-8d3e-7c41-9a6b-2f0e1d3c4b5a";

pub fn order_of(lines: &[(&str, i64)]) -> pb::Order {
    pb::Order {
        channel: pb::OrderChannel::Online as i32,
        lines: lines
            .iter()
            .map(|(sku, quantity)| pb::OrderLine {
                sku: format!("skus/{sku}"),
                quantity: *quantity,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

impl TestApp {
    pub async fn place(&self, order: pb::Order, request_id: &str) -> Result<pb::Order, tonic::Status> {
        self.client
            .clone()
            .place_order(authed(pb::PlaceOrderRequest {
                order: Some(order),
                request_id: request_id.into(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn pay(&self, order: &pb::Order) -> Result<pb::Order, tonic::Status> {
        self.client
            .clone()
            .pay_order(authed(pb::PayOrderRequest {
                name: order.name.clone(),
                payment: Some(pb::Payment {
                    reference: "psp-1".into(),
                    amount: order.total.clone(),
                    pay_time: None,
                }),
                request_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn cancel(&self, order: &pb::Order) -> Result<pb::Order, tonic::Status> {
        self.client
            .clone()
            .cancel_order(authed(pb::CancelOrderRequest {
                name: order.name.clone(),
                reason: "changed my mind".into(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    /// Waits until `check` holds for the fakes, or fails after five seconds.
    pub async fn eventually(&self, what: &str, check: impl Fn(&crate::fakes::World) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if check(&self.fakes.world()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
