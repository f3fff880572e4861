//! `retail-suite bench`: a gRPC load generator.
//!
//! Every run measures the bare echo service first, in the same process, at the same
//! concurrency and for the same duration, then the target RPC; it reports requests/s,
//! latency percentiles and errors for both, and the target's throughput as a share of
//! the echo's. Servers run in-process on loopback ports; the load generator shares the
//! machine with them, which the echo baseline accounts for.

#[path = "bench_analytics.rs"]
mod analytics;
#[path = "bench_gateway.rs"]
mod gateway;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::echo::pb::EchoRequest;
use crate::echo::pb::echo_service_client::EchoServiceClient;
use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use retail_kit::config::ServerSettings;
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as pb};
use secrecy::SecretString;
use tonic::transport::Channel;

/// What to measure besides the echo baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Only the echo baseline.
    Echo,
    /// identity GetCurrentPrincipal: token verification and the server stack.
    IdentityWhoami,
    /// identity GetUser: token verification plus a primary-key read.
    IdentityGetUser,
    /// identity ListPublicKeys: an unauthenticated read of the key table.
    IdentityListPublicKeys,
    /// membership IdentifyMember by phone on a cache hit (a hot set of 1,000 members).
    MembershipIdentify,
    /// membership GetMember on a cache miss: every request a different member.
    MembershipGetMiss,
    /// membership RegisterMember: a new member with two identifiers and a tag.
    MembershipRegister,
    /// catalog BatchGetSkus of 50 random SKUs among the seeded ones (default 100,000),
    /// with the SKU cache primed (every seeded SKU read once before measuring).
    CatalogBatchGet,
    /// The same with the SKU cache off: every SKU read from the database.
    CatalogBatchGetUncached,
    /// catalog ReserveStock of one unit then CommitReservation: one request is both.
    CatalogReserveCommit,
    /// orders PlaceOrder (member, one line): the saga over membership and catalog.
    OrdersPlace,
    /// orders PlaceOrder then PayOrder; also the lags from payment to points visible,
    /// to a partner's target progress visible and to revenue visible in analytics.
    OrdersPlacePay,
    /// analytics IngestTouchpoints of 500 touchpoints; against PostgreSQL's COPY.
    AnalyticsIngest,
    /// analytics KPI queries (sales, store funnel, satisfaction) over a loaded history.
    AnalyticsKpi,
    /// The partner gateway: GET /v1/orders/{id} with an API key, over HTTP/1.1
    /// keep-alive (one connection per worker), against orders' GetOrder straight
    /// over gRPC with the partner's token in the same run.
    GatewayGetOrder,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::IdentityWhoami => "identity.GetCurrentPrincipal",
            Self::IdentityGetUser => "identity.GetUser",
            Self::IdentityListPublicKeys => "identity.ListPublicKeys",
            Self::MembershipIdentify => "membership.IdentifyMember (hit)",
            Self::MembershipGetMiss => "membership.GetMember (miss)",
            Self::MembershipRegister => "membership.RegisterMember",
            Self::CatalogBatchGet => "catalog.BatchGetSkus (50)",
            Self::CatalogBatchGetUncached => "catalog.BatchGetSkus (50, no cache)",
            Self::CatalogReserveCommit => "catalog.ReserveStock+Commit",
            Self::OrdersPlace => "orders.PlaceOrder",
            Self::OrdersPlacePay => "orders.PlaceOrder+PayOrder",
            Self::AnalyticsIngest => "analytics.IngestTouchpoints",
            Self::AnalyticsKpi => "analytics KPI queries",
            Self::GatewayGetOrder => "gateway GET /v1/orders/{id}",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The RPC to measure.
    #[arg(long, value_enum, default_value = "identity-whoami")]
    pub target: Target,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long each measurement runs (ignored when --requests is given).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop each measurement after this many requests instead of after --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Unmeasured warm-up before each measurement.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Database of the measured service; default: a temporary SQLite file.
    #[arg(long, env = "RETAIL_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis for membership's cache; default: the in-process cache.
    #[arg(long, env = "RETAIL_BENCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Database connections of each measured service's pool (`database.max_connections`).
    /// The order benchmarks run five services on one PostgreSQL: on a small machine
    /// fewer connections each keep its backends from crowding the cores.
    #[arg(long, default_value_t = 16)]
    pub db_connections: u32,
    /// Members seeded before a membership benchmark.
    #[arg(long, default_value_t = 100_000)]
    pub seed_members: u64,
    /// SKUs seeded before catalog-batch-get.
    #[arg(long, default_value_t = 100_000)]
    pub seed_skus: u64,
    /// Paid orders loaded before analytics-kpi.
    #[arg(long, default_value_t = 100_000)]
    pub seed_orders: u64,
    /// Touchpoints loaded before analytics-kpi.
    #[arg(long, default_value_t = 100_000)]
    pub seed_touchpoints: u64,
    /// Slices a timed measurement is cut into, alternating with equal slices of the
    /// echo baseline, so both see the same machine (a shared machine's speed drifts).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// The running echo service the target alternates with.
    #[arg(skip)]
    baseline: Option<Arc<Baseline>>,
}

