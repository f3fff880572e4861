//! The dashboard over real HTTP on port 0: sign-in through a stand-in for
//! identity's password login, the cookies' flags, CSRF, refresh and logout,
//! what each role may see, escaping of user-supplied values, and CSV exports that
//! agree with the gRPC answers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use retail_analytics::dashboard::campaigns::{CampaignPage, CampaignResult, CampaignsError, Report};
use retail_analytics::dashboard::session::SessionError;
use retail_analytics::dashboard::{Campaigns, Sessions, Tokens};
use retail_kit::auth::PrincipalKind;
use retail_proto::analytics::{self as pb};
use retail_proto::events as ev;
use retail_testkit::TestDatabase;
use retail_testkit::tokens::{claims, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::{T0, history};

/// Identity's password login as the dashboard sees it: users with roles and
/// scopes; refresh tokens valid until logged out.
#[derive(Debug, Default)]
struct FakeIdentity {
    users: BTreeMap<String, (String, Vec<String>, Vec<String>)>,
    live: Mutex<BTreeSet<String>>,
    logged_out: Mutex<Vec<String>>,
    next: Mutex<u64>,
}

impl FakeIdentity {
    fn new() -> Self {
        let mut users = BTreeMap::new();
        let user = |roles: &[&str], scopes: &[&str]| {
            (
                "pw".to_owned(),
                roles.iter().map(|r| (*r).to_owned()).collect(),
                scopes.iter().map(|s| (*s).to_owned()).collect(),
            )
        };
        users.insert("ana".into(), user(&["analyst"], &["analytics.read", "orders.read"]));
        users.insert(
            "max".into(),
            user(&["store_manager"], &["analytics.read", "orders.write"]),
        );
        users.insert("sue".into(), user(&["support"], &["orders.read"]));
        // A store manager without stores assigned.
        users.insert("mia".into(), user(&["store_manager"], &["analytics.read"]));
        Self {
            users,
            ..Self::default()
        }
    }

    fn issue(&self, username: &str) -> Tokens {
        let (_, roles, scopes) = &self.users[username];
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let mut c = claims(username, PrincipalKind::Staff, &scopes, None);
        c.roles = roles.clone();
        // max manages store BER (the `stores` claim identity issues).
        if username == "max" {
            c.stores = vec!["BER".into()];
        }
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let refresh = format!("rt-{username}-{next}");
        self.live.lock().unwrap().insert(refresh.clone());
        Tokens {
            access: sign(&c),
            refresh,
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(86_400),
        }
    }
}

#[async_trait::async_trait]
impl Sessions for FakeIdentity {
    async fn login(&self, username: &str, password: &str) -> Result<Tokens, SessionError> {
        match self.users.get(username) {
            Some((pw, _, _)) if pw == password => Ok(self.issue(username)),
            _ => Err(SessionError::Denied),
        }
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Tokens, SessionError> {
        if !self.live.lock().unwrap().remove(refresh_token) {
            return Err(SessionError::Denied);
        }
        let username = refresh_token.split('-').nth(1).unwrap_or_default().to_owned();
        Ok(self.issue(&username))
    }

    async fn logout(&self, refresh_token: &str) {
        self.live.lock().unwrap().remove(refresh_token);
        self.logged_out.lock().unwrap().push(refresh_token.to_owned());
    }
}

struct Dashboard {
    web: SocketAddr,
    identity: Arc<FakeIdentity>,
    app: Arc<retail_analytics::app::App>,
    grpc: SocketAddr,
    _task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_dashboard(
    database: &TestDatabase,
    sources: &[(&str, SocketAddr)],
    configure: impl FnOnce(&mut retail_analytics::Settings),
) -> Dashboard {
    start_dashboard_with(database, sources, configure, None).await
}

async fn start_dashboard_with(
    database: &TestDatabase,
    sources: &[(&str, SocketAddr)],
    configure: impl FnOnce(&mut retail_analytics::Settings),
    campaigns: Option<Arc<dyn Campaigns>>,
) -> Dashboard {
    let mut settings = retail_analytics::Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 8;
    settings.events.poll_ms = 50;
    settings.http.port = Some(0);
    for (source, addr) in sources {
        let url = Some(format!("http://{addr}"));
        match *source {
            "orders" => settings.sources.orders_url = url,
            "membership" => settings.sources.membership_url = url,
            "catalog" => settings.sources.catalog_url = url,
            "partner" => settings.sources.partner_url = url,
            other => panic!("unknown source {other}"),
        }
    }
    configure(&mut settings);
    LOGS.get_or_init(retail_testkit::capture_logs);
    let identity = Arc::new(FakeIdentity::new());
    let application = retail_analytics::Application::build_with(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap()
        .with_sessions(identity.clone())
        .with_clock(Arc::new(|| T0 + DAY));
    let application = match campaigns {
        Some(c) => application.with_campaigns(c),
        None => application,
    };
    let web = application.dashboard_addr().unwrap();
    let grpc = application.local_addr();
    let app = application.app();
    let task = tokio::spawn(application.run(std::future::pending()));
    Dashboard {
        web,
        identity,
        app,
        grpc,
        _task: task,
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// One HTTP/1.0 exchange (the server closes the connection after it).
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)], body: Option<&str>) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn value_of(cookie: &str) -> String {
    cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

/// A signed-in browser: its cookies.
struct Browser {
    addr: SocketAddr,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn cookie_header(&self) -> (&'static str, String) {
        let pairs: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ("Cookie", pairs.join("; "))
    }

    fn keep(&mut self, response: &Response) {
        for c in response.set_cookies() {
            let (name, value) = c.split(';').next().unwrap().split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn get(&mut self, path: &str) -> Response {
        let response = http(self.addr, "GET", path, &[self.cookie_header()], None).await;
        self.keep(&response);
        response
    }

    async fn post(&mut self, path: &str, body: &str) -> Response {
        let origin = ("Origin", format!("http://{}", self.addr));
        let response = http(self.addr, "POST", path, &[self.cookie_header(), origin], Some(body)).await;
        self.keep(&response);
        response
    }

    fn csrf(&self) -> String {
        self.cookies["rs_csrf"].clone()
    }

    async fn sign_in(addr: SocketAddr, username: &str, password: &str) -> (Self, Response) {
        let mut browser = Browser {
            addr,
            cookies: BTreeMap::new(),
        };
        let page = browser.get("/login").await;
        assert_eq!(page.status, 200);
        let csrf = browser.csrf();
        assert!(
            page.body.contains(&format!("value=\"{csrf}\"")),
            "the form carries the CSRF token"
        );
        let response = browser
            .post(
                "/login",
                &format!("username={username}&password={password}&csrf={csrf}"),
            )
            .await;
        (browser, response)
    }
}

#[tokio::test]
async fn sign_in_sets_strict_http_only_cookies_and_sign_out_ends_the_session() {
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(&database, &[], |_| {}).await;
    // Without a session every page sends to the login page.
    let anonymous = http(d.web, "GET", "/", &[], None).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/login"));

    let (mut browser, response) = Browser::sign_in(d.web, "ana", "pw").await;
    assert_eq!(response.status, 303, "{}", response.body);
    assert_eq!(response.header("location"), Some("/"));
    for name in ["rs_access", "rs_refresh"] {
        let c = response.cookie(name).unwrap();
        assert!(c.contains("HttpOnly"), "{c}");
        assert!(c.contains("SameSite=Strict"), "{c}");
        assert!(c.contains("Path=/"), "{c}");
        assert!(!c.contains("Secure"), "no TLS configured: {c}");
    }
    let overview = browser.get("/").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Overview"));
    assert_eq!(overview.header("cache-control"), Some("no-store"));

    // Sign out: identity ends the session, the cookies are cleared.
    let refresh = browser.cookies["rs_refresh"].clone();
    let csrf = browser.csrf();
    let out = browser.post("/logout", &format!("csrf={csrf}")).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/login"));
    assert!(out.cookie("rs_access").unwrap().contains("Max-Age=0"));
    assert!(out.cookie("rs_refresh").unwrap().contains("Max-Age=0"));
    assert_eq!(*d.identity.logged_out.lock().unwrap(), vec![refresh]);
    assert_eq!(browser.get("/").await.status, 303);

    // Wrong password: 401, no session.
    let (_, wrong) = Browser::sign_in(d.web, "ana", "nope").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.cookie("rs_access").is_none());
    assert!(wrong.body.contains("Wrong user name or password"));
}

#[tokio::test]
async fn cookies_are_secure_when_the_dashboard_is_behind_tls() {
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(&database, &[], |s| s.http.secure_cookies = true).await;
    let (_, response) = Browser::sign_in(d.web, "ana", "pw").await;
    assert_eq!(response.status, 303);
    for name in ["rs_access", "rs_refresh"] {
        assert!(response.cookie(name).unwrap().contains("; Secure"));
    }
}

#[tokio::test]
async fn forms_without_the_csrf_token_or_from_another_origin_are_refused() {
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(&database, &[], |_| {}).await;
    let mut browser = Browser {
        addr: d.web,
        cookies: BTreeMap::new(),
    };
    browser.get("/login").await;
    let csrf = browser.csrf();
    // A wrong or missing token.
    let forged = browser.post("/login", "username=ana&password=pw&csrf=forged").await;
    assert_eq!(forged.status, 403);
    assert!(forged.cookie("rs_access").is_none());
    let missing = browser.post("/login", "username=ana&password=pw").await;
    assert_eq!(missing.status, 403);
    // The right token from another site's page.
    let cross = http(
        d.web,
        "POST",
        "/login",
        &[browser.cookie_header(), ("Origin", "http://evil.example".to_owned())],
        Some(&format!("username=ana&password=pw&csrf={csrf}")),
    )
    .await;
    assert_eq!(cross.status, 403);
    assert!(cross.cookie("rs_access").is_none());
    // Without the cookie (a cross-site form cannot read or set it).
    let cookieless = http(
        d.web,
        "POST",
        "/login",
        &[],
        Some(&format!("username=ana&password=pw&csrf={csrf}")),
    )
    .await;
    assert_eq!(cookieless.status, 403);

    // Logout needs the token too: the session survives a forged logout.
    let (mut signed_in, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let forged_out = signed_in.post("/logout", "csrf=forged").await;
    assert_eq!(forged_out.status, 403);
    assert!(d.identity.logged_out.lock().unwrap().is_empty());
    assert_eq!(signed_in.get("/").await.status, 200);
}

#[tokio::test]
async fn an_expired_access_token_is_renewed_with_the_refresh_token() {
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(&database, &[], |_| {}).await;
    let (mut browser, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let old_refresh = browser.cookies["rs_refresh"].clone();
    let mut expired = claims("ana", PrincipalKind::Staff, &["analytics.read"], None);
    expired.roles = vec!["analyst".into()];
    expired.exp = chrono::Utc::now().timestamp() - 600;
    expired.iat = expired.exp - 900;
    expired.nbf = expired.iat;
    browser.cookies.insert("rs_access".into(), sign(&expired));
    let page = browser.get("/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let renewed = page.cookie("rs_access").unwrap();
    assert!(renewed.contains("HttpOnly") && renewed.contains("SameSite=Strict"));
    assert_ne!(
        value_of(page.cookie("rs_refresh").unwrap()),
        old_refresh,
        "the refresh token rotated"
    );
    // A refresh token that identity no longer honours ends the session.
    browser.cookies.insert("rs_access".into(), sign(&expired));
    browser.cookies.insert("rs_refresh".into(), old_refresh);
    let ended = browser.get("/").await;
    assert_eq!(ended.status, 303);
    assert_eq!(ended.header("location"), Some("/login"));
}

#[tokio::test]
async fn analysts_see_everything_store_managers_no_members_and_support_nothing() {
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(&database, &[], |_| {}).await;
    let pages = [
        "/",
        "/sales",
        "/pyramid",
        "/rfm",
        "/lifecycle",
        "/cohorts",
        "/stores",
        "/staff",
        "/products",
        "/partners",
    ];
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let (mut max, _) = Browser::sign_in(d.web, "max", "pw").await;
    let (mut sue, _) = Browser::sign_in(d.web, "sue", "pw").await;
    for page in pages {
        let seen = ana.get(page).await;
        assert_eq!(seen.status, 200, "analyst on {page}: {}", seen.body);
        assert_eq!(max.get(page).await.status, 200, "store manager on {page}");
        assert_eq!(sue.get(page).await.status, 403, "support on {page}");
    }
    assert_eq!(ana.get("/rfm/champion").await.status, 200);
    assert_eq!(max.get("/rfm/champion").await.status, 403, "member-level rows");
    assert_eq!(sue.get("/rfm/champion").await.status, 403);
    assert_eq!(ana.get("/rfm/no_such_segment").await.status, 404);
    // Empty states on an empty database.
    let empty = ana.get("/").await;
    assert!(empty.body.contains("No sales and no members in this period yet."));
    // A bad custom period is a message, not a failure.
    let bad = ana.get("/?period=custom&from=2026-05-01&to=2026-04-01").await;
    assert_eq!(bad.status, 200);
    assert!(bad.body.contains("to must not be before from"));
}

#[tokio::test]
async fn member_ids_and_staff_ids_are_escaped() {
    const EVIL: &str = "<script>alert(1)</script>";
    let logs = FakeLogs::default();
    logs.push(
        "orders",
        EVIL,
        T0 - DAY,
        &ev::OrderPaid {
            order_id: "o1".into(),
            parties: parties(EVIL, "store", "BER"),
            lines: vec![line("S1", 1, 2_500)],
            amount: money(2_500),
            pay_time: ts(T0 - DAY),
        },
    );
    let database = TestDatabase::new().await.unwrap();
    let orders = logs.serve("orders").await;
    let d = start_dashboard(&database, &[("orders", orders)], |_| {}).await;
    // Touchpoints are checked against the real clock.
    let now = chrono::Utc::now().timestamp();
    let mut touch = retail_proto::analytics::touchpoint_service_client::TouchpointServiceClient::connect(format!(
        "http://{}",
        d.grpc
    ))
    .await
    .unwrap();
    let accepted = touch
        .ingest_touchpoints(writer(pb::IngestTouchpointsRequest {
            touchpoints: vec![pb::Touchpoint {
                event_id: "t1".into(),
                kind: "staff_served".into(),
                occur_time: ts(now - 60),
                store: "BER".into(),
                staff_id: EVIL.into(),
                subject: "x".into(),
                count: 3,
                ..Default::default()
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.accepted, 1, "{accepted:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while d
        .app
        .freshness()
        .await
        .unwrap()
        .iter()
        .all(|p| p.source != "orders" || p.position < 1)
    {
        assert!(tokio::time::Instant::now() < deadline, "the order was not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    // Yesterday and today: the touchpoint falls in it even around midnight.
    let yesterday = retail_analytics::dashboard::query::date(now - DAY);
    let today = retail_analytics::dashboard::query::date(now);
    let staff = ana
        .get(&format!("/staff?period=custom&from={yesterday}&to={today}&store=BER"))
        .await;
    assert_eq!(staff.status, 200);
    assert!(!staff.body.contains(EVIL), "the staff id is escaped");
    assert!(
        staff.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        staff.body
    );
    // The member id in its segment's drill-down.
    let mut found = false;
    for s in retail_analytics::domain::kpi::Segment::ALL {
        let page = ana
            .get(&format!(
                "/rfm/{}?period=custom&from=2026-05-01&to=2026-05-31",
                s.as_str()
            ))
            .await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains(EVIL));
        found |= page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;");
        // CSV is data, not markup: the id as it is.
        let csv = ana
            .get(&format!(
                "/rfm/{}?period=custom&from=2026-05-01&to=2026-05-31&format=csv",
                s.as_str()
            ))
            .await;
        assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    }
    assert!(found, "the member appears, escaped, in one segment");
}

#[tokio::test]
async fn the_overview_and_its_csv_show_the_grpc_figures() {
    let logs = history();
    let database = TestDatabase::new().await.unwrap();
    let all = [
        ("membership", logs.serve("membership").await),
        ("catalog", logs.serve("catalog").await),
        ("orders", logs.serve("orders").await),
    ];
    let d = start_dashboard(&database, &all, |_| {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let positions = d.app.freshness().await.unwrap();
        let at = |s: &str| positions.iter().find(|p| p.source == s).map_or(0, |p| p.position);
        if at("orders") >= logs.len("orders") && at("membership") >= logs.len("membership") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "history not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let (from, to) = ("2025-06-01", "2026-05-31");
    let start = T0 - 365 * DAY;
    let mut kpis = retail_proto::analytics::analytics_service_client::AnalyticsServiceClient::connect(format!(
        "http://{}",
        d.grpc
    ))
    .await
    .unwrap();
    for (filter, dimension, value) in [
        ("", "all", ""),
        ("&channel=online", "channel", "online"),
        ("&store=BER", "store", "BER"),
    ] {
        let report = kpis
            .get_sales_report(reader(pb::GetSalesReportRequest {
                period: period(start, T0),
                dimension: dimension.into(),
                dimension_value: value.into(),
            }))
            .await
            .unwrap()
            .into_inner();
        let current = report.current.unwrap();
        let previous = report.previous.unwrap();
        assert!(current.orders > 0, "the period has sales");
        let csv = ana
            .get(&format!("/?period=custom&from={from}&to={to}{filter}&format=csv"))
            .await;
        assert_eq!(csv.status, 200);
        assert!(csv.header("content-disposition").unwrap().contains("overview.csv"));
        let rows: BTreeMap<String, Vec<String>> = csv
            .body
            .lines()
            .skip(1)
            .map(|l| {
                let cells: Vec<String> = l.split(',').map(str::to_owned).collect();
                (cells[0].clone(), cells[1..].to_vec())
            })
            .collect();
        let major = |minor: i64| format!("{:.2}", minor as f64 / 100.0);
        assert_eq!(rows["revenue"][0], major(current.revenue_minor), "{filter}");
        assert_eq!(rows["revenue"][1], major(previous.revenue_minor), "{filter}");
        assert_eq!(rows["orders"][0], current.orders.to_string(), "{filter}");
        assert_eq!(rows["orders"][1], previous.orders.to_string(), "{filter}");
        assert_eq!(
            rows["aov"][0],
            format!("{:.2}", current.average_order_value_minor / 100.0),
            "{filter}"
        );
        assert_eq!(
            rows["revenue"][2],
            format!("{:+.1}%", report.revenue_growth * 100.0),
            "{filter}"
        );
        // The page shows the same figures, and its links keep the filter.
        let html = ana.get(&format!("/?period=custom&from={from}&to={to}{filter}")).await;
        assert!(
            html.body
                .contains(&format!("data-kpi=\"revenue\">{}<", major(current.revenue_minor)))
        );
        if !filter.is_empty() {
            assert!(html.body.contains(&format!(
                "href=\"/sales?period=custom&amp;from={from}&amp;to={to}{}",
                filter.replace('&', "&amp;")
            )));
        }
    }
    let satisfaction = kpis
        .get_satisfaction(reader(pb::GetSatisfactionRequest {
            period: period(start, T0),
            dimension: "all".into(),
            dimension_value: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let csv = ana
        .get(&format!("/?period=custom&from={from}&to={to}&format=csv"))
        .await;
    assert!(
        csv.body.contains(&format!("\nnps,{:.1},", satisfaction.nps)),
        "{}",
        csv.body
    );

    // Every page renders with data, its charts carry hover values.
    for (page, from) in [
        ("/sales", from),
        ("/pyramid", from),
        ("/rfm", from),
        ("/lifecycle", from),
        // The history's customers all bought first in its first months.
        ("/cohorts", "2024-06-01"),
    ] {
        let seen = ana.get(&format!("{page}?period=custom&from={from}&to={to}")).await;
        assert_eq!(seen.status, 200, "{page}");
        assert!(seen.body.contains("<svg"), "{page} draws a chart");
        assert!(seen.body.contains("<title>"), "{page} has hover values");
        // Inside HTML an SVG element must be closed, or it swallows what follows.
        for tag in ["rect", "line", "polyline"] {
            assert_eq!(
                seen.body.matches(&format!("<{tag} ")).count(),
                seen.body.matches(&format!("</{tag}>")).count(),
                "{page}: every <{tag}> is closed"
            );
        }
    }
    let partners = ana.get(&format!("/partners?period=custom&from={from}&to={to}")).await;
    assert!(
        partners.body.contains("No partner sales in this period."),
        "the history names no partner"
    );
    let pyramid = ana
        .get(&format!("/pyramid?period=custom&from={from}&to={to}&format=csv"))
        .await;
    assert!(pyramid.body.starts_with("layer,headcount,"));
    assert_eq!(pyramid.body.lines().count(), 8, "header and seven layers");
}

#[tokio::test]
async fn the_dashboard_stops_with_the_service() {
    let database = TestDatabase::new().await.unwrap();
    let mut settings = retail_analytics::Settings::default();
    settings.database.url = database.secret_url();
    settings.http.port = Some(0);
    let application = retail_analytics::Application::build_with(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap();
    let web = application.dashboard_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(application.run(async move {
        let _ = stopped.await;
    }));
    assert_eq!(http(web, "GET", "/login", &[], None).await.status, 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the service stopped")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(web).await.is_err(),
        "the dashboard's port is closed"
    );
}

#[tokio::test]
async fn without_http_port_there_is_no_dashboard() {
    let database = TestDatabase::new().await.unwrap();
    let mut settings = retail_analytics::Settings::default();
    settings.database.url = database.secret_url();
    let application = retail_analytics::Application::build_with(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap();
    assert_eq!(application.dashboard_addr(), None);
}

#[tokio::test]
async fn a_store_manager_sees_only_his_own_stores() {
    let logs = FakeLogs::default();
    for (i, store) in ["BER", "HAM"].iter().enumerate() {
        logs.push(
            "orders",
            store,
            T0,
            &ev::OrderPaid {
                order_id: format!("o{i}"),
                parties: parties("", "store", store),
                lines: vec![line("SKU-1", 1, 1_000)],
                amount: money(1_000),
                pay_time: ts(T0),
            },
        );
    }
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(&database, &[("orders", logs.serve("orders").await)], |_| {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while d.app.dimension_values("store").await.unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the orders never arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let (mut max, _) = Browser::sign_in(d.web, "max", "pw").await;
    let (mut mia, _) = Browser::sign_in(d.web, "mia", "pw").await;
    // Analysts pick any store.
    for page in [
        "/stores?store=HAM",
        "/staff?store=HAM",
        "/?store=HAM",
        "/sales?store=HAM",
    ] {
        assert_eq!(ana.get(page).await.status, 200, "analyst on {page}");
    }
    let all = ana.get("/stores").await;
    assert!(all.body.contains("value=\"HAM\"") && all.body.contains("value=\"BER\""));
    // The store manager sees his store, is offered only it, and is refused another
    // one asked for in the URL.
    let own = max.get("/stores").await;
    assert_eq!(own.status, 200);
    assert!(own.body.contains("Store funnel BER"), "his store is the default");
    assert!(!own.body.contains("HAM"), "another store is not offered");
    for page in [
        "/stores?store=BER",
        "/staff?store=BER",
        "/?store=BER",
        "/sales?store=BER",
    ] {
        assert_eq!(max.get(page).await.status, 200, "store manager on {page}");
    }
    let overview = max.get("/").await;
    assert!(
        !overview.body.contains("value=\"HAM\""),
        "the store filter offers his stores only"
    );
    // Without a store asked for, his store's figures (10.00), not every store's.
    assert!(
        overview.body.contains(r#"data-kpi="revenue">10.00<"#),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("Headline figures, store BER"));
    assert!(ana.get("/").await.body.contains(r#"data-kpi="revenue">20.00<"#));
    let csv = max.get("/sales?format=csv").await;
    assert!(
        csv.body.lines().skip(1).all(|l| l.contains(",store BER,")),
        "{}",
        csv.body
    );
    let partners = max.get("/partners").await;
    assert!(partners.body.contains("Sales per partner span every store"));
    for page in [
        "/stores?store=HAM",
        "/staff?store=HAM",
        "/?store=HAM",
        "/sales?store=HAM",
        "/stores?store=HAM&format=csv",
    ] {
        assert_eq!(max.get(page).await.status, 403, "store manager on {page}");
    }
    // Without stores assigned, no store at all.
    let none = mia.get("/stores").await;
    assert_eq!(none.status, 200);
    assert!(none.body.contains("No store is assigned to you."));
    let overview = mia.get("/").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("No store is assigned to you."));
    assert!(!overview.body.contains("data-kpi=\"revenue\""));
    assert_eq!(mia.get("/staff?store=BER").await.status, 403);
}

#[tokio::test]
async fn the_partners_page_ranks_targets_with_attainment_and_projection() {
    // T0 + DAY is the dashboard's clock: a month target from T0 - 9 days.
    let start = T0 - 9 * DAY;
    let logs = FakeLogs::default();
    for (p, amount, sold) in [("pa", 100_000, 20_000), ("pb", 50_000, 30_000)] {
        logs.push(
            "partner",
            p,
            start,
            &ev::TargetSet {
                target_id: format!("t-{p}"),
                subject_kind: "partner".into(),
                partner_id: p.into(),
                sales_rep_id: String::new(),
                period_kind: "month".into(),
                period_start_time: ts(start),
                period_end_time: ts(start + 30 * DAY),
                amount_minor: amount,
            },
        );
        logs.push(
            "orders",
            p,
            start + DAY,
            &ev::OrderPaid {
                order_id: format!("o-{p}"),
                parties: Some(ev::OrderParties {
                    channel: "partner".into(),
                    partner_id: p.into(),
                    ..Default::default()
                }),
                lines: vec![line("SKU-1", 1, sold)],
                amount: money(sold),
                pay_time: ts(start + DAY),
            },
        );
    }
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(
        &database,
        &[
            ("orders", logs.serve("orders").await),
            ("partner", logs.serve("partner").await),
        ],
        |_| {},
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let positions = d.app.freshness().await.unwrap();
        let at = |s: &str| positions.iter().find(|p| p.source == s).map_or(0, |p| p.position);
        if at("orders") >= 2 && at("partner") >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let page = ana.get("/partners?period=month").await;
    assert_eq!(page.status, 200);
    // 10 of 30 days elapsed: pb 300.00 of 500.00 = 60%, projected 900.00 = 180%;
    // pa 200.00 of 1,000.00 = 20%, projected 600.00 = 60%.
    assert!(
        page.body
            .contains("<title>pb: attainment 60.0% (300.00 of 500.00)</title>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<title>pb: projected 180.0% (900.00)</title>"));
    assert!(page.body.contains("<title>pa: projected 60.0% (600.00)</title>"));
    assert_eq!(page.body.matches("data-series=\"attainment\"").count(), 2);
    assert_eq!(page.body.matches("data-series=\"projected\"").count(), 2);
    let csv = ana.get("/partners?period=month&format=csv&table=targets").await;
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines,
        [
            "rank,peers,partner,level,period,from,target,actual,attainment,projected,projected_attainment",
            "1,2,pb,,month,2026-05-23,500.00,300.00,60.0%,900.00,180.0%",
            "2,2,pa,,month,2026-05-23,1000.00,200.00,20.0%,600.00,60.0%",
        ]
    );
    // The partner filter narrows the ranking, keeping the ranks.
    let only = ana
        .get("/partners?period=month&partner=pa&format=csv&table=targets")
        .await;
    assert_eq!(
        only.body.lines().nth(1),
        Some("2,2,pa,,month,2026-05-23,1000.00,200.00,20.0%,600.00,60.0%")
    );
    assert_eq!(only.body.lines().count(), 2);
    let leads = ana.get("/partners?period=month&format=csv&table=leads").await;
    assert!(leads.body.starts_with("partner,offered,accepted,"), "{}", leads.body);
    let pipeline = ana.get("/partners?period=month&format=csv&table=pipeline").await;
    assert_eq!(pipeline.body.lines().count(), 8, "header and seven stages");
}

/// Membership's campaigns as the dashboard sees them: pages by token, and the
/// access tokens it was called with.
#[derive(Debug, Default)]
struct FakeCampaigns {
    pages: BTreeMap<String, CampaignPage>,
    tokens: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Campaigns for FakeCampaigns {
    async fn list(&self, access_token: &str, page_size: i32, page_token: &str) -> Result<CampaignPage, CampaignsError> {
        assert!(page_size > 0);
        self.tokens.lock().unwrap().push(access_token.to_owned());
        self.pages.get(page_token).cloned().ok_or(CampaignsError::BadPageToken)
    }
}

fn result(name: &str, display_name: &str, report: Report) -> CampaignResult {
    CampaignResult {
        name: format!("campaigns/{name}"),
        display_name: display_name.into(),
        state: "running".into(),
        start: T0,
        end: T0 + 7 * DAY,
        audience: "Lapsed <b>buyers</b> (email)".into(),
        control_share_bp: 2_000,
        report,
    }
}

#[tokio::test]
async fn the_campaigns_page_shows_each_report_against_control_for_analysts_only() {
    const EVIL: &str = "<script>alert(1)</script>";
    let first = result(
        "c3",
        "=SUM(A1) spring",
        Report {
            reached: 20,
            responded: 5,
            response_rate_bp: 2_500,
            control: 5,
            control_responded: 0,
            control_response_rate_bp: 0,
            revenue: 12_345,
            control_revenue: 0,
            incremental_revenue: 12_345,
            cost: 1_000,
            roi_bp: Some(113_450),
            currency: "EUR".into(),
        },
    );
    let second = result(
        "c2",
        EVIL,
        Report {
            reached: 10,
            responded: 1,
            response_rate_bp: 1_000,
            control: 10,
            control_responded: 2,
            control_response_rate_bp: 2_000,
            revenue: 5_000,
            control_revenue: 9_000,
            incremental_revenue: -4_000,
            cost: 0,
            roi_bp: None,
            currency: "EUR".into(),
        },
    );
    let third = result("c1", "Winter", Report::default());
    let fake = Arc::new(FakeCampaigns {
        pages: BTreeMap::from([
            (
                String::new(),
                CampaignPage {
                    campaigns: vec![first, second],
                    next_page_token: "tok/2".into(),
                },
            ),
            (
                "tok/2".into(),
                CampaignPage {
                    campaigns: vec![third],
                    next_page_token: String::new(),
                },
            ),
        ]),
        ..FakeCampaigns::default()
    });
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard_with(&database, &[], |_| {}, Some(fake.clone())).await;
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let (mut max, _) = Browser::sign_in(d.web, "max", "pw").await;
    let (mut sue, _) = Browser::sign_in(d.web, "sue", "pw").await;

    let page = ana.get("/campaigns").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"href="/campaigns""#), "the nav links the page");
    // Called with the analyst's own access token.
    assert_eq!(
        fake.tokens.lock().unwrap().as_slice(),
        [ana.cookies["rs_access"].clone()]
    );
    // Everything escaped.
    assert!(!page.body.contains(EVIL) && !page.body.contains("<b>buyers"));
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // One targeted and one control bar per campaign, the figures on hover.
    assert_eq!(page.body.matches(r#"data-series="targeted""#).count(), 2);
    assert_eq!(page.body.matches(r#"data-series="control""#).count(), 2);
    assert!(page.body.contains("=SUM(A1) spring: targeted 25.0% (5 of 20 reached)"));
    assert!(page.body.contains(": control 20.0% (2 of 10 held back)"));
    // The period picker, for the win-back rates under the campaigns.
    assert!(page.body.contains("name=\"period\""));

    // The CSV: the same figures, formulas neutralised.
    let csv = ana.get("/campaigns?format=csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "campaign,state,window,audience,control_share,reached,responded,response_rate,control,\
         control_responded,control_response_rate,revenue,control_revenue,incremental_revenue,cost,roi"
    );
    assert_eq!(
        lines[1],
        "\"'=SUM(A1) spring\",running,2026-06-01 00:00 to 2026-06-08 00:00,Lapsed <b>buyers</b> (email),\
         20.0%,20,5,25.0%,5,0,0.0%,123.45,0.00,123.45,10.00,1134.5%"
    );
    assert_eq!(
        lines[2],
        "<script>alert(1)</script>,running,2026-06-01 00:00 to 2026-06-08 00:00,Lapsed <b>buyers</b> (email),\
         20.0%,10,1,10.0%,10,2,20.0%,50.00,90.00,-40.00,0.00,"
    );
    assert_eq!(lines.len(), 3);

    // Paging: the next page by membership's token, and back to the first.
    assert!(
        page.body.contains(r#"href="/campaigns?page_token=tok%2F2""#),
        "{}",
        page.body
    );
    let next = ana.get("/campaigns?page_token=tok%2F2").await;
    assert_eq!(next.status, 200);
    assert!(next.body.contains("Winter") && !next.body.contains("spring"));
    assert!(next.body.contains("First page") && !next.body.contains("Next page"));
    let stale = ana.get("/campaigns?page_token=gone").await;
    assert_eq!(stale.status, 400);
    assert!(stale.body.contains("start again from the first page"));

    // Brand-wide: not a store manager's, nor support's.
    let refused = max.get("/campaigns").await;
    assert_eq!(refused.status, 403);
    assert!(
        !max.get("/").await.body.contains(r#"href="/campaigns""#),
        "not in his nav"
    );
    assert_eq!(sue.get("/campaigns").await.status, 403);
    assert_eq!(
        fake.tokens.lock().unwrap().len(),
        4,
        "only the analyst's pages asked membership"
    );
}

#[tokio::test]
async fn the_campaigns_page_says_so_when_membership_is_unreachable_or_empty() {
    let database = TestDatabase::new().await.unwrap();
    // Nothing listens on port 1: membership's real client fails to connect.
    let d = start_dashboard(&database, &[], |s| {
        s.sources.membership_url = Some("http://127.0.0.1:1".into());
    })
    .await;
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let page = ana.get("/campaigns").await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("Membership could not be reached"));
    assert!(page.body.contains("<nav>"), "still the dashboard's layout");
    assert_eq!(ana.get("/campaigns?format=csv").await.status, 502);

    // Without membership's address: said so.
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard(&database, &[], |_| {}).await;
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let page = ana.get("/campaigns").await;
    assert_eq!(page.status, 503);
    assert!(page.body.contains("sources.membership_url"));

    // No campaign yet: the empty state.
    let empty = Arc::new(FakeCampaigns {
        pages: BTreeMap::from([(String::new(), CampaignPage::default())]),
        ..FakeCampaigns::default()
    });
    let database = TestDatabase::new().await.unwrap();
    let d = start_dashboard_with(&database, &[], |_| {}, Some(empty)).await;
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    let page = ana.get("/campaigns").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("No campaign yet."));
}

/// The win-back panel under the campaigns: the wake-up and reactivation rates of
/// the period's campaign decisions (campaigns.rs's history, counted by hand
/// there): wake-up 2 of 6 contacted against 1 of 2 held back, reactivation 2 of 3
/// against 0 of 1; the same figures as GetStickiness, in the page, on hover and in
/// the CSV; an empty state for a period without such decisions.
#[tokio::test]
async fn the_campaigns_page_shows_wake_up_and_reactivation_against_control_for_the_period() {
    let logs = crate::campaigns::campaign_history();
    let database = TestDatabase::new().await.unwrap();
    let sources = [
        ("membership", logs.serve("membership").await),
        ("orders", logs.serve("orders").await),
    ];
    let fake = Arc::new(FakeCampaigns {
        pages: BTreeMap::from([(String::new(), CampaignPage::default())]),
        ..FakeCampaigns::default()
    });
    let d = start_dashboard_with(&database, &sources, |_| {}, Some(fake)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let positions = d.app.freshness().await.unwrap();
        let at = |s: &str| positions.iter().find(|p| p.source == s).map_or(0, |p| p.position);
        if at("orders") >= logs.len("orders") && at("membership") >= logs.len("membership") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "history not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ana, _) = Browser::sign_in(d.web, "ana", "pw").await;
    // [T0, T0 + 10d): 2026-06-01 to 2026-06-10 inclusive.
    let query = "?period=custom&from=2026-06-01&to=2026-06-10";
    let page = ana.get(&format!("/campaigns{query}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Wake-up and reactivation, targeted against control"));
    assert!(
        page.body.contains(r#"<option value="custom" selected>"#),
        "the picker keeps the period"
    );
    // One bar pair per rate (the campaign list is empty, so its chart is not drawn).
    assert_eq!(page.body.matches(r#"data-series="targeted""#).count(), 2);
    assert_eq!(page.body.matches(r#"data-series="control""#).count(), 2);
    for hover in [
        "wake-up: targeted 33.3% (2 of 6 sleeping members contacted)",
        "wake-up: control 50.0% (1 of 2 sleeping members held back)",
        "reactivation: targeted 66.7% (2 of 3 lost members contacted)",
        "reactivation: control 0.0% (0 of 1 lost members held back)",
    ] {
        assert!(page.body.contains(hover), "{hover}");
    }
    assert!(
        page.body.contains(
            "href=\"/campaigns?period=custom&amp;from=2026-06-01&amp;to=2026-06-10&amp;format=csv&amp;table=win_back\""
        ),
        "the CSV link keeps the period"
    );
    let csv = ana.get(&format!("/campaigns{query}&format=csv&table=win_back")).await;
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.body,
        "rate,targeted,targeted_bought_again,targeted_members,control,control_bought_again,control_members\r\n\
         wake-up,33.3%,2,6,50.0%,1,2\r\n\
         reactivation,66.7%,2,3,0.0%,0,1\r\n"
    );

    // The same figures as GetStickiness over the same period.
    let mut kpis = retail_proto::analytics::analytics_service_client::AnalyticsServiceClient::connect(format!(
        "http://{}",
        d.grpc
    ))
    .await
    .unwrap();
    let s = kpis
        .get_stickiness(reader(pb::GetStickinessRequest {
            period: period(T0, T0 + 10 * DAY),
            window_days: 90,
        }))
        .await
        .unwrap()
        .into_inner();
    let row = |w: Option<pb::WinBackRate>| {
        let w = w.unwrap();
        format!("{:.1}%,{},{}", w.rate * 100.0, w.bought_again, w.members)
    };
    assert_eq!(
        csv.body.lines().nth(1).unwrap(),
        format!("wake-up,{},{}", row(s.wake_up), row(s.wake_up_control))
    );
    assert_eq!(
        csv.body.lines().nth(2).unwrap(),
        format!("reactivation,{},{}", row(s.reactivation), row(s.reactivation_control))
    );

    // A period without decisions for sleeping or lost members: the empty state,
    // and the CSV still has its rows (all zero).
    let april = "?period=custom&from=2026-04-01&to=2026-04-30";
    let empty = ana.get(&format!("/campaigns{april}")).await;
    assert_eq!(empty.status, 200);
    assert!(
        empty
            .body
            .contains("No campaign targeted sleeping or lost members in this period.")
    );
    assert!(!empty.body.contains("data-series"));
    let csv = ana.get(&format!("/campaigns{april}&format=csv&table=win_back")).await;
    assert_eq!(csv.body.lines().nth(1), Some("wake-up,0.0%,0,0,0.0%,0,0"));

    // An invalid period is a message.
    let bad = ana.get("/campaigns?period=custom&from=2026-06-10&to=2026-06-01").await;
    assert!(bad.body.contains("to must not be before from"), "{}", bad.body);
}
