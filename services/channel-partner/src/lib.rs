//! The channel-partner service: the partner programme - partner organisations and
//! their status, sales reps, levels, targets and incentive points - and the event
//! log analytics, the gateway and identity subscribe to.
//!
//! Layout: `api` is the gRPC adapter (authorise, parse, convert), `app` the use
//! cases, [`domain`] the rules without I/O, `events` what channel-partner publishes
//! and how it follows the orders log, [`store`] the tables.

#![forbid(unsafe_code)]

mod api;
mod app;
pub mod domain;
pub mod downstream;
mod events;
pub mod settings;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{AuthLayer, ClientInterceptor, GrpcKeySource, KeySource, ServiceTokenSource, Verifier};
use retail_kit::events::{EventLog, EventLogApi};
use retail_kit::resilience::lazy_channel;
use retail_kit::server::{self, Bound, ServiceRoutes};
use retail_proto::events::event_log_service_server::{self, EventLogServiceServer};
use retail_proto::partner::deal_service_server::{self, DealServiceServer};
use retail_proto::partner::incentive_service_server::{self, IncentiveServiceServer};
use retail_proto::partner::lead_service_server::{self, LeadServiceServer};
use retail_proto::partner::opportunity_service_server::{self, OpportunityServiceServer};
use retail_proto::partner::partner_service_server::{self, PartnerServiceServer};
use retail_proto::partner::price_policy_service_server::{self, PricePolicyServiceServer};
use retail_proto::partner::quote_service_server::{self, QuoteServiceServer};
use retail_proto::partner::target_service_server::{self, TargetServiceServer};
use retail_proto::partner::visit_service_server::{self, VisitServiceServer};
use sea_orm::DatabaseConnection;

pub use settings::Settings;

pub use crate::app::sales::Applied;
pub use crate::app::{App, Caller, Sale};
pub use crate::events::OrderEvents;

use crate::api::policy::PricePolicyApi;
use crate::api::quotes::QuoteApi;
use crate::api::sales::{DealApi, LeadApi, OpportunityApi, VisitApi};
use crate::api::{IncentiveApi, PartnerApi, TargetApi};
use crate::store::migration::Migrator;

#[derive(Debug)]
pub struct Application {
    bound: Bound,
    app: Arc<App>,
    verifier: Arc<Verifier>,
    /// This service's own token, to subscribe to other services' event logs.
    tokens: Option<Arc<ServiceTokenSource>>,
    /// Where orders' event log is, if this replica follows it.
    orders_events_url: Option<String>,
    /// Catalog and orders for quotes, when given (tests); else from the settings.
    downstream: Option<Arc<dyn downstream::Downstream>>,
    /// Where orders is, when learnt after the settings were read.
    orders_url: Option<String>,
}

