//! The suite in this process for end-to-end tests: identity, membership,
//! catalog-inventory and orders-logistics on port 0, each on a fresh database
//! (PostgreSQL when `RETAIL_TEST_DATABASE_URL` is set), talking to each other with
//! real service tokens. Membership and orders can be killed and restarted on the
//! same port and database.
#![allow(dead_code)]

pub mod flaky;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retail_kit::auth::{GrpcKeySource, ServiceTokenSource};
use retail_orders::downstream::GrpcDownstream;
use retail_proto::catalog::catalog_service_client::CatalogServiceClient;
use retail_proto::catalog::inventory_service_client::InventoryServiceClient;
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::common::Money;
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as ipb};
use retail_proto::membership::loyalty_service_client::LoyaltyServiceClient;
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::{self as mpb};
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};
use retail_testkit::TestDatabase;
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const ADMIN_PASSWORD: &str = "e2e-Boss-Passw0rd";
const ORDERS_SECRET: &str = "orders-secret-for-e2e-0123456789-abc";
const MEMBERSHIP_SECRET: &str = "membership-secret-for-e2e-0123456789";

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// One service running until killed.
pub struct Running {
    pub addr: SocketAddr,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Ends it abruptly: in-flight work and open transactions are dropped.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub struct Suite {
    pub identity: SocketAddr,
    pub catalog: SocketAddr,
    pub membership: Option<Running>,
    pub orders: Option<Running>,
    membership_settings: retail_membership::Settings,
    orders_settings: retail_orders::Settings,
    pub admin: String,
    /// A token of the orders service account, for building its downstream.
    orders_tokens: Arc<ServiceTokenSource>,
    /// Failures injected into orders' calls to catalog (none unless a test asks).
    pub faults: Arc<flaky::Faults>,
    _databases: Vec<TestDatabase>,
}

pub fn authed<T>(bearer: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    request
}

impl Suite {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts everything; `configure` adjusts orders.
    pub async fn start_with(configure: impl FnOnce(&mut retail_orders::Settings)) -> Self {
        // Warnings and internal errors of every service show in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,sqlx=error"))
            .with_test_writer()
            .try_init();
        let mut databases = Vec::new();
        for _ in 0..4 {
            databases.push(TestDatabase::new().await.unwrap());
        }
        let mut urls = databases.iter().map(|d| d.secret_url()).collect::<Vec<_>>().into_iter();
        let mut db = move || urls.next().unwrap();
        // Four services per test and tests in parallel: small pools keep PostgreSQL
        // under its connection limit.
        let pool = 6;
        let mut identity = retail_identity::Settings::default();
        identity.database.url = db();
        identity.database.max_connections = pool;
        identity.passwords.memory_kib = 256;
        identity.passwords.iterations = 1;
        identity.bootstrap.admin_password = SecretString::from(ADMIN_PASSWORD);
        identity.bootstrap.service_accounts = vec![
            retail_identity::settings::BootstrapServiceAccount {
                client_id: "orders".into(),
                client_secret: SecretString::from(ORDERS_SECRET),
                scopes: [
                    "membership.members.read",
                    "catalog.read",
                    "inventory.reserve",
                    "events.read",
                ]
                .map(String::from)
                .to_vec(),
            },
            retail_identity::settings::BootstrapServiceAccount {
                client_id: "membership".into(),
                client_secret: SecretString::from(MEMBERSHIP_SECRET),
                scopes: vec!["events.read".into()],
            },
        ];
        let identity_app = retail_identity::Application::build(identity).await.unwrap();
        let identity_addr = identity_app.local_addr();
        tokio::spawn(identity_app.run(std::future::pending()));
        let identity_url = format!("http://{identity_addr}");

        let mut catalog = retail_catalog::Settings::default();
        catalog.database.url = db();
        catalog.database.max_connections = pool;
        catalog.auth.identity_url = identity_url.clone();
        catalog.events.poll_ms = 50;
        let catalog_app = retail_catalog::Application::build(catalog).await.unwrap();
        let catalog_addr = catalog_app.local_addr();
        tokio::spawn(catalog_app.run(std::future::pending()));

        let mut membership = retail_membership::Settings::default();
        membership.database.url = db();
        membership.database.max_connections = pool;
        membership.auth.identity_url = identity_url.clone();
        membership.auth.client_id = "membership".into();
        membership.auth.client_secret = SecretString::from(MEMBERSHIP_SECRET);
        membership.cache.redis_url = retail_testkit::redis_url();
        membership.cache.namespace = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        membership.events.poll_ms = 50;

        let mut orders = retail_orders::Settings::default();
        orders.database.url = db();
        orders.database.max_connections = pool;
        orders.auth.identity_url = identity_url.clone();
        orders.events.poll_ms = 50;
        orders.downstream.catalog_url = format!("http://{catalog_addr}");
        configure(&mut orders);

        let identity_channel = channel(identity_addr).await;
        let orders_tokens = ServiceTokenSource::start(
            identity_channel.clone(),
            "orders".into(),
            SecretString::from(ORDERS_SECRET),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let admin = IdentityServiceClient::new(identity_channel)
            .login(ipb::LoginRequest {
                username: "admin".into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap()
            .access_token;

        let mut suite = Suite {
            identity: identity_addr,
            catalog: catalog_addr,
            membership: None,
            orders: None,
            membership_settings: membership,
            orders_settings: orders,
            admin,
            orders_tokens,
            faults: Arc::new(flaky::Faults::default()),
            _databases: databases,
        };
        suite.start_membership().await;
        suite.orders_settings.downstream.membership_url = format!("http://{}", suite.membership.as_ref().unwrap().addr);
        suite.start_orders().await;
        // Membership subscribes to the orders log wherever orders listens; restart it
        // with the address now known.
        suite.membership_settings.orders.events_url = Some(format!("http://{}", suite.orders.as_ref().unwrap().addr));
        suite.restart_membership().await;
        suite
    }

    /// Starts membership (on the port it had before, if any).
    pub async fn start_membership(&mut self) {
        let app = retail_membership::Application::build(self.membership_settings.clone())
            .await
            .unwrap();
        let addr = app.local_addr();
        self.membership_settings.server.port = addr.port();
        let task = tokio::spawn(app.run(std::future::pending()));
        self.membership = Some(Running { addr, task });
    }

    pub async fn restart_membership(&mut self) {
        if let Some(m) = self.membership.take() {
            m.kill().await;
        }
        self.start_membership().await;
    }

    /// Starts orders (on the port it had before, if any); its calls to other services
    /// go through [`flaky::Faults`].
    pub async fn start_orders(&mut self) {
        let identity = channel(self.identity).await;
        let grpc = Arc::new(GrpcDownstream::new(
            Channel::from_shared(self.orders_settings.downstream.membership_url.clone())
                .unwrap()
                .connect_lazy(),
            Channel::from_shared(self.orders_settings.downstream.catalog_url.clone())
                .unwrap()
                .connect_lazy(),
            Some(self.orders_tokens.clone()),
            self.orders_settings.downstream.policy(),
        ));
        let downstream = Arc::new(flaky::Flaky {
            inner: grpc,
            faults: self.faults.clone(),
        });
        let app = retail_orders::Application::build_with(
            self.orders_settings.clone(),
            Arc::new(GrpcKeySource::new(identity)),
            downstream,
        )
        .await
        .unwrap();
        let addr = app.local_addr();
        self.orders_settings.server.port = addr.port();
        let task = tokio::spawn(app.run(std::future::pending()));
        self.orders = Some(Running { addr, task });
    }

    pub async fn orders_client(&self) -> OrdersServiceClient<Channel> {
        OrdersServiceClient::new(channel(self.orders.as_ref().unwrap().addr).await)
    }

    pub async fn catalog_client(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(channel(self.catalog).await)
    }

    pub async fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(channel(self.catalog).await)
    }

    pub async fn pricing(&self) -> PricingServiceClient<Channel> {
        PricingServiceClient::new(channel(self.catalog).await)
    }

    pub async fn members(&self) -> MembershipServiceClient<Channel> {
        MembershipServiceClient::new(channel(self.membership.as_ref().unwrap().addr).await)
    }

    pub async fn loyalty(&self) -> LoyaltyServiceClient<Channel> {
        LoyaltyServiceClient::new(channel(self.membership.as_ref().unwrap().addr).await)
    }

    /// A product with the given SKUs, each with a list price and stock in warehouse W1.
    pub async fn stock_skus(&self, skus: &[(&str, i64, i64)]) {
        let admin = &self.admin;
        let mut inventory = self.inventory().await;
        let made = inventory
            .create_warehouse(authed(
                admin,
                cpb::CreateWarehouseRequest {
                    warehouse: Some(cpb::Warehouse {
                        code: "W1".into(),
                        display_name: "main".into(),
                        priority: 0,
                        ..Default::default()
                    }),
                },
            ))
            .await;
        assert!(made.is_ok() || made.unwrap_err().code() == tonic::Code::AlreadyExists);
        self.catalog_client()
            .await
            .create_product(authed(
                admin,
                cpb::CreateProductRequest {
                    product: Some(cpb::Product {
                        category: "footwear".into(),
                        title_parts: Some(cpb::TitleParts {
                            category_words: vec![format!("shoe {}", skus[0].0)],
                            ..Default::default()
                        }),
                        skus: skus
                            .iter()
                            .map(|(code, _, _)| cpb::Sku {
                                sku_code: (*code).into(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
        let mut pricing = self.pricing().await;
        for (code, price, units) in skus {
            pricing
                .set_list_price(authed(
                    admin,
                    cpb::SetListPriceRequest {
                        sku: format!("skus/{code}"),
                        price: Some(eur(*price)),
                    },
                ))
                .await
                .unwrap();
            inventory
                .receive_stock(authed(
                    admin,
                    cpb::ReceiveStockRequest {
                        sku: format!("skus/{code}"),
                        warehouse: "warehouses/W1".into(),
                        quantity: *units,
                        reference: "e2e".into(),
                        request_id: String::new(),
                    },
                ))
                .await
                .unwrap();
        }
    }

    /// (total, sellable, reserved, unsellable) of a SKU.
    pub async fn stock(&self, sku: &str) -> (i64, i64, i64, i64) {
        let t = self
            .inventory()
            .await
            .get_stock(authed(
                &self.admin,
                cpb::GetStockRequest {
                    sku: format!("skus/{sku}"),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .totals
            .unwrap();
        (t.total, t.sellable, t.reserved, t.unsellable)
    }

    pub async fn reservation(&self, order_name: &str) -> Option<cpb::Reservation> {
        let id = order_name.trim_start_matches("orders/");
        self.inventory()
            .await
            .get_reservation(authed(
                &self.admin,
                cpb::GetReservationRequest {
                    name: format!("reservations/{id}"),
                },
            ))
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    pub async fn register(&self, phone: &str) -> mpb::Member {
        self.members()
            .await
            .register_member(authed(
                &self.admin,
                mpb::RegisterMemberRequest {
                    member: Some(mpb::Member {
                        display_name: "E2E".into(),
                        identifiers: vec![mpb::Identifier {
                            kind: mpb::IdentifierKind::Phone as i32,
                            value: phone.into(),
                            channel: String::new(),
                        }],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn member(&self, name: &str) -> mpb::Member {
        self.members()
            .await
            .get_member(authed(
                &self.admin,
                mpb::GetMemberRequest {
                    name: name.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until `check` holds for the member, or fails after `within`.
    pub async fn await_member(
        &self,
        name: &str,
        within: Duration,
        check: impl Fn(&mpb::Member) -> bool,
    ) -> mpb::Member {
        let deadline = Instant::now() + within;
        loop {
            let m = self.member(name).await;
            if check(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "the member never got there: {m:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn place(
        &self,
        bearer: &str,
        member: Option<&str>,
        lines: &[(&str, i64)],
        request_id: &str,
    ) -> Result<opb::Order, tonic::Status> {
        self.orders_client()
            .await
            .place_order(authed(
                bearer,
                opb::PlaceOrderRequest {
                    order: Some(opb::Order {
                        member: member.unwrap_or_default().into(),
                        channel: opb::OrderChannel::Online as i32,
                        lines: lines
                            .iter()
                            .map(|(s, q)| opb::OrderLine {
                                sku: format!("skus/{s}"),
                                quantity: *q,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    request_id: request_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn pay(&self, bearer: &str, order: &opb::Order, request_id: &str) -> Result<opb::Order, tonic::Status> {
        self.orders_client()
            .await
            .pay_order(authed(
                bearer,
                opb::PayOrderRequest {
                    name: order.name.clone(),
                    payment: Some(opb::Payment {
                        reference: format!("psp-{request_id}"),
                        amount: order.total.clone(),
                        pay_time: None,
                    }),
                    request_id: request_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// A token of a partner system acting for `partner_id`.
    pub async fn partner_token(&self, partner_id: &str) -> String {
        let mut identity = IdentityServiceClient::new(channel(self.identity).await);
        let key = identity
            .create_api_key(authed(
                &self.admin,
                ipb::CreateApiKeyRequest {
                    api_key: Some(ipb::ApiKey {
                        display_name: format!("POS of {partner_id}"),
                        partner_id: partner_id.into(),
                        scopes: vec!["orders.read".into(), "orders.write".into()],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .secret;
        identity
            .exchange_api_key(ipb::ExchangeApiKeyRequest { api_key: key })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap()
            .access_token
    }
}

pub fn eur(amount_minor: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        amount_minor,
    }
}
