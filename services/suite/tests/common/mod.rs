//! The whole suite in process for partner-sales tests: a fresh database per service
//! (PostgreSQL when `RETAIL_TEST_DATABASE_URL` is set), every listener on a free port,
//! the admin signed in, and partners `acme-0` and `globex-0` (active, level
//! `registered`); [`Running::seed_catalog`] gives a test its SKUs and prices.

// Each test file uses the parts of the suite it needs.
#![allow(dead_code)]

use std::net::SocketAddr;

use futures::FutureExt;
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::common::Money;
use retail_suite::settings::SuiteSettings;
use retail_testkit::TestDatabase;
use secrecy::SecretString;
use tonic::transport::Channel;

/// An amount in euros, in minor units.
pub fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

const ADMIN_PASSWORD: &str = "partner-sales-in-process-2026";

pub fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy()
}

pub fn authed<T>(bearer: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer.parse().unwrap());
    request
}

/// A running suite; its databases and data directory live as long as it does.
pub struct Running {
    pub membership: SocketAddr,
    /// Membership's use cases (its campaign job, run with the test's time).
    pub membership_app: std::sync::Arc<retail_membership::App>,
    /// Analytics' use cases (its scoring job, run with the test's time).
    pub analytics_app: std::sync::Arc<retail_analytics::app::App>,
    pub catalog: SocketAddr,
    pub orders: SocketAddr,
    pub partner: SocketAddr,
    pub analytics: SocketAddr,
    /// The admin's `Bearer ...` header value.
    pub admin: String,
    _databases: Vec<TestDatabase>,
    _dir: tempfile::TempDir,
}

/// Starts the suite with `cache_namespace` for membership's cache keys, then creates
/// the two partners.
pub async fn start(cache_namespace: &str) -> Running {
    start_with(cache_namespace, |_| {}).await
}

/// [`start`] with `configure` applied to the settings before launch.
pub async fn start_with(cache_namespace: &str, configure: impl FnOnce(&mut SuiteSettings)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = SuiteSettings {
        data_dir: dir.path().to_path_buf(),
        ..SuiteSettings::default()
    };
    settings.relocate_data();
    let mut databases = Vec::new();
    for _ in 0..6 {
        databases.push(TestDatabase::new().await.unwrap());
    }
    for (db, test) in [
        &mut settings.identity.database,
        &mut settings.membership.database,
        &mut settings.catalog.database,
        &mut settings.orders.database,
        &mut settings.partner.database,
        &mut settings.analytics.database,
    ]
    .into_iter()
    .zip(&databases)
    {
        db.url = test.secret_url();
        db.max_connections = 4;
    }
    settings.use_free_ports();
    settings.identity.bootstrap.admin_password = SecretString::from(ADMIN_PASSWORD);
    settings.identity.passwords.memory_kib = 256;
    settings.identity.passwords.iterations = 1;
    settings.membership.cache.redis_url = retail_testkit::redis_url();
    settings.membership.cache.namespace = format!("{cache_namespace}-{}", uuid::Uuid::new_v4().simple());
    configure(&mut settings);
    let launched = retail_suite::up::launch(&mut settings, std::future::pending::<()>().boxed().shared())
        .await
        .unwrap();
    let admin = retail_suite::seed::admin_bearer(channel(launched.identity), ADMIN_PASSWORD)
        .await
        .unwrap();
    for prefix in ["acme", "globex"] {
        retail_suite::seed_partner::seed_partners(channel(launched.partner), &admin, prefix, 1, 0, 1, 1)
            .await
            .unwrap();
    }
    Running {
        membership: launched.membership,
        membership_app: launched.membership_app.clone(),
        analytics_app: launched.analytics_app.clone(),
        catalog: launched.catalog,
        orders: launched.orders,
        partner: launched.partner,
        analytics: launched.analytics,
        admin,
        _databases: databases,
        _dir: dir,
    }
}

impl Running {
    /// `count` SKUs of one product, 1,000 units each in the main warehouse, each
    /// list-priced at `list_minor` EUR when given (the seed's own list prices
    /// otherwise); the first `wholesale_minor.len()` go on level `registered`'s
    /// wholesale list at those EUR prices, in order (the rest are not on it).
    /// Returns the SKUs (`skus/{code}`) in creation order.
    pub async fn seed_catalog(&self, count: u64, list_minor: Option<i64>, wholesale_minor: &[i64]) -> Vec<String> {
        let skus = retail_suite::seed::seed_catalog(channel(self.catalog), &self.admin, count, count, 1_000, 1)
            .await
            .unwrap();
        if let Some(price) = list_minor {
            let mut pricing = PricingServiceClient::new(channel(self.catalog));
            for sku in &skus {
                pricing
                    .set_list_price(authed(
                        &self.admin,
                        cpb::SetListPriceRequest {
                            sku: sku.clone(),
                            price: Some(Money {
                                currency_code: "EUR".into(),
                                amount_minor: price,
                            }),
                        },
                    ))
                    .await
                    .unwrap();
            }
        }
        for (sku, price) in skus.iter().zip(wholesale_minor) {
            retail_suite::seed::set_partner_prices(
                channel(self.catalog),
                &self.admin,
                "registered",
                std::slice::from_ref(sku),
                "EUR",
                *price,
            )
            .await
            .unwrap();
        }
        skus
    }
}
