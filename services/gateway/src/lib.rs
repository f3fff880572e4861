//! The partner gateway: REST/JSON over HTTP for franchise partners' systems and
//! users, translated to the internal gRPC APIs of channel-partner, catalog and
//! orders with the caller's own token, so those services scope every call to the
//! caller's partner.
//!
//! Layout: [`http`] is what every route shares (request ids, timeouts, extractors
//! that turn bad input into problems, authentication and the rate limit),
//! `routes` the `/v1` routes, [`problem`] RFC 9457 problem documents, [`auth`] API
//! keys and tokens, [`ratelimit`] the per-partner limits, [`openapi`] the OpenAPI
//! 3.1 document generated from the routes, [`webhooks`] the partners' outbound
//! webhooks (the gateway's own database, the event logs it follows, the delivery
//! worker).

#![forbid(unsafe_code)]

pub mod auth;
pub mod http;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
mod routes;
pub mod settings;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use retail_kit::auth::{ClientInterceptor, GrpcKeySource, KeySource, ServiceTokenSource, Verifier};
use retail_kit::resilience::lazy_channel;
use retail_proto::events::event_log_service_client::EventLogServiceClient;

pub use settings::Settings;

use crate::auth::Authenticator;
use crate::http::{AppState, Gateway};
use crate::ratelimit::{Clock, RateLimiter, SystemClock};
use crate::webhooks::Webhooks;

#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    router: Router,
    drain_timeout: Duration,
    webhooks: Arc<Webhooks>,
    sender: webhooks::deliver::Sender,
    /// The gateway's own token, to follow the event logs webhooks come from.
    tokens: Option<Arc<ServiceTokenSource>>,
}

impl Application {
    /// Builds with identity's keys and the services of `settings`, on the real clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock::default())).await
    }

    /// Builds with the given clock for the rate limits (tests control it).
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let identity = lazy_channel("auth.identity_url", &settings.auth.identity_url)?;
        let follows_logs =
            settings.webhooks.orders_events_url.is_some() || settings.webhooks.partner_events_url.is_some();
        let tokens = if settings.auth.client_id.is_empty() {
            if follows_logs {
                tracing::warn!("auth.client_id is not set: the event logs of webhooks are read without a token");
            }
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
        let mut app = Self::build_with_keys(settings, Arc::new(GrpcKeySource::new(identity)), clock).await?;
        app.tokens = tokens;
        Ok(app)
    }

    /// Builds with a given key source and clock (tests use a static key).
    pub async fn build_with_keys(
        settings: Settings,
        keys: Arc<dyn KeySource>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let identity = lazy_channel("auth.identity_url", &settings.auth.identity_url)?;
        let verifier = Arc::new(Verifier::new(
            &settings.auth.issuer,
            keys,
            Duration::from_millis(settings.auth.key_refresh_min_interval_ms),
        ));
        let db = retail_kit::db::connect_and_migrate::<webhooks::store::Migrator>(&settings.database).await?;
        let webhooks = Arc::new(Webhooks::new(db, settings.webhooks.clone()));
        let sender =
            webhooks::deliver::Sender::new(settings.webhooks.timeout(), settings.webhooks.allow_private_addresses)?;
        let gateway = Gateway {
            auth: Authenticator::new(
                identity,
                verifier,
                settings.upstream.timeout(),
                Duration::from_secs(settings.http.token_refresh_before_secs),
            ),
            limiter: RateLimiter::start(settings.rate_limit.clone(), clock, "retail:gateway:rl").await?,
            partner: lazy_channel("upstream.partner_url", &settings.upstream.partner_url)?,
            catalog: lazy_channel("upstream.catalog_url", &settings.upstream.catalog_url)?,
            orders: lazy_channel("upstream.orders_url", &settings.upstream.orders_url)?,
            timeout: settings.upstream.timeout(),
            currency: settings.upstream.currency.clone(),
        };
        let router = router(Arc::new(gateway), &settings, webhooks.clone());
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("failed to listen on {address}"))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            router,
            drain_timeout: settings.server.drain_timeout(),
            webhooks,
            sender,
            tokens: None,
        })
    }

    /// Uses `tokens` to follow the event logs (tests hand in a fixed token).
    pub fn with_service_tokens(mut self, tokens: Arc<ServiceTokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The webhooks' use cases (tests drive them).
    pub fn webhooks(&self) -> Arc<Webhooks> {
        self.webhooks.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish (for
    /// at most `server.drain_timeout_ms`).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
        let background = self.spawn_webhooks(&background_stopped)?;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = stop_background.send(true);
            let _ = stopping_tx.send(());
        };
        let result = Self::serve(self.listener, self.router, self.drain_timeout, shutdown, stopping_rx).await;
        // The worker finishes the attempts in hand; the consumers the batch in hand.
        for task in background {
            let _ = task.await;
        }
        result
    }

    /// Starts the delivery worker and a consumer of each configured event log.
    fn spawn_webhooks(
        &self,
        stopped: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let mut tasks = vec![tokio::spawn(
            self.webhooks
                .clone()
                .run_worker(self.sender.clone(), until(stopped.clone())),
        )];
        let settings = &self.webhooks.settings;
        for (source, key, url) in [
            (
                webhooks::consume::ORDERS,
                "webhooks.orders_events_url",
                &settings.orders_events_url,
            ),
            (
                webhooks::consume::PARTNER,
                "webhooks.partner_events_url",
                &settings.partner_events_url,
            ),
        ] {
            let Some(url) = url else {
                continue;
            };
            let client = EventLogServiceClient::with_interceptor(
                lazy_channel(key, url)?,
                ClientInterceptor::new(self.tokens.clone()),
            );
            let group = retail_kit::events::ConsumerGroup::new(
                webhooks::consume::CONSUMER,
                source,
                self.webhooks.db.clone(),
                Arc::new(webhooks::consume::LogEvents::new(self.webhooks.wake.clone())),
                1,
            );
            tasks.push(tokio::spawn(group.run(client, until(stopped.clone()))));
        }
        Ok(tasks)
    }

    async fn serve(
        listener: tokio::net::TcpListener,
        router: Router,
        drain_timeout: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
        stopping_rx: tokio::sync::oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let serving = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .into_future();
        tokio::pin!(serving);
        tokio::select! {
            result = &mut serving => return result.context("the gateway failed"),
            _ = stopping_rx => {}
        }
        match tokio::time::timeout(drain_timeout, serving).await {
            Ok(result) => result.context("the gateway failed"),
            Err(_) => {
                tracing::warn!("requests still in flight after the drain timeout were dropped");
                Ok(())
            }
        }
    }
}

