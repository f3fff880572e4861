//! The analytics service: KPIs across the suite in real time, from the event logs
//! of orders, membership, catalog and channel-partner and from ingested store and
//! online touchpoints.
//!
//! Layout: `api` is the gRPC adapter (parse, authorise, convert), `dashboard` the
//! HTTP adapter (the staff KPI pages), `app` the use
//! cases (KPI queries, touchpoint ingestion, rebuilds, overdue members), [`domain`]
//! the formulas without I/O, `projection` what each consumed event adds to the
//! rollups and facts, `events` the consumers (one registration per source log) and
//! what analytics publishes, `store` the tables.

#![forbid(unsafe_code)]

mod api;
pub mod app;
pub mod dashboard;
pub mod domain;
pub mod events;
pub mod projection;
pub mod settings;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{AuthLayer, ClientInterceptor, GrpcKeySource, KeySource, ServiceTokenSource, Verifier};
use retail_kit::events::{ConsumerGroup, EventLog, EventLogApi};
use retail_kit::resilience::lazy_channel;
use retail_kit::server::{self, Bound, ServiceRoutes};
use retail_proto::analytics::analytics_admin_service_server::{self, AnalyticsAdminServiceServer};
use retail_proto::analytics::analytics_service_server::{self, AnalyticsServiceServer};
use retail_proto::analytics::touchpoint_service_server::{self, TouchpointServiceServer};
use retail_proto::events::event_log_service_client::EventLogServiceClient;
use retail_proto::events::event_log_service_server::{self, EventLogServiceServer};
use sea_orm::DatabaseConnection;

pub use settings::Settings;

use crate::api::{AdminApi, AnalyticsApi, TouchpointApi};
use crate::app::App;
use crate::store::migration::Migrator;

