//! The identity service: who may do what in the retail suite.
//!
//! Layout: [`api`] is the gRPC adapter, [`domain`] the rules without I/O, [`store`]
//! the tables and queries, [`signing`] the token signing keys, [`bootstrap`] what
//! the first start creates. [`Application`] binds, then serves until shutdown.

#![forbid(unsafe_code)]

pub mod api;
pub mod bootstrap;
pub mod domain;
pub mod settings;
pub mod signing;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{AuthLayer, Verifier};
use retail_kit::server::{self, Bound, ServiceRoutes};
use retail_proto::identity::identity_service_server::{IdentityServiceServer, SERVICE_NAME};
use sea_orm::DatabaseConnection;

pub use settings::Settings;

use crate::api::{IdentityApi, State};
use crate::domain::lockout::LockoutPolicy;
use crate::domain::passwords::PasswordHasherConfig;
use crate::signing::{KeyRing, StoreKeySource};
use crate::store::migration::Migrator;

/// A built identity service: database ready, listener bound.
#[derive(Debug)]
pub struct Application {
    bound: Bound,
    settings: Settings,
    state: Arc<State>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database).await?;
        let hasher = PasswordHasherConfig::new(&settings.passwords)?;
        bootstrap::run(&db, &settings.bootstrap, &hasher).await?;
        // A retired key verifies as long as any token it signed can live, plus one
        // reload interval during which another replica may still sign with it.
        let grace = settings.tokens.access_ttl()
            + Duration::from_secs(settings.tokens.key_reload_secs)
            + Duration::from_secs(60);
        let keys = Arc::new(
            KeyRing::load(
                db.clone(),
                grace,
                Duration::from_secs(settings.tokens.key_rotation_secs),
            )
            .await?,
        );
        let verifier = Arc::new(Verifier::new(
            &settings.tokens.issuer,
            Arc::new(StoreKeySource { db: db.clone() }),
            Duration::from_secs(1),
        ));
        let state = Arc::new(State {
            db,
            keys,
            verifier,
            hasher,
            lockout: LockoutPolicy::new(&settings.lockout),
            tokens: settings.tokens.clone(),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            )),
        });
        let bound = server::bind(&settings.server).await?;
        Ok(Self { bound, settings, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    /// The database, for tests that inspect stored rows.
    pub fn db(&self) -> DatabaseConnection {
        self.state.db.clone()
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let mut background = server::Background::new();
        background.add({
            let keys = self.state.keys.clone();
            let every = Duration::from_secs(self.settings.tokens.key_reload_secs.max(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(err) = keys.maintain().await {
                        tracing::warn!(error = %err, "signing key maintenance failed");
                    }
                }
            })
        });
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(IdentityServiceServer::new(IdentityApi::new(self.state.clone()))),
            names: vec![SERVICE_NAME],
            auth: Some(AuthLayer::new(self.state.verifier.clone(), api::PUBLIC_METHODS)),
        };
        server::serve(self.bound, &self.settings.server, routes, shutdown).await
    }
}

/// Applies pending migrations and exits: the deployment hook's command.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = retail_kit::db::connect(&settings.database).await?;
    retail_kit::db::migrate::<Migrator>(&db).await
}
