//! The membership service: member profiles, recognition by identifier (served from
//! the hot-profile cache) and at touchpoints (anonymous contacts), member merges,
//! tags, consents, export and erasure, and the event log other services subscribe to.
//!
//! Layout: `api` is the gRPC adapter (authorise, parse, convert), `app` the use
//! cases, [`domain`] the rules without I/O, `events` what membership publishes and
//! how it follows the orders log, [`store`] the tables.

#![forbid(unsafe_code)]

mod api;
mod app;
mod catalog;
pub mod domain;
mod events;
pub mod settings;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{AuthLayer, ClientInterceptor, GrpcKeySource, KeySource, ServiceTokenSource, Verifier};
use retail_kit::cache::{CacheSettings, VersionedCache};
use retail_kit::events::{EventLog, EventLogApi};
use retail_kit::server::{self, Bound, ServiceRoutes};
use retail_proto::events::event_log_service_server::EventLogServiceServer;
use retail_proto::membership::membership_service_server::MembershipServiceServer;
use sea_orm::DatabaseConnection;

pub use settings::Settings;

pub use crate::app::{App, CouponIssuer, LogSender, MessageSender, OutgoingMessage, RetryPolicy, WebhookSender};
pub use crate::events::{AnalyticsEvents, OrderEvents};

use crate::api::{EngagementApi, LoyaltyApi, MembershipApi};
use crate::store::migration::Migrator;
use retail_proto::membership::engagement_service_server::EngagementServiceServer;
use retail_proto::membership::loyalty_service_server::LoyaltyServiceServer;

#[derive(Debug)]
pub struct Application {
    bound: Bound,
    settings: Settings,
    app: Arc<App>,
    verifier: Arc<Verifier>,
    /// This service's own token, to subscribe to other services' event logs.
    tokens: Option<Arc<ServiceTokenSource>>,
}

