//! `retail-catalog`: runs the catalog-inventory service, or applies its migrations.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: the services allocate many small, short-lived buffers per request on
/// every worker thread, which it serves faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "The retail suite's catalog-inventory service")]
struct Cli {
    /// TOML configuration file; `RETAIL_CATALOG__...` variables override it.
    #[arg(long, env = "RETAIL_CATALOG_CONFIG")]
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: retail_catalog::Settings = retail_kit::config::load("catalog", cli.config.as_deref())?;
    let _telemetry = retail_kit::telemetry::init("catalog", &settings.telemetry)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => retail_catalog::migrate(&settings).await,
        Command::Serve => {
            let app = retail_catalog::Application::build(settings).await?;
            tracing::info!(address = %app.local_addr(), "catalog listening");
            app.run(retail_kit::server::shutdown_signal()).await
        }
    }
}