type BoxedCall = Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, Result<(), tonic::Status>> + Send + Sync>;

/// The echo service and what was measured of it, slice by slice, during the run.
struct Baseline {
    call: BoxedCall,
    report: std::sync::Mutex<Option<Report>>,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline").finish_non_exhaustive()
    }
}

impl Baseline {
    async fn measure(&self, concurrency: usize, slice: Duration) -> anyhow::Result<()> {
        let call = self.call.clone();
        let report = measure("echo (baseline)", concurrency, Plan::Duration(slice), move |w| call(w)).await?;
        let mut total = self.report.lock().unwrap_or_else(|p| p.into_inner());
        match total.as_mut() {
            Some(total) => total.merge(&report)?,
            None => *total = Some(report),
        }
        Ok(())
    }
}

/// Figures of one measurement.
#[derive(Debug, Clone)]
pub struct Report {
    pub label: String,
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl Report {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Adds a later slice of the same measurement.
    fn merge(&mut self, other: &Report) -> anyhow::Result<()> {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latency_us
            .add(&other.latency_us)
            .context("failed to merge latency histograms")
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

enum Plan {
    Duration(Duration),
    Requests(u64),
}

/// Runs `call` from `concurrency` workers and records each call's latency.
async fn measure<F, Fut>(label: &str, concurrency: usize, plan: Plan, call: F) -> anyhow::Result<Report>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let limit = match plan {
        Plan::Requests(n) => Some(n),
        Plan::Duration(_) => None,
    };
    let bar = match plan {
        Plan::Duration(d) => {
            let bar = ProgressBar::new(d.as_millis() as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>32} [{bar:30}] {elapsed}/{duration} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        }
        Plan::Requests(n) => {
            let bar = ProgressBar::new(n);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>32} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        }
    };
    bar.set_prefix(label.to_owned());

    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (call, stop, issued, done) = (call.clone(), stop.clone(), issued.clone(), done.clone());
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut errors = 0u64;
                let mut first_error = None;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(limit) = limit
                        && issued.fetch_add(1, Ordering::Relaxed) >= limit
                    {
                        break;
                    }
                    let t = Instant::now();
                    let result = call(worker).await;
                    histogram.saturating_record(t.elapsed().as_micros().max(1) as u64);
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Err(status) = result {
                        errors += 1;
                        first_error.get_or_insert(status);
                    }
                }
                Ok::<_, anyhow::Error>((histogram, errors, first_error))
            })
        })
        .collect();

    // Drive the progress bar and the stop signal.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match plan {
            Plan::Duration(d) => {
                bar.set_position(started.elapsed().as_millis().min(d.as_millis()) as u64);
                if started.elapsed() >= d {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            Plan::Requests(n) => {
                let finished = done.load(Ordering::Relaxed);
                bar.set_position(finished.min(n));
                if finished >= n {
                    break;
                }
            }
        }
        bar.set_message(format!("{} requests", done.load(Ordering::Relaxed)));
    }

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let (h, e, f) = worker.await.context("a load worker panicked")??;
        latency.add(&h).context("failed to merge latency histograms")?;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    if let Some(status) = first_error {
        eprintln!("{label}: first error: {:?} {}", status.code(), status.message());
    }
    Ok(Report {
        label: label.to_owned(),
        concurrency,
        requests: latency.len(),
        errors,
        elapsed,
        latency_us: latency,
    })
}

async fn channels(addr: std::net::SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        out.push(
            Channel::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("failed to connect to {addr}"))?,
        );
    }
    Ok(out)
}

fn plan(args: &BenchArgs) -> Plan {
    match args.requests {
        Some(n) => Plan::Requests(n),
        None => Plan::Duration(args.duration),
    }
}

/// Warm-up, then measurement: a timed one in `--rounds` slices, each followed by an
/// equal slice of the echo baseline.
async fn run<F, Fut>(label: &str, args: &BenchArgs, call: F) -> anyhow::Result<Report>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    if !args.warmup.is_zero() {
        measure(
            &format!("{label} (warm-up)"),
            args.concurrency,
            Plan::Duration(args.warmup),
            call.clone(),
        )
        .await?;
    }
    let (Plan::Duration(total), Some(baseline)) = (plan(args), &args.baseline) else {
        return measure(label, args.concurrency, plan(args), call).await;
    };
    let rounds = args.rounds.max(1);
    let slice = total / rounds;
    let mut report: Option<Report> = None;
    for _ in 0..rounds {
        let part = measure(label, args.concurrency, Plan::Duration(slice), call.clone()).await?;
        match report.as_mut() {
            Some(r) => r.merge(&part)?,
            None => report = Some(part),
        }
        baseline.measure(args.concurrency, slice).await?;
    }
    report.context("no round was measured")
}

fn loopback() -> ServerSettings {
    ServerSettings {
        host: "127.0.0.1".into(),
        port: 0,
        concurrency_limit: 4096,
        ..ServerSettings::default()
    }
}

