//! `retail-suite up` as a person runs it: a real process, its printed table and
//! credentials, and SIGTERM while it is busy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as pb};
use tonic::transport::Channel;

struct Suite {
    child: Child,
    /// Where identity listens.
    addr: String,
    /// Where every service listens, by the name in the printed table.
    addrs: std::collections::HashMap<String, String>,
    data_dir: tempfile::TempDir,
}

impl Drop for Suite {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Starts `retail-suite up` on a free port and waits for its table of services.
fn start_suite() -> Suite {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_retail-suite"))
        .args(["up", "--data-dir"])
        .arg(data_dir.path())
        .env("RETAIL_SUITE__IDENTITY__SERVER__PORT", "0")
        .env("RETAIL_SUITE__MEMBERSHIP__SERVER__PORT", "0")
        .env("RETAIL_SUITE__CATALOG__SERVER__PORT", "0")
        .env("RETAIL_SUITE__ORDERS__SERVER__PORT", "0")
        .env("RETAIL_SUITE__PARTNER__SERVER__PORT", "0")
        .env("RETAIL_SUITE__ANALYTICS__SERVER__PORT", "0")
        .env("RETAIL_SUITE__ANALYTICS__HTTP__PORT", "0")
        .env("RETAIL_SUITE__GATEWAY__SERVER__PORT", "0")
        .env_remove("RETAIL_SUITE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data_dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addrs = std::collections::HashMap::new();
    // The table lists every service and the dashboard; the login hint follows it.
    while !addrs.contains_key("dashboard") {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let log = std::fs::read_to_string(data_dir.path().join("stderr.log")).unwrap_or_default();
            panic!("the suite did not print its table; its log:\n{log}");
        };
        let words: Vec<_> = line.split_whitespace().collect();
        if let [name, addr, ..] = words.as_slice()
            && [
                "identity",
                "membership",
                "catalog",
                "orders",
                "partner",
                "analytics",
                "dashboard",
            ]
            .contains(name)
        {
            addrs.insert((*name).to_owned(), (*addr).to_owned());
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Suite {
        child,
        addr: addrs["identity"].clone(),
        addrs,
        data_dir,
    }
}

async fn connect(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the suite did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `grpcurl list` shows for a port: its reflection's services, sorted.
async fn listed_services(addr: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(connect(addr).await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn up_serves_every_service_and_the_printed_credentials_log_in() {
    let mut suite = start_suite();
    for (service, grpc_name) in [
        ("identity", "retail.identity.v1.IdentityService"),
        ("membership", "retail.membership.v1.MembershipService"),
        ("catalog", "retail.catalog.v1.InventoryService"),
        ("orders", "retail.orders.v1.OrdersService"),
        ("partner", "retail.partner.v1.PartnerService"),
        ("analytics", "retail.analytics.v1.AnalyticsService"),
    ] {
        let channel = connect(&suite.addrs[service]).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: grpc_name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    // The dashboard's URL is printed; without a session it sends to its login page.
    let dashboard = suite.addrs["dashboard"]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let get = |path: &'static str| {
        let dashboard = dashboard.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&dashboard).await.unwrap();
            let request = format!("GET {path} HTTP/1.0\r\nHost: {dashboard}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        }
    };
    let home = get("/").await;
    assert!(home.starts_with("HTTP/1.0 303"), "{home}");
    assert!(home.to_lowercase().contains("location: /login"), "{home}");
    let login = get("/login").await;
    assert!(
        login.starts_with("HTTP/1.0 200") && login.contains("Sign in"),
        "{login}"
    );
    // Each port's reflection lists what that port serves, and health and reflection.
    for (service, served) in [
        ("identity", &["retail.identity.v1.IdentityService"][..]),
        (
            "membership",
            &[
                "retail.events.v1.EventLogService",
                "retail.membership.v1.EngagementService",
                "retail.membership.v1.LoyaltyService",
                "retail.membership.v1.MembershipService",
            ][..],
        ),
        (
            "catalog",
            &[
                "retail.catalog.v1.CatalogService",
                "retail.catalog.v1.CouponService",
                "retail.catalog.v1.InventoryService",
                "retail.catalog.v1.PricingService",
                "retail.events.v1.EventLogService",
            ][..],
        ),
        (
            "orders",
            &["retail.events.v1.EventLogService", "retail.orders.v1.OrdersService"][..],
        ),
        (
            "partner",
            &[
                "retail.events.v1.EventLogService",
                "retail.partner.v1.DealService",
                "retail.partner.v1.IncentiveService",
                "retail.partner.v1.LeadService",
                "retail.partner.v1.OpportunityService",
                "retail.partner.v1.PartnerService",
                "retail.partner.v1.PricePolicyService",
                "retail.partner.v1.QuoteService",
                "retail.partner.v1.TargetService",
                "retail.partner.v1.VisitService",
            ][..],
        ),
        (
            "analytics",
            &[
                "retail.analytics.v1.AnalyticsAdminService",
                "retail.analytics.v1.AnalyticsService",
                "retail.analytics.v1.TouchpointService",
                "retail.events.v1.EventLogService",
            ][..],
        ),
    ] {
        let mut expected: Vec<&str> = served.to_vec();
        expected.extend([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]);
        expected.sort();
        assert_eq!(listed_services(&suite.addrs[service]).await, expected, "{service}");
    }
    let channel = connect(&suite.addr).await;

    let password = std::fs::read_to_string(suite.data_dir.path().join("admin-password")).unwrap();
    let mut client = IdentityServiceClient::new(channel);
    let token = client
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: password.trim().into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let mut request = tonic::Request::new(pb::GetCurrentPrincipalRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let me = client.get_current_principal(request).await.unwrap().into_inner();
    assert_eq!(me.roles, vec![pb::Role::Admin as i32]);

    sigterm(&suite.child);
    assert!(wait_exit(&mut suite.child, Duration::from_secs(30)).success());
}

#[tokio::test]
async fn sigterm_under_load_lets_in_flight_rpcs_finish_and_exits_zero() {
    let mut suite = start_suite();
    let password = std::fs::read_to_string(suite.data_dir.path().join("admin-password")).unwrap();
    let channel = connect(&suite.addr).await;
    let started = Instant::now();

    // Logins are slow on purpose (argon2id at production cost), so many are in flight.
    // Each uses a username of its own: no lockout interferes, every answer is a
    // deliberate UNAUTHENTICATED after a full password check.
    let _ = password;
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let mut client = IdentityServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                for n in 0.. {
                    let begun = started.elapsed();
                    let outcome = client
                        .login(pb::LoginRequest {
                            username: format!("visitor-{worker}-{n}"),
                            password: "not-a-real-Passw0rd".into(),
                        })
                        .await;
                    let ended = started.elapsed();
                    let code = match outcome {
                        Ok(_) => tonic::Code::Ok,
                        Err(status) => status.code(),
                    };
                    results.push((begun, ended, code));
                    if code != tonic::Code::Unauthenticated || ended > Duration::from_secs(20) {
                        return results;
                    }
                }
                results
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let signalled = started.elapsed();
    sigterm(&suite.child);

    let mut drained = 0;
    let mut total = 0;
    for worker in workers {
        for (begun, ended, code) in worker.await.unwrap() {
            total += 1;
            // Anything that reached the server well before the signal must finish
            // with its real answer.
            if begun + Duration::from_millis(20) < signalled {
                assert_eq!(code, tonic::Code::Unauthenticated, "an in-flight login was cut off");
                if ended > signalled {
                    drained += 1;
                }
            }
        }
    }
    assert!(total > 8, "load ran ({total} logins)");
    assert!(drained > 0, "some logins were in flight at the signal and completed");
    let status = wait_exit(&mut suite.child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
}

/// Runs `retail-suite serve <service>` with `env` until it exits or `within` passes,
/// and returns what it printed on stdout and stderr.
fn serve_output(service: &str, env: &[(&str, &str)], within: Duration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("RETAIL_{}__", service.to_uppercase());
    let mut command = Command::new(env!("CARGO_BIN_EXE_retail-suite"));
    command
        .args(["serve", service])
        .env(
            format!("{prefix}DATABASE__URL"),
            format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()),
        )
        .env(format!("{prefix}SERVER__PORT"), "0")
        .env(format!("{prefix}DATABASE__STARTUP_RETRY_MS"), "300")
        .stdout(std::fs::File::create(dir.path().join("out.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap());
    // Identity has no `auth` section: it is the issuer.
    if service != "identity" {
        command.env(format!("{prefix}AUTH__IDENTITY_URL"), "http://127.0.0.1:1");
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
    let err = std::fs::read_to_string(dir.path().join("err.log")).unwrap();
    format!("{out}{err}")
}

/// Regression: a service-account list given as one JSON value was refused with the
/// whole value, client secret included, in the error the process printed. Every
/// secret-bearing setting of every service gets a bad value here, refused at start
/// or failing at run time, and none may appear in what the process prints.
#[test]
fn no_refused_or_failing_secret_setting_is_printed_by_a_service_process() {
    let identity_accounts =
        r#"[{"client_id":"orders","client_secret":"s3cr3t-account-0123456789-0123456789","scopes":[],"x":1}]"#;
    // What, which service, its environment, seconds to let it run.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u64);
    let cases: Vec<Case> = vec![
        (
            "service accounts as JSON with an unknown key",
            "identity",
            vec![("RETAIL_IDENTITY__BOOTSTRAP__SERVICE_ACCOUNTS", identity_accounts)],
            10,
        ),
        (
            "a service account secret too short",
            "identity",
            vec![(
                "RETAIL_IDENTITY__BOOTSTRAP__SERVICE_ACCOUNTS",
                r#"[{"client_id":"orders","client_secret":"s3cr3t","scopes":[]}]"#,
            )],
            10,
        ),
        (
            "a weak admin password",
            "identity",
            vec![("RETAIL_IDENTITY__BOOTSTRAP__ADMIN_PASSWORD", "s3cr3t")],
            20,
        ),
        (
            "a database URL of another database",
            "identity",
            vec![("RETAIL_IDENTITY__DATABASE__URL", "mysql://root:s3cr3t@db/identity")],
            10,
        ),
        (
            "an unreachable PostgreSQL with a password",
            "identity",
            vec![(
                "RETAIL_IDENTITY__DATABASE__URL",
                "postgres://u:s3cr3t@127.0.0.1:1/identity",
            )],
            20,
        ),
        (
            "a PostgreSQL URL that does not parse",
            "catalog",
            vec![(
                "RETAIL_CATALOG__DATABASE__URL",
                "postgres://u:s3cr3t@127.0.0.1:port/catalog",
            )],
            20,
        ),
        (
            "a client secret given as a table",
            "orders",
            vec![("RETAIL_ORDERS__AUTH__CLIENT_SECRET__X", "s3cr3t")],
            10,
        ),
        (
            "a Redis URL of another scheme",
            "membership",
            vec![("RETAIL_MEMBERSHIP__CACHE__REDIS_URL", "http://:s3cr3t@127.0.0.1:1")],
            10,
        ),
        (
            "an unreachable Redis with a password and an unreachable identity",
            "membership",
            vec![
                ("RETAIL_MEMBERSHIP__CACHE__REDIS_URL", "redis://:s3cr3t@127.0.0.1:1"),
                ("RETAIL_MEMBERSHIP__AUTH__CLIENT_ID", "membership"),
                ("RETAIL_MEMBERSHIP__AUTH__CLIENT_SECRET", "s3cr3t-client-0123456789"),
            ],
            4,
        ),
    ];
    for (what, service, env, secs) in cases {
        let printed = serve_output(service, &env, Duration::from_secs(secs));
        assert!(!printed.trim().is_empty(), "{what}: the process printed nothing");
        assert!(!printed.contains("s3cr3t"), "{what}:\n{printed}");
    }
}

#[test]
fn migrating_one_service_uses_its_own_settings_and_creates_its_tables_there() {
    // Regression: `migrate` read only the suite's settings, so a service's
    // `RETAIL_<SERVICE>__DATABASE__URL` was ignored and the tables went elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let output = Command::new(env!("CARGO_BIN_EXE_retail-suite"))
        .args(["migrate", "orders"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "RETAIL_ORDERS__DATABASE__URL",
            format!("sqlite://{}?mode=rwc", db.display()),
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The schema is in the file or, in WAL mode until a checkpoint, in its log.
    let mut bytes = std::fs::read(&db).expect("the orders database was created where configured");
    bytes.extend(std::fs::read(dir.path().join("orders.db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("order_stock_work"), "orders' tables are in it");
    assert!(!dir.path().join("data").exists(), "nothing written anywhere else");
}

#[test]
fn a_service_on_an_unmigrated_database_refuses_to_start_and_names_the_migrate_command() {
    // Regression: with `migrate_on_start = false` on an empty database, membership
    // reported SERVING and answered INTERNAL, and identity exited with a bare
    // "internal error".
    for service in ["identity", "membership", "catalog", "orders"] {
        let key = format!("RETAIL_{}__DATABASE__MIGRATE_ON_START", service.to_uppercase());
        let printed = serve_output(service, &[(key.as_str(), "false")], Duration::from_secs(20));
        assert!(
            printed.contains(&format!("run `retail-suite migrate {service}`")),
            "{service}:\n{printed}"
        );
        assert!(printed.contains("migration(s) behind"), "{service}:\n{printed}");
    }
}