impl Application {
    /// Builds with identity's keys and this service's own token from identity.
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
        let mut app = Self::build_with_keys(settings, Arc::new(GrpcKeySource::new(identity))).await?;
        app.tokens = tokens;
        Ok(app)
    }

    /// Builds with a given key source (tests use a static one).
    pub async fn build_with_keys(settings: Settings, keys: Arc<dyn KeySource>) -> anyhow::Result<Self> {
        let rules = settings.programme.rules()?;
        let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database).await?;
        let log = EventLog::new(
            db.clone(),
            "partner",
            settings.events.poll(),
            settings.events.append_linger(),
        );
        let verifier = Arc::new(Verifier::new(
            &settings.auth.issuer,
            keys,
            Duration::from_millis(settings.auth.key_refresh_min_interval_ms),
        ));
        let bound = server::bind(&settings.server).await?;
        let orders_events_url = settings.orders.events_url.clone();
        Ok(Self {
            bound,
            app: Arc::new(App::new(db, log, settings, rules)),
            verifier,
            tokens: None,
            orders_events_url,
            downstream: None,
            orders_url: None,
        })
    }

    /// Subscribes to the orders event log at `url` (where orders turned out to listen).
    pub fn with_orders_events_url(mut self, url: String) -> Self {
        self.orders_events_url = Some(url);
        self
    }

    /// Places the orders of accepted quotes at `url` (where orders turned out to listen).
    pub fn with_orders_url(mut self, url: String) -> Self {
        self.orders_url = Some(url);
        self
    }

    /// Uses `downstream` for quotes' calls to catalog and orders (tests stand in
    /// for both).
    pub fn with_downstream(mut self, downstream: Arc<dyn downstream::Downstream>) -> Self {
        self.downstream = Some(downstream);
        self
    }

    /// Uses `tokens` for calls to other services (tests hand in a fixed token).
    pub fn with_service_tokens(mut self, tokens: Arc<ServiceTokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    pub fn db(&self) -> DatabaseConnection {
        self.app.db.clone()
    }

    /// The use cases, for the periodic jobs (tests drive them with their own time).
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.app;
        let downstream = match self.downstream {
            Some(d) => d,
            None => {
                let mut section = state.settings.downstream.clone();
                if self.orders_url.is_some() {
                    section.orders_url.clone_from(&self.orders_url);
                }
                if section.catalog_url.is_none() || section.orders_url.is_none() {
                    tracing::warn!(
                        "downstream.catalog_url or downstream.orders_url is not set: quotes cannot be priced or accepted"
                    );
                }
                Arc::new(downstream::GrpcDownstream::new(&section, self.tokens.clone())?)
            }
        };
        state.set_downstream(downstream);
        let mut background = server::Background::new();
        background.add(state.log.spawn_appender());
        background.add(state.log.spawn_retention(state.settings.events.retention()));
        background.add({
            let app = state.clone();
            let programme = &state.settings.programme;
            let expire_every = Duration::from_secs(programme.expire_every_minutes.max(1) * 60);
            let reevaluate_every = Duration::from_secs(programme.reevaluate_every_hours.max(1) * 3600);
            tokio::spawn(async move {
                // Both run first a minute after start, then every period.
                let first = tokio::time::Instant::now() + Duration::from_secs(60);
                let mut expire = tokio::time::interval_at(first, expire_every);
                let mut reevaluate = tokio::time::interval_at(first, reevaluate_every);
                loop {
                    tokio::select! {
                        _ = expire.tick() => {
                            if let Err(err) = app.expire_points(chrono::Utc::now()).await {
                                tracing::warn!(error = %err, "points expiry failed");
                            }
                        }
                        _ = reevaluate.tick() => {
                            if let Err(err) = app.reevaluate_levels(chrono::Utc::now()).await {
                                tracing::warn!(error = %err, "level re-evaluation failed");
                            }
                        }
                    }
                }
            })
        });
        background.add({
            let app = state.clone();
            let every = Duration::from_secs(state.settings.sales.sweep_every_secs.max(1));
            tokio::spawn(async move {
                // By the service's clock: due deal locks expire, unanswered lead
                // offers time out and go to the next partner.
                let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    sweep.tick().await;
                    if let Err(err) = app.sweep_sales().await {
                        tracing::warn!(error = %err, "sales sweep failed");
                    }
                }
            })
        });
        let (stop_consumer, consumer_stopped) = tokio::sync::watch::channel(false);
        let consumer = match &self.orders_events_url {
            Some(url) => {
                let channel = lazy_channel("orders.events_url", url)?;
                let client = retail_proto::events::event_log_service_client::EventLogServiceClient::with_interceptor(
                    channel,
                    ClientInterceptor::new(self.tokens.clone()),
                );
                // Each partition is applied by one replica at a time; the replicas
                // share them out and take over those of a replica that ends.
                let group = retail_kit::events::ConsumerGroup::new(
                    events::CONSUMER,
                    events::SOURCE,
                    state.db.clone(),
                    Arc::new(OrderEvents::new(state.clone())),
                    state.settings.orders.partitions,
                );
                let mut stopped = consumer_stopped.clone();
                Some(background.add(tokio::spawn(group.run(client, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }))))
            }
            None => None,
        };
        let log = state.log.clone();
        // Open subscriptions end when shutdown starts, so the drain can finish.
        let shutdown = async move {
            shutdown.await;
            let _ = stop_consumer.send(true);
            log.close();
        };
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(PartnerServiceServer::new(PartnerApi::new(state.clone())))
                .add_service(TargetServiceServer::new(TargetApi::new(state.clone())))
                .add_service(IncentiveServiceServer::new(IncentiveApi::new(state.clone())))
                .add_service(PricePolicyServiceServer::new(PricePolicyApi::new(state.clone())))
                .add_service(DealServiceServer::new(DealApi::new(state.clone())))
                .add_service(LeadServiceServer::new(LeadApi::new(state.clone())))
                .add_service(OpportunityServiceServer::new(OpportunityApi::new(state.clone())))
                .add_service(VisitServiceServer::new(VisitApi::new(state.clone())))
                .add_service(QuoteServiceServer::new(QuoteApi::new(state.clone())))
                .add_service(EventLogServiceServer::new(EventLogApi::new(state.log.clone()))),
            names: vec![
                partner_service_server::SERVICE_NAME,
                target_service_server::SERVICE_NAME,
                incentive_service_server::SERVICE_NAME,
                price_policy_service_server::SERVICE_NAME,
                deal_service_server::SERVICE_NAME,
                lead_service_server::SERVICE_NAME,
                opportunity_service_server::SERVICE_NAME,
                visit_service_server::SERVICE_NAME,
                quote_service_server::SERVICE_NAME,
                event_log_service_server::SERVICE_NAME,
            ],
            auth: Some(AuthLayer::new(self.verifier.clone(), &[])),
        };
        let result = server::serve(self.bound, &state.settings.server, routes, shutdown).await;
        // The consumer finishes the event in hand; the other tasks end with `background`.
        if let Some(task) = consumer {
            let _ = task.await;
        }
        result
    }
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = retail_kit::db::connect(&settings.database).await?;
    retail_kit::db::migrate::<Migrator>(&db).await
}

#[async_trait::async_trait]
impl retail_kit::service::Service for Application {
    const NAME: &'static str = "partner";
    const BINARY: &'static str = "retail-channel-partner";
    const ABOUT: &'static str =
        "The retail suite's channel-partner service: partner organisations, reps, levels, targets, points";
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
