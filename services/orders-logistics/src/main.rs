//! `retail-orders`: runs the orders-logistics service, or applies its migrations.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: the services allocate many small, short-lived buffers per request on
/// every worker thread, which it serves faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "The retail suite's orders-logistics service")]
struct Cli {
    /// TOML configuration file; `RETAIL_ORDERS__...` variables override it.
    #[arg(long, env = "RETAIL_ORDERS_CONFIG")]
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
    let settings: retail_orders::Settings = retail_kit::config::load("orders", cli.config.as_deref())?;
    let _telemetry = retail_kit::telemetry::init("orders", &settings.telemetry)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => retail_orders::migrate(&settings).await,
        Command::Serve => {
            let app = retail_orders::Application::build(settings).await?;
            tracing::info!(address = %app.local_addr(), "orders listening");
            app.run(retail_kit::server::shutdown_signal()).await
        }
    }
}
