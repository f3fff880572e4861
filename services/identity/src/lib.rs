//! The identity service: who may do what in the retail suite.
//!
//! Layout: `api` is the gRPC adapter (parse, authorise, convert), `app` the use
//! cases (sessions, users, API keys, service accounts, signing keys, audit, and what
//! the first start creates), [`domain`] the rules without I/O, [`store`] the tables.
//! [`Application`] binds, then serves until shutdown.

#![forbid(unsafe_code)]

mod api;
mod app;
pub mod domain;
pub mod settings;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::AuthLayer;
use retail_kit::server::{self, Bound, ServiceRoutes};
use retail_proto::identity::identity_service_server::{IdentityServiceServer, SERVICE_NAME};
use sea_orm::DatabaseConnection;

pub use settings::Settings;

use crate::api::IdentityApi;
use crate::app::App;
use crate::store::migration::Migrator;

/// A built identity service: database ready, listener bound.
#[derive(Debug)]
pub struct Application {
    bound: Bound,
    settings: Settings,
    app: Arc<App>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database).await?;
        let app = Arc::new(App::start(db, &settings).await?);
        let bound = server::bind(&settings.server).await?;
        Ok(Self { bound, settings, app })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    /// The database, for tests that inspect stored rows.
    pub fn db(&self) -> DatabaseConnection {
        self.app.db.clone()
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let mut background = server::Background::new();
        background.add(
            self.app
                .spawn_key_maintenance(Duration::from_secs(self.settings.tokens.key_reload_secs.max(1))),
        );
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(IdentityServiceServer::new(IdentityApi::new(self.app.clone()))),
            names: vec![SERVICE_NAME],
            auth: Some(AuthLayer::new(self.app.verifier.clone(), api::PUBLIC_METHODS)),
        };
        server::serve(self.bound, &self.settings.server, routes, shutdown).await
    }
}

/// Applies pending migrations and exits: the deployment hook's command.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = retail_kit::db::connect(&settings.database).await?;
    retail_kit::db::migrate::<Migrator>(&db).await
}

#[async_trait::async_trait]
impl retail_kit::service::Service for Application {
    const NAME: &'static str = "identity";
    const BINARY: &'static str = "retail-identity";
    const ABOUT: &'static str = "The retail suite's identity service: users, roles, API keys, service accounts, tokens";
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
