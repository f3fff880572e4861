//! `retail-suite`: runs the suite, a single service, migrations, or benchmarks.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: the services allocate many small, short-lived buffers per request on
/// every worker thread, which it serves faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use retail_suite::{bench, seed, up};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The retail suite: run every service in one process, or load-test them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in this process (embedded default: SQLite, local ports).
    Up(up::UpArgs),
    /// Apply every service's pending database migrations and exit.
    Migrate {
        #[arg(long, env = "RETAIL_SUITE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run one service on its own, configured by its `RETAIL_<SERVICE>__...` variables
    /// (one container image, one subcommand per service).
    Serve {
        #[arg(value_enum)]
        service: Service,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load-test an RPC against the bare echo baseline measured in the same run.
    Bench(bench::BenchArgs),
    /// Load a demo dataset into a running suite through its APIs.
    Seed(seed::SeedArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Service {
    Identity,
    Membership,
    Catalog,
    Orders,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up(args) => up::up(args).await,
        Command::Migrate { config, data_dir } => {
            let settings = up::load_settings(config.as_deref(), data_dir)?;
            let _telemetry = retail_kit::telemetry::init("retail-suite", &settings.telemetry)?;
            retail_identity::migrate(&settings.identity).await?;
            retail_membership::migrate(&settings.membership).await?;
            retail_catalog::migrate(&settings.catalog).await?;
            retail_orders::migrate(&settings.orders).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve { service, config } => match service {
            Service::Identity => {
                let settings: retail_identity::Settings = retail_kit::config::load("identity", config.as_deref())?;
                let _telemetry = retail_kit::telemetry::init("identity", &settings.telemetry)?;
                let app = retail_identity::Application::build(settings).await?;
                tracing::info!(address = %app.local_addr(), "identity listening");
                app.run(retail_kit::server::shutdown_signal()).await
            }
            Service::Membership => {
                let settings: retail_membership::Settings = retail_kit::config::load("membership", config.as_deref())?;
                let _telemetry = retail_kit::telemetry::init("membership", &settings.telemetry)?;
                let app = retail_membership::Application::build(settings).await?;
                tracing::info!(address = %app.local_addr(), "membership listening");
                app.run(retail_kit::server::shutdown_signal()).await
            }
            Service::Catalog => {
                let settings: retail_catalog::Settings = retail_kit::config::load("catalog", config.as_deref())?;
                let _telemetry = retail_kit::telemetry::init("catalog", &settings.telemetry)?;
                let app = retail_catalog::Application::build(settings).await?;
                tracing::info!(address = %app.local_addr(), "catalog listening");
                app.run(retail_kit::server::shutdown_signal()).await
            }
            Service::Orders => {
                let settings: retail_orders::Settings = retail_kit::config::load("orders", config.as_deref())?;
                let _telemetry = retail_kit::telemetry::init("orders", &settings.telemetry)?;
                let app = retail_orders::Application::build(settings).await?;
                tracing::info!(address = %app.local_addr(), "orders listening");
                app.run(retail_kit::server::shutdown_signal()).await
            }
        },
        Command::Seed(args) => {
            let telemetry = retail_kit::config::TelemetrySettings {
                log_filter: "warn".into(),
                ..Default::default()
            };
            let _telemetry = retail_kit::telemetry::init("retail-suite-seed", &telemetry)?;
            seed::seed(args).await
        }
        Command::Bench(args) => {
            // The benchmark prints its own table; keep logs to warnings.
            let telemetry = retail_kit::config::TelemetrySettings {
                log_filter: "warn".into(),
                ..Default::default()
            };
            let _telemetry = retail_kit::telemetry::init("retail-suite-bench", &telemetry)?;
            bench::bench(args).await
        }
    }
}