impl Application {
    /// Builds with identity's public keys fetched from `auth.identity_url`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let channel = tonic::transport::Channel::from_shared(settings.auth.identity_url.clone())?
            .connect_timeout(Duration::from_secs(3))
            .connect_lazy();
        let tokens = if settings.auth.client_id.is_empty() {
            None
        } else {
            Some(
                ServiceTokenSource::start(
                    channel.clone(),
                    settings.auth.client_id.clone(),
                    settings.auth.client_secret.clone(),
                    Duration::from_secs(30),
                )
                .await?,
            )
        };
        let app = Self::build_with_keys(settings, Arc::new(GrpcKeySource::new(channel))).await?;
        Ok(match tokens {
            Some(tokens) => app.with_service_tokens(tokens),
            None => app,
        })
    }

    /// Subscribes to the orders event log at `url` (where orders turned out to listen).
    pub fn with_orders_events_url(mut self, url: String) -> Self {
        self.settings.orders.events_url = Some(url);
        self
    }

    /// Subscribes to analytics' event log at `url` (overdue members, member scores).
    pub fn with_analytics_events_url(mut self, url: String) -> Self {
        self.settings.analytics.events_url = Some(url);
        self
    }

    /// Uses `tokens` for calls to other services (tests hand in a fixed token).
    pub fn with_service_tokens(mut self, tokens: Arc<ServiceTokenSource>) -> Self {
        self.tokens = Some(tokens);
        // The URL was accepted when the service was built, so this connects again.
        if let Err(e) = self.connect_catalog() {
            tracing::warn!(error = %e, "catalog not connected");
        }
        self
    }

    /// Calls catalog at `catalog.url`, if set, for coupon campaigns' codes.
    fn connect_catalog(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.settings.catalog.url {
            let coupons = catalog::CatalogCoupons::new(url, self.tokens.clone())?;
            self.app.set_coupon_issuer(Arc::new(coupons));
        }
        Ok(())
    }

    /// Builds with a given key source (tests use a static one).
    pub async fn build_with_keys(settings: Settings, keys: Arc<dyn KeySource>) -> anyhow::Result<Self> {
        let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database).await?;
        let cache = VersionedCache::new(CacheSettings {
            redis_url: settings.cache.redis_url.clone(),
            namespace: settings.cache.namespace.clone(),
            ttl: Duration::from_secs(settings.cache.ttl_secs),
            timeout: Duration::from_millis(settings.cache.timeout_ms),
            local_capacity: settings.cache.local_capacity,
        })?;
        let log = EventLog::new(
            db.clone(),
            "membership",
            settings.events.poll(),
            settings.events.append_linger(),
        );
        let verifier = Arc::new(Verifier::new(
            &settings.auth.issuer,
            keys,
            Duration::from_millis(settings.auth.key_refresh_min_interval_ms),
        ));
        let mut app = App::new(db, cache, log, settings.loyalty.rules()?, settings.engagement.rules());
        if settings.engagement.sender == "webhook" {
            app.set_message_sender(Arc::new(settings.engagement.webhook.sender()?));
        }
        let app = Arc::new(app);
        let bound = server::bind(&settings.server).await?;
        let built = Self {
            bound,
            settings,
            app,
            verifier,
            tokens: None,
        };
        built.connect_catalog()?;
        Ok(built)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    pub fn db(&self) -> DatabaseConnection {
        self.app.db.clone()
    }

    pub fn cache(&self) -> Arc<VersionedCache> {
        self.app.cache.clone()
    }

    /// The use cases, for the periodic jobs (tests drive them with their own
    /// `as_of`).
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let mut background = server::Background::new();
        background.add(self.app.log.spawn_appender());
        background.add(self.app.log.spawn_retention(self.settings.events.retention()));
        background.add({
            let app = self.app.clone();
            let expire_every = Duration::from_secs(self.settings.loyalty.expire_every_minutes.max(1) * 60);
            let reevaluate_every = Duration::from_secs(self.settings.loyalty.reevaluate_every_hours.max(1) * 3600);
            let campaigns_every = Duration::from_secs(self.settings.engagement.run_every_secs.max(1));
            tokio::spawn(async move {
                // Both run first a minute after start (not while the service is still
                // coming up, and not only a whole period later: a replica restarted
                // more often than that would never run them), then every period.
                let first = tokio::time::Instant::now() + Duration::from_secs(60);
                let mut expire = tokio::time::interval_at(first, expire_every);
                let mut reevaluate = tokio::time::interval_at(first, reevaluate_every);
                let mut campaigns = tokio::time::interval_at(first, campaigns_every);
                loop {
                    tokio::select! {
                        _ = expire.tick() => {
                            if let Err(err) = app.expire_points(chrono::Utc::now()).await {
                                tracing::warn!(error = %err, "points expiry failed");
                            }
                        }
                        _ = campaigns.tick() => {
                            if let Err(err) = app.run_campaigns(chrono::Utc::now()).await {
                                tracing::warn!(error = %err, "campaign run failed");
                            }
                        }
                        _ = reevaluate.tick() => {
                            if let Err(err) = app.reevaluate_tiers(chrono::Utc::now()).await {
                                tracing::warn!(error = %err, "tier re-evaluation failed");
                            }
                        }
                    }
                }
            })
        });
        let (stop_consumer, consumer_stopped) = tokio::sync::watch::channel(false);
        let consumer = match &self.settings.orders.events_url {
            Some(url) => {
                let channel = retail_kit::resilience::lazy_channel("orders.events_url", url)?;
                let client = retail_proto::events::event_log_service_client::EventLogServiceClient::with_interceptor(
                    channel,
                    ClientInterceptor::new(self.tokens.clone()),
                );
                let handler = Arc::new(OrderEvents::new(self.app.clone()));
                // Each partition is applied by one replica at a time; the replicas
                // share them out and take over those of a replica that ends.
                let group = retail_kit::events::ConsumerGroup::new(
                    events::CONSUMER,
                    events::SOURCE,
                    self.app.db.clone(),
                    handler,
                    self.settings.orders.partitions,
                );
                let mut stopped = consumer_stopped.clone();
                Some(vec![background.add(tokio::spawn(group.run(client, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })))])
            }
            None => None,
        };
        let analytics_consumer = match &self.settings.analytics.events_url {
            Some(url) => {
                let channel = retail_kit::resilience::lazy_channel("analytics.events_url", url)?;
                let client = retail_proto::events::event_log_service_client::EventLogServiceClient::with_interceptor(
                    channel,
                    ClientInterceptor::new(self.tokens.clone()),
                );
                let group = retail_kit::events::ConsumerGroup::new(
                    events::ANALYTICS_CONSUMER,
                    events::ANALYTICS_SOURCE,
                    self.app.db.clone(),
                    Arc::new(AnalyticsEvents::new(self.app.clone())),
                    1,
                );
                let mut stopped = consumer_stopped.clone();
                Some(background.add(tokio::spawn(group.run(client, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }))))
            }
            None => None,
        };
        let log = self.app.log.clone();
        // Open subscriptions end when shutdown starts, so the drain can finish.
        let shutdown = async move {
            shutdown.await;
            let _ = stop_consumer.send(true);
            log.close();
        };
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(MembershipServiceServer::new(MembershipApi::new(self.app.clone())))
                .add_service(LoyaltyServiceServer::new(LoyaltyApi::new(self.app.clone())))
                .add_service(EngagementServiceServer::new(EngagementApi::new(self.app.clone())))
                .add_service(EventLogServiceServer::new(EventLogApi::new(self.app.log.clone()))),
            names: vec![
                retail_proto::membership::membership_service_server::SERVICE_NAME,
                retail_proto::membership::loyalty_service_server::SERVICE_NAME,
                retail_proto::membership::engagement_service_server::SERVICE_NAME,
                retail_proto::events::event_log_service_server::SERVICE_NAME,
            ],
            auth: Some(AuthLayer::new(self.verifier.clone(), &[])),
        };
        let result = server::serve(self.bound, &self.settings.server, routes, shutdown).await;
        // Consumers finish the event in hand; the other tasks end with `background`.
        for task in consumer.into_iter().flatten().chain(analytics_consumer) {
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
    const NAME: &'static str = "membership";
    const BINARY: &'static str = "retail-membership";
    const ABOUT: &'static str = "The retail suite's membership service: members, consents, tiers, points";
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
