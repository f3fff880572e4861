//! Starts catalog-inventory on port 0 against a fresh database, with tokens signed by
//! a test key that stands in for identity, and small builders for the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_catalog::Settings;
use retail_proto::catalog::catalog_service_client::CatalogServiceClient;
use retail_proto::catalog::inventory_service_client::InventoryServiceClient;
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as pb};
use retail_proto::events::EventEnvelope;
use retail_testkit::TestDatabase;
use sea_orm::DatabaseConnection;
use tonic::transport::Channel;

pub use retail_testkit::tokens::{staff_token, violated_fields, with_token};

/// Every catalog-inventory scope: what an admin holds.
pub const ALL_SCOPES: &[&str] = &[
    "catalog.read",
    "catalog.write",
    "catalog.pricing.write",
    "inventory.write",
    "inventory.reserve",
    "events.read",
];

pub fn admin() -> String {
    staff_token(ALL_SCOPES)
}

pub fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(&admin(), message)
}

#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    pub channel: Channel,
    pub state: Arc<retail_catalog::App>,
    pub backend: &'static str,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 16;
    settings.events.poll_ms = 50;
    configure(&mut settings);
    let app = retail_catalog::Application::build_with_keys(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap();
    let addr = app.local_addr();
    let db = app.db();
    let state = app.state();
    tokio::spawn(app.run(std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    TestApp {
        addr,
        db,
        channel,
        state,
        backend: database.backend,
        _database: database,
    }
}

pub fn sku(code: &str, attrs: &[(&str, &str)]) -> pb::Sku {
    pb::Sku {
        sku_code: code.into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

pub fn product(category: &str, words: &[&str], skus: Vec<pb::Sku>) -> pb::Product {
    pb::Product {
        category: category.into(),
        title_parts: Some(pb::TitleParts {
            category_words: words.iter().map(|w| (*w).to_owned()).collect(),
            ..Default::default()
        }),
        skus,
        ..Default::default()
    }
}

impl TestApp {
    pub fn catalog(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel.clone())
    }

    pub fn pricing(&self) -> PricingServiceClient<Channel> {
        PricingServiceClient::new(self.channel.clone())
    }

    pub fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.channel.clone())
    }

    pub async fn create(&self, p: pb::Product) -> pb::Product {
        self.catalog()
            .create_product(authed(pb::CreateProductRequest {
                product: Some(p),
                request_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// A product with one SKU per code.
    pub async fn skus(&self, codes: &[&str]) -> pb::Product {
        let skus = codes.iter().map(|c| sku(c, &[("size", c)])).collect();
        self.create(product("footwear/running", &["runner"], skus)).await
    }

    pub async fn warehouse(&self, code: &str, priority: i32) {
        self.inventory()
            .create_warehouse(authed(pb::CreateWarehouseRequest {
                warehouse: Some(pb::Warehouse {
                    code: code.into(),
                    display_name: format!("warehouse {code}"),
                    priority,
                    ..Default::default()
                }),
            }))
            .await
            .unwrap();
    }

    pub async fn receive(&self, sku: &str, warehouse: &str, quantity: i64) -> pb::StockLevel {
        self.inventory()
            .receive_stock(authed(pb::ReceiveStockRequest {
                sku: format!("skus/{sku}"),
                warehouse: format!("warehouses/{warehouse}"),
                quantity,
                reference: "PO-1".into(),
                request_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn reserve(&self, order: &str, lines: &[(&str, i64)]) -> Result<pb::Reservation, tonic::Status> {
        self.inventory()
            .reserve_stock(authed(pb::ReserveStockRequest {
                order_id: order.into(),
                lines: lines
                    .iter()
                    .map(|(s, q)| pb::ReservationLine {
                        sku: format!("skus/{s}"),
                        quantity: *q,
                    })
                    .collect(),
                ttl: None,
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn stock(&self, sku: &str) -> pb::SkuStock {
        self.inventory()
            .get_stock(authed(pb::GetStockRequest {
                sku: format!("skus/{sku}"),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Totals of a SKU: (total, sellable, reserved, unsellable).
    pub async fn totals(&self, sku: &str) -> (i64, i64, i64, i64) {
        let t = self.stock(sku).await.totals.unwrap();
        (t.total, t.sellable, t.reserved, t.unsellable)
    }

    /// Every event in the log so far, after the appender has ordered it.
    pub async fn events(&self) -> Vec<EventEnvelope> {
        self.state.log.append_pending().await.unwrap();
        self.state.log.read_after(0, 10_000).await.unwrap()
    }

    pub async fn events_of_type(&self, ty: &str) -> Vec<EventEnvelope> {
        self.events().await.into_iter().filter(|e| e.r#type == ty).collect()
    }
}

/// The levels of a SKU satisfy the stock formula and no part is negative.
pub fn assert_formula(stock: &pb::SkuStock) {
    for l in stock.levels.iter().chain(stock.totals.iter()) {
        assert_eq!(l.total, l.sellable + l.reserved + l.unsellable, "{l:?}");
        assert!(l.sellable >= 0 && l.reserved >= 0 && l.unsellable >= 0, "{l:?}");
    }
}

/// What an extreme numeric input must get: INVALID_ARGUMENT naming `field`, or, with
/// `None`, any answer but a failure of the service (INTERNAL, UNKNOWN: a panic or an
/// overflow that reached the database).
pub fn assert_extreme(label: &str, result: Result<(), tonic::Status>, field: Option<&str>) {
    match (field, result) {
        (Some(field), Ok(())) => panic!("{label}: accepted, expected INVALID_ARGUMENT on {field}"),
        (Some(field), Err(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{label}: {status:?}");
            assert!(
                violated_fields(&status).iter().any(|f| f == field),
                "{label}: no violation of {field} in {status:?}"
            );
        }
        (None, Ok(())) => {}
        (None, Err(status)) => assert!(
            !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
            "{label}: {status:?}"
        ),
    }
}
