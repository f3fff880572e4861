//! Webhooks end to end, with orders' and channel-partner's event logs stood in by
//! kit event logs the tests publish into and receivers served on port 0 here: a
//! receiver that fails three times gets the event accepted once, with one id on
//! every attempt and a signature that verifies; another partner's event never
//! reaches it; a delivery is dead-lettered after its last attempt and a replay
//! delivers it; subscriptions are the partner's own; bad input is a 400 problem.
//! Backoffs are milliseconds, so nothing waits for seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Name;
use retail_gateway::Application;
use retail_gateway::ratelimit::SystemClock;
use retail_kit::auth::{AuthLayer, PrincipalKind, ServiceTokenSource, Verifier};
use retail_kit::events::{EventLog, EventLogApi, Outgoing};
use retail_kit::server::{self, ServiceRoutes};
use retail_proto::events as ev;
use retail_proto::events::event_log_service_server::{self, EventLogServiceServer};
use retail_testkit::TestDatabase;
use retail_testkit::tokens::{claims, sign, staff_token, test_keys};
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde_json::{Value, json};
use sha2::Sha256;

/// The outbox tables of a publisher.
struct OutboxOnly;

#[async_trait::async_trait]
impl sea_orm_migration::MigratorTrait for OutboxOnly {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![
            Box::new(retail_kit::events::migration::CreateOutbox),
            Box::new(retail_kit::events::migration::PartialOutboxIndexes),
            Box::new(retail_kit::events::migration::OutboxPartitionKey),
        ]
    }
}

/// A service's event log, served on port 0; tests publish into it.
struct Log {
    addr: SocketAddr,
    db: DatabaseConnection,
    log: Arc<EventLog>,
    _database: TestDatabase,
}

impl Log {
    async fn start(source: &'static str) -> Self {
        let database = TestDatabase::new().await.unwrap();
        let settings = retail_kit::config::DatabaseSettings {
            url: database.secret_url(),
            ..Default::default()
        };
        let db = retail_kit::db::connect_and_migrate::<OutboxOnly>(&settings)
            .await
            .unwrap();
        let log = EventLog::new(db.clone(), source, Duration::from_millis(20), Duration::from_millis(1));
        let _appender = log.spawn_appender();
        let server_settings = retail_kit::config::ServerSettings::default();
        let bound = server::bind(&server_settings).await.unwrap();
        let addr = bound.local_addr();
        let verifier = Arc::new(Verifier::new(
            "retail-identity",
            test_keys(),
            Duration::from_millis(100),
        ));
        let api = EventLogApi::new(log.clone());
        tokio::spawn(async move {
            server::serve(
                bound,
                &server_settings,
                ServiceRoutes {
                    routes: tonic::service::Routes::new(EventLogServiceServer::new(api)),
                    names: vec![event_log_service_server::SERVICE_NAME],
                    auth: Some(AuthLayer::new(verifier, &[])),
                },
                std::future::pending(),
            )
            .await
        });
        Self {
            addr,
            db,
            log,
            _database: database,
        }
    }

    /// Publishes `message` and returns the event's id.
    async fn publish<M: prost::Message + Name>(&self, message: &M, aggregate: &str) -> String {
        let txn = self.db.begin().await.unwrap();
        let id = Outgoing::of(message).publish(&txn, aggregate).await.unwrap();
        txn.commit().await.unwrap();
        self.log.committed();
        id
    }
}

/// What a receiver got: its headers and body, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

#[derive(Debug, Default)]
struct ReceiverState {
    /// How many more requests to fail.
    fail: usize,
    got: Vec<Received>,
}

/// An HTTP endpoint that fails its first `fail` requests with 500.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

async fn receive(State(state): State<Arc<Mutex<ReceiverState>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut state = state.lock().unwrap();
    let status = if state.fail > 0 {
        state.fail -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    state.got.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: status.as_u16(),
    });
    status
}

impl Receiver {
    async fn start(fail: usize) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState { fail, got: Vec::new() }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail = n;
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the receiver got {} requests, not {n}", self.got().len());
    }
}

/// The gateway with its own fresh database, following the two logs.
struct Gateway {
    addr: SocketAddr,
    http: Client<HttpConnector, Full<Bytes>>,
    orders: Log,
    partner: Log,
    _database: TestDatabase,
}

const MAX_ATTEMPTS: usize = 4;

