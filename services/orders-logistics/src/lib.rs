//! The orders-logistics service: the order saga over membership and catalog-inventory,
//! payments, cancellations, shipments and tracking, returns and refunds, ratings, and
//! the event log membership, channel-partner and analytics subscribe to.
//!
//! Layout: `api` is the gRPC adapter (parse, authorise, convert), `app` the use
//! cases (the placement saga, payments, cancellations, shipping, returns, and the
//! stock work that follows them into catalog), [`domain`] the rules without I/O,
//! `events` what orders publishes, [`downstream`] the calls to other services,
//! `store` the tables.

#![forbid(unsafe_code)]

mod api;
mod app;
mod domain;
pub mod downstream;
mod events;
pub mod settings;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{AuthLayer, GrpcKeySource, KeySource, ServiceTokenSource, Verifier};
use retail_kit::events::{EventLog, EventLogApi};
use retail_kit::resilience::lazy_channel;
use retail_kit::server::{self, Bound, ServiceRoutes};
use retail_proto::events::event_log_service_server::{self, EventLogServiceServer};
use retail_proto::orders::orders_service_server::{self, OrdersServiceServer};
use sea_orm::DatabaseConnection;

pub use settings::Settings;

use crate::api::OrdersApi;
use crate::app::App;
use crate::downstream::{Downstream, GrpcDownstream};
use crate::store::migration::Migrator;

#[derive(Debug)]
pub struct Application {
    bound: Bound,
    app: Arc<App>,
    verifier: Arc<Verifier>,
}

impl Application {
    /// Builds with identity's keys and this service's own token from identity, and
    /// the real downstream services.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let identity = lazy_channel("auth.identity_url", &settings.auth.identity_url)?;
        let tokens = if settings.auth.client_id.is_empty() {
            tracing::warn!("auth.client_id is not set: calls to other services carry no token");
            None
        } else {
            Some(
                ServiceTokenSource::start(
                    identity.clone(),
                    settings.auth.client_id.clone(),
                    settings.auth.client_secret.clone(),
                    Duration::from_secs(30),
                )
                .await?,
            )
        };
        let mut downstream = GrpcDownstream::new(
            lazy_channel("downstream.membership_url", &settings.downstream.membership_url)?,
            lazy_channel("downstream.catalog_url", &settings.downstream.catalog_url)?,
            tokens.clone(),
            settings.downstream.policy(),
        );
        match &settings.downstream.partner_url {
            Some(url) => {
                downstream = downstream.with_partner(
                    lazy_channel("downstream.partner_url", url)?,
                    tokens,
                    settings.downstream.policy(),
                );
            }
            None => tracing::warn!(
                "downstream.partner_url is not set: partner orders are priced at the consumer list price, \
                 without the price policy's discounts, special discounts are refused, \
                 and end customers are not checked against deal locks"
            ),
        }
        let downstream = Arc::new(downstream);
        Self::build_with(settings, Arc::new(GrpcKeySource::new(identity)), downstream).await
    }

    /// Builds with the given key source and downstream services (tests fake them).
    pub async fn build_with(
        settings: Settings,
        keys: Arc<dyn KeySource>,
        downstream: Arc<dyn Downstream>,
    ) -> anyhow::Result<Self> {
        let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database).await?;
        let log = EventLog::new(
            db.clone(),
            "orders",
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
            app: Arc::new(App::new(db, log, settings, downstream)),
            verifier,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    pub fn db(&self) -> DatabaseConnection {
        self.app.db.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.app;
        // Sagas left behind by a crash are compensated before serving.
        if let Err(err) = state.recover_sagas(retail_kit::convert::now()).await {
            tracing::warn!(error = %err, "saga recovery at start failed");
        }
        // So is the stock work of state changes the last process did not finish.
        if let Err(err) = state.finish_stock_work().await {
            tracing::warn!(error = %err, "finishing stock work at start failed");
        }
        let mut background = server::Background::new();
        background.add(state.log.spawn_appender());
        background.add(state.log.spawn_retention(state.settings.events.retention()));
        background.add(state.spawn_sweeper());
        let log = state.log.clone();
        let shutdown = async move {
            shutdown.await;
            log.close();
        };
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(OrdersServiceServer::new(OrdersApi::new(state.clone())))
                .add_service(EventLogServiceServer::new(EventLogApi::new(state.log.clone()))),
            names: vec![
                orders_service_server::SERVICE_NAME,
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
    const NAME: &'static str = "orders";
    const BINARY: &'static str = "retail-orders";
    const ABOUT: &'static str =
        "The retail suite's orders-logistics service: the order saga, payments, shipments, returns";
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