pub struct Application {
    bound: Bound,
    app: Arc<App>,
    verifier: Arc<Verifier>,
    tokens: Option<Arc<ServiceTokenSource>>,
    /// The dashboard's listener, with `http.port` set.
    dashboard: Option<dashboard::Listener>,
    /// Identity's password login, for the dashboard.
    sessions: Arc<dyn dashboard::Sessions>,
    /// Membership's campaigns, for the dashboard (`sources.membership_url`).
    campaigns: Option<Arc<dyn dashboard::Campaigns>>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.bound.local_addr())
            .field("dashboard", &self.dashboard_addr())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds with identity's keys and this service's own token from identity (for
    /// subscribing to the other services' logs).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let identity = lazy_channel("auth.identity_url", &settings.auth.identity_url)?;
        let tokens = if settings.auth.client_id.is_empty() {
            tracing::warn!("auth.client_id is not set: subscriptions carry no token");
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
        let mut app = Self::build_with(settings, Arc::new(GrpcKeySource::new(identity))).await?;
        app.tokens = tokens;
        Ok(app)
    }

    /// Builds with the given key source (tests sign their own tokens).
    pub async fn build_with(settings: Settings, keys: Arc<dyn KeySource>) -> anyhow::Result<Self> {
        let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database).await?;
        let log = EventLog::new(
            db.clone(),
            "analytics",
            settings.events.poll(),
            settings.events.append_linger(),
        );
        let verifier = Arc::new(Verifier::new(
            &settings.auth.issuer,
            keys,
            Duration::from_millis(settings.auth.key_refresh_min_interval_ms),
        ));
        let bound = server::bind(&settings.server).await?;
        let dashboard = match settings.http.port {
            Some(port) => Some(dashboard::Listener::bind(&settings.server.host, port).await?),
            None => None,
        };
        let identity = lazy_channel("auth.identity_url", &settings.auth.identity_url)?;
        // Membership's gRPC server serves its log and its campaigns alike.
        let campaigns = match &settings.sources.membership_url {
            Some(url) => Some(Arc::new(dashboard::campaigns::MembershipCampaigns::new(lazy_channel(
                "sources.membership_url",
                url,
            )?)) as Arc<dyn dashboard::Campaigns>),
            None => None,
        };
        Ok(Self {
            bound,
            app: Arc::new(App::new(db, log, settings)),
            verifier,
            tokens: None,
            dashboard,
            sessions: Arc::new(dashboard::session::IdentitySessions::new(identity)),
            campaigns,
            clock: Arc::new(|| chrono::Utc::now().timestamp()),
        })
    }

    /// Uses `tokens` for subscriptions (tests hand in a fixed token).
    pub fn with_service_tokens(mut self, tokens: Arc<ServiceTokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    /// Where the dashboard listens, with `http.port` set.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.dashboard.as_ref().map(dashboard::Listener::local_addr)
    }

    /// Logs dashboard users in with `sessions` instead of identity (tests).
    pub fn with_sessions(mut self, sessions: Arc<dyn dashboard::Sessions>) -> Self {
        self.sessions = sessions;
        self
    }

    /// Reads campaigns from `campaigns` instead of membership (tests).
    pub fn with_campaigns(mut self, campaigns: Arc<dyn dashboard::Campaigns>) -> Self {
        self.campaigns = Some(campaigns);
        self
    }

    /// Reads the dashboard's "now" from `clock` (seconds since the epoch; tests).
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    pub fn db(&self) -> DatabaseConnection {
        self.app.db.clone()
    }

    /// The use cases (tests and benchmarks drive them directly).
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = self.app;
        let settings = &app.settings;
        let mut background = server::Background::new();
        background.add(app.log.spawn_appender());
        background.add(app.log.spawn_retention(settings.events.retention()));
        background.add({
            let app = app.clone();
            let every = Duration::from_secs(settings.analytics.overdue_every_secs.max(1));
            tokio::spawn(async move {
                let first = tokio::time::Instant::now() + Duration::from_secs(30);
                let mut tick = tokio::time::interval_at(first, every);
                loop {
                    tick.tick().await;
                    let now = chrono::Utc::now().timestamp();
                    if let Err(err) = app.publish_overdue(now).await {
                        tracing::warn!(error = %err, "publishing overdue members failed");
                    }
                    if let Err(err) = app.publish_scores(now).await {
                        tracing::warn!(error = %err, "publishing member scores failed");
                    }
                    if let Err(err) = app.purge_touchpoints(now).await {
                        tracing::warn!(error = %err, "touchpoint retention failed");
                    }
                }
            })
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut consumers = Vec::new();
        for (source, handler) in events::handlers() {
            let url = match source {
                "orders" => &settings.sources.orders_url,
                "membership" => &settings.sources.membership_url,
                "catalog" => &settings.sources.catalog_url,
                "partner" => &settings.sources.partner_url,
                _ => &None,
            };
            let Some(url) = url else { continue };
            let channel = lazy_channel(&format!("sources.{source}_url"), url)?;
            let client = EventLogServiceClient::with_interceptor(channel, ClientInterceptor::new(self.tokens.clone()));
            // One partition per source: a source's events apply in log order.
            let group = ConsumerGroup::new(events::CONSUMER, source, app.db.clone(), handler, 1);
            let mut stopped = stopped.clone();
            consumers.push(background.add(tokio::spawn(group.run(client, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))));
        }
        let web = self.dashboard.map(|listener| {
            let state = dashboard::State {
                app: app.clone(),
                verifier: self.verifier.clone(),
                sessions: self.sessions.clone(),
                campaigns: self.campaigns.clone(),
                clock: self.clock.clone(),
            };
            let mut stopped = stopped.clone();
            tokio::spawn(dashboard::serve(listener, state, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        });
        let log = app.log.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
            log.close();
        };
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(AnalyticsServiceServer::new(AnalyticsApi::new(app.clone())))
                .add_service(TouchpointServiceServer::new(TouchpointApi::new(app.clone())))
                .add_service(AnalyticsAdminServiceServer::new(AdminApi::new(app.clone())))
                .add_service(EventLogServiceServer::new(EventLogApi::new(app.log.clone()))),
            names: vec![
                analytics_service_server::SERVICE_NAME,
                touchpoint_service_server::SERVICE_NAME,
                analytics_admin_service_server::SERVICE_NAME,
                event_log_service_server::SERVICE_NAME,
            ],
            auth: Some(AuthLayer::new(self.verifier.clone(), &[])),
        };
        let result = server::serve(self.bound, &app.settings.server, routes, shutdown).await;
        for task in consumers {
            let _ = task.await;
        }
        // The dashboard stopped accepting with the gRPC server; its in-flight
        // pages finish within the drain timeout.
        if let Some(web) = web {
            let drain = app.settings.server.drain_timeout();
            match tokio::time::timeout(drain, web).await {
                Ok(Ok(Err(err))) => tracing::warn!(error = %err, "the dashboard failed"),
                Ok(_) => {}
                Err(_) => tracing::warn!("dashboard requests still running after the drain timeout"),
            }
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
    const NAME: &'static str = "analytics";
    const BINARY: &'static str = "retail-analytics";
    const ABOUT: &'static str = "The retail suite's analytics service: KPIs from every event log and from touchpoints";
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