/// Starts the echo service; returns how to call it and how to stop it.
async fn start_echo(args: &BenchArgs) -> anyhow::Result<(Arc<Baseline>, Running)> {
    let settings = loopback();
    let bound = retail_kit::server::bind(&settings).await?;
    let addr = bound.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::echo::serve(bound, settings, async move {
        let _ = rx.await;
    }));
    let clients: Vec<_> = channels(addr, args.connections)
        .await?
        .into_iter()
        .map(EchoServiceClient::new)
        .collect();
    let payload = vec![7u8; 64];
    let call: BoxedCall = Arc::new(move |worker| {
        let mut client = clients[worker % clients.len()].clone();
        let payload = payload.clone();
        Box::pin(async move { client.echo(EchoRequest { payload }).await.map(|_| ()) })
    });
    let baseline = Arc::new(Baseline {
        call,
        report: std::sync::Mutex::new(None),
    });
    Ok((baseline, Running { addr, stop, task }))
}

const BENCH_ADMIN_PASSWORD: &str = "bench-Boss-Passw0rd-1";

async fn bench_identity(args: &BenchArgs, target: Target) -> anyhow::Result<Report> {
    let scratch = Scratch::create(args.database_url.as_deref(), &["identity"]).await?;
    let mut settings = retail_identity::Settings {
        server: loopback(),
        ..Default::default()
    };
    settings.database.url = scratch.url(0);
    settings.database.max_connections = args.db_connections;
    settings.bootstrap.admin_password = SecretString::from(BENCH_ADMIN_PASSWORD);
    let app = retail_identity::Application::build(settings).await?;
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let clients: Vec<_> = channels(addr, args.connections)
        .await?
        .into_iter()
        .map(IdentityServiceClient::new)
        .collect();
    let token = clients[0]
        .clone()
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: BENCH_ADMIN_PASSWORD.into(),
        })
        .await?
        .into_inner()
        .tokens
        .context("login returned no token")?
        .access_token;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let me = clients[0]
        .clone()
        .get_current_principal(authed(&bearer, pb::GetCurrentPrincipalRequest {}))
        .await?
        .into_inner();
    let user_name = format!("users/{}", me.subject);

    let report = match target {
        Target::IdentityWhoami => {
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                let request = authed(&bearer, pb::GetCurrentPrincipalRequest {});
                async move { client.get_current_principal(request).await.map(|_| ()) }
            })
            .await?
        }
        Target::IdentityGetUser => {
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                let request = authed(
                    &bearer,
                    pb::GetUserRequest {
                        name: user_name.clone(),
                    },
                );
                async move { client.get_user(request).await.map(|_| ()) }
            })
            .await?
        }
        _ => {
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                async move { client.list_public_keys(pb::ListPublicKeysRequest {}).await.map(|_| ()) }
            })
            .await?
        }
    };
    let _ = tx.send(());
    server.await??;
    scratch.drop().await?;
    Ok(report)
}

async fn bench_membership(args: &BenchArgs, target: Target) -> anyhow::Result<Report> {
    use retail_proto::membership::membership_service_client::MembershipServiceClient;
    use retail_proto::membership::{self as mpb};

    let scratch = Scratch::create(args.database_url.as_deref(), &["membership"]).await?;
    let identity = Running::identity(scratch.dir.path()).await?;
    let mut settings = retail_membership::Settings {
        server: loopback(),
        ..Default::default()
    };
    settings.auth.identity_url = format!("http://{}", identity.addr);
    settings.database.url = scratch.url(0);
    settings.database.max_connections = args.db_connections;
    settings.cache.redis_url = args.redis_url.clone();
    settings.cache.namespace = format!("bench-{}", rand::random::<u32>());
    let membership = retail_membership::Application::build(settings).await?;
    let addr = membership.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(membership.run(async move {
        let _ = rx.await;
    }));

    let bearer_text = identity.admin_bearer().await?;
    let membership_channels = channels(addr, args.connections).await?;
    let (phone_run, names) =
        crate::seed::register_members(membership_channels[0].clone(), &bearer_text, args.seed_members, 32).await?;
    if let Some(rss) = resident_mib() {
        println!("seeded {} members; resident memory {rss:.1} MiB", names.len());
    }
    // Calls are made as a POS terminal makes them: with its own service token, which
    // carries the scopes a till needs (the admin's carries every scope, and HTTP/2
    // sends the authorization header in full with every call).
    let pos_bearer = identity
        .service_bearer(
            "bench-pos",
            &bearer_text,
            &["membership.members.read", "membership.members.write"],
        )
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = pos_bearer.parse()?;
    let clients: Vec<_> = membership_channels
        .into_iter()
        .map(MembershipServiceClient::new)
        .collect();
    let names = Arc::new(names);
    let cursor = Arc::new(AtomicU64::new(0));
    let report = match target {
        Target::MembershipIdentify => {
            let hot = names.len().clamp(1, 1000) as u64;
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                let i = cursor.fetch_add(1, Ordering::Relaxed) % hot;
                let request = authed(
                    &bearer,
                    mpb::IdentifyMemberRequest {
                        identifier: Some(mpb::Identifier {
                            kind: mpb::IdentifierKind::Phone as i32,
                            value: crate::seed::seed_phone(phone_run, i),
                            channel: String::new(),
                        }),
                    },
                );
                async move { client.identify_member(request).await.map(|_| ()) }
            })
            .await?
        }
        Target::MembershipGetMiss => {
            anyhow::ensure!(!names.is_empty(), "--seed-members must be positive for this target");
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                let i = cursor.fetch_add(1, Ordering::Relaxed) as usize % names.len();
                let request = authed(
                    &bearer,
                    mpb::GetMemberRequest {
                        name: names[i].clone(),
                        ..Default::default()
                    },
                );
                async move { client.get_member(request).await.map(|_| ()) }
            })
            .await?
        }
        _ => {
            let fresh: u32 = (phone_run + 500) % 1000;
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                let i = 5_000_000 + cursor.fetch_add(1, Ordering::Relaxed);
                let request = authed(
                    &bearer,
                    mpb::RegisterMemberRequest {
                        member: Some(mpb::Member {
                            display_name: format!("Bench {i}"),
                            identifiers: vec![mpb::Identifier {
                                kind: mpb::IdentifierKind::Phone as i32,
                                value: crate::seed::seed_phone(fresh, i),
                                channel: String::new(),
                            }],
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                );
                async move { client.register_member(request).await.map(|_| ()) }
            })
            .await?
        }
    };
    let _ = tx.send(());
    server.await??;
    identity.stop().await?;
    scratch.drop().await?;
    Ok(report)
}

