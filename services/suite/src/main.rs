//! `retail-suite`: runs the suite, a single service, migrations, or benchmarks.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: the services allocate many small, short-lived buffers per request on
/// every worker thread, which it serves faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use retail_kit::service as kit;
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
    /// Apply pending database migrations and exit: of one service, configured by its
    /// `RETAIL_<SERVICE>__...` variables, or of every service from the suite's
    /// settings.
    Migrate {
        #[arg(value_enum)]
        service: Option<Service>,
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
    ChannelPartner,
    Analytics,
    /// The partner gateway (HTTP; its database holds the webhooks).
    Gateway,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up(args) => up::up(args).await,
        // One service, configured like `serve` (its `RETAIL_<SERVICE>__...` variables):
        // what a deployment's migration job runs.
        Command::Migrate {
            service: Some(service),
            config,
            ..
        } => match service {
            Service::Identity => kit::migrate::<retail_identity::Application>(config.as_deref()).await,
            Service::Membership => kit::migrate::<retail_membership::Application>(config.as_deref()).await,
            Service::Catalog => kit::migrate::<retail_catalog::Application>(config.as_deref()).await,
            Service::Orders => kit::migrate::<retail_orders::Application>(config.as_deref()).await,
            Service::ChannelPartner => kit::migrate::<retail_channel_partner::Application>(config.as_deref()).await,
            Service::Analytics => kit::migrate::<retail_analytics::Application>(config.as_deref()).await,
            Service::Gateway => kit::migrate::<retail_gateway::Application>(config.as_deref()).await,
        },
        // Every service, from the suite's settings (as `up` runs them).
        Command::Migrate {
            service: None,
            config,
            data_dir,
        } => {
            let settings = up::load_settings(config.as_deref(), data_dir)?;
            let _telemetry = retail_kit::telemetry::init("retail-suite", &settings.telemetry)?;
            retail_identity::migrate(&settings.identity).await?;
            retail_membership::migrate(&settings.membership).await?;
            retail_catalog::migrate(&settings.catalog).await?;
            retail_orders::migrate(&settings.orders).await?;
            retail_channel_partner::migrate(&settings.partner).await?;
            retail_analytics::migrate(&settings.analytics).await?;
            retail_gateway::migrate(&settings.gateway).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve { service, config } => match service {
            Service::Identity => kit::serve::<retail_identity::Application>(config.as_deref()).await,
            Service::Membership => kit::serve::<retail_membership::Application>(config.as_deref()).await,
            Service::Catalog => kit::serve::<retail_catalog::Application>(config.as_deref()).await,
            Service::Orders => kit::serve::<retail_orders::Application>(config.as_deref()).await,
            Service::ChannelPartner => kit::serve::<retail_channel_partner::Application>(config.as_deref()).await,
            Service::Analytics => kit::serve::<retail_analytics::Application>(config.as_deref()).await,
            Service::Gateway => kit::serve::<retail_gateway::Application>(config.as_deref()).await,
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
