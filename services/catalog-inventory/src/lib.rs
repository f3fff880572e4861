//! The catalog-inventory service: products and variants, listings per channel and
//! their reconciliation, prices, coupons and quotes, warehouses, stock and reservations that
//! never oversell, and the event log other services subscribe to.
//!
//! Layout: `api` is the gRPC adapter of the four services (catalog, pricing,
//! coupons, inventory: parse, authorise, convert), `app` the use cases and the read caches,
//! `domain` the rules without I/O, `events` what catalog publishes, `store` the
//! tables and conditional updates.

#![forbid(unsafe_code)]

mod api;
mod app;
mod domain;
mod events;
pub mod settings;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{AuthLayer, GrpcKeySource, KeySource, Verifier};
use retail_kit::events::{EventLog, EventLogApi};
use retail_kit::server::{self, Bound, ServiceRoutes};
use retail_proto::catalog::catalog_service_server::{self, CatalogServiceServer};
use retail_proto::catalog::coupon_service_server::{self, CouponServiceServer};
use retail_proto::catalog::inventory_service_server::{self, InventoryServiceServer};
use retail_proto::catalog::pricing_service_server::{self, PricingServiceServer};
use retail_proto::events::event_log_service_server::{self, EventLogServiceServer};
use sea_orm::DatabaseConnection;

pub use settings::Settings;

pub use app::App;

use crate::api::{CatalogApi, CouponApi, InventoryApi, PricingApi};
use crate::store::migration::Migrator;

#[derive(Debug)]
pub struct Application {
    bound: Bound,
    app: Arc<App>,
    verifier: Arc<Verifier>,
}

impl Application {
    /// Builds with identity's public keys fetched from `auth.identity_url`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let channel = retail_kit::resilience::lazy_channel("auth.identity_url", &settings.auth.identity_url)?;
        Self::build_with_keys(settings, Arc::new(GrpcKeySource::new(channel))).await
    }

    /// Builds with a given key source (tests use a static one).
    pub async fn build_with_keys(settings: Settings, keys: Arc<dyn KeySource>) -> anyhow::Result<Self> {
        let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database).await?;
        let log = EventLog::new(
            db.clone(),
            "catalog",
            settings.events.poll(),
            settings.events.append_linger(),
        );
        let verifier = Arc::new(Verifier::new(
            &settings.auth.issuer,
            keys,
            Duration::from_millis(settings.auth.key_refresh_min_interval_ms),
        ));
        let bound = server::bind(&settings.server).await?;
        Ok(Self {
            bound,
            app: Arc::new(App::new(db, log, settings)),
            verifier,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    pub fn db(&self) -> DatabaseConnection {
        self.app.db.clone()
    }

    /// The service's state, for the periodic jobs (tests drive them with their own
    /// time).
    pub fn state(&self) -> Arc<App> {
        self.app.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.app;
        let mut background = server::Background::new();
        background.add(state.log.spawn_appender());
        background.add(state.log.spawn_retention(state.settings.events.retention()));
        background.add(state.spawn_sweeper());
        background.add(state.spawn_daily_reconciliation());
        background.add(state.spawn_cache_follower());
        let log = state.log.clone();
        // Open subscriptions end when shutdown starts, so the drain can finish.
        let shutdown = async move {
            shutdown.await;
            log.close();
        };
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(CatalogServiceServer::new(CatalogApi::new(state.clone())))
                .add_service(PricingServiceServer::new(PricingApi::new(state.clone())))
                .add_service(CouponServiceServer::new(CouponApi::new(state.clone())))
                .add_service(InventoryServiceServer::new(InventoryApi::new(state.clone())))
                .add_service(EventLogServiceServer::new(EventLogApi::new(state.log.clone()))),
            names: vec![
                catalog_service_server::SERVICE_NAME,
                pricing_service_server::SERVICE_NAME,
                coupon_service_server::SERVICE_NAME,
                inventory_service_server::SERVICE_NAME,
                event_log_service_server::SERVICE_NAME,
            ],
            auth: Some(AuthLayer::new(self.verifier.clone(), &[])),
        };
        server::serve(self.bound, &state.settings.server, routes, shutdown).await
    }
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = retail_kit::db::connect(&settings.database).await?;
    retail_kit::db::migrate::<Migrator>(&db).await
}

#[async_trait::async_trait]
impl retail_kit::service::Service for Application {
    const NAME: &'static str = "catalog";
    const BINARY: &'static str = "retail-catalog";
    const ABOUT: &'static str = "The retail suite's catalog-inventory service: products, prices, stock, reservations";
    type Settings = Settings;

    fn telemetry(settings: &Settings) -> &retail_kit::config::TelemetrySettings {
        &settings.telemetry
    }

    async fn build(settings: Settings) -> anyhow::Result<Self> {
        Application::build(settings).await
    }

    fn local_addr(&self) -> SocketAddr {
        Application::local_addr(self)
    }

    async fn serve(self, shutdown: retail_kit::service::BoxFuture<'static, ()>) -> anyhow::Result<()> {
        self.run(shutdown).await
    }

    async fn migrate(settings: &Settings) -> anyhow::Result<()> {
        migrate(settings).await
    }
}