/// A server running in this process until [`Running::stop`].
struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Identity on a temporary SQLite file with the bench admin, to issue tokens.
    async fn identity(dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut settings = retail_identity::Settings {
            server: loopback(),
            ..Default::default()
        };
        settings.database.url = SecretString::from(format!("sqlite://{}/identity.db?mode=rwc", dir.display()));
        settings.bootstrap.admin_password = SecretString::from(BENCH_ADMIN_PASSWORD);
        // A run logs in once; loading a large data set takes longer than the
        // default token lifetime.
        settings.tokens.access_ttl_secs = 24 * 3600;
        let app = retail_identity::Application::build(settings).await?;
        let addr = app.local_addr();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Ok(Self { addr, stop, task })
    }

    async fn admin_bearer(&self) -> anyhow::Result<String> {
        let channel = channels(self.addr, 1).await?.remove(0);
        crate::seed::admin_bearer(channel, BENCH_ADMIN_PASSWORD).await
    }

    async fn service_bearer(&self, client_id: &str, admin_bearer: &str, scopes: &[&str]) -> anyhow::Result<String> {
        let channel = channels(self.addr, 1).await?.remove(0);
        crate::seed::service_bearer(channel, admin_bearer, client_id, scopes).await
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

async fn bench_catalog(args: &BenchArgs, target: Target) -> anyhow::Result<Report> {
    use retail_proto::catalog::catalog_service_client::CatalogServiceClient;
    use retail_proto::catalog::inventory_service_client::InventoryServiceClient;
    use retail_proto::catalog::{self as cpb};

    let scratch = Scratch::create(args.database_url.as_deref(), &["catalog"]).await?;
    let identity = Running::identity(scratch.dir.path()).await?;
    let mut settings = retail_catalog::Settings {
        server: loopback(),
        ..Default::default()
    };
    settings.auth.identity_url = format!("http://{}", identity.addr);
    settings.database.url = scratch.url(0);
    settings.database.max_connections = args.db_connections;
    if target == Target::CatalogBatchGetUncached {
        settings.sku_cache.capacity = 0;
    }
    let catalog = retail_catalog::Application::build(settings).await?;
    let addr = catalog.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(catalog.run(async move {
        let _ = rx.await;
    }));
    let catalog = Running { addr, stop, task };

    let bearer_text = identity.admin_bearer().await?;
    let catalog_channels = channels(catalog.addr, args.connections).await?;
    let (count, stocked) = match target {
        Target::CatalogBatchGet | Target::CatalogBatchGetUncached => (args.seed_skus.max(50), 0),
        _ => (1_000, 1_000),
    };
    let names =
        crate::seed::seed_catalog(catalog_channels[0].clone(), &bearer_text, count, stocked, 1_000_000, 16).await?;
    if let Some(rss) = resident_mib() {
        println!("seeded {} SKUs; resident memory {rss:.1} MiB", names.len());
    }
    let bearer: tonic::metadata::MetadataValue<_> = bearer_text.parse()?;
    let names = Arc::new(names);
    let cursor = Arc::new(AtomicU64::new(0));
    let report = match target {
        Target::CatalogBatchGet | Target::CatalogBatchGetUncached => {
            let clients: Vec<_> = catalog_channels.into_iter().map(CatalogServiceClient::new).collect();
            if target == Target::CatalogBatchGet {
                // Prime the SKU cache: every seeded SKU read once, 100 per request.
                let mut client = clients[0].clone();
                for chunk in names.chunks(100) {
                    let request = authed(&bearer, cpb::BatchGetSkusRequest { names: chunk.to_vec() });
                    client.batch_get_skus(request).await?;
                }
            }
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                // 50 SKUs spread over the whole catalog, different every request.
                let start = cursor.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919);
                let picked = (0..50u64)
                    .map(|k| names[(start.wrapping_add(k * 1_999) % names.len() as u64) as usize].clone())
                    .collect();
                let request = authed(&bearer, cpb::BatchGetSkusRequest { names: picked });
                async move { client.batch_get_skus(request).await.map(|_| ()) }
            })
            .await?
        }
        _ => {
            let clients: Vec<_> = catalog_channels.into_iter().map(InventoryServiceClient::new).collect();
            let run_id: u32 = rand::random();
            run(target.label(), args, move |worker| {
                let mut client = clients[worker % clients.len()].clone();
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let order = format!("bench-{run_id}-{i}");
                let reserve = authed(
                    &bearer,
                    cpb::ReserveStockRequest {
                        order_id: order.clone(),
                        lines: vec![cpb::ReservationLine {
                            sku: names[(i % names.len() as u64) as usize].clone(),
                            quantity: 1,
                        }],
                        ttl: None,
                    },
                );
                let commit = authed(
                    &bearer,
                    cpb::CommitReservationRequest {
                        name: format!("reservations/{order}"),
                    },
                );
                async move {
                    client.reserve_stock(reserve).await?;
                    client.commit_reservation(commit).await.map(|_| ())
                }
            })
            .await?
        }
    };
    catalog.stop().await?;
    identity.stop().await?;
    scratch.drop().await?;
    Ok(report)
}