fn router(state: AppState, settings: &Settings, webhooks: Arc<Webhooks>) -> Router {
    let v1 = Router::new()
        .route("/v1/partner", get(routes::partner::get_partner))
        .route("/v1/partner/salesReps", get(routes::partner::list_sales_reps))
        .route("/v1/partner/targets", get(routes::programme::list_targets))
        .route("/v1/targets/{targetId}", get(routes::programme::get_target))
        .route("/v1/partner/ledger", get(routes::programme::get_partner_ledger))
        .route(
            "/v1/partner/ledger/entries",
            get(routes::programme::list_ledger_entries),
        )
        .route(
            "/v1/partner/ledger/redemptions",
            get(routes::programme::list_redemptions).post(routes::programme::request_redemption),
        )
        .route(
            "/v1/partner/ledger/redemptions/{redemptionId}",
            get(routes::programme::get_redemption),
        )
        .route(
            "/v1/salesReps/{salesRepId}/ledger",
            get(routes::programme::get_rep_ledger),
        )
        .route("/v1/partner/priceEvaluations", post(routes::policy::evaluate_policy))
        .route(
            "/v1/partner/specialDiscounts",
            get(routes::policy::list_special_discounts).post(routes::policy::request_special_discount),
        )
        .route(
            "/v1/partner/specialDiscounts/{specialDiscountId}",
            get(routes::policy::get_special_discount),
        )
        .route("/v1/catalogItems", get(routes::programme::list_catalog_items))
        .route("/v1/products", get(routes::products::list_products))
        .route("/v1/products/{productId}", get(routes::products::get_product))
        .route(
            "/v1/orders",
            get(routes::orders::list_orders).post(routes::orders::place_order),
        )
        .route("/v1/orders/{orderId}", get(routes::orders::get_order))
        .route("/v1/orders/{orderId}/pay", post(routes::orders::pay_order))
        .route("/v1/orders/{orderId}/cancel", post(routes::orders::cancel_order))
        .route("/v1/orders/{orderId}/tracking", get(routes::orders::track_order))
        .route("/v1/orders/{orderId}/returns", post(routes::orders::request_return))
        .merge(routes::webhooks::routes(webhooks))
        .merge(routes::sales::router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), http::authenticate));
    Router::new()
        .route("/healthz", get(openapi::healthz))
        .route("/v1/openapi.json", get(openapi::document))
        .merge(v1)
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.http.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokio::sync::Semaphore::new(settings.server.concurrency_limit)),
            http::shed_and_log,
        ))
        .layer(axum::middleware::from_fn_with_state(
            settings.server.request_timeout(),
            http::timeout,
        ))
        .layer(axum::middleware::from_fn(http::request_id))
        .with_state(state)
}

/// Applies the gateway's migrations (webhooks, log positions).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = retail_kit::db::connect(&settings.database).await?;
    retail_kit::db::migrate::<webhooks::store::Migrator>(&db).await
}

#[async_trait::async_trait]
impl retail_kit::service::Service for Application {
    const NAME: &'static str = "gateway";
    const BINARY: &'static str = "retail-gateway";
    const ABOUT: &'static str = "The retail suite's partner gateway: REST/JSON for franchise partners";
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
