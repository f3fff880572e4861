//! One service of the suite, as its own binary and `retail-suite serve|migrate` run
//! it: settings from the defaults, an optional file and `RETAIL_<NAME>__...`
//! variables (validated, naming the bad key), telemetry, then serve until SIGTERM or
//! apply the migrations and exit. Each service implements [`Service`] once in its
//! `lib.rs`; its `main.rs` is [`main`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
pub use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{TelemetrySettings, Validate};

/// A service: how to configure, build, run and migrate it.
#[async_trait::async_trait]
pub trait Service: Sized + Send + 'static {
    /// `identity`, `orders`, ...: `RETAIL_<NAME>__...` configures it, and its logs,
    /// traces and metrics carry it.
    const NAME: &'static str;
    /// The name of its own binary (`retail-orders`).
    const BINARY: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    type Settings: DeserializeOwned + Serialize + Default + Validate + Send + Sync + 'static;

    fn telemetry(settings: &Self::Settings) -> &TelemetrySettings;
    /// Connects, migrates when configured to, binds the listener.
    async fn build(settings: Self::Settings) -> anyhow::Result<Self>;
    fn local_addr(&self) -> SocketAddr;
    /// Serves until `shutdown` resolves, then drains.
    async fn serve(self, shutdown: BoxFuture<'static, ()>) -> anyhow::Result<()>;
    /// Applies the pending migrations of the service's database.
    async fn migrate(settings: &Self::Settings) -> anyhow::Result<()>;
}

fn settings<S: Service>(config: Option<&Path>) -> anyhow::Result<S::Settings> {
    Ok(crate::config::load(S::NAME, config)?)
}

/// Serves `S` configured from `config` and the environment until SIGTERM.
pub async fn serve<S: Service>(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = settings::<S>(config)?;
    let _telemetry = crate::telemetry::init(S::NAME, S::telemetry(&settings))?;
    let app = S::build(settings).await.map_err(|err| {
        if err.chain().any(|cause| cause.is::<crate::db::SchemaBehind>()) {
            err.context(format!(
                "{name} cannot start on this database: run `retail-suite migrate {name}` (or `{binary} migrate`) \
                 with the same settings first",
                name = S::NAME,
                binary = S::BINARY,
            ))
        } else {
            err.context(format!("failed to start {}", S::NAME))
        }
    })?;
    tracing::info!(service = S::NAME, address = %app.local_addr(), "listening");
    app.serve(Box::pin(crate::server::shutdown_signal())).await
}

/// Applies the migrations of `S`'s database, configured like [`serve`].
pub async fn migrate<S: Service>(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = settings::<S>(config)?;
    let _telemetry = crate::telemetry::init(S::NAME, S::telemetry(&settings))?;
    S::migrate(&settings)
        .await
        .with_context(|| format!("failed to migrate {}", S::NAME))?;
    tracing::info!(service = S::NAME, "migrations applied");
    Ok(())
}

#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file; `RETAIL_<SERVICE>__...` variables override it.
    /// Defaults to `RETAIL_<SERVICE>_CONFIG`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC until SIGTERM (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

/// The `main` of a service's binary: `[--config FILE] [serve|migrate]`.
pub async fn main<S: Service>() -> anyhow::Result<()> {
    let matches = Cli::command().name(S::BINARY).about(S::ABOUT).get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let config = cli.config.or_else(|| {
        std::env::var_os(format!("RETAIL_{}_CONFIG", S::NAME.to_uppercase().replace('-', "_"))).map(PathBuf::from)
    });
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::<S>(config.as_deref()).await,
        Command::Migrate => migrate::<S>(config.as_deref()).await,
    }
}