/// One new database per service for one benchmark: on the PostgreSQL server of
/// `base`, or SQLite files in a temporary directory. [`Scratch::drop`] removes the
/// PostgreSQL ones, so runs neither meet each other's data nor pile up.
struct Scratch {
    base: Option<String>,
    dir: tempfile::TempDir,
    urls: Vec<String>,
}

impl Scratch {
    async fn create(base: Option<&str>, services: &[&str]) -> anyhow::Result<Self> {
        use sea_orm::ConnectionTrait;
        let dir = tempfile::tempdir()?;
        let base = base.filter(|b| b.starts_with("postgres")).map(str::to_owned);
        let mut urls = Vec::new();
        for service in services {
            match &base {
                Some(base) => {
                    let name = format!("bench_{service}_{}", rand::random::<u32>());
                    let admin = sea_orm::Database::connect(base.as_str()).await?;
                    admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
                    admin.close().await?;
                    // Same server and options (`?sslmode=...`), another database.
                    let (path, options) = base.split_once('?').map_or((base.as_str(), ""), |(p, o)| (p, o));
                    let (head, _) = path.rsplit_once('/').context("the database URL names no database")?;
                    let options = if options.is_empty() {
                        String::new()
                    } else {
                        format!("?{options}")
                    };
                    urls.push(format!("{head}/{name}{options}"));
                }
                None => urls.push(format!("sqlite://{}/{service}.db?mode=rwc", dir.path().display())),
            }
        }
        Ok(Self { base, dir, urls })
    }

    fn url(&self, i: usize) -> SecretString {
        SecretString::from(self.urls.get(i).cloned().unwrap_or_default())
    }

    /// Updates the PostgreSQL databases' planner statistics (`ANALYZE`).
    async fn analyze(&self) -> anyhow::Result<()> {
        self.each_database("ANALYZE").await
    }

    /// Vacuums the PostgreSQL databases and updates their statistics
    /// (`VACUUM (ANALYZE)`): what autovacuum does to a deployment's tables in
    /// the minutes after a bulk load (dead row versions of the rewritten rows
    /// removed, pages marked all-visible), whether or not autovacuum runs here.
    async fn vacuum_analyze(&self) -> anyhow::Result<()> {
        self.each_database("VACUUM (ANALYZE)").await
    }

    async fn each_database(&self, sql: &str) -> anyhow::Result<()> {
        use sea_orm::ConnectionTrait;
        if self.base.is_none() {
            return Ok(());
        }
        for url in &self.urls {
            let db = sea_orm::Database::connect(url.as_str()).await?;
            db.execute_unprepared(sql).await?;
            db.close().await?;
        }
        Ok(())
    }

    /// Drops the PostgreSQL databases (after every service using them stopped).
    async fn drop(self) -> anyhow::Result<()> {
        use sea_orm::ConnectionTrait;
        if let Some(base) = &self.base {
            let admin = sea_orm::Database::connect(base.as_str()).await?;
            for url in &self.urls {
                let path = url.split_once('?').map_or(url.as_str(), |(p, _)| p);
                if let Some((_, name)) = path.rsplit_once('/') {
                    admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await?;
                }
            }
            admin.close().await?;
        }
        drop(self.dir);
        Ok(())
    }
}

/// One paid order in this many is a probe of the lag from payment to points, and
/// as many again probes of the lag from payment to a partner's target progress.
const PROBE_EVERY: u64 = 50;

/// Partners seeded for the partner probes (one probe each).
const PARTNER_PROBES: u64 = 300;

/// The unmeasured load that gives the order benchmarks' tables their first rows.
const FIRST_ROWS_LOAD: Duration = Duration::from_secs(3);

