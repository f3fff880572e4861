//! `retail-suite up`: every service in one process, on the embedded default (SQLite
//! files under the data directory, fixed local ports) unless configured otherwise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::FutureExt;
use rand::Rng;
use retail_identity::domain::fields::{Password, Username};
use secrecy::{ExposeSecret, SecretString};

use retail_kit::telemetry::scoped;

use crate::settings::SuiteSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// TOML file with `[identity]`, ... sections; `RETAIL_SUITE__IDENTITY__...`
    /// variables override it.
    #[arg(long, env = "RETAIL_SUITE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the SQLite files and the admin password file.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Loads the settings with the command line applied.
pub fn load_settings(config: Option<&Path>, data_dir: Option<PathBuf>) -> anyhow::Result<SuiteSettings> {
    let mut settings: SuiteSettings = retail_kit::config::load("suite", config)?;
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    settings.relocate_data();
    Ok(settings)
}

/// The first admin's password: from configuration, else from the data directory,
/// else generated once and kept there (owner-only), never printed or logged.
fn admin_password(settings: &SuiteSettings) -> anyhow::Result<(SecretString, Option<PathBuf>)> {
    let configured = settings.identity.bootstrap.admin_password.expose_secret();
    if !configured.is_empty() {
        return Ok((SecretString::from(configured.to_owned()), None));
    }
    let path = settings.data_dir.join("admin-password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok((SecretString::from(existing.trim().to_owned()), Some(path)));
    }
    let password = generate_admin_password(&settings.identity.bootstrap.admin_username);
    write_private(&path, &password)?;
    Ok((SecretString::from(password), Some(path)))
}

/// A random password that identity's password policy accepts for `username`. About one
/// draw in forty has no digit (policy: not only letters), so draws are repeated until
/// one passes.
fn generate_admin_password(username: &str) -> String {
    let username = Username::parse("bootstrap.admin_username", username).ok();
    loop {
        let candidate = random_secret(24);
        if Password::parse("bootstrap.admin_password", &candidate, username.as_ref()).is_ok() {
            return candidate;
        }
    }
}