impl Gateway {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut retail_gateway::Settings)) -> Self {
        let orders = Log::start("orders").await;
        let partner = Log::start("partner").await;
        let database = TestDatabase::new().await.unwrap();
        let mut settings = retail_gateway::Settings::default();
        settings.server.port = 0;
        settings.server.host = "127.0.0.1".into();
        settings.database.url = database.secret_url();
        settings.rate_limit.read = retail_gateway::settings::RateClass {
            rps: 10_000,
            burst: 10_000,
        };
        settings.rate_limit.write = settings.rate_limit.read;
        let hooks = &mut settings.webhooks;
        hooks.orders_events_url = Some(format!("http://{}", orders.addr));
        hooks.partner_events_url = Some(format!("http://{}", partner.addr));
        // The receivers listen on loopback.
        hooks.allow_private_addresses = true;
        hooks.max_attempts = MAX_ATTEMPTS as u32;
        hooks.backoff_base_ms = 5;
        hooks.backoff_max_ms = 20;
        hooks.poll_ms = 10;
        hooks.timeout_ms = 2_000;
        configure(&mut settings);
        let app = Application::build_with_keys(settings, test_keys(), Arc::new(SystemClock::default()))
            .await
            .unwrap()
            .with_service_tokens(ServiceTokenSource::fixed(staff_token(&["events.read"])));
        let addr = app.local_addr();
        tokio::spawn(app.run(std::future::pending()));
        Self {
            addr,
            http: Client::builder(TokioExecutor::new()).build_http(),
            orders,
            partner,
            _database: database,
        }
    }

    /// One request as a user of `partner`: the status and the JSON answer.
    async fn call(&self, partner: &str, method: &str, path: &str, body: Option<Value>) -> (u16, String, Value) {
        let token = sign(&claims("user-1", PrincipalKind::PartnerUser, &[], Some(partner)));
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {token}"));
        let bytes = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let response = self
            .http
            .request(request.body(Full::new(bytes)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)))
        };
        (status, content_type, json)
    }

    /// Asserts a problem document of `status`.
    async fn problem(&self, partner: &str, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let (got, content_type, problem) = self.call(partner, method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["status"], status);
        problem
    }

    /// Subscribes `partner`; returns the subscription's id and secret.
    async fn subscribe(&self, partner: &str, url: &str, types: &[&str]) -> (String, String) {
        let (status, _, created) = self
            .call(
                partner,
                "POST",
                "/v1/webhooks/subscriptions",
                Some(json!({"url": url, "eventTypes": types, "description": "test"})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["subscription"]["subscriptionId"].as_str().unwrap().to_owned();
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.len() >= 32);
        (id, secret)
    }

    /// The subscription's deliveries once `done` holds for them.
    async fn deliveries_when(&self, partner: &str, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..500 {
            let (status, _, page) = self
                .call(
                    partner,
                    "GET",
                    &format!("/v1/webhooks/subscriptions/{id}/deliveries"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{page}");
            let deliveries = page["deliveries"].as_array().cloned().unwrap_or_default();
            if done(&deliveries) {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the deliveries of {id} did not settle");
    }
}

fn parties(channel: &str, partner: &str) -> Option<ev::OrderParties> {
    Some(ev::OrderParties {
        channel: channel.into(),
        partner_id: partner.into(),
        ..Default::default()
    })
}

fn shipped(order: &str, channel: &str, partner: &str, state: &str) -> ev::OrderProgressed {
    ev::OrderProgressed {
        order_id: order.into(),
        parties: parties(channel, partner),
        state: state.into(),
        event_time: None,
    }
}

fn verify(secret: &str, r: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    r.signature == format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn partner_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_failing_three_times_gets_the_event_once_signed_and_never_another_partners() {
    let gw = Gateway::start().await;
    let (p1, p2) = (partner_id("p1"), partner_id("p2"));
    let mine = Receiver::start(3).await;
    let theirs = Receiver::start(0).await;
    let (sub, secret) = gw.subscribe(&p1, &mine.url, &["order.shipped", "lock.expired"]).await;
    let (their_sub, _) = gw.subscribe(&p2, &theirs.url, &["order.shipped"]).await;

    // Another partner's shipment, a store order's, a type p1 did not subscribe to,
    // then p1's own shipment.
    gw.orders
        .publish(&shipped("o-2", "partner", &p2, "shipped"), "o-2")
        .await;
    gw.orders.publish(&shipped("o-3", "store", "", "shipped"), "o-3").await;
    gw.orders
        .publish(&shipped("o-1", "partner", &p1, "delivered"), "o-1")
        .await;
    let event_id = gw
        .orders
        .publish(&shipped("o-1", "partner", &p1, "shipped"), "o-1")
        .await;

    let got = mine.wait_for(4).await;
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 500, 500, 204]);
    for r in &got {
        assert_eq!(r.id, event_id, "one id on every attempt");
        assert!(verify(&secret, r), "the signature verifies");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], event_id.as_str());
        assert_eq!(body["type"], "order.shipped");
        assert_eq!(body["data"]["orderId"], "o-1");
        assert!(body["occurredAt"].is_string());
    }
    // Same body on every attempt.
    assert!(got.iter().all(|r| r.body == got[0].body));

    let deliveries = gw
        .deliveries_when(&p1, &sub, |d| d.len() == 1 && d[0]["state"] == "delivered")
        .await;
    let delivery = &deliveries[0];
    assert_eq!(delivery["eventId"], event_id.as_str());
    assert_eq!(delivery["attemptCount"], 4);
    let statuses: Vec<Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["statusCode"].clone())
        .collect();
    assert_eq!(statuses, [json!(500), json!(500), json!(500), json!(204)]);

    // The other partner's event went to its own receiver only, once.
    let theirs_got = theirs.wait_for(1).await;
    gw.deliveries_when(&p2, &their_sub, |d| d.len() == 1 && d[0]["state"] == "delivered")
        .await;
    // A channel-partner event of p1 arrives too, after everything above.
    gw.partner
        .publish(
            &ev::DealLockChanged {
                deal_lock: format!("partners/{p1}/dealLocks/d1"),
                partner_id: p1.clone(),
                change: "expired".into(),
                subject_kind: "customer".into(),
                ..Default::default()
            },
            "d1",
        )
        .await;
    let got = mine.wait_for(5).await;
    let lock: Value = serde_json::from_str(&got[4].body).unwrap();
    assert_eq!(lock["type"], "lock.expired");
    assert_eq!(lock["data"]["dealLockId"], "d1");
    assert!(verify(&secret, &got[4]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mine.got().len(), 5, "nothing else reached p1's receiver");
    assert!(
        mine.got()
            .iter()
            .all(|r| !r.body.contains("o-2") && !r.body.contains("o-3"))
    );
    assert_eq!(theirs.got().len(), 1);
    assert!(theirs_got[0].body.contains("o-2"));

    // Subscriptions are the partner's own: another partner's id is not found.
    let path = format!("/v1/webhooks/subscriptions/{sub}");
    gw.problem(&p2, "GET", &path, None, 404).await;
    gw.problem(&p2, "DELETE", &path, None, 404).await;
    gw.problem(&p2, "POST", &format!("{path}/rotateSecret"), None, 404)
        .await;
    gw.problem(&p2, "GET", &format!("{path}/deliveries"), None, 404).await;
    let delivery_path = format!("{path}/deliveries/{}", delivery["deliveryId"].as_str().unwrap());
    gw.problem(&p2, "GET", &delivery_path, None, 404).await;
    gw.problem(&p2, "POST", &format!("{delivery_path}/replay"), None, 404)
        .await;
    let (status, _, listed) = gw.call(&p2, "GET", "/v1/webhooks/subscriptions", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 1);
    // The secret is shown only at creation.
    let (status, _, got_sub) = gw.call(&p1, "GET", &path, None).await;
    assert_eq!(status, 200);
    assert!(got_sub.get("secret").is_none() && !got_sub.to_string().contains(&secret));
    assert_eq!(got_sub["eventTypes"], json!(["order.shipped", "lock.expired"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_is_dead_lettered_after_its_last_attempt_and_a_replay_delivers_it() {
    let gw = Gateway::start().await;
    let p1 = partner_id("p1");
    let receiver = Receiver::start(usize::MAX).await;
    let (sub, secret) = gw.subscribe(&p1, &receiver.url, &["target.attained"]).await;
    let event_id = gw
        .partner
        .publish(
            &ev::TargetAttained {
                target_id: "t1".into(),
                partner_id: p1.clone(),
                sales_rep_id: String::new(),
                progress_minor: 120_000,
                amount_minor: 100_000,
            },
            "t1",
        )
        .await;
    let dead = gw
        .deliveries_when(&p1, &sub, |d| d.len() == 1 && d[0]["state"] == "dead")
        .await;
    assert_eq!(dead[0]["attemptCount"], MAX_ATTEMPTS);
    assert!(dead[0]["nextAttemptTime"].is_null());
    assert_eq!(receiver.got().len(), MAX_ATTEMPTS);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.got().len(), MAX_ATTEMPTS, "nothing more after the dead letter");

    // The receiver is back; the partner replays the dead letter.
    receiver.fail_next(0);
    let delivery_id = dead[0]["deliveryId"].as_str().unwrap();
    let (status, _, replayed) = gw
        .call(
            &p1,
            "POST",
            &format!("/v1/webhooks/subscriptions/{sub}/deliveries/{delivery_id}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{replayed}");
    let delivered = gw
        .deliveries_when(&p1, &sub, |d| d.len() == 1 && d[0]["state"] == "delivered")
        .await;
    assert_eq!(delivered[0]["attemptCount"], MAX_ATTEMPTS + 1);
    let got = receiver.got();
    assert_eq!(got.len(), MAX_ATTEMPTS + 1);
    assert!(got.iter().all(|r| r.id == event_id && verify(&secret, r)));
    let body: Value = serde_json::from_str(&got[MAX_ATTEMPTS].body).unwrap();
    assert_eq!(body["data"]["amountMinor"], "100000");

    // A rotated secret signs the next replay; the old one no longer verifies.
    let (status, _, rotated) = gw
        .call(
            &p1,
            "POST",
            &format!("/v1/webhooks/subscriptions/{sub}/rotateSecret"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let (status, _, _) = gw
        .call(
            &p1,
            "POST",
            &format!("/v1/webhooks/subscriptions/{sub}/deliveries/{delivery_id}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(MAX_ATTEMPTS + 2).await;
    let last = &got[MAX_ATTEMPTS + 1];
    assert!(verify(&new_secret, last) && !verify(&secret, last));

    // Deleted, it is gone with its deliveries.
    let (status, _, _) = gw
        .call(&p1, "DELETE", &format!("/v1/webhooks/subscriptions/{sub}"), None)
        .await;
    assert_eq!(status, 204);
    gw.problem(&p1, "GET", &format!("/v1/webhooks/subscriptions/{sub}"), None, 404)
        .await;
    gw.problem(
        &p1,
        "GET",
        &format!("/v1/webhooks/subscriptions/{sub}/deliveries"),
        None,
        404,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_400_problem_and_lists_page() {
    let gw = Gateway::start().await;
    let p1 = partner_id("p1");
    let create = |body: Value| gw.problem(&p1, "POST", "/v1/webhooks/subscriptions", Some(body), 400);
    for url in [
        "not a url",
        "ftp://example.com/x",
        "https://user:pw@example.com/",
        "/relative",
        "",
    ] {
        let problem = create(json!({"url": url, "eventTypes": ["order.shipped"]})).await;
        assert_eq!(problem["violations"][0]["field"], "url", "{url}: {problem}");
    }
    let problem =
        create(json!({"url": "https://example.com/h", "eventTypes": ["order.shipped", "order.placed"]})).await;
    assert_eq!(problem["violations"][0]["field"], "eventTypes[1]");
    let problem = create(json!({"url": "https://example.com/h", "eventTypes": []})).await;
    assert_eq!(problem["violations"][0]["field"], "eventTypes");
    let problem =
        create(json!({"url": "https://example.com/h", "eventTypes": ["order.shipped"], "secret": "mine"})).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("unknown field"),
        "{problem}"
    );
    create(json!({"url": 7, "eventTypes": ["order.shipped"]})).await;
    create(json!({"eventTypes": ["order.shipped"]})).await;
    gw.problem(&p1, "GET", "/v1/webhooks/subscriptions?pageSize=-1", None, 400)
        .await;
    gw.problem(&p1, "GET", "/v1/webhooks/subscriptions?pageToken=nonsense", None, 400)
        .await;
    gw.problem(&p1, "GET", "/v1/webhooks/subscriptions?colour=red", None, 400)
        .await;
    gw.problem(&p1, "GET", "/v1/webhooks/subscriptions/nope", None, 404)
        .await;
    gw.problem(
        &p1,
        "POST",
        "/v1/webhooks/subscriptions/nope/deliveries/nope/replay",
        None,
        404,
    )
    .await;

    // A URL pointing nowhere is accepted; its deliveries fail in the background.
    let (a, _) = gw
        .subscribe(&p1, "https://nowhere.invalid/hook", &["order.shipped"])
        .await;
    let (b, _) = gw.subscribe(&p1, "http://127.0.0.1:9/hook", &["order.returned"]).await;
    let (status, _, first) = gw.call(&p1, "GET", "/v1/webhooks/subscriptions?pageSize=1", None).await;
    assert_eq!(status, 200);
    assert_eq!(first["subscriptions"][0]["subscriptionId"], a.as_str());
    let token = first["nextPageToken"].as_str().unwrap();
    assert!(!token.is_empty());
    let (status, _, second) = gw
        .call(
            &p1,
            "GET",
            &format!("/v1/webhooks/subscriptions?pageSize=1&pageToken={token}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(second["subscriptions"][0]["subscriptionId"], b.as_str());
    assert_eq!(second["nextPageToken"], "");

    // The document names the routes and the event types.
    let (status, _, doc) = gw.call(&p1, "GET", "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/webhooks/subscriptions",
        "/v1/webhooks/subscriptions/{subscriptionId}",
        "/v1/webhooks/subscriptions/{subscriptionId}/rotateSecret",
        "/v1/webhooks/subscriptions/{subscriptionId}/deliveries",
        "/v1/webhooks/subscriptions/{subscriptionId}/deliveries/{deliveryId}",
        "/v1/webhooks/subscriptions/{subscriptionId}/deliveries/{deliveryId}/replay",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    let types = &doc["components"]["schemas"]["WebhookEventType"]["enum"];
    assert_eq!(types.as_array().map(Vec::len), Some(7), "{types}");
    assert!(types.as_array().unwrap().contains(&json!("lock.expired")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_pass_the_partners_cap() {
    let gw = Gateway::start_with(|s| s.webhooks.max_subscriptions = 3).await;
    let p1 = partner_id("p1");
    let creates = (0..10).map(|i| {
        gw.call(
            &p1,
            "POST",
            "/v1/webhooks/subscriptions",
            Some(json!({"url": format!("https://example.com/{i}"), "eventTypes": ["order.shipped"]})),
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|(status, _, _)| status)
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 7, "{statuses:?}");
    let (_, _, listed) = gw.call(&p1, "GET", "/v1/webhooks/subscriptions", None).await;
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 3);
    // Another partner has a cap of its own.
    gw.subscribe(&partner_id("p2"), "https://example.com/p2", &["order.shipped"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_addresses_are_refused_when_not_allowed() {
    let gw = Gateway::start_with(|s| s.webhooks.allow_private_addresses = false).await;
    let p1 = partner_id("p1");
    let receiver = Receiver::start(0).await;
    // A literal private address is refused at once.
    let problem = gw
        .problem(
            &p1,
            "POST",
            "/v1/webhooks/subscriptions",
            Some(json!({"url": receiver.url, "eventTypes": ["order.shipped"]})),
            400,
        )
        .await;
    assert_eq!(problem["violations"][0]["field"], "url");
    // A name is checked where it resolves, at every attempt: never connected to.
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap();
    let (sub, _) = gw
        .subscribe(&p1, &format!("http://localhost:{port}/hook"), &["order.shipped"])
        .await;
    gw.orders
        .publish(&shipped("o-1", "partner", &p1, "shipped"), "o-1")
        .await;
    let dead = gw
        .deliveries_when(&p1, &sub, |d| d.len() == 1 && d[0]["state"] == "dead")
        .await;
    let attempts = dead[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), MAX_ATTEMPTS);
    assert!(
        attempts
            .iter()
            .all(|a| a["statusCode"].is_null() && a["error"].as_str().unwrap().contains("refused")),
        "{attempts:?}"
    );
    assert!(receiver.got().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_and_urls_are_never_logged() {
    let logs = retail_testkit::capture_logs();
    let gw = Gateway::start().await;
    let p1 = partner_id("p1");
    let receiver = Receiver::start(1).await;
    let url = format!("{}?token=partner-own-token", receiver.url);
    let (sub, secret) = gw.subscribe(&p1, &url, &["order.shipped"]).await;
    gw.orders
        .publish(&shipped("o-1", "partner", &p1, "shipped"), "o-1")
        .await;
    gw.deliveries_when(&p1, &sub, |d| d.len() == 1 && d[0]["state"] == "delivered")
        .await;
    let (_, _, rotated) = gw
        .call(
            &p1,
            "POST",
            &format!("/v1/webhooks/subscriptions/{sub}/rotateSecret"),
            None,
        )
        .await;
    let rotated = rotated["secret"].as_str().unwrap().to_owned();
    let logged = logs.contents();
    assert!(logged.contains("webhook attempt"), "the attempts are logged");
    for secret in [secret.as_str(), rotated.as_str(), "partner-own-token"] {
        assert!(!logged.contains(secret), "{secret} was logged");
    }
}