async fn bench_orders(args: &BenchArgs, target: Target) -> anyhow::Result<Report> {
    use retail_proto::membership::membership_service_client::MembershipServiceClient;
    use retail_proto::membership::{self as mpb};
    use retail_proto::orders::orders_service_client::OrdersServiceClient;
    use retail_proto::orders::{self as opb};
    use retail_proto::partner::target_service_client::TargetServiceClient;
    use retail_proto::partner::{self as ppb};

    let scratch = Scratch::create(
        args.database_url.as_deref(),
        &["identity", "membership", "catalog", "orders", "partner", "analytics"],
    )
    .await?;
    let mut settings = crate::settings::SuiteSettings::default();
    settings.identity.server = loopback();
    settings.membership.server = loopback();
    settings.catalog.server = loopback();
    settings.orders.server = loopback();
    settings.partner.server = loopback();
    settings.analytics.server = loopback();
    settings.analytics.http.port = None;
    settings.gateway.server = loopback();
    settings.identity.bootstrap.admin_password = SecretString::from(BENCH_ADMIN_PASSWORD);
    settings.membership.cache.redis_url = args.redis_url.clone();
    settings.membership.cache.namespace = format!("bench-{}", rand::random::<u32>());
    for (db, url) in [
        &mut settings.identity.database,
        &mut settings.membership.database,
        &mut settings.catalog.database,
        &mut settings.orders.database,
        &mut settings.partner.database,
        &mut settings.analytics.database,
    ]
    .into_iter()
    .zip(&scratch.urls)
    {
        db.url = SecretString::from(url.clone());
        db.max_connections = args.db_connections;
    }
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = futures::FutureExt::shared(futures::FutureExt::boxed(async move {
        let _ = rx.await;
    }));
    let launched = crate::up::launch(&mut settings, shutdown).await?;
    let bearer_text =
        crate::seed::admin_bearer(channels(launched.identity, 1).await?.remove(0), BENCH_ADMIN_PASSWORD).await?;
    let skus = crate::seed::seed_catalog(
        channels(launched.catalog, 1).await?.remove(0),
        &bearer_text,
        1_000,
        1_000,
        1_000_000,
        16,
    )
    .await?;
    let membership_channel = channels(launched.membership, 1).await?.remove(0);
    let (_, members) = crate::seed::register_members(membership_channel.clone(), &bearer_text, 2_000, 16).await?;
    // Members who never bought: their first points show when the payment has
    // reached membership through the orders event log.
    let (_, probes) = crate::seed::register_members(membership_channel.clone(), &bearer_text, 2_000, 16).await?;
    // Partners whose first sale is a probe of the lag from payment to the
    // partner's target progress (channel-partner follows the orders log too).
    let partner_channel = channels(launched.partner, 1).await?.remove(0);
    let partner_probes = if target == Target::OrdersPlacePay {
        crate::seed_partner::seed_partners(
            partner_channel.clone(),
            &bearer_text,
            &format!("bench{}", rand::random::<u32>()),
            PARTNER_PROBES,
            0,
            100_000_000,
            16,
        )
        .await?
    } else {
        Vec::new()
    };
    // Partner sales are priced from the partner level's wholesale list: the probes
    // (new partners, level `registered`) buy the first SKU, which is on it.
    if !partner_probes.is_empty()
        && let Some(first) = skus.first()
    {
        crate::seed::set_partner_prices(
            channels(launched.catalog, 1).await?.remove(0),
            &bearer_text,
            "registered",
            std::slice::from_ref(first),
            &settings.orders.orders.currency,
            50_00,
        )
        .await?;
    }
    let bearer: tonic::metadata::MetadataValue<_> = bearer_text.parse()?;
    let clients: Vec<_> = channels(launched.orders, args.connections)
        .await?
        .into_iter()
        .map(OrdersServiceClient::new)
        .collect();
    let (skus, members, probes) = (Arc::new(skus), Arc::new(members), Arc::new(probes));
    let cursor = Arc::new(AtomicU64::new(0));
    let next_probe = Arc::new(AtomicU64::new(0));
    let lags = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let partner_lags = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let partner_probes = Arc::new(partner_probes);
    let next_partner_probe = Arc::new(AtomicU64::new(0));
    let revenue_lags = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let analytics_channel = channels(launched.analytics, 1).await?.remove(0);
    let run_id: u32 = rand::random();
    let pay = target == Target::OrdersPlacePay;
    let call = {
        let (lags, partner_lags, revenue_lags) = (lags.clone(), partner_lags.clone(), revenue_lags.clone());
        move |worker: usize| {
            let mut client = clients[worker % clients.len()].clone();
            let members_client = MembershipServiceClient::new(membership_channel.clone());
            let targets_client = TargetServiceClient::new(partner_channel.clone());
            let analytics_client = retail_proto::analytics::analytics_service_client::AnalyticsServiceClient::new(
                analytics_channel.clone(),
            );
            let i = cursor.fetch_add(1, Ordering::Relaxed);
            // Halfway between two member probes, a partner probe: a partner
            // order of a partner that never sold before.
            let partner_probe = (pay && (i + PROBE_EVERY / 2).is_multiple_of(PROBE_EVERY))
                .then(|| next_partner_probe.fetch_add(1, Ordering::Relaxed) as usize)
                .and_then(|p| partner_probes.get(p).cloned());
            // Every 50th paid order is a probe member's first. Each probe's profile
            // is loaded twice (before and after its points), seven statements a
            // load: one in 50 keeps that under 0.3 statements an order.
            let probe = (pay && i.is_multiple_of(PROBE_EVERY))
                .then(|| next_probe.fetch_add(1, Ordering::Relaxed) as usize)
                .filter(|p| *p < probes.len())
                .map(|p| probes[p].clone());
            let member = probe
                .clone()
                .unwrap_or_else(|| members[i as usize % members.len()].clone());
            let partner_id = partner_probe.as_ref().map(|p| p.id.clone()).unwrap_or_default();
            // A probe is a store sale in a store of its own: its revenue shows in
            // analytics under that store once the payment is projected.
            let probe_store = probe.as_ref().map(|_| format!("probe-{run_id}-{i}"));
            let place = authed(
                &bearer,
                opb::PlaceOrderRequest {
                    order: Some(opb::Order {
                        member,
                        channel: if partner_probe.is_some() {
                            opb::OrderChannel::Partner as i32
                        } else if probe_store.is_some() {
                            opb::OrderChannel::Store as i32
                        } else {
                            opb::OrderChannel::Online as i32
                        },
                        partner_id,
                        store: probe_store.clone().unwrap_or_default(),
                        lines: vec![opb::OrderLine {
                            sku: if partner_probe.is_some() {
                                skus[0].clone()
                            } else {
                                skus[i as usize % skus.len()].clone()
                            },
                            quantity: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: format!("bench-{run_id}-{i}"),
                },
            );
            let (bearer, lags, partner_lags, revenue_lags) =
                (bearer.clone(), lags.clone(), partner_lags.clone(), revenue_lags.clone());
            async move {
                let order = client.place_order(place).await?.into_inner();
                if !pay {
                    return Ok(());
                }
                let paid = authed(
                    &bearer,
                    opb::PayOrderRequest {
                        name: order.name.clone(),
                        payment: Some(opb::Payment {
                            reference: format!("psp-{i}"),
                            amount: order.total.clone(),
                            pay_time: None,
                        }),
                        request_id: format!("bench-pay-{run_id}-{i}"),
                    },
                );
                client.pay_order(paid).await?;
                if let Some(partner) = partner_probe {
                    let paid_at = Instant::now();
                    let bearer = bearer.clone();
                    tokio::spawn(async move {
                        let mut targets = targets_client;
                        while paid_at.elapsed() < Duration::from_secs(30) {
                            let got = targets
                                .get_target(authed(
                                    &bearer,
                                    ppb::GetTargetRequest {
                                        name: partner.target.clone(),
                                    },
                                ))
                                .await;
                            if got.is_ok_and(|t| t.into_inner().progress_minor > 0) {
                                let lag = paid_at.elapsed().as_micros() as u64;
                                let _ = partner_lags.lock().unwrap_or_else(|p| p.into_inner()).record(lag);
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    });
                }
                if let Some(store) = probe_store {
                    let paid_at = Instant::now();
                    let bearer = bearer.clone();
                    tokio::spawn(async move {
                        let mut analytics = analytics_client;
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs() as i64)
                            .unwrap_or(0);
                        let period = Some(retail_proto::analytics::Period {
                            start_time: Some(prost_types::Timestamp {
                                seconds: now - 3_600,
                                nanos: 0,
                            }),
                            end_time: Some(prost_types::Timestamp {
                                seconds: now + 3_600,
                                nanos: 0,
                            }),
                        });
                        while paid_at.elapsed() < Duration::from_secs(30) {
                            let got = analytics
                                .get_sales_report(authed(
                                    &bearer,
                                    retail_proto::analytics::GetSalesReportRequest {
                                        period,
                                        dimension: "store".into(),
                                        dimension_value: store.clone(),
                                    },
                                ))
                                .await;
                            if got.is_ok_and(|r| r.into_inner().current.is_some_and(|c| c.revenue_minor > 0)) {
                                let lag = paid_at.elapsed().as_micros() as u64;
                                let _ = revenue_lags.lock().unwrap_or_else(|p| p.into_inner()).record(lag);
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    });
                }
                if let Some(member) = probe {
                    let paid_at = Instant::now();
                    tokio::spawn(async move {
                        let mut members = members_client;
                        while paid_at.elapsed() < Duration::from_secs(30) {
                            let got = members
                                .get_member(authed(
                                    &bearer,
                                    mpb::GetMemberRequest {
                                        name: member.clone(),
                                        ..Default::default()
                                    },
                                ))
                                .await;
                            if got.is_ok_and(|m| m.into_inner().points_balance > 0) {
                                let lag = paid_at.elapsed().as_micros() as u64;
                                let _ = lags.lock().unwrap_or_else(|p| p.into_inner()).record(lag);
                                return;
                            }
                            // Coarse enough that the polling itself adds no load
                            // worth counting, fine enough against a 1 s target.
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    });
                }
                Ok(())
            }
        }
    };
    // Tables in use have statistics: autovacuum analyzes them within minutes of
    // their first rows. These start empty, and without statistics PostgreSQL
    // would keep the plans it made for them empty (sequential scans, on tables
    // growing by the thousand) for the whole run. So a short unmeasured load gives
    // them rows, and ANALYZE what the first minutes of a deployment give them.
    measure(
        &format!("{} (first rows)", target.label()),
        args.concurrency,
        Plan::Duration(FIRST_ROWS_LOAD),
        call.clone(),
    )
    .await?;
    scratch.analyze().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    lags.lock().unwrap_or_else(|p| p.into_inner()).reset();
    partner_lags.lock().unwrap_or_else(|p| p.into_inner()).reset();
    revenue_lags.lock().unwrap_or_else(|p| p.into_inner()).reset();
    let report = run(target.label(), args, call).await?;
    if pay {
        // Let the last probes land.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let lags = lags.lock().unwrap_or_else(|p| p.into_inner());
        println!(
            "payment -> points visible on the member: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lags.len(),
            lags.value_at_quantile(0.5) as f64 / 1000.0,
            lags.value_at_quantile(0.99) as f64 / 1000.0,
            lags.max() as f64 / 1000.0
        );
        let partner_lags = partner_lags.lock().unwrap_or_else(|p| p.into_inner());
        println!(
            "payment -> partner target progress visible: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            partner_lags.len(),
            partner_lags.value_at_quantile(0.5) as f64 / 1000.0,
            partner_lags.value_at_quantile(0.99) as f64 / 1000.0,
            partner_lags.max() as f64 / 1000.0
        );
        let lags = revenue_lags.lock().unwrap_or_else(|p| p.into_inner());
        println!(
            "payment -> revenue visible in analytics: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lags.len(),
            lags.value_at_quantile(0.5) as f64 / 1000.0,
            lags.value_at_quantile(0.99) as f64 / 1000.0,
            lags.max() as f64 / 1000.0
        );
    }
    let _ = stop.send(());
    launched.wait().await?;
    scratch.drop().await?;
    Ok(report)
}

fn authed<T>(bearer: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}

/// Resident memory of this process, from /proc (Linux only).
pub fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn print_table(reports: &[Report], baseline: &Report) {
    println!(
        "{:<34} {:>5} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "rpc", "conc", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "vs echo"
    );
    for r in reports {
        println!(
            "{:<34} {:>5} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.0}%",
            r.label,
            r.concurrency,
            r.requests,
            r.errors,
            r.throughput(),
            r.ms(0.50),
            r.ms(0.90),
            r.ms(0.99),
            r.latency_us.max() as f64 / 1000.0,
            100.0 * r.throughput() / baseline.throughput().max(f64::EPSILON),
        );
    }
    if let Some(rss) = resident_mib() {
        println!("resident memory of the process after the run: {rss:.1} MiB");
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be positive");
    println!(
        "benchmark: {} at concurrency {} over {} connection(s), {}",
        args.target.label(),
        args.concurrency,
        args.connections,
        match args.requests {
            Some(n) => format!("{n} requests"),
            None => format!(
                "{} each, in {} rounds alternating with the echo baseline",
                humantime::format_duration(args.duration),
                args.rounds.max(1)
            ),
        }
    );
    let (baseline, echo) = start_echo(&args).await?;
    let mut args = args;
    args.baseline = Some(baseline.clone());
    let mut reports = Vec::new();
    match args.target {
        Target::Echo => {}
        Target::MembershipIdentify | Target::MembershipGetMiss | Target::MembershipRegister => {
            reports.push(bench_membership(&args, args.target).await?)
        }
        Target::OrdersPlace | Target::OrdersPlacePay => reports.push(bench_orders(&args, args.target).await?),
        Target::GatewayGetOrder => reports.extend(gateway::bench_gateway(&args).await?),
        Target::AnalyticsIngest | Target::AnalyticsKpi => {
            reports.push(analytics::bench_analytics(&args, args.target).await?)
        }
        Target::CatalogBatchGet | Target::CatalogBatchGetUncached | Target::CatalogReserveCommit => {
            reports.push(bench_catalog(&args, args.target).await?)
        }
        _ => reports.push(bench_identity(&args, args.target).await?),
    }
    // Measured alongside the target, or on its own (echo only, or a run by --requests).
    let measured = baseline.report.lock().unwrap_or_else(|p| p.into_inner()).take();
    let baseline = match measured {
        Some(report) => report,
        None => {
            args.baseline = None;
            let call = baseline.call.clone();
            run("echo (baseline)", &args, move |w| call(w)).await?
        }
    };
    echo.stop().await?;
    reports.insert(0, baseline.clone());
    print_table(&reports, &baseline);
    if args.target == Target::GatewayGetOrder
        && let [_, through_gateway, direct, ..] = reports.as_slice()
    {
        gateway::print_comparison(through_gateway, direct);
    }
    Ok(())
}