/// A random string of `len` letters and digits (no look-alikes).
fn random_secret(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// A database URL without its credentials, for printing.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Where the services of a launched suite listen, and their tasks.
#[derive(Debug)]
pub struct Launched {
    pub identity: SocketAddr,
    pub membership: SocketAddr,
    /// Membership's use cases, for driving its periodic jobs (tests run the
    /// campaign job with their own time).
    pub membership_app: std::sync::Arc<retail_membership::App>,
    pub catalog: SocketAddr,
    pub orders: SocketAddr,
    pub partner: SocketAddr,
    pub analytics: SocketAddr,
    /// Analytics' use cases, for driving its periodic jobs (tests publish member
    /// scores with their own time).
    pub analytics_app: std::sync::Arc<retail_analytics::app::App>,
    /// The analytics dashboard (HTTP), with `analytics.http.port` set.
    pub dashboard: Option<SocketAddr>,
    /// The partner gateway (HTTP).
    pub gateway: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Launched {
    /// Waits until every service has stopped (after `shutdown`).
    pub async fn wait(self) -> anyhow::Result<()> {
        for task in self.tasks {
            task.await.context("a service stopped abnormally")??;
        }
        Ok(())
    }
}

/// Resolves once every service of `callers` has stopped (or its task is gone).
async fn after_stopped(callers: Vec<tokio::sync::watch::Receiver<bool>>) {
    for mut stopped in callers {
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

/// Resolves on `shutdown` once the gateway (which calls the service) has stopped.
async fn after_stopped_and<S: std::future::Future<Output = ()>>(
    gateway: tokio::sync::watch::Receiver<bool>,
    shutdown: S,
) {
    shutdown.await;
    after_stopped(vec![gateway]).await;
}

/// Runs a service and says when it has stopped.
fn run_then_report<F>(run: F, stopped: tokio::sync::watch::Sender<bool>) -> tokio::task::JoinHandle<anyhow::Result<()>>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        let result = run.await;
        let _ = stopped.send(true);
        result
    })
}

/// Builds and starts every service with `settings`, wired to each other: service
/// accounts with fresh secrets (unless configured), identity's address for keys and
/// tokens, orders' downstreams (channel-partner's price policy for partner sales
/// among them), membership's and channel-partner's subscriptions to orders. Identity serves first: the others fetch its keys and their tokens at start.
///
/// On `shutdown` callers stop before the services they call, each after draining:
/// orders and analytics first (orders' sagas in flight still reach catalog and
/// membership), then catalog, membership and channel-partner, then identity (whose keys and tokens they
/// all use).
pub async fn launch<S>(settings: &mut SuiteSettings, shutdown: S) -> anyhow::Result<Launched>
where
    S: std::future::Future<Output = ()> + Clone + Send + 'static,
{
    for (client_id, auth, scopes) in [
        (
            "orders",
            &mut settings.orders.auth,
            &[
                "membership.members.read",
                "catalog.read",
                "inventory.reserve",
                "events.read",
                // Channel-partner's price policy prices partner sales: the
                // partner's level, special discounts and deal locks of an end
                // customer (`partner.read`) and using a special discount up
                // (`partner.write`).
                "partner.read",
                "partner.write",
            ][..],
        ),
        (
            "membership",
            &mut settings.membership.auth,
            // Coupon campaigns issue members' codes (catalog's IssueCouponCodes).
            &["events.read", "catalog.pricing.write"][..],
        ),
        (
            "partner",
            &mut settings.partner.auth,
            // Quotes: the level's wholesale list (`catalog.read`) and the order of
            // an accepted quote (`orders.write`).
            &["events.read", "catalog.read", "orders.write"][..],
        ),
        ("analytics", &mut settings.analytics.auth, &["events.read"][..]),
        // The gateway follows orders' and channel-partner's logs for webhooks.
        ("gateway", &mut settings.gateway.auth, &["events.read"][..]),
    ] {
        if auth.client_id.is_empty() {
            auth.client_id = client_id.into();
            auth.client_secret = SecretString::from(random_secret(40));
            settings
                .identity
                .bootstrap
                .service_accounts
                .push(retail_identity::settings::BootstrapServiceAccount {
                    client_id: client_id.into(),
                    client_secret: auth.client_secret.clone(),
                    scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                });
        }
    }
    let (orders_stopped, orders_done) = tokio::sync::watch::channel(false);
    let (catalog_stopped, catalog_done) = tokio::sync::watch::channel(false);
    let (membership_stopped, membership_done) = tokio::sync::watch::channel(false);
    let (partner_stopped, partner_done) = tokio::sync::watch::channel(false);
    let (analytics_stopped, analytics_done) = tokio::sync::watch::channel(false);
    let (identity_stopped, _) = tokio::sync::watch::channel(false);

    // Identity checks partner users and API keys against channel-partner, where it
    // listens at a known port (not with port 0, as benchmarks run it).
    if settings.identity.partners.url.is_none() && settings.partner.server.port != 0 {
        let host = match settings.partner.server.host.as_str() {
            "0.0.0.0" | "::" => "127.0.0.1",
            host => host,
        };
        settings.identity.partners.url = Some(format!("http://{host}:{}", settings.partner.server.port));
    }
    let identity = retail_identity::Application::build(settings.identity.clone()).await?;
    let identity_addr = identity.local_addr();
    let identity_url = format!("http://{identity_addr}");
    let mut tasks = vec![run_then_report(
        scoped(
            "identity",
            identity.run(after_stopped(vec![
                catalog_done,
                membership_done,
                partner_done,
                analytics_done,
            ])),
        ),
        identity_stopped,
    )];
    for auth in [
        &mut settings.membership.auth,
        &mut settings.catalog.auth,
        &mut settings.orders.auth,
        &mut settings.partner.auth,
        &mut settings.analytics.auth,
    ] {
        auth.identity_url = identity_url.clone();
    }
    let catalog = retail_catalog::Application::build(settings.catalog.clone()).await?;
    let catalog_addr = catalog.local_addr();
    // Coupon campaigns get their members' codes from catalog.
    if settings.membership.catalog.url.is_none() {
        settings.membership.catalog.url = Some(format!("http://{catalog_addr}"));
    }
    let membership = retail_membership::Application::build(settings.membership.clone()).await?;
    let membership_addr = membership.local_addr();
    // Channel-partner is bound before orders, whose partner sales its price policy
    // prices; it follows orders' event log once orders' address is known.
    if settings.partner.downstream.catalog_url.is_none() {
        settings.partner.downstream.catalog_url = Some(format!("http://{catalog_addr}"));
    }
    let partner = retail_channel_partner::Application::build(settings.partner.clone()).await?;
    let partner_addr = partner.local_addr();
    settings.orders.downstream.membership_url = format!("http://{membership_addr}");
    settings.orders.downstream.catalog_url = format!("http://{catalog_addr}");
    if settings.orders.downstream.partner_url.is_none() {
        settings.orders.downstream.partner_url = Some(format!("http://{partner_addr}"));
    }
    let orders = retail_orders::Application::build(settings.orders.clone()).await?;
    let orders_addr = orders.local_addr();
    // Membership earns from orders' event log.
    let membership = membership.with_orders_events_url(format!("http://{orders_addr}"));
    // Channel-partner counts partner sales from orders' event log.
    let partner = partner.with_orders_events_url(format!("http://{orders_addr}"));
    // Channel-partner places the orders of accepted quotes.
    let partner = match &settings.partner.downstream.orders_url {
        Some(_) => partner,
        None => partner.with_orders_url(format!("http://{orders_addr}")),
    };
    // Analytics follows every log.
    settings.analytics.sources.orders_url = Some(format!("http://{orders_addr}"));
    settings.analytics.sources.membership_url = Some(format!("http://{membership_addr}"));
    settings.analytics.sources.catalog_url = Some(format!("http://{catalog_addr}"));
    settings.analytics.sources.partner_url = Some(format!("http://{partner_addr}"));
    let analytics = retail_analytics::Application::build(settings.analytics.clone()).await?;
    let analytics_addr = analytics.local_addr();
    let dashboard_addr = analytics.dashboard_addr();
    let analytics_app = analytics.app();
    // Membership's overdue campaigns follow analytics' event log.
    let membership = membership.with_analytics_events_url(format!("http://{analytics_addr}"));
    let membership_app = membership.app();
    tasks.push(run_then_report(
        scoped("catalog", catalog.run(after_stopped(vec![orders_done.clone()]))),
        catalog_stopped,
    ));
    tasks.push(run_then_report(
        scoped("membership", membership.run(after_stopped(vec![orders_done.clone()]))),
        membership_stopped,
    ));
    tasks.push(run_then_report(
        scoped("partner", partner.run(after_stopped(vec![orders_done]))),
        partner_stopped,
    ));
    tasks.push(run_then_report(
        scoped("analytics", analytics.run(shutdown.clone())),
        analytics_stopped,
    ));
    // The partner gateway calls identity, channel-partner, catalog and orders with
    // its callers' tokens; it stops first.
    settings.gateway.auth.identity_url = identity_url.clone();
    settings.gateway.upstream.partner_url = format!("http://{partner_addr}");
    settings.gateway.upstream.catalog_url = format!("http://{catalog_addr}");
    settings.gateway.upstream.orders_url = format!("http://{orders_addr}");
    // Webhooks come from orders' and channel-partner's event logs.
    settings.gateway.webhooks.orders_events_url = Some(format!("http://{orders_addr}"));
    settings.gateway.webhooks.partner_events_url = Some(format!("http://{partner_addr}"));
    let gateway = retail_gateway::Application::build(settings.gateway.clone()).await?;
    let gateway_addr = gateway.local_addr();
    let (gateway_stopped, gateway_done) = tokio::sync::watch::channel(false);
    tasks.push(run_then_report(
        scoped("gateway", gateway.run(shutdown.clone())),
        gateway_stopped,
    ));
    tasks.push(run_then_report(
        scoped("orders", orders.run(after_stopped_and(gateway_done, shutdown))),
        orders_stopped,
    ));
    Ok(Launched {
        identity: identity_addr,
        membership: membership_addr,
        membership_app,
        catalog: catalog_addr,
        orders: orders_addr,
        partner: partner_addr,
        analytics: analytics_addr,
        analytics_app,
        dashboard: dashboard_addr,
        gateway: gateway_addr,
        tasks,
    })
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut settings = load_settings(args.config.as_deref(), args.data_dir)?;
    let _telemetry = retail_kit::telemetry::init_services(
        "retail-suite",
        &settings.telemetry,
        &[
            ("identity", &settings.identity.telemetry),
            ("membership", &settings.membership.telemetry),
            ("catalog", &settings.catalog.telemetry),
            ("orders", &settings.orders.telemetry),
            ("partner", &settings.partner.telemetry),
            ("analytics", &settings.analytics.telemetry),
            ("gateway", &settings.gateway.telemetry),
        ],
    )?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("failed to create {}", settings.data_dir.display()))?;
    let (password, password_file) = admin_password(&settings)?;
    settings.identity.bootstrap.admin_password = password;

    let dbs = [
        ("identity", redact_url(settings.identity.database.url.expose_secret())),
        (
            "membership",
            redact_url(settings.membership.database.url.expose_secret()),
        ),
        ("catalog", redact_url(settings.catalog.database.url.expose_secret())),
        ("orders", redact_url(settings.orders.database.url.expose_secret())),
        ("partner", redact_url(settings.partner.database.url.expose_secret())),
        ("analytics", redact_url(settings.analytics.database.url.expose_secret())),
    ];
    let gateway_db = redact_url(settings.gateway.database.url.expose_secret());
    let cache = match &settings.membership.cache.redis_url {
        Some(url) => format!("redis {}", redact_url(url)),
        None => "in-process".into(),
    };
    let shutdown = retail_kit::server::shutdown_signal().shared();
    let launched = launch(&mut settings, shutdown).await?;
    let identity_addr = launched.identity;

    println!();
    println!("retail suite is up (Ctrl-C or SIGTERM to stop)");
    println!();
    println!("  {:<12} {:<22} database", "service", "address");
    for ((service, db), addr) in dbs.iter().zip([
        launched.identity,
        launched.membership,
        launched.catalog,
        launched.orders,
        launched.partner,
        launched.analytics,
    ]) {
        let note = if *service == "membership" {
            format!(" (cache: {cache})")
        } else {
            String::new()
        };
        println!("  {service:<12} {addr:<22} {db}{note}");
    }
    if let Some(addr) = launched.dashboard {
        let url = format!("http://{addr}/");
        println!(
            "  {:<12} {url:<22} KPI dashboard of analytics (sign in as a staff user)",
            "dashboard"
        );
    }
    println!(
        "  {:<12} {:<22} HTTP: http://{}/v1/openapi.json; {gateway_db}",
        "gateway",
        launched.gateway.to_string(),
        launched.gateway
    );
    println!();
    let username = &settings.identity.bootstrap.admin_username;
    match &password_file {
        Some(path) => {
            println!("log in as `{username}` with the password in {}:", path.display());
            println!(
                "  grpcurl -plaintext -d \"{{\\\"username\\\":\\\"{username}\\\",\\\"password\\\":\\\"$(cat {})\\\"}}\" {identity_addr} retail.identity.v1.IdentityService/Login",
                path.display()
            );
        }
        None => println!("log in as `{username}` with the configured bootstrap password"),
    }
    println!();

    launched.wait().await?;
    tracing::info!("retail suite stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_from_database_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/identity"),
            "postgres://***@db:5432/identity"
        );
        assert_eq!(
            redact_url("sqlite://data/identity.db?mode=rwc"),
            "sqlite://data/identity.db?mode=rwc"
        );
    }

    #[test]
    fn generated_admin_passwords_always_meet_the_password_policy() {
        // One draw in about forty of random_secret(24) alone has no digit.
        let admin = Username::parse("u", "admin").unwrap();
        for _ in 0..2_000 {
            let password = generate_admin_password("admin");
            assert!(Password::parse("p", &password, Some(&admin)).is_ok());
        }
    }

    #[test]
    fn the_generated_admin_password_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SuiteSettings {
            data_dir: dir.path().to_path_buf(),
            ..SuiteSettings::default()
        };
        let (first, path) = admin_password(&settings).unwrap();
        let (second, _) = admin_password(&settings).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().len() >= 20);
        let admin = Username::parse("u", &settings.identity.bootstrap.admin_username).unwrap();
        assert!(Password::parse("p", first.expose_secret(), Some(&admin)).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path.unwrap()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
